"""A crawled folder full of broken and odd files still trains; an all-bad one is an error."""
import io

import numpy as np
import pytest
from PIL import Image

import train as train_module
from config import parse
from data import open_rgb

from conftest import assert_clean_error, cli, run_cli, train_small

BROKEN = ("empty.jpg", "truncated.jpg", "notes.png", "gone.jpg")


def _jpeg_bytes(img):
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def messy_dir(tmp_path, toy_dir):
    faces = tmp_path / "messy" / "faces"
    faces.mkdir(parents=True)
    good = sorted((toy_dir / "faces").iterdir())[:24]
    for p in good:
        (faces / p.name).write_bytes(p.read_bytes())
    face = Image.open(good[0]).convert("RGB")
    (faces / "empty.jpg").write_bytes(b"")
    (faces / "truncated.jpg").write_bytes(_jpeg_bytes(face)[:600])
    (faces / "notes.png").write_text("this is not an image\n")
    (faces / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (faces / "gone.jpg").symlink_to(tmp_path / "moved-away.jpg")  # a link to nothing
    (faces / "album.jpg").mkdir()  # a folder with an image's name is not an image
    face.convert("L").save(faces / "gray.png")
    rgba = face.convert("RGBA")  # the left half transparent (over black pixels)
    rgba.paste((0, 0, 0, 0), (0, 0, 48, 96))
    rgba.save(faces / "rgba.png")
    palette = face.convert("P")  # palette index 0 marked transparent, painted on the top rows
    palette.paste(0, (0, 0, 96, 20))
    palette.save(faces / "palette.png", transparency=0)
    face.convert("CMYK").save(faces / "cmyk.jpg")
    sixteen = (np.linspace(0, 65535, 96 * 96).reshape(96, 96)).astype(np.uint16)
    Image.fromarray(sixteen).save(faces / "deep16.png")
    face.resize((3, 3)).save(faces / "tiny.png")
    face.resize((2400, 2400)).save(faces / "huge.jpg")
    rotated = face.rotate(90, expand=True)  # stored sideways, EXIF says "rotate back"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated.save(faces / "exif.jpg", exif=exif.tobytes())
    return tmp_path / "messy"


@pytest.mark.parametrize("cache", [True, False])
def test_training_skips_and_reports_broken_files(messy_dir, tmp_path, cache, capsys):
    ckpt = tmp_path / f"ck{cache}"
    opt = parse("train", dict(data_path=str(messy_dir), gpu=False, vis=False, max_epoch=1,
                              batch_size=4, ngf=8, ndf=8, seed=0, cache=cache, num_workers=0,
                              checkpoint_dir=str(ckpt), save_path=str(ckpt)))
    train_module.train(opt)
    out = capsys.readouterr().out
    assert "skipped 4 unreadable image files" in out
    # 24 faces + 8 odd but readable files (.DS_Store and the folder are not images): with
    # the cache 8 batches of 4; reading the files as it goes, it counts the 4 broken ones too
    assert f"{8 if cache else 9} batches of 4 per epoch" in out
    listed = (ckpt / "skipped_files.txt").read_text().split()
    assert sorted(p.rsplit("/", 1)[-1] for p in listed) == sorted(BROKEN)
    assert (ckpt / "netg_0.pth").is_file()
    # a second run on the same folder (the cache found, not built): the same report and list
    again = tmp_path / f"again{cache}"
    train_module.train(parse("train", {**opt.to_dict("train"), "checkpoint_dir": str(again),
                                       "save_path": str(again)}))
    assert "skipped 4 unreadable image files" in capsys.readouterr().out
    assert sorted((again / "skipped_files.txt").read_text().split()) == sorted(listed)


def test_a_run_resumed_in_mid_epoch_without_the_cache_keeps_its_list_of_skipped_files(
        messy_dir, tmp_path, capsys):
    """With --cache=False the broken files are found as the batches reach them: resumed in
    mid-epoch, the run rewrote skipped_files.txt with only those of the batches after the
    stop, and the ones found before it were no longer listed."""
    import torch
    ckpt = tmp_path / "ck"
    flags = dict(data_path=str(messy_dir), gpu=False, vis=False, batch_size=4, ngf=8, ndf=8,
                 seed=0, cache=False, num_workers=0, checkpoint_dir=str(ckpt),
                 save_path=str(ckpt), max_epoch=1)
    train_module.train(parse("train", flags))
    listed = (ckpt / "skipped_files.txt").read_text().split()
    assert len(listed) == 4
    state = torch.load(ckpt / "last.pth", weights_only=True)  # as if stopped after batch 2
    state.update(epoch=0, batch=2, step=2)  # of 9: the rest of the epoch holds some of them
    torch.save(state, ckpt / "last.pth")
    capsys.readouterr()
    train_module.train(parse("train", dict(resume=str(ckpt / "last.pth"))))
    assert sorted((ckpt / "skipped_files.txt").read_text().split()) == sorted(listed)
    assert "skipped 4 unreadable image files" in capsys.readouterr().out


@pytest.mark.parametrize("cache", [True, False])
def test_a_run_resumed_on_another_folder_lists_only_that_folders_skipped_files(
        messy_dir, toy_dir, tmp_path, cache):
    """Resumed with --data-path naming a clean folder, the run kept the skipped_files.txt of
    the folder it had left, naming four broken files it no longer reads."""
    ckpt = tmp_path / "ck"
    train_module.train(parse("train", dict(
        data_path=str(messy_dir), gpu=False, vis=False, batch_size=4, ngf=8, ndf=8, seed=0,
        cache=cache, num_workers=0, checkpoint_dir=str(ckpt), save_path=str(ckpt),
        max_epoch=1)))
    assert len((ckpt / "skipped_files.txt").read_text().split()) == 4
    train_module.train(parse("train", dict(resume=str(ckpt / "last.pth"),
                                           data_path=str(toy_dir), max_epoch=2)))
    assert (ckpt / "netg_1.pth").is_file()
    assert not (ckpt / "skipped_files.txt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("cache", [True, False])
def test_names_in_another_encoding_train_and_are_listed_as_they_are(toy_dir, tmp_path, cache):
    """A zip from Windows or Japan unpacked here has names that are not UTF-8 (Shift-JIS): the
    cache's key and the list of skipped files encoded them as UTF-8, a UnicodeEncodeError
    traceback before the first batch (with --cache=False only once a broken one was met)."""
    import os
    faces = tmp_path / "sjis" / "faces"
    faces.mkdir(parents=True)
    for p in sorted((toy_dir / "faces").iterdir())[:16]:
        (faces / p.name).write_bytes(p.read_bytes())
    good, broken = os.fsdecode(b"\x8a\xe7.jpg"), os.fsdecode(b"broken_\xe9t\xe9.jpg")
    (faces / good).write_bytes((toy_dir / "faces" / "000000.jpg").read_bytes())
    (faces / broken).write_text("not an image")
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    (ckpt / "skipped_files.txt").write_text("an/earlier/run.jpg\n")
    r = run_cli("train", f"--data-path={tmp_path / 'sjis'}", "--nogpu", "--vis=False",
                "--batch-size=6", "--ngf=8", "--ndf=8", "--max-epoch=1", f"--cache={cache}",
                "--num-workers=0", f"--checkpoint-dir={ckpt}", f"--save-path={ckpt}")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "skipped 1 unreadable image file" in r.stdout
    listed = (ckpt / "skipped_files.txt").read_bytes().splitlines()
    assert listed == [os.fsencode(faces / broken)]  # the name's own bytes, ready for rm
    assert f"{17 if cache else 18} images" in r.stdout
    # a later run with nothing to skip leaves no list of the files this one skipped
    (faces / broken).unlink()
    r = cli("train", f"--data-path={tmp_path / 'sjis'}", "--nogpu", "--vis=False",
            "--batch-size=6", "--ngf=8", "--ndf=8", "--max-epoch=1", f"--cache={cache}",
            "--num-workers=0", f"--checkpoint-dir={ckpt}", f"--save-path={ckpt}", "--fresh")
    assert r.returncode == 0, r.stderr
    assert not (ckpt / "skipped_files.txt").exists()


def test_a_name_with_a_newline_keeps_the_message_and_the_list_one_line_a_file(toy_dir,
                                                                           tmp_path, capsys):
    """A broken file named with a newline split the one-line message in two, and took two
    lines of skipped_files.txt (neither of them its name)."""
    faces = tmp_path / "set" / "faces"
    faces.mkdir(parents=True)
    for p in sorted((toy_dir / "faces").iterdir())[:8]:
        (faces / p.name).write_bytes(p.read_bytes())
    (faces / "two\nlines.jpg").write_text("not an image")
    (faces / "zz.jpg").write_text("not an image")
    ckpt = tmp_path / "ck"
    train_module.train(parse("train", dict(
        data_path=str(tmp_path / "set"), gpu=False, vis=False, max_epoch=1, batch_size=4,
        ngf=8, ndf=8, seed=0, checkpoint_dir=str(ckpt), save_path=str(ckpt))))
    said = [line for line in capsys.readouterr().out.splitlines() if "skipped" in line]
    assert len(said) == 1 and "(e.g. $'two\\x0alines.jpg', zz.jpg)" in said[0], said
    assert (ckpt / "skipped_files.txt").read_text().splitlines() == [
        f"$'{faces}/two\\x0alines.jpg'", f"{faces}/zz.jpg"]  # as the shell reads it back


def test_every_mode_becomes_upright_rgb(messy_dir):
    faces = messy_dir / "faces"
    for name in ("gray.png", "rgba.png", "palette.png", "cmyk.jpg", "deep16.png", "tiny.png",
                 "huge.jpg", "exif.jpg"):
        img = open_rgb(faces / name)
        assert img.mode == "RGB", name
    face = np.asarray(Image.open(sorted(faces.glob("*.jpg"))[0]).convert("RGB")).astype(int)
    grey = np.asarray(open_rgb(faces / "gray.png")).astype(int)  # its grey in all three
    assert (grey == np.asarray(Image.open(faces / "gray.png"))[..., None]).all()
    cmyk = np.asarray(open_rgb(faces / "cmyk.jpg")).astype(int)  # the face's own colours
    assert np.abs(cmyk - face).mean() < 8 < np.abs(255 - cmyk - face).mean()
    deep = np.asarray(open_rgb(faces / "deep16.png"))
    assert deep.min() < 10 and deep.max() > 245 and 100 < deep.mean() < 155  # scaled, not clipped
    dark = faces.parent / "dark16.png"  # a 16-bit photo of a dark scene: all under 256
    Image.fromarray(np.full((96, 96), 200, np.uint16)).save(dark)
    assert np.asarray(open_rgb(dark)).max() <= 1  # 200 of 65535: black, not 200 of 255
    floats = faces.parent / "float.tif"  # 32-bit float grey from 0 to 1: it became black
    Image.fromarray(np.linspace(0, 1, 96 * 96, dtype=np.float32).reshape(96, 96)).save(floats)
    assert np.array_equal(np.asarray(open_rgb(floats)), deep)
    spotted = np.linspace(0, 1, 96 * 96, dtype=np.float32).reshape(96, 96)
    spotted[0, :3] = np.inf, -np.inf, np.nan  # a few bad pixels: black, the rest as before
    Image.fromarray(spotted).save(floats)
    assert np.array_equal(np.asarray(open_rgb(floats))[1:], deep[1:])
    rgba = np.asarray(open_rgb(faces / "rgba.png")).astype(int)
    assert (rgba[:, :48] == 255).all()  # transparent pixels put on white, not their black
    grey_alpha = faces.parent / "la.png"  # grey with transparency: on white too
    Image.new("LA", (8, 8), (0, 0)).save(grey_alpha)
    assert (np.asarray(open_rgb(grey_alpha)) == 255).all()
    opaque = np.asarray(Image.open(faces / "rgba.png").convert("RGB"))[:, 48:]
    assert np.array_equal(rgba[:, 48:], opaque)  # the opaque half keeps its colours
    palette = np.asarray(open_rgb(faces / "palette.png")).astype(int)
    assert (palette[:20] == 255).all() and (palette[20:] != 255).any()
    upright = np.asarray(open_rgb(faces / "exif.jpg")).astype(int)
    original = np.asarray(Image.open(faces / "gray.png").convert("RGB")).astype(int)
    assert upright.shape == original.shape
    assert np.abs(upright.mean(2) - original.mean(2)).mean() < 12


def test_a_named_pipe_among_the_images_is_skipped_not_waited_on(tmp_path):
    """A named pipe called x.jpg: opening it waits for a writer, so decoding the folder hung
    at its last image, without a word."""
    import os
    import threading
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    failed = []

    def decode():
        try:
            open_rgb(pipe)
        except OSError as e:
            failed.append(str(e))
    reader = threading.Thread(target=decode, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # let it go: a writer that opens and closes the pipe
        os.close(os.open(pipe, os.O_WRONLY))
    assert failed and "named pipe" in failed[0]


@pytest.mark.parametrize("cache", [True, False])
def test_all_bad_folder_is_a_clear_error(tmp_path, cache):
    faces = tmp_path / "bad" / "faces"
    faces.mkdir(parents=True)
    for i in range(3):
        (faces / f"{i}.jpg").write_text("nope")
    # an earlier run's records in the same folders stay as they were
    (tmp_path / "c").mkdir()
    (tmp_path / "i").mkdir()
    (tmp_path / "c" / "options.json").write_text('{"data_path": "data/faces"}')
    (tmp_path / "c" / "skipped_files.txt").write_text("data/faces/old.jpg\n")
    (tmp_path / "i" / "losses.csv").write_text("step,epoch\n20,0\n")
    assert_clean_error(cli("train", f"--data-path={tmp_path / 'bad'}", "--nogpu",
                           "--vis=False", "--batch-size=1", "--num-workers=0",
                           f"--cache={cache}", f"--checkpoint-dir={tmp_path / 'c'}",
                           f"--save-path={tmp_path / 'i'}"), "could be read")
    assert not list((tmp_path / "c").glob("*.pth"))  # no weights of untrained nets
    assert (tmp_path / "c" / "options.json").read_text() == '{"data_path": "data/faces"}'
    assert (tmp_path / "i" / "losses.csv").read_text() == "step,epoch\n20,0\n"
    assert (tmp_path / "c" / "skipped_files.txt").read_text() == "data/faces/old.jpg\n"
    # and no cache, nor a half-built one, is left beside the images (a hidden .tmp was)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "c", "i"]
    # decoded first, so the batch size is not blamed for files that are all broken (without
    # the cache it was: "lower --batch-size (now 16) to 3", then "none ... could be read")
    assert_clean_error(cli("train", f"--data-path={tmp_path / 'bad'}", "--nogpu",
                           "--vis=False", "--batch-size=16", f"--cache={cache}",
                           f"--checkpoint-dir={tmp_path / 'c'}",
                           f"--save-path={tmp_path / 'i'}"), "could be read")
    # and where some can be read, the count that can is the one given
    for i in range(2):
        Image.new("RGB", (96, 96), (200, 100, 50)).save(faces / f"good{i}.png")
    assert_clean_error(cli("train", f"--data-path={tmp_path / 'bad'}", "--nogpu",
                           "--vis=False", "--batch-size=8", f"--cache={cache}",
                           f"--checkpoint-dir={tmp_path / 'c'}",
                           f"--save-path={tmp_path / 'i'}"),
                       "has 2 usable images, fewer than one batch: lower --batch-size (now 8) "
                       "to 2 or less")


def test_a_resumed_run_whose_images_became_unreadable_is_a_clear_error(toy_dir, tmp_path):
    data = tmp_path / "set"
    (data / "faces").mkdir(parents=True)
    for path in sorted((toy_dir / "faces").glob("*.jpg"))[:16]:
        (data / "faces" / path.name).write_bytes(path.read_bytes())
    ckpt = tmp_path / "c"
    train_small(data, ckpt, max_epoch=1, cache=False, num_workers=0)
    before = {p.name: p.stat().st_mtime_ns for p in ckpt.glob("*.pth")}
    for path in (data / "faces").glob("*.jpg"):
        path.write_text("overwritten")
    assert_clean_error(cli("train", f"--resume={ckpt / 'last.pth'}", "--max-epoch=2",
                           "--num-workers=0", f"--checkpoint-dir={ckpt}"), "could be read")
    assert {p.name: p.stat().st_mtime_ns for p in ckpt.glob("*.pth")} == before
