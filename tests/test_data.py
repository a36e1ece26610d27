"""Finding images, the decoded cache, and that both paths feed the same pixels."""
import errno
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import torch

from data import CachedBatches, FaceFolder, build_cache, list_images, normalise

from conftest import ROOT, cli, read_until, slow_start, stderr_within, stop_in_a_bar
from errors import UserError


def test_both_layouts(toy_dir, tmp_path):
    book = list_images(toy_dir)  # DIR/faces/*.jpg
    flat = list_images(toy_dir / "faces")  # the images directly
    assert len(book) == len(flat) == 64
    # names in capitals, as cameras and some scrapers save them, are images too (ImageFolder
    # reads any case); a hidden file is not
    mixed = tmp_path / "mixed" / "faces"
    mixed.mkdir(parents=True)
    for name in ("A.JPG", "b.Png", "c.jpeg", ".d.jpg"):
        shutil.copy(flat[0], mixed / name)
    assert [p.name for p in list_images(mixed.parent)] == ["A.JPG", "b.Png", "c.jpeg"]


def test_images_from_several_folders_are_named_before_they_mix(toy_dir, tmp_path, capsys):
    """The book's default --data-path=data/ takes any other set in it (a toy set an older
    version made in data/toy/faces, say) as well as the real faces in data/faces, without a
    word."""
    from data import say_folders
    data = tmp_path / "data"
    shutil.copytree(toy_dir / "faces", data / "faces")
    (data / "toy" / "faces").mkdir(parents=True)
    for p in sorted((toy_dir / "faces").iterdir())[:5]:
        shutil.copy(p, data / "toy" / "faces" / p.name)
    say_folders(data, list_images(data))
    assert capsys.readouterr().out.strip() == (
        f"note: {data} holds images in 2 folders, all used: faces/ (64), toy/ (5); "
        f"--data-path naming one of them uses just that one")
    say_folders(data / "faces", list_images(data / "faces"))  # one folder: nothing to say
    shard = tmp_path / "shard"  # one set in shards: data/faces/000/, 001/, ...
    for i, p in enumerate(sorted((toy_dir / "faces").iterdir())[:6]):
        (shard / "faces" / f"{i % 3:03d}").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, shard / "faces" / f"{i % 3:03d}" / p.name)
    say_folders(shard, list_images(shard))
    say_folders(toy_dir, list_images(toy_dir))
    assert capsys.readouterr().out == ""
    many = tmp_path / "many"  # six sets side by side: four named, the others counted
    for i, p in enumerate(sorted((toy_dir / "faces").iterdir())[:6]):
        (many / f"set{i}").mkdir(parents=True)
        shutil.copy(p, many / f"set{i}" / p.name)
    say_folders(many, list_images(many))
    assert capsys.readouterr().out.strip() == (
        f"note: {many} holds images in 6 folders, all used: set0/ (1), set1/ (1), set2/ (1), "
        f"set3/ (1) and 2 more; --data-path naming one of them uses just that one")


def test_a_linked_faces_folder_is_read_once_and_hidden_folders_are_not(toy_dir, tmp_path):
    """data/faces as a link to a disk with room: it was not followed, so training said 'no
    images' (or took only the other folders' images). The book's ImageFolder follows it."""
    import torchvision
    disk = tmp_path / "disk"  # the other disk, with a copy of the faces
    shutil.copytree(toy_dir / "faces", disk / "faces")
    data = tmp_path / "data"
    data.mkdir()
    (data / "faces").symlink_to(disk / "faces", target_is_directory=True)
    assert [p.name for p in list_images(data)] == [p.name for p in list_images(toy_dir)]
    assert len(torchvision.datasets.ImageFolder(str(data))) == 64  # the book reads the same
    (disk / "faces" / "again").symlink_to(disk / "faces")  # a loop: each folder once
    (data / "same").symlink_to(disk, target_is_directory=True)  # a second way in
    (data / ".trash").mkdir()
    (data / ".trash" / "old.jpg").write_bytes((toy_dir / "faces" / "000000.jpg").read_bytes())
    assert len(list_images(data)) == 64
    # a real folder is the way in that is kept, before a link to it that sorts first: the
    # file names (so the cache key and the data order) never depend on the listing's order
    (disk / "a").symlink_to(disk / "faces", target_is_directory=True)
    assert {p.parent for p in list_images(disk)} == {disk / "faces"}
    result = cli("train", f"--data-path={data}", "--nogpu", "--vis=False", "--max-epoch=1",
                 "--batch-size=16", "--ngf=8", "--ndf=8", f"--checkpoint-dir={tmp_path / 'c'}",
                 f"--save-path={tmp_path / 'i'}")
    assert result.returncode == 0, result.stderr
    assert "4 batches of 16 per epoch" in result.stdout


def test_cache_gives_the_same_pixels_as_the_folder_path(toy_dir):
    array, skipped = build_cache(toy_dir, 96, workers=1)
    assert skipped == [] and array.shape == (64, 3, 96, 96) and array.dtype == np.uint8
    folder = FaceFolder(toy_dir, 96)
    for i in (0, 17, 63):
        image, _ = folder[i]
        assert torch.equal(normalise(torch.from_numpy(np.array(array[i:i + 1])))[0], image)


def test_every_image_gets_the_pixels_of_the_articles_torchvision_transform(tmp_path):
    """The article's Resize(96), CenterCrop(96), ToTensor and Normalize are our own lines now
    (torchvision cost generate and evaluate about 2.5 s to import): the same floats for any
    size, shrunk or enlarged, square or not, with an odd margin to split (where rounding
    decides)."""
    import pickle
    from torchvision import transforms
    article = transforms.Compose([
        transforms.Resize(96), transforms.CenterCrop(96), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    make = np.random.default_rng(0)
    sizes = [(96, 96), (96, 131), (131, 96), (200, 97), (97, 300), (64, 64), (50, 81),
             (1000, 333), (333, 1000), (95, 96), (255, 128), (8, 8)]
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(make.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            tmp_path / f"{i:02d}.png")
    folder = pickle.loads(pickle.dumps(FaceFolder(tmp_path, 96)))  # as a spawned worker has it
    for i, size in enumerate(sizes):
        ours, _ = folder[i]
        with Image.open(tmp_path / f"{i:02d}.png") as img:
            assert torch.equal(ours, article(img.convert("RGB"))), size


def test_the_decoding_bar_ends_at_the_number_of_files(tmp_path, toy_dir):
    """It stopped one short (199/200 on screen): the loop ended before the bar counted the
    last image."""
    import io
    from tqdm import tqdm
    root = tmp_path / "data"
    shutil.copytree(toy_dir / "faces", root / "faces")
    bars = []

    def progress(iterable, total):
        bars.append(tqdm(iterable, total=total, file=io.StringIO()))
        return bars[-1]
    build_cache(root, 96, progress, workers=1)
    assert (bars[0].n, bars[0].total) == (64, 64)


def test_a_stop_while_decoding_closes_the_bar_before_it_leaves(tmp_path, toy_dir):
    """main.py's stop line must be the last: a bar a Ctrl-C caught before its own clean-up
    was closed only when Python freed it, and drew itself again under that line."""
    root = tmp_path / "data"
    shutil.copytree(toy_dir / "faces", root / "faces")
    assert stop_in_a_bar(lambda bar: build_cache(root, 96, bar, workers=1)) == ["closed", "left"]
    assert not any(p.name.startswith(".data.faces") for p in tmp_path.iterdir())  # no cache


def test_cache_is_reused_and_rebuilt_when_the_folder_changes(tmp_path, toy_dir):
    root = tmp_path / "data"
    (root / "faces").mkdir(parents=True)
    for p in sorted((toy_dir / "faces").iterdir())[:20]:
        (root / "faces" / p.name).write_bytes(p.read_bytes())
    first, _ = build_cache(root, 96, workers=1)
    cached = list(tmp_path.glob(".data.faces96-*.npy"))  # beside the folder, not in it
    assert len(cached) == 1 and not any(p.name.startswith(".") for p in root.iterdir())
    stamp = cached[0].stat().st_mtime_ns
    time.sleep(0.01)
    again, _ = build_cache(root, 96, workers=1)
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not rewritten
    assert np.array_equal(first, again)

    # replace one image by another: same count, other pixels, another cache
    victim = sorted((root / "faces").iterdir())[0]
    victim.write_bytes(sorted((toy_dir / "faces").iterdir())[30].read_bytes())
    os.utime(victim, ns=(time.time_ns(), time.time_ns()))
    changed, _ = build_cache(root, 96, workers=1)
    assert len(list(tmp_path.glob(".data.faces96-*.npy"))) == 1  # the old one is gone
    assert not np.array_equal(changed[0], first[0]) and np.array_equal(changed[1:], first[1:])
    (root / "faces" / "extra.png").write_bytes(
        sorted((toy_dir / "faces").iterdir())[40].read_bytes())
    assert len(build_cache(root, 96, workers=1)[0]) == 21
    # replaced by a file of the same size with the old date kept (cp -p, rsync -t, an
    # unzip): the old pixels were reused without a word
    bmp = root / "faces" / "zz.bmp"  # sorted last; a BMP's size is its side's alone
    faces = sorted((toy_dir / "faces").iterdir())
    Image.open(faces[50]).save(bmp)
    before, dated = build_cache(root, 96, workers=1)[0], bmp.stat()
    Image.open(faces[51]).save(bmp)
    assert bmp.stat().st_size == dated.st_size
    os.utime(bmp, ns=(dated.st_atime_ns, dated.st_mtime_ns))
    after = build_cache(root, 96, workers=1)[0]
    assert not np.array_equal(after[-1], before[-1]) and np.array_equal(after[:-1], before[:-1])


def test_the_books_imagefolder_still_reads_a_cached_folder(toy_dir):
    from torchvision.datasets import ImageFolder
    build_cache(toy_dir, 96, workers=1)
    assert len(ImageFolder(str(toy_dir))) == 64


def test_cached_batches_are_a_seeded_permutation(toy_dir):
    array, _ = build_cache(toy_dir, 96, workers=1)
    batches = CachedBatches(array, 16, "cpu")
    assert len(batches) == 4
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    epoch = list(batches.batches(perm))
    assert all(b.shape == (16, 3, 96, 96) for b in epoch)
    assert -1 <= min(b.min() for b in epoch) and max(b.max() for b in epoch) <= 1
    # every image once per epoch: the sums match the whole set's
    total = normalise(torch.from_numpy(np.array(array))).sum()
    assert torch.allclose(sum(b.sum() for b in epoch), total, rtol=1e-4)
    assert torch.equal(epoch[0], normalise(torch.from_numpy(np.array(array[perm[:16].numpy()]))))
    later = list(batches.batches(perm, start=2))  # a resumed epoch skips ahead
    assert len(later) == 2 and all(torch.equal(a, b) for a, b in zip(epoch[2:], later))


def test_an_epoch_drops_the_short_last_batch_as_the_books_loader_does():
    """70 images at batch 16: 4 full batches, the 6 left over drawn in a later epoch's
    shuffle (drop_last, as the book's DataLoader); a short batch would also disagree with
    the count of batches an epoch is said to have."""
    array = np.random.default_rng(0).integers(0, 256, (70, 3, 8, 8), dtype=np.uint8)
    loader = CachedBatches(array, 16, "cpu")
    perm = torch.randperm(70, generator=torch.Generator().manual_seed(0))
    batches = list(loader.batches(perm))
    assert len(loader) == len(batches) == 4 and {len(b) for b in batches} == {16}


def test_folder_batches_follow_the_same_permutation(toy_dir):
    from config import parse
    from data import folder_batches
    opt = parse("train", dict(data_path=str(toy_dir), batch_size=16, num_workers=0))
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    folder = list(folder_batches(opt).batches(perm, start=1))
    array, _ = build_cache(toy_dir, 96, workers=1)
    cached = list(CachedBatches(array, 16, "cpu").batches(perm, start=1))
    # both lengths: zip stops at the shorter, so batches the cache lost went unnoticed
    assert len(folder) == len(cached) == 3
    assert all(torch.equal(a, b) for a, b in zip(folder, cached))


@pytest.mark.slow
def test_more_workers_than_cpus_decode_with_one_per_cpu_and_say_so_once(toy_dir, monkeypatch,
                                                                         capsys):
    """The book's 4 workers on a 2-core laptop: torch warned twice at every epoch."""
    import warnings
    from config import parse
    from data import folder_batches
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    opt = parse("train", dict(data_path=str(toy_dir), batch_size=16, num_workers=4))
    batches = folder_batches(opt)
    assert batches.num_workers == 2
    assert capsys.readouterr().out.count("--num-workers=4 on 2 CPUs: decoding with 2") == 1
    equal = folder_batches(parse("train", dict(data_path=str(toy_dir), batch_size=16,
                                               num_workers=2)))
    assert equal.num_workers == 2 and "--num-workers" not in capsys.readouterr().out  # as asked
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun, 2 processes on this machine
    assert folder_batches(opt).num_workers == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two epochs
            assert len(list(batches.batches(perm))) == 4
    assert not [w for w in caught if "worker" in str(w.message)]


def _copy(toy_dir, root, count=12):
    (root / "faces").mkdir(parents=True)
    for p in sorted((toy_dir / "faces").iterdir())[:count]:
        (root / "faces" / p.name).write_bytes(p.read_bytes())
    return root


def test_the_cache_of_a_renamed_or_deleted_folder_is_removed_when_another_is_built(
        tmp_path, toy_dir, capsys):
    """data/faces renamed data/anime, or deleted to make room: its cache (hidden, 1.4 GB for
    the article's set) stayed beside for good, and the next one was built beside it."""
    from data import CACHE_NAME
    parent = tmp_path / "data"
    _copy(toy_dir, parent)  # data/faces: 12 images
    for name in ("gone", "kept", "unplugged"):
        shutil.copytree(parent / "faces", parent / name)
    for name in ("faces", "gone", "kept", "unplugged"):
        build_cache(parent / name, 96, workers=1)
    (parent / "faces").rename(parent / "anime")
    shutil.rmtree(parent / "gone")
    shutil.rmtree(parent / "unplugged")  # now a link to a disk that is not plugged in
    (parent / "unplugged").symlink_to(tmp_path / "usb" / "faces")
    capsys.readouterr()

    def caches():
        return sorted(CACHE_NAME.fullmatch(p.name)[1] for p in parent.glob(".*"))
    assert caches() == ["faces"] * 2 + ["gone"] * 2 + ["kept"] * 2 + ["unplugged"] * 2
    array, _ = build_cache(parent / "anime", 96, workers=1)
    said = capsys.readouterr().out.splitlines()
    assert said[0].startswith(f"note: removed the decoded-image caches of {parent / 'faces'} "
                              f"and {parent / 'gone'} (") and said[0].endswith(
        " MB): those folders are gone"), said
    assert caches() == ["anime"] * 2 + ["kept"] * 2 + ["unplugged"] * 2
    # then where the new one goes, and its size (hidden, up to 1.4 GB: a user looked for it)
    made = next(parent.glob(".anime.*.npy"))
    assert said[1:] == [f"decoding 12 images once into {made} (0.3 MB), which later runs "
                        f"reuse"]
    assert len(array) == 12
    build_cache(parent / "anime", 96, workers=1)  # found: nothing to say
    assert capsys.readouterr().out == ""
    # the article's 50,000 faces: in GB (bench.py's table says its caches the same way)
    from errors import sized
    assert [sized(n) for n in (50_000 * 96 * 96 * 3, 999_900_000, 300_000)] == \
        ["1.4 GB", "999.9 MB", "0.3 MB"]
    # two sizes a line compares, told apart ("1.0 GB" beside "1000.0 MB" read as equal)
    assert (sized(10**9, 999_960_000), sized(999_960_000, 10**9)) == ("1.00 GB", "999.96 MB")


def test_a_folder_named_with_brackets_keeps_its_neighbours_cache_and_drops_its_own_old_one(
        tmp_path, toy_dir):
    """The caches are found by a glob of the folder's name: faces[12] read as a pattern took
    faces1's cache for one of its own and removed it, and left its own old ones behind."""
    parent = tmp_path / "data"
    _copy(toy_dir, parent)
    shutil.copytree(parent / "faces", parent / "faces1")
    shutil.copytree(parent / "faces", parent / "faces[12]")
    build_cache(parent / "faces1", 96, workers=1)
    build_cache(parent / "faces[12]", 96, workers=1)
    (parent / "faces[12]" / "extra.png").write_bytes(
        sorted((toy_dir / "faces").iterdir())[40].read_bytes())
    build_cache(parent / "faces[12]", 96, workers=1)  # another key: the old cache goes
    caches = sorted(p.name.split(".faces96-")[0] for p in parent.glob(".*.npy"))
    assert caches == [".faces1", ".faces[12]"]


def test_a_cold_benchmark_of_a_folder_named_with_brackets_keeps_its_neighbours_cache(
        tmp_path, toy_dir, monkeypatch):
    """bench.py's cold run removes the folder's decoded cache first: faces[12] read as a
    pattern removed faces1's too, which faces1's next training then decoded again."""
    import types
    import bench
    import data
    parent = tmp_path / "data"
    _copy(toy_dir, parent)
    shutil.copytree(parent / "faces", parent / "faces1")
    shutil.copytree(parent / "faces", parent / "faces[12]")
    build_cache(parent / "faces1", 96, workers=1)
    build_cache(parent / "faces[12]", 96, workers=1)

    class Decoding(Exception):
        """Where the cold run starts to decode: what it removed before is what counts."""

    def decoding(*args, **kwargs):
        raise Decoding
    monkeypatch.setattr(data, "build_cache", decoding)
    with pytest.raises(Decoding):
        bench.run_ours(types.SimpleNamespace(data_path=str(parent / "faces[12]")),
                       torch.device("cpu"), cold=True)
    caches = sorted(p.name.split(".faces96-")[0] for p in parent.glob(".*.npy"))
    assert caches == [".faces1"]  # its own gone (the run is cold), the neighbour's kept


@pytest.mark.parametrize("full, said", [
    ("ENOSPC", "no space left on the disk"),
    # over the user's disk quota (a cluster's home folder) the write says "Disk quota
    # exceeded": the line was "cannot write or read: Disk quota exceeded", naming neither the
    # cache nor --cache=False
    ("EDQUOT", "no room left within the disk quota")])
def test_a_full_disk_while_decoding_names_the_cache_and_the_way_out(tmp_path, toy_dir,
                                                                   monkeypatch, full, said):
    """It was "cannot write or read: No space left on device", naming no file or size."""
    import data
    shutil.copytree(toy_dir, tmp_path / "set")
    code = getattr(errno, full)

    def no_room(*args):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(data.os, "pwrite", no_room)
    with pytest.raises(UserError) as caught:
        build_cache(tmp_path / "set", workers=1)
    words = str(caught.value)
    assert words.startswith(f"{said} for the decoded-image cache {tmp_path}/"), words
    assert "(1.8 MB for 64 images)" in words and "--cache=False" in words
    assert not list(tmp_path.glob(".set*"))  # nothing half-built left


def test_a_disk_the_pixels_filled_leaves_no_cache_behind_and_says_so_as_while_decoding(
        tmp_path, toy_dir, monkeypatch):
    """The pixels filled the disk and the small .json after them failed: the whole array was
    left behind, hidden, on the full disk, and the line was "cannot write or read: No space
    left on device", naming neither the cache nor --cache=False."""
    shutil.copytree(toy_dir, tmp_path / "set")
    write_text = Path.write_text

    def full_at_the_json(self, *args, **kwargs):
        if ".json." in self.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write_text(self, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", full_at_the_json)
    with pytest.raises(UserError) as caught:
        build_cache(tmp_path / "set", workers=1)
    assert str(caught.value).startswith("no space left on the disk for the decoded-image cache")
    assert "--cache=False" in str(caught.value)
    assert not list(tmp_path.glob(".set*"))  # nothing half-built left


def test_a_damaged_cache_is_rebuilt(tmp_path, toy_dir):
    root = _copy(toy_dir, tmp_path / "data")
    first, _ = build_cache(root, 96, workers=1)
    first = np.array(first)
    [array_file] = tmp_path.glob(".data.faces96-*.npy")
    [meta_file] = tmp_path.glob(".data.faces96-*.json")
    size = array_file.stat().st_size
    with open(array_file, "r+b") as f:  # cut short, as by a crash or a full disk elsewhere
        f.truncate(size // 2)
    again, skipped = build_cache(root, 96, workers=1)
    assert np.array_equal(again, first) and skipped == []
    assert array_file.stat().st_size == size
    # not JSON; JSON without the count; JSON of another shape (a list, null: a TypeError
    # traceback ended train there, where a damaged cache is built again)
    for text in ("{not json", '{"skipped": []}', "[]", "null"):
        meta_file.write_text(text)
        assert np.array_equal(build_cache(root, 96, workers=1)[0], first), text
        assert json.loads(meta_file.read_text())["count"] == 12


def test_a_read_only_data_folder_caches_in_the_users_cache_folder(tmp_path, toy_dir,
                                                                 monkeypatch, capsys):
    """A shared, read-only data set: the cache went to a new /tmp/facecache-* folder on
    every run and was never removed (1.4 GB a run for the article's set). Now it goes to
    ~/.cache/animegan/faces/ and later runs reuse it."""
    import data
    root = _copy(toy_dir, tmp_path / "shared" / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    create = data._create_npy
    refused = {tmp_path / "shared"}

    def read_only(path, shape):  # root may write anywhere, so the refusal is simulated
        if Path(path).parent in refused:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return create(path, shape)
    monkeypatch.setattr(data, "_create_npy", read_only)
    array, _ = build_cache(root, 96, workers=1)
    kept = tmp_path / "home-cache" / "animegan" / "faces"
    assert (f"note: cannot write the decoded-image cache beside {root} (Read-only file "
            f"system); using {kept} (later runs reuse it, 0.3 MB)") in capsys.readouterr().out
    assert array.shape == (12, 3, 96, 96) and Path(array.filename).parent == kept
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["data"]
    again, _ = build_cache(root, 96, workers=1)  # found there: no note, no second file
    assert again.filename == array.filename and capsys.readouterr().out == ""
    assert len(list(kept.glob("*.npy"))) == 1
    monkeypatch.undo()
    assert np.array_equal(array, build_cache(root, 96, workers=1)[0])  # the same pixels
    # a folder of the same name elsewhere gets its own file there, not this one's
    other = _copy(toy_dir, tmp_path / "elsewhere" / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    monkeypatch.setattr(data, "_create_npy", read_only)
    refused.add(tmp_path / "elsewhere")
    build_cache(other, 96, workers=1)
    assert len(list(kept.glob("*.npy"))) == 2
    # with the cache folder refused too, a temporary one serves this run
    refused.add(kept)
    (root / "faces" / sorted(os.listdir(root / "faces"))[0]).unlink()  # a new key
    array, _ = build_cache(root, 96, workers=1)
    assert "(for this run only, 0.3 MB)" in capsys.readouterr().out
    assert Path(array.filename).parent.name.startswith("facecache-")


def test_decoding_in_order_shows_progress_and_passes_over_broken_files(tmp_path, toy_dir):
    """evaluate --cache=False decodes only the images it compares, in the drawn order, with a
    progress bar (it showed nothing while it decoded)."""
    from data import decode_in_order
    faces = sorted((toy_dir / "faces").iterdir())
    files = []
    for i in range(40):
        path = tmp_path / f"{i:03d}.jpg"
        if i % 10 == 7:
            path.write_text("broken")
        else:
            path.write_bytes(faces[i].read_bytes())
        files.append(path)
    order = np.random.default_rng(0).permutation(40)
    class Bar:  # what tqdm(total=...) is given
        def __init__(self, total):
            self.total, self.n, self.closed = total, 0, False

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True
    bars = []
    rows, picked = decode_in_order(files, 96, order, 30, progress=lambda total: bars.append(
        Bar(total)) or bars[-1])
    assert len(rows) == 30 and [(b.total, b.n, b.closed) for b in bars] == [(30, 30, True)]
    assert picked == [int(i) for i in order if i % 10 != 7][:30]
    assert all(np.array_equal(r, np.asarray(Image.open(files[i]).convert("RGB").resize(
        (96, 96))).transpose(2, 0, 1)) for r, i in zip(rows, picked))


def _many_faces(toy_dir, root, count):
    """``count`` faces in root/faces, the toy set's 64 repeated (enough for a pool)."""
    faces = sorted((toy_dir / "faces").iterdir())
    (root / "faces").mkdir(parents=True)
    for i in range(count):
        (root / "faces" / f"{i:05d}.jpg").write_bytes(faces[i % len(faces)].read_bytes())
    return root


@pytest.mark.slow
@pytest.mark.parametrize("signame, times", [("SIGINT", 1), ("SIGTERM", 1), ("SIGTERM", 2),
                                            ("SIGHUP", 1)])
def test_ctrl_c_while_decoding_stops_at_once_and_leaves_no_half_built_cache(tmp_path, toy_dir,
                                                                            signame, times):
    """The pool's workers took Ctrl-C too, and the pool could then wait for them forever
    (about half the time); the half-built file stayed beside the folder. SIGTERM (kill, a
    job scheduler) ended the run at once without a word, the half-built file left behind.
    Two SIGTERMs (a scheduler's, and a sweep passing its own on): after its one line, the
    second ended the process by the signal itself as Python shut down (status -15, not 143),
    or could raise again in the middle of the clean-up the first had started. A hang-up (the
    terminal closed) ended it at once, as SIGTERM did."""
    import signal
    import subprocess
    import sys
    from conftest import ROOT
    data = _many_faces(toy_dir, tmp_path / "set", 4000)
    # each image decoded 20 ms slower, so that the build is under way on any number of cores
    (tmp_path / "slowdecode.py").write_text(
        "import time\nimport data\n_decode = data._decode\n\n\ndef slow(job):\n"
        "    time.sleep(0.02)\n    return _decode(job)\n\n\ndata._decode = slow\n")
    args = ["main.py", "train", "--nogpu", "--vis=False", f"--data-path={data}",
            "--batch-size=16", "--ngf=8", "--ndf=8", f"--checkpoint-dir={tmp_path / 'c'}",
            f"--save-path={tmp_path / 'i'}"]
    script = (f"import runpy, sys; sys.path[:0] = [{str(ROOT)!r}, {str(tmp_path)!r}]; "
              f"import slowdecode; sys.argv = {args!r}; "
              f"runpy.run_path({str(ROOT / 'main.py')!r}, run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    read_until(proc, "decoding images once")  # fails if the run ends before it decodes
    time.sleep(0.5)
    for _ in range(times):  # as a terminal or a scheduler: to every process
        try:
            os.killpg(proc.pid, getattr(signal, signame))
        except ProcessLookupError:  # it ended before the second: nothing for that to break
            break
        time.sleep(0.05)
    err = stderr_within(proc, 30, f"train hung after {signame} while decoding")
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 143}[signame], err
    assert "Traceback" not in err and "ForkPoolWorker" not in err, err
    what = "interrupted" if signame == "SIGINT" else "terminated"
    assert err.splitlines()[-1] == f"{what} before training began: nothing was trained"
    assert not list(tmp_path.glob(".set.faces96-*"))  # neither a cache nor its temporary file


@pytest.mark.slow
def test_a_pool_stopped_while_its_workers_start_ends(tmp_path):
    """A Ctrl-C just as a pool began (toyfaces' first faces, a cache's first images, on a
    busy machine) stopped it while a worker was still starting: the worker dropped the
    pool's SIGTERM as one meant for the main process, then waited for tasks, and the main
    process waited for it for ever. Here each worker takes a second to start, and the
    Ctrl-C comes 0.3 s after the first job."""
    import subprocess
    import sys
    from conftest import ROOT
    script = ("import os, signal, sys, threading; sys.path.insert(0, sys.argv[1])\n"
              f"{slow_start('_pool_worker_signals', 1, pid=True)}\n"
              "threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
              "try:\n"
              "    with data.start_pool(2) as pool:\n"
              "        print(list(pool.imap(abs, range(-8, 0), 2)))\n"
              "except KeyboardInterrupt:\n"
              "    print('stopped')\n")
    out = tmp_path / "out.txt"
    with open(out, "w") as f:  # a file, not a pipe: a worker left behind would hold a pipe
        proc = subprocess.Popen([sys.executable, "-c", script, str(ROOT)], stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pid in out.read_text().split()[:2]:  # the workers left their process group
            os.kill(int(pid), signal.SIGKILL)
        pytest.fail("the pool's stop waited for ever for a worker that was starting")
    assert proc.returncode == 0 and out.read_text().split()[-1] == "stopped", out.read_text()


def _start_then_wait(seconds):
    """A DataLoader worker's life in short: forked with the stops held back, it takes
    ``seconds`` to start (a busy machine), sets its signals, then waits for tasks."""
    import data
    time.sleep(seconds)
    data._own_process_group()
    time.sleep(60)


@pytest.mark.slow
def test_a_decoding_worker_still_starting_ends_on_its_parents_sigterm_alone():
    """The SIGTERM that ends a process's workers at its exit (multiprocessing's) reached a
    DataLoader worker still starting, which dropped it as one meant for the main process:
    the worker waited for tasks and the exiting run for it, for ever (train under
    ulimit -n, on a busy CI machine). One from anyone else (a scheduler, `kill`) is still
    the main process's to act on: the worker lives on."""
    import multiprocessing
    import subprocess
    import data
    with data.workers_starting():
        worker = multiprocessing.get_context("fork").Process(target=_start_then_wait,
                                                            args=(3,), daemon=True)
        worker.start()
    try:
        worker.terminate()  # held back until it has started
        worker.join(timeout=20)
        assert worker.exitcode == 0, "the worker dropped its parent's SIGTERM"
    finally:
        if worker.is_alive():
            worker.kill()
    with data.workers_starting():
        worker = multiprocessing.get_context("fork").Process(target=_start_then_wait,
                                                            args=(3,), daemon=True)
        worker.start()
    try:
        subprocess.run(["kill", "-TERM", str(worker.pid)], check=True)
        worker.join(timeout=5)
        assert worker.is_alive(), "another's SIGTERM ended a worker that was starting"
    finally:
        worker.kill()


@pytest.mark.slow
def test_loader_workers_still_starting_end_with_a_run_killed_outright(toy_dir):
    """kill -9 (the OOM killer) as a DataLoader's workers started, on a busy machine: torch's
    watchdog, set up after the worker's init, took the process that adopted the orphan for
    the parent to watch, and the workers waited for tasks for ever. Here each worker takes
    2 s to start, and the run is killed as they are forked."""
    import subprocess
    import sys
    from conftest import ROOT, children, running
    script = ("import sys, types; sys.path.insert(0, sys.argv[1])\n"
              "import torch, data\n"
              f"{slow_start('loader_worker_signals', 2)}\n"
              "opt = types.SimpleNamespace(data_path=sys.argv[2], image_size=32, batch_size=8,"
              " num_workers=2)\n"
              "next(data.FolderBatches(opt).batches(torch.arange(64)))\n")
    run = subprocess.Popen([sys.executable, "-c", script, str(ROOT), str(toy_dir)],
                           start_new_session=True)
    workers = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2:
            assert run.poll() is None and time.monotonic() < deadline, "no worker started"
            workers = children(run.pid)
            time.sleep(0.01)
        run.kill()
        run.wait()
        deadline = time.monotonic() + 20
        while any(map(running, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(running, workers)), "the workers outlived the killed run"
    finally:
        for pid in workers:  # (in process groups of their own)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# a pool started under each open-file limit from 8 up, each in a fork of its own: the exit
# status says whether the pool could start (0) or not (1), plus 2 for workers left running
_POOL_UNDER_LIMITS = """import multiprocessing, os, resource, sys
sys.path.insert(0, sys.argv[1])
import data
for limit in range(8, 40):
    child = os.fork()
    if child == 0:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        try:
            with data.start_pool(2) as pool:
                list(pool.imap(abs, range(-4, 0)))
            code = 0
        except OSError:
            code = 1
        left = multiprocessing.active_children()
        for worker in left:
            worker.kill()
            worker.join()
        os._exit(code + 2 * bool(left))
    print(limit, os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), flush=True)
"""


@pytest.mark.slow
def test_a_pool_that_could_not_start_all_its_workers_leaves_none_running():
    """Too few open files (ulimit -n) for a pool's second worker, where the first had started:
    the first waited for tasks for ever, and the run, which joins its workers as it exits,
    for it after its error line (train building its cache, toyfaces; on any machine, at the
    one or two limits between those the pool starts under and those it cannot start under).
    Every limit from 8 up is tried, across both."""
    import subprocess
    import sys
    from conftest import ROOT
    ran = subprocess.run([sys.executable, "-c", _POOL_UNDER_LIMITS, str(ROOT)],
                         capture_output=True, text=True, timeout=120)
    codes = dict(line.split() for line in ran.stdout.splitlines())
    assert ran.returncode == 0 and {"0", "1"} <= set(codes.values()), ran.stdout + ran.stderr
    assert not [limit for limit, code in codes.items() if int(code) >= 2], ran.stdout


@pytest.mark.parametrize("where", ["submit", "result"])
def test_a_ctrl_c_inside_the_pools_own_code_waits_until_it_is_done(where, monkeypatch):
    """A Ctrl-C raised inside the pool's own code, between a lock's taking and the ``with``
    that gives it back, left the lock taken: the pool's thread waited for it for ever, and
    toyfaces with it (1 Ctrl-C in 30 sent as it began). Here the Ctrl-C comes in the middle
    of handing the pool its first jobs, or of waiting for the first result: it is raised once
    that call is over, and nothing after it is handed on."""
    import concurrent.futures
    import data
    import errors
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    calls, done = [], []
    real = {"submit": concurrent.futures.ProcessPoolExecutor.submit,
            "result": concurrent.futures.Future.result}

    def ctrl_c_inside(name):
        def call(self, *args, **kwargs):
            calls.append(name)
            if name == where and calls.count(name) == (2 if name == "submit" else 1):
                os.kill(os.getpid(), signal.SIGINT)  # the pool's first jobs, first result
                sum(range(10000))  # Python code, where the handler runs
            out = real[name](self, *args, **kwargs)
            done.append(name)
            return out
        return call
    monkeypatch.setattr(concurrent.futures.ProcessPoolExecutor, "submit",
                        ctrl_c_inside("submit"))
    monkeypatch.setattr(concurrent.futures.Future, "result", ctrl_c_inside("result"))
    errors.stop_on_signals()
    got = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with data.start_pool(2) as pool:
                for x in pool.imap(abs, range(-256, 0), 64):
                    got.append(x)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert done == calls  # every call the pool began, it finished
    assert got == []


def test_workers_write_each_image_to_its_row_and_rows_after_a_broken_file_move_up(
        tmp_path, toy_dir):
    """The workers write the pixels into the cache themselves (only a word goes back through
    the pool's pipe); the rows after each broken file move up in order, so the cache holds
    exactly the readable images, in the folder's order."""
    from data import _decode
    faces = tmp_path / "set" / "faces"
    faces.mkdir(parents=True)
    toy = sorted((toy_dir / "faces").iterdir())
    for i in range(300):  # over 256 images: decoded by a pool of workers
        target = faces / f"{i:04d}.jpg"
        if i in (0, 5, 100, 101, 299):
            target.write_text("not an image")
        else:
            target.write_bytes(toy[i % len(toy)].read_bytes())
    array, skipped = build_cache(tmp_path / "set", 96, workers=2)
    good = [p for p in list_images(tmp_path / "set") if str(p) not in skipped]
    assert len(skipped) == 5 and len(array) == len(good) == 295
    assert all(np.array_equal(array[k], _decode((p, 96))) for k, p in enumerate(good))


@pytest.mark.slow
def test_a_worker_killed_under_the_pool_is_one_line_not_a_hang(tmp_path, toy_dir):
    """A SIGTERM sent to every process of a job building the cache (a scheduler's), or to a
    decoding worker alone: the pool waited for ever for the dead worker's results, or its
    terminate() for a lock the worker died holding (1 try of 6 hung)."""
    import subprocess
    import sys
    from conftest import ROOT
    script = ("import os, signal, sys; sys.path.insert(0, sys.argv[1]); import data\n"
              "def job(n):\n"
              "    if n == 5:\n        os.kill(os.getpid(), signal.SIGTERM)\n"
              "    return n\n"
              "try:\n"
              "    with data.start_pool(2) as pool:\n"
              "        print(list(pool.imap(job, range(64), 4)))\n"
              "except data.UserError as e:\n"
              "    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(ROOT)], capture_output=True,
                          text=True, timeout=60, start_new_session=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("one of the worker processes ended without a word (killed, "
                                   "or out of memory?): run the command again")


@pytest.mark.slow
def test_two_processes_building_one_cache_at_once_both_get_every_image(tmp_path, toy_dir):
    """Both wrote the same temporary file: one emptied what the other was filling, which then
    saved a cache a quarter black; or one crashed renaming a file the other had moved."""
    import subprocess
    import sys
    from conftest import ROOT
    data = _many_faces(toy_dir, tmp_path / "set", 2000)
    script = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import data; "
              "a, s = data.build_cache(sys.argv[2], 96, workers=2); "
              "print(len(a), int((np.asarray(a).reshape(len(a), -1).max(1) == 0).sum()))")
    runs = [subprocess.Popen([sys.executable, "-c", script, str(ROOT), str(data)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert out.split()[-2:] == ["2000", "0"]  # every image, none of them black
    array, _ = build_cache(data, 96)  # what stays is a whole cache, reused
    assert len(array) == 2000 and not (np.asarray(array).reshape(2000, -1).max(1) == 0).any()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_a_bug_while_decoding_workers_run_ends_the_run_with_its_traceback(tmp_path, toy_dir):
    """Workers that cannot be ended (SIGTERM ignored) held the process at exit for ever after
    any error in training; it must end, its traceback shown, as a bug's should."""
    import subprocess
    import sys
    from conftest import ROOT
    args = ["main.py", "train", "--nogpu", "--vis=False", f"--data-path={toy_dir}",
            "--batch-size=4", "--ngf=8", "--ndf=8", "--cache=False", "--num-workers=2",
            f"--checkpoint-dir={tmp_path / 'c'}", f"--save-path={tmp_path / 'i'}"]
    # a bug planted in the third G step, with the epoch's workers under way
    script = (f"import runpy, sys; sys.path[:0] = [{str(ROOT)!r}]; import steps; "
              f"real, calls = steps.g_step, []\n"
              f"def g_step(*a, **k):\n    calls.append(1)\n"
              f"    if len(calls) == 3: raise ValueError('a planted bug')\n"
              f"    return real(*a, **k)\n"
              f"steps.g_step = g_step; sys.argv = {args!r}; "
              f"runpy.run_path({str(ROOT / 'main.py')!r}, run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    err = stderr_within(proc, 60, "train hung at exit after an error, its workers never ended")
    assert proc.returncode == 1 and "ValueError: a planted bug" in err, err[-2000:]


def test_images_left_out_are_named_gifs_and_folders_that_cannot_be_read(tmp_path, toy_dir,
                                                                        monkeypatch, capsys):
    """A .gif (ImageFolder's kinds leave it out) and a folder without read permission were
    passed over without a word, where the README says every image is used."""
    root = _copy(toy_dir, tmp_path / "data")
    Image.new("RGB", (96, 96)).save(root / "faces" / "extra.gif")
    (root / "locked").mkdir()
    Image.new("RGB", (96, 96)).save(root / "locked" / "a.png")
    scandir = os.scandir

    def refusing(path="."):  # root reads every folder, so the refusal is simulated
        if Path(path) == root / "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path)
    monkeypatch.setattr(os, "scandir", refusing)
    assert len(list_images(root)) == 12
    out = capsys.readouterr().out
    assert f"note: cannot read 1 folder under {root} (e.g. {root / 'locked'}: Permission " \
           f"denied): their images are not used" in out
    assert "note: 1 image file of a kind the book's ImageFolder does not read (.avif, .gif, " \
           ".heic, .jfif, .jpe, .jxl; here faces/extra.gif) is not used: convert them to png " \
           "to use them" in out  # named: the user had to search the folder for it
    # the folder itself unreadable: "no images in it: put the faces in it/faces/" was wrong
    with pytest.raises(UserError, match=f"cannot read {root / 'locked'} \\(Permission denied\\): "
                       "check its permissions"):
        list_images(root / "locked")
    monkeypatch.undo()
    assert len(list_images(root)) == 13 and "cannot read" not in capsys.readouterr().out
    # JPEGs under the names some browsers save them with; and a folder of nothing else, where
    # the note was never printed and the error said to put the faces there
    only = tmp_path / "saved" / "faces"
    only.mkdir(parents=True)
    for name in ("a.jfif", "b.jpe", "c.gif"):
        Image.new("RGB", (96, 96)).save(only / name, format="GIF" if name.endswith("gif")
                                        else "JPEG")
    with pytest.raises(UserError) as caught:
        list_images(tmp_path / "saved")
    assert str(caught.value).startswith(f"no images in {tmp_path / 'saved'} that the book's "
                                        f"ImageFolder reads: 3 image files of a kind")
    assert "; here faces/a.jfif, faces/b.jpe, ...) are not used" in str(caught.value)
    assert "renaming them .jpg is enough" in str(caught.value)


def test_no_home_folder_leaves_the_cache_beside_the_data(tmp_path, toy_dir, monkeypatch):
    """A bare container (no HOME, a uid without a passwd entry): looking up the fallback
    place raised RuntimeError, a traceback for every cached run."""
    import data

    def no_home():
        raise RuntimeError("Could not determine home directory.")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", no_home)
    root = _copy(toy_dir, tmp_path / "data")
    array, _ = build_cache(root, 96, workers=1)
    assert Path(array.filename).parent == tmp_path and array.shape == (12, 3, 96, 96)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as XDG says
    assert [place for place, _ in data.cache_places(root, 96)] == [tmp_path]


def test_a_file_size_limit_at_any_cache_place_is_said_as_such(toy_dir, tmp_path, monkeypatch):
    """The folder beside the data refused for another reason (a shared, read-only data set)
    and the user's cache folder over a file size limit: the build went on to a temporary
    folder, over the same limit, and ended in an OSError traceback naming that folder."""
    import data
    shutil.copytree(toy_dir / "faces", tmp_path / "own" / "faces")  # no cache built yet
    tried = []

    def refused(path, shape):
        tried.append(path)
        code = errno.EROFS if len(tried) == 1 else errno.EFBIG
        raise OSError(code, os.strerror(code), str(path))
    monkeypatch.setattr(data, "_create_npy", refused)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(UserError, match=r"^the decoded-image cache .* is over the largest file "
                                        r"this shell lets a program write \(ulimit -f\)"):
        data.build_cache(tmp_path / "own", workers=1)
    assert len(tried) == 2  # beside the data, then the user's cache: no temporary folder


@pytest.mark.parametrize("cache, workers", [("True", 2), ("False", 0), ("False", 2)])
def test_no_file_left_to_open_is_not_taken_for_broken_images(toy_dir, tmp_path, monkeypatch,
                                                             cache, workers):
    """The decoded-image cache built under a very low ulimit -n: every image that could not
    be opened counted as broken, and the line sent the user to check that the faces were
    real images. It names the limit, and no cache is kept. With --cache=False each image
    was skipped as unreadable, in the main process and in the loader's workers alike."""
    import data

    def no_file_left(path):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), str(path))
    (tmp_path / "own" / "faces").mkdir(parents=True)
    for face in sorted((toy_dir / "faces").iterdir())[:16]:
        shutil.copy(face, tmp_path / "own" / "faces")
    monkeypatch.setattr(data, "open_rgb", no_file_left)
    result = cli("train", f"--data-path={tmp_path / 'own'}", "--nogpu", "--vis=False",
                 "--max-epoch=1", "--ngf=8", "--ndf=8", "--batch-size=8", f"--cache={cache}",
                 f"--num-workers={workers}", f"--save-path={tmp_path / 'I'}",
                 f"--checkpoint-dir={tmp_path / 'C'}")
    assert "could be read" not in result.stderr and "unreadable" not in result.stdout
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: too many open files: ") and "(ulimit -n)" in line, line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".own.")]


@pytest.mark.parametrize("cache", ["True", "False"])
def test_an_image_too_large_for_the_memory_limit_is_not_cached_as_unreadable(toy_dir, tmp_path,
                                                                          monkeypatch, cache):
    """A sound 12000x7000 photo decoded under an address-space limit (ulimit -v): counted as
    unreadable in the cache, and every later run, with the limit raised, skipped it still.
    With --cache=False it was skipped as unreadable, where the cache's run said out of memory
    and to raise the limit."""
    import data
    shutil.copytree(toy_dir / "faces", tmp_path / "own" / "faces")
    real = data.open_rgb

    def too_large(path):
        if Path(path).name == "000003.jpg":
            raise MemoryError
        return real(path)
    monkeypatch.setattr(data, "open_rgb", too_large)
    result = cli("train", f"--data-path={tmp_path / 'own'}", "--nogpu", "--vis=False",
                 "--max-epoch=1", "--ngf=8", "--ndf=8", "--batch-size=8", f"--cache={cache}",
                 "--num-workers=0", f"--save-path={tmp_path / 'I'}",
                 f"--checkpoint-dir={tmp_path / 'C'}")
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: out of memory on this machine: "), line
    assert "unreadable" not in result.stdout + result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".own.")]


def test_a_cache_over_the_file_size_limit_leaves_no_header_behind(toy_dir, tmp_path):
    """A cache over a shell's file size limit (ulimit -f): the .npy header was written
    before the size was refused, so each place tried kept a hidden 128-byte .tmp, and
    --cache=False, the way around the line names, builds no cache that would sweep them."""
    import subprocess
    import sys
    shutil.copytree(toy_dir / "faces", tmp_path / "own" / "faces")  # no cache built yet
    code = ("import resource, signal, sys; from pathlib import Path; import data\n"
            "from errors import UserError\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))\n"
            "try:\n    data.build_cache(Path(sys.argv[1]), 96, workers=1)\n"
            "except UserError as e:\n    print(e)\n")
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "own")], capture_output=True, text=True,
        timeout=120, cwd=ROOT,
        env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1"))
    assert "(ulimit -f)" in result.stdout, result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "own"]
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
