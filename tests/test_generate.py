"""generate and interpolate: the best faces by D, seeds that draw a face again, morphs, API."""
import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import errors
from generate import Faces, grid_size, noise, slerp_path, to_uint8

from conftest import (ROOT, assert_clean_error, cli, drawing_nets, kill_group,
                      stop_in_a_bar)


@pytest.mark.parametrize("num", [10, 20, 70])  # fewer than a batch, more, every face
@torch.no_grad()
def test_batched_search_keeps_the_top_scores(num):
    netg, netd = drawing_nets()
    faces, scores, seeds = Faces(netg, netd, batch_size=16).best(num, 70, first_seed=100)
    every = netd(netg(noise(range(100, 170), 100)))  # all 70 at once
    top = every.topk(num)
    assert faces.shape == (num, 3, 96, 96)
    assert torch.allclose(scores, top.values, atol=1e-5)
    # each kept seed's own score is one of the top ones (equal scores may swap places)
    assert torch.allclose(every[[s - 100 for s in seeds]], top.values, atol=1e-5)
    assert len(set(seeds)) == num
    assert torch.allclose(netd(faces), scores, atol=1e-5)
    assert torch.allclose(faces, netg(noise(seeds, 100)), atol=1e-6)  # each its seed's face


@torch.no_grad()
def test_the_cpu_draws_and_scores_at_most_cpu_pass_faces_a_pass():
    """G and D ran on --batch-size faces at once, and D's scores of --seeds on every face at
    once: about 1 MB a face at the book's widths, so --batch-size=8192, or 10,000 --seeds
    ranked by D, asked for some 8 GB and ended in the OOM killer. On the CPU a pass is at
    most CPU_PASS faces, and the faces and scores are those of small batches."""
    from generate import CPU_PASS
    netg, netd = drawing_nets()
    passes = []
    for net in (netg, netd):
        net.register_forward_hook(lambda net, args, out: passes.append(len(args[0])))
    big, small = Faces(netg, netd, batch_size=8192), Faces(netg, netd, batch_size=16)
    seeds = range(7, 7 + 2 * CPU_PASS + 5)  # two full passes and a short one
    drawn = big.tensors(seeds)
    scored = big.scores(drawn)
    best = big.best(5, len(seeds), first_seed=7)
    assert passes and max(passes) == CPU_PASS
    assert torch.equal(drawn, small.tensors(seeds))
    # D's scores move in the 7th place with the size of its pass, padded or not
    assert torch.allclose(scored, small.scores(drawn), rtol=0, atol=1e-6)
    assert best[2] == small.best(5, len(seeds), first_seed=7)[2]
    assert torch.equal(best[0], drawn[[s - 7 for s in best[2]]])
    # a seed's score is the same alone, among others, and where best ranked it
    assert torch.allclose(scored[[s - 7 for s in best[2]]], best[1], rtol=0, atol=1e-6)
    assert torch.allclose(small.scores(drawn[3:4]), scored[3:4], rtol=0, atol=1e-6)
    assert Faces(netg, netd, batch_size=8192, device="cpu").pass_size == CPU_PASS


def test_a_large_batch_size_on_the_cpu_says_it_draws_fewer_a_pass(tmp_path):
    g, d = _save_nets(tmp_path)
    grids = []
    for batch in (8192, 16):
        r = cli("generate", "--nogpu", "--seed=3", f"--netg-path={g}", f"--netd-path={d}",
                f"--gen-img={tmp_path / f'{batch}.png'}", "--gen-num=8",
                "--gen-search-num=100", f"--batch-size={batch}")
        assert r.returncode == 0, r.stderr
        grids.append(_pixels(tmp_path / f"{batch}.png"))
        said = [line for line in r.stdout.splitlines() if "--batch-size" in line]
        assert said == ([] if batch == 16 else
                        ["note: --batch-size=8192: on the CPU faces are drawn 64 at a time, "
                         "as fast, and larger passes take about 1 MB a face more memory (the "
                         "same faces either way)"])
    assert np.array_equal(*grids)


@torch.no_grad()
def test_tqdm_itself_shows_the_ranking(capsys):
    """best's docstring names tqdm as its progress bar, and best(progress=tqdm) failed deep in
    tqdm: the count of batches reached it as its description."""
    from tqdm import tqdm
    faces = Faces(*drawing_nets(), batch_size=16)
    shown = faces.best(10, 70, first_seed=3, progress=tqdm)
    assert "5/5" in capsys.readouterr().err  # 70 faces in 5 batches
    plain = faces.best(10, 70, first_seed=3)
    assert torch.equal(shown[0], plain[0]) and shown[2] == plain[2]


def test_a_stop_while_ranking_closes_the_bar_before_it_leaves():
    """The stop's line must be the last on screen: a ranking bar a Ctrl-C caught before its
    own clean-up was closed only when Python freed it, and drew itself again under it."""
    faces = Faces(*drawing_nets(), batch_size=16)
    assert stop_in_a_bar(lambda bar: faces.best(10, 70, progress=bar)) == ["closed", "left"]


@torch.no_grad()
def test_without_d_the_first_seeds_are_kept():
    netg, _ = drawing_nets()
    faces, _, seeds = Faces(netg, None, batch_size=4).best(5, 50, first_seed=3)
    assert seeds == [3, 4, 5, 6, 7]
    assert torch.allclose(faces, netg(noise(seeds, 100)), atol=1e-6)


def _save_nets(tmp_path):
    netg, netd = drawing_nets()
    torch.save(netg.state_dict(), tmp_path / "g.pth")
    torch.save(netd.state_dict(), tmp_path / "d.pth")
    return tmp_path / "g.pth", tmp_path / "d.pth"


def test_seed_repeats_the_grid(tmp_path):
    """The same --seed draws the same grid, and a seed whose candidates are others (seeds
    7..46 against 47..86) another grid: a --seed taken and then ignored repeated it too."""
    g, d = _save_nets(tmp_path)
    outs = []
    for seed, name in ((7, "a.png"), (7, "b.png"), (47, "c.png")):
        r = cli("generate", "--nogpu", f"--seed={seed}", f"--netg-path={g}", f"--netd-path={d}",
                f"--gen-img={tmp_path / name}", "--gen-num=8", "--gen-search-num=40",
                "--batch-size=16")
        assert r.returncode == 0, r.stderr
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1] and outs[2] != outs[0]


def test_a_grid_named_without_a_suffix_is_a_png_and_said_to_be(tmp_path):
    """--gen-img=result wrote a PNG named result without a word: a viewer or a web page
    going by the name may not open it."""
    g, _ = _save_nets(tmp_path)
    r = cli("generate", "--nogpu", f"--netg-path={g}", f"--gen-img={tmp_path / 'result'}",
            "--gen-num=8", "--seed=1")
    assert r.returncode == 0, r.stderr
    assert f"wrote {tmp_path / 'result'} (a PNG: the name has no suffix): 8 faces" in r.stdout
    assert Image.open(tmp_path / "result").format == "PNG"
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--steps=3", "--seeds=1,2",
            f"--out={tmp_path / 'morph'}")
    assert r.returncode == 0, r.stderr
    assert f"wrote {tmp_path / 'morph'} (a PNG: the name has no suffix): 1 row" in r.stdout
    r = cli("generate", "--nogpu", f"--netg-path={g}", f"--gen-img={tmp_path / 'named.png'}",
            "--gen-num=8", "--seed=1")
    assert f"wrote {tmp_path / 'named.png'}: 8 faces" in r.stdout and "no suffix" not in r.stdout


def test_widths_come_from_the_files_and_a_differing_flag_is_named(tmp_path, toy_dir):
    g, d = _save_nets(tmp_path)  # width 8: neither the book's 64 nor anything given
    common = ("generate", "--nogpu", f"--netg-path={g}", f"--netd-path={d}", "--gen-num=4",
              "--gen-search-num=8", f"--gen-img={tmp_path / 'grid.png'}", "--seed=1")
    quiet = cli(*common)
    assert quiet.returncode == 0, quiet.stderr
    assert "using the file" not in quiet.stdout  # nothing was asked that the file overrides
    told = cli(*common, "--ngf=64", "--ndf=8")  # the book's command line, one width wrong
    assert told.returncode == 0, told.stderr
    assert f"note: {g}: using the file's ngf=8, not --ngf=64" in told.stdout
    assert "ndf" not in told.stdout and "nz" not in told.stdout
    assert _pixels(tmp_path / "grid.png").shape[:2] == (98 + 2, 4 * 98 + 2)  # 4 faces drawn
    # interpolate and evaluate read them from G's file too, and say so the same way
    for command, *flags in (("interpolate", "--seeds=1,2", f"--out={tmp_path / 'i.png'}"),
                            ("evaluate", "--metrics=swd", f"--data-path={toy_dir}", "--num=8",
                             f"--out={tmp_path / 'm.json'}")):
        told = cli(command, "--nogpu", f"--netg-path={g}", "--ngf=64", *flags)
        assert told.returncode == 0, told.stderr
        assert f"note: {g}: using the file's ngf=8, not --ngf=64" in told.stdout, command
    # --help says they are taken from the files, not that they go unused (explore's said
    # unused, and its page noted a width that differs as the others do)
    for command in ("generate", "explore"):
        page = cli(command, "--help").stdout
        assert not [line for line in page.splitlines() if line.startswith("  --ngf")]
        taken = page.split("Taken from the weight files")[1].split("\n\n")[0]
        assert "--nz, --ngf, --ndf" in taken, command
        assert "--ngf" not in page.split("unused here:")[1], command


def test_a_rerun_stopped_half_way_leaves_only_its_faces_and_their_manifest(tmp_path,
                                                                          monkeypatch):
    """The same --out-dir command again replaces the faces one by one: stopped half way, the
    old manifest named faces of which some were already the new run's, and then no manifest
    was left at all. Now the faces it wrote stay, listed, and the earlier ones go; a
    temporary file that a kill -9 left goes with the rerun too (it stayed for good)."""
    import checkpoint
    import generate
    g, _ = _save_nets(tmp_path)
    args = ("generate", "--nogpu", f"--netg-path={g}", "--seeds=3,4,5",
            f"--out-dir={tmp_path / 'out'}", f"--gen-img={tmp_path / 'grid.png'}")
    assert cli(*args).returncode == 0
    assert (tmp_path / "out" / "manifest.csv").is_file()
    netg, _ = drawing_nets()
    faces = netg(noise([3, 4, 5], 100)).detach()
    real_save, written = checkpoint.save_bytes, []

    def stopped_after_one(data, path):
        if written:
            raise KeyboardInterrupt
        written.append(path)
        real_save(data, path)
    monkeypatch.setattr(checkpoint, "save_bytes", stopped_after_one)
    with pytest.raises(KeyboardInterrupt):
        generate._write_faces(tmp_path / "out", faces, torch.zeros(3), [3, 4, 5], 2, "nearest")
    assert len(written) == 1
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"manifest.csv",
                                                               "face_000_seed3.png"}
    with open(tmp_path / "out" / "manifest.csv") as f:
        assert [row["file"] for row in csv.DictReader(f)] == ["face_000_seed3.png"]
    monkeypatch.undo()
    (tmp_path / "out" / ".face_002_seed5.png.a1b2c3d4.tmp").write_bytes(b"\x89PNG")  # kill -9
    (tmp_path / "out" / ".manifest.csv.e5f6a7b8.tmp").write_text("file,rank\n")
    assert cli(*args).returncode == 0  # the same command again repairs the folder
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "manifest.csv", "face_000_seed3.png", "face_001_seed4.png", "face_002_seed5.png"}
    with open(tmp_path / "out" / "manifest.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_a_second_generate_into_a_folder_being_written_is_one_line(tmp_path, monkeypatch):
    """Two generates into one --out-dir at once (two terminals): the second removed the
    temporary file of the face the first was writing, as a kill -9's, and the first ended in
    a traceback; with other seeds, both sets stayed under a manifest listing one. Here the
    second starts as the first writes its first face: it is refused, the first goes on."""
    import checkpoint
    g, _ = _save_nets(tmp_path)
    out = tmp_path / "out"

    def run(seeds):
        return cli("generate", "--nogpu", f"--netg-path={g}", f"--seeds={seeds}",
                   f"--out-dir={out}", f"--gen-img={tmp_path / f'{seeds}.png'}")
    real_save, second = checkpoint.save_bytes, []

    def another_meanwhile(data, path):
        if Path(path).name.startswith("face_") and not second:
            second.append(None)  # first: its own faces, where it writes them, start no third
            second[0] = run("7,8")
        real_save(data, path)
    monkeypatch.setattr(checkpoint, "save_bytes", another_meanwhile)
    first = run("3,4,5")
    assert first.returncode == 0, first.stderr
    assert_clean_error(second[0], f"--out-dir: another run is writing into {out} (process "
                                  f"{os.getpid()}: {errors.pasted(f'generate --out-dir={out}')}): "
                                  f"wait for it to end, or pick another folder")
    assert not (tmp_path / "7,8.png").exists()  # nothing of its own written either
    with open(out / "manifest.csv") as f:
        listed = [row["file"] for row in csv.DictReader(f)]
    assert sorted(p.name for p in out.iterdir()) == sorted(listed + ["manifest.csv"])
    assert listed == ["face_000_seed3.png", "face_001_seed4.png", "face_002_seed5.png"]


def test_a_grid_refused_leaves_no_empty_out_dir(tmp_path, monkeypatch):
    """generate makes --out-dir before the grid is written (to hold it): a grid its disk
    refused left that folder behind, empty, where no trace of the run stayed before."""
    import errno

    import checkpoint
    g, _ = _save_nets(tmp_path)

    def full(data, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(checkpoint, "save_bytes", full)
    result = cli("generate", "--nogpu", f"--netg-path={g}", "--seeds=3,4",
                 f"--out-dir={tmp_path / 'new' / 'faces'}", f"--gen-img={tmp_path / 'x.png'}")
    assert_clean_error(result, "x.png")
    assert not (tmp_path / "new").exists()


def test_what_a_kill_cut_short_beside_an_output_goes_with_the_next_write(tmp_path):
    """A kill -9 while the grid was written (its fsync, say) left its temporary file,
    .result.png.XXXXXXXX.tmp, hidden beside it for good: no rerun removed it. One that a
    process writing it now holds locked (a second generate into the same file) stays."""
    import fcntl
    g, _ = _save_nets(tmp_path)
    stale = {name: tmp_path / f".{name}.k9cutoff.tmp" for name in ("r.png", "i.png", "i.gif")}
    for path in stale.values():
        path.write_bytes(b"\x89PNG half")
    held = tmp_path / ".r.png.inflight.tmp"
    held.write_bytes(b"\x89PNG being written")
    with open(held, "rb") as writing:
        fcntl.flock(writing, fcntl.LOCK_EX)
        assert cli("generate", "--nogpu", f"--netg-path={g}", "--seeds=3,4",
                   f"--gen-img={tmp_path / 'r.png'}").returncode == 0
        assert cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=3,4", "--steps=3",
                   f"--out={tmp_path / 'i.png'}", f"--gif={tmp_path / 'i.gif'}").returncode == 0
    assert [name for name, path in stale.items() if path.exists()] == []
    assert held.exists()


def test_a_full_disk_in_a_rerun_says_what_is_left_of_both_sets(tmp_path, monkeypatch):
    """A rerun over an earlier set that met a full disk said "the files written before it are
    intact", where the earlier set's faces not yet replaced, and its manifest, were gone."""
    import checkpoint
    from errors import DiskFull
    g, _ = _save_nets(tmp_path)
    args = ("generate", "--nogpu", f"--netg-path={g}", "--seeds=3,4,5",
            f"--out-dir={tmp_path / 'out'}", f"--gen-img={tmp_path / 'grid.png'}")
    assert cli(*args).returncode == 0
    real_save, written = checkpoint.save_bytes, []

    def full_after_one(data, path):
        if Path(path).suffix == ".png" and Path(path).parent.name in ("out", "new"):
            if written:
                raise DiskFull(path)
            written.append(path)
        real_save(data, path)
    monkeypatch.setattr(checkpoint, "save_bytes", full_after_one)
    result = cli(*args)
    assert result.returncode == 2
    out = tmp_path / "out"
    assert result.stderr.strip().splitlines() == [
        f"error: disk full while writing {out / 'face_001_seed4.png'}: 1 of the 3 faces is "
        f"written in {out}, listed in its manifest.csv, and the earlier set there is gone (its "
        f"faces not yet replaced and its manifest); free some space, then run the command "
        f"again to write them all"]
    assert {p.name for p in out.iterdir()} == {"manifest.csv", "face_000_seed3.png"}
    # a first run into a new folder: no earlier set to speak of
    written.clear()
    first = cli(*args[:-2], f"--out-dir={tmp_path / 'new'}", f"--gen-img={tmp_path / 'g.png'}")
    assert first.returncode == 2 and first.stderr.strip().splitlines() == [
        f"error: disk full while writing {tmp_path / 'new' / 'face_001_seed4.png'}: 1 of the 3 "
        f"faces is written in {tmp_path / 'new'}, listed in its manifest.csv; free some "
        f"space, then run the command again to write them all"]
    # the disk full at the manifest itself: the faces are there, no manifest lists them (it
    # was written again on the full disk, and said the files before it were intact)
    monkeypatch.undo()

    def full_at_the_manifest(text, path):
        raise DiskFull(path)
    monkeypatch.setattr(checkpoint, "save_text", full_at_the_manifest)
    last = cli(*args)
    assert last.returncode == 2 and last.stderr.strip().splitlines() == [
        f"error: disk full while writing {out / 'manifest.csv'}: 3 of the 3 faces are written "
        f"in {out}, but not their manifest.csv; free some space, then run the command again "
        f"to write them all"]
    assert {p.name for p in out.iterdir()} == {
        "face_000_seed3.png", "face_001_seed4.png", "face_002_seed5.png"}


def test_more_faces_than_d_ranks_say_what_to_pass(tmp_path):
    """--gen-num over --gen-search-num said only that it cannot exceed it, not what to pass."""
    g, d = _save_nets(tmp_path)
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={g}", f"--netd-path={d}",
                           "--gen-num=80", "--gen-search-num=64",
                           f"--gen-img={tmp_path / 'grid.png'}"),
                       "--gen-num (80) cannot exceed --gen-search-num (64): D picks the best of "
                       "those; raise --gen-search-num to at least 80, or lower --gen-num")
    assert not (tmp_path / "grid.png").exists()


def test_a_path_fault_at_a_face_is_one_line_with_what_to_do(tmp_path, monkeypatch):
    """A face the system refuses for its path alone (a name too long for its file system, a
    loop of links made as it was written) had a line that began "error: : cannot use ...":
    its reason was cut where no remedy followed a "; "."""
    import errno
    import checkpoint
    g, _ = _save_nets(tmp_path)
    out = tmp_path / "out"
    real = checkpoint.save_bytes

    def refused(data, path):
        if Path(path).name == "face_001_seed4.png":
            raise OSError(errno.ENAMETOOLONG, "File name too long", str(path))
        return real(data, path)
    monkeypatch.setattr(checkpoint, "save_bytes", refused)
    result = cli("generate", "--nogpu", f"--netg-path={g}", "--seeds=3,4,5", f"--out-dir={out}",
                 f"--gen-img={tmp_path / 'grid.png'}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: cannot use {out / 'face_001_seed4.png'}: "
        f"{errors.PATH_FAULTS[errno.ENAMETOOLONG]}: 1 of the 3 faces is written in {out}, "
        f"listed in its manifest.csv; choose another --out-dir, then run the command again to "
        f"write them all"]


def test_a_folder_where_a_face_goes_keeps_the_faces_before_it_listed(tmp_path):
    """A folder named as one of the faces: the clean-up failed on that folder, the faces
    written before it were left without a manifest.csv, and the line did not say how many
    were written, as a full disk's does."""
    g, _ = _save_nets(tmp_path)
    out = tmp_path / "out"
    (out / "face_001_seed4.png").mkdir(parents=True)
    args = ("generate", "--nogpu", f"--netg-path={g}", "--seeds=3,4,5", f"--out-dir={out}",
            f"--gen-img={tmp_path / 'grid.png'}")
    result = cli(*args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write or read {out / 'face_001_seed4.png'}: Is a directory: 1 of the 3 "
        f"faces is written in {out}, listed in its manifest.csv; move that folder away, then "
        f"run the command again to write them all"]
    assert {p.name for p in out.iterdir()} == {"manifest.csv", "face_000_seed3.png",
                                               "face_001_seed4.png"}
    with open(out / "manifest.csv") as f:
        assert [row["file"] for row in csv.DictReader(f)] == ["face_000_seed3.png"]
    (out / "face_001_seed4.png").rmdir()  # as it says
    assert cli(*args).returncode == 0
    with open(out / "manifest.csv") as f:
        assert [row["file"] for row in csv.DictReader(f)] == [
            "face_000_seed3.png", "face_001_seed4.png", "face_002_seed5.png"]


def test_a_stop_just_after_a_face_is_in_place_keeps_it_listed(tmp_path, monkeypatch):
    """A Ctrl-C that came between a face's rename into place and the note of its row (a
    busy machine's CI hit it) removed that face, and with the first face no manifest was left
    though a face had been seen written. The face in place now stays, in the manifest."""
    import signal
    import checkpoint
    import generate
    netg, _ = drawing_nets()
    faces = netg(noise([3, 4, 5], 100)).detach()
    real_save, written = checkpoint.save_bytes, []

    def stopped_once_in_place(data, path):
        real_save(data, path)
        written.append(path.name)
        if len(written) == 2:
            signal.raise_signal(signal.SIGINT)  # Python acts on it at its next step
    monkeypatch.setattr(checkpoint, "save_bytes", stopped_once_in_place)
    kept = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            generate._write_faces(tmp_path / "out", faces, torch.zeros(3), [3, 4, 5], 2,
                                  "nearest")
    finally:
        signal.signal(signal.SIGINT, kept)
    assert written == ["face_000_seed3.png", "face_001_seed4.png"]  # stopped after the second
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "manifest.csv", "face_000_seed3.png", "face_001_seed4.png"}
    with open(tmp_path / "out" / "manifest.csv") as f:
        assert [row["file"] for row in csv.DictReader(f)] == written


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_stop_while_faces_are_written_leaves_a_manifest_of_them(tmp_path, signame):
    """Ctrl-C while --out-dir's faces were written left those written so far and no
    manifest.csv: faces without their seeds and scores."""
    import os
    import signal
    import subprocess
    import sys
    import time
    g, _ = _save_nets(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "generate", "--nogpu",
                             f"--netg-path={g}", "--gen-num=1000", "--gen-search-num=1000",
                             "--seed=0", "--scale=4", f"--out-dir={out}",
                             f"--gen-img={tmp_path / 'grid.png'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("face_*.png")):  # the first faces are written
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no face written in 120 s"
            time.sleep(0.05)
        os.killpg(proc.pid, getattr(signal, signame))  # as a terminal or a scheduler sends it
        _, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[signame], err
    assert "Traceback" not in err, err
    with open(out / "manifest.csv") as f:
        listed = [row["file"] for row in csv.DictReader(f)]
    assert 0 < len(listed) < 1000  # stopped half way
    # the line says what is kept and how to write the rest (it said only "interrupted")
    stop = {"SIGINT": "interrupted", "SIGTERM": "terminated"}[signame]
    assert err.strip().splitlines()[-1] == (
        f"{stop}: {len(listed)} of the 1000 faces {'is' if len(listed) == 1 else 'are'} "
        f"written in {out}, listed in its manifest.csv; the same command again writes them all")
    assert sorted(p.name for p in out.glob("face_*.png")) == listed  # all there, all listed
    assert listed == [f"face_{rank:03d}_seed{rank}.png" for rank in range(len(listed))]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_grid_named_like_one_of_the_faces_is_refused(tmp_path):
    """--gen-img=od/face_000_seed1.png with --out-dir=od: the face was written over the grid,
    and generate said it had written the grid."""
    g, _ = _save_nets(tmp_path)
    od = tmp_path / "od"
    r = cli("generate", "--nogpu", f"--netg-path={g}", "--seed=1", "--gen-num=4",
            f"--out-dir={od}", f"--gen-img={od / 'face_000_seed1.png'}")
    assert_clean_error(r, "--gen-img", "--out-dir", str(od / "grid.png"))
    assert not od.exists()
    r = cli("generate", "--nogpu", f"--netg-path={g}", "--seed=1", "--gen-num=4",
            f"--out-dir={od}", f"--gen-img={od / 'face_002_seed9.png'}")  # before any drawing
    assert_clean_error(r, "--gen-img", "named as --out-dir's faces are")
    r = cli("generate", "--nogpu", f"--netg-path={g}", "--seed=1", "--gen-num=4",
            f"--out-dir={od}", f"--gen-img={od / 'grid.png'}")  # another name there is fine
    assert r.returncode == 0, r.stderr
    assert Image.open(od / "grid.png").size == grid_size(4)


def test_a_grid_or_image_of_the_users_own_in_out_dir_is_not_taken_for_earlier_faces(tmp_path):
    """face_*.png was taken for an earlier generate's faces: the same command again, its grid
    named face_grid.png in --out-dir, was refused, and so was a folder with face_mine.png."""
    g, _ = _save_nets(tmp_path)
    od = tmp_path / "od"
    for _ in range(2):  # the same command again writes over its own faces
        r = cli("generate", "--nogpu", f"--netg-path={g}", "--seed=1", "--gen-num=4",
                f"--out-dir={od}", f"--gen-img={od / 'face_grid.png'}")
        assert r.returncode == 0, r.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    Image.new("RGB", (96, 96)).save(mine / "face_mine.png")
    r = cli("generate", "--nogpu", f"--netg-path={g}", "--seed=1", "--gen-num=4",
            f"--out-dir={mine}", f"--gen-img={tmp_path / 'g.png'}")
    assert r.returncode == 0, r.stderr
    assert len(list(mine.glob("face_*.png"))) == 5


def test_manifest_seeds_draw_the_same_faces_again(tmp_path, monkeypatch):
    g, d = _save_nets(tmp_path)
    first = tmp_path / "first"
    r = cli("generate", "--nogpu", f"--netg-path={g}", f"--netd-path={d}", "--gen-num=6",
            "--gen-search-num=50", "--batch-size=16", f"--out-dir={first}",
            f"--gen-img={tmp_path / 'grid.png'}", "--seed=1000")
    assert r.returncode == 0, r.stderr
    with open(first / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["rank"]) for row in rows] == list(range(6))
    # the generator that draws these seeds' faces, found from any folder
    assert {row["netg"] for row in rows} == {str(g.resolve())}
    # D's best six of seeds 1000..1049, best first, scored here on their own, one by one
    netg, netd = drawing_nets()
    with torch.no_grad():
        own = {s: float(netd(netg(noise([s], 100)))) for s in range(1000, 1050)}
    best = sorted(own, key=own.get, reverse=True)[:6]
    assert [int(row["seed"]) for row in rows] == best
    assert [float(row["d_score"]) for row in rows] == \
        pytest.approx([own[s] for s in best], abs=1e-5)
    assert all(_pixels(first / row["file"]).shape == (96, 96, 3) for row in rows)

    again = tmp_path / "again"
    seeds = ",".join(row["seed"] for row in rows)
    r = cli("generate", "--nogpu", f"--netg-path={g}", f"--seeds={seeds}", "--scale=3",
            f"--out-dir={again}", f"--gen-img={tmp_path / 'again.png'}")
    assert r.returncode == 0, r.stderr
    assert "note:" not in r.stdout
    # the first command's choosing flags, kept while --seeds was added: said to play no part
    r = cli("generate", "--nogpu", f"--netg-path={g}", f"--seeds={seeds}", "--gen-num=10",
            "--gen-search-num=40", "--seed=5", f"--gen-img={tmp_path / 'again2.png'}")
    assert r.returncode == 0, r.stderr
    assert ("note: --gen-num, --gen-search-num and --seed are not used with --seeds: it draws "
            "the 6 faces of the seeds it names, in that order") in r.stdout
    # with a D, the seeds keep the order typed and the rank column is D's among them (it was
    # the order typed, so a list given worst first read as best first)
    worst_first = ",".join(row["seed"] for row in rows[::-1])
    r = cli("generate", "--nogpu", f"--netg-path={g}", f"--netd-path={d}",
            f"--seeds={worst_first}", f"--out-dir={tmp_path / 'r'}",
            f"--gen-img={tmp_path / 'r.png'}")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "r" / "manifest.csv") as f:
        typed = list(csv.DictReader(f))
    assert [row["seed"] for row in typed] == [row["seed"] for row in rows[::-1]]
    assert [int(row["rank"]) for row in typed] == [5, 4, 3, 2, 1, 0]
    assert typed[0]["file"] == f"face_000_seed{rows[-1]['seed']}.png"
    with open(again / "manifest.csv") as f:
        redrawn = list(csv.DictReader(f))
    for old, new in zip(rows, redrawn):
        assert old["seed"] == new["seed"]
        big = _pixels(again / new["file"])
        assert big.shape == (288, 288, 3)
        assert np.array_equal(big[::3, ::3], _pixels(first / old["file"]))  # same face, 3x
    # --resample=lanczos: the same faces scaled up smoothly (PIL's Lanczos), not in blocks
    r = cli("generate", "--nogpu", f"--netg-path={g}", f"--seeds={seeds}", "--scale=3",
            "--resample=lanczos", f"--out-dir={tmp_path / 'smooth'}",
            f"--gen-img={tmp_path / 'smooth.png'}")
    assert r.returncode == 0, r.stderr
    for old in rows:
        small = Image.open(first / old["file"]).convert("RGB")
        assert np.array_equal(_pixels(tmp_path / "smooth" / old["file"]),
                              np.asarray(small.resize((288, 288), Image.LANCZOS)))
    # a generator named from the folder the command ran in is written down in full: the
    # manifest's seeds draw again from anywhere
    monkeypatch.chdir(tmp_path)
    r = cli("generate", "--nogpu", f"--netg-path={g.name}", "--seeds=5", "--out-dir=here",
            "--gen-img=here.png")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "here" / "manifest.csv") as f:
        assert next(csv.DictReader(f))["netg"] == str(g.resolve())

    # the same command again replaces its own files: the folder holds one set, as before
    before = {p.name: p.read_bytes() for p in again.iterdir()}
    (again / rows[0]["file"].replace(".png", ".tmp")).write_bytes(b"")  # not a face: stays
    r = cli("generate", "--nogpu", f"--netg-path={g}", f"--seeds={seeds}", "--scale=3",
            f"--out-dir={again}", f"--gen-img={tmp_path / 'again.png'}")
    assert r.returncode == 0, r.stderr
    (again / rows[0]["file"].replace(".png", ".tmp")).unlink()
    assert {p.name: p.read_bytes() for p in again.iterdir()} == before

    # other faces would mix with the earlier ones, out of step with the manifest (an
    # interrupted rerun left both sets): refused, with other seeds after drawing them but
    # before writing anything, with fresh random seeds before any work
    for other in (["--seeds=7,8"], ["--gen-num=4", "--gen-search-num=8"]):
        assert_clean_error(cli("generate", "--nogpu", f"--netg-path={g}", *other,
                               f"--out-dir={again}",
                               f"--gen-img={tmp_path / 'more.png'}"),
                           "--out-dir", "earlier", "would not replace", "e.g. face_",
                           "face_*.png", "manifest.csv")
        assert {p.name: p.read_bytes() for p in again.iterdir()} == before
        assert not (tmp_path / "more.png").exists()


TOO_LARGE = [  # a grid a format cannot hold: the command's flags, what its error names
    pytest.param(("generate", "--gen-num=1400", "--gen-search-num=1400", "--gen-img=big.webp"),
                 ("a grid of 1400 faces is 786x17152 pixels",
                  "a .webp image takes at most 16383 pixels",
                  "at most 1336 faces (a lower --gen-num)", ".png"), id="webp"),
    pytest.param(("generate", "--gen-num=5400", "--gen-search-num=5400", "--gen-img=big.jpg"),
                 ("786x66152 pixels", "a .jpg image takes at most 65500 pixels",
                  "at most 5344 faces"), id="jpg"),
    pytest.param(("generate", "--gen-num=5400", "--gen-search-num=5400", "--gen-img=big.gif"),
                 ("786x66152 pixels", "a .gif image takes at most 65535 pixels",
                  "at most 5344 faces"), id="gif"),
    pytest.param(("generate", "--gen-num=150000", "--gen-search-num=150000",
                  "--gen-img=big.bmp"),
                 ("786x1837502 pixels", "a .bmp image takes at most 4 GiB",
                  "at most 148560 faces"), id="bmp"),
    pytest.param(("generate", "--gen-num=150000", "--gen-search-num=150000",
                  "--gen-img=big.tif"),
                 ("a .tif image takes at most 4 GiB", "at most 148688 faces"), id="tif"),
    pytest.param(("generate", f"--seeds={','.join(map(str, range(1400)))}",
                  "--gen-img=big.webp"),
                 ("a grid of 1400 faces", "at most 1336 faces (fewer --seeds)"),
                 id="seeds-webp"),
    pytest.param(("interpolate", "--seeds=1,2", "--steps=200", "--out=big.webp"),
                 ("a grid of 1 row of 200 faces is 19602x100 pixels", "16383 pixels",
                  "lower --steps (to 167 at most)", ".png"), id="interpolate-webp"),
    pytest.param(("interpolate", f"--seeds={','.join(map(str, range(701)))}", "--steps=2",
                  "--out=big.jpg"),
                 ("a grid of 700 rows of 2 faces is 198x68602 pixels", "65500 pixels",
                  "give fewer --seeds (669 at most)"), id="interpolate-jpg"),
]


@pytest.mark.parametrize("flags, said", TOO_LARGE)
def test_a_grid_too_large_for_its_format_is_refused_before_any_drawing(tmp_path, monkeypatch,
                                                                       flags, said):
    """Such a grid ended in a traceback from PIL (WebP's 16383 pixels a side, JPEG's 65500,
    GIF's 65535, BMP's 4 GiB) as it was saved, after all the drawing and ranking."""
    import generate

    def loaded(*args, **kwargs):
        raise AssertionError("the weights were loaded before the size was checked")
    monkeypatch.setattr(generate.Faces, "load", loaded)
    for name in ("g.pth", "d.pth"):  # never read
        (tmp_path / name).write_bytes(b"")
    command, *rest = flags
    nets = [f"--netg-path={tmp_path / 'g.pth'}"] + (
        [f"--netd-path={tmp_path / 'd.pth'}", f"--out-dir={tmp_path / 'faces'}"]
        if command == "generate" else [])
    r = cli(command, "--nogpu", *nets, *[f.replace("=big", f"={tmp_path}/big") for f in rest])
    assert_clean_error(r, "--gen-img: " if command == "generate" else "--out: ", *said)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pth", "g.pth"]  # nothing written


def test_the_limit_is_the_saved_grids_size(tmp_path):
    """The widest morph a .webp takes is written; one face more a row is refused."""
    g, _ = _save_nets(tmp_path)
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=5,9", "--steps=167",
            f"--out={tmp_path / 'wide.webp'}")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "wide.webp").size == (16368, 100) == grid_size(167, 167)
    assert_clean_error(cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=5,9",
                           "--steps=168", f"--out={tmp_path / 'wider.webp'}"), "16466x100")
    # generate's grids, 8 a row: as save_grid lays them out, a single face without gaps
    import checkpoint
    for count in (1, 2, 8, 9, 17):
        checkpoint.save_grid(torch.zeros(count, 3, 96, 96), tmp_path / "grid.png")
        assert Image.open(tmp_path / "grid.png").size == grid_size(count)


def test_interpolation_ends_on_the_seeds_faces_and_the_gif_loops(tmp_path):
    g, _ = _save_nets(tmp_path)
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=5,9,13", "--steps=6",
            f"--out={tmp_path / 'interp.png'}", f"--gif={tmp_path / 'interp.gif'}")
    assert r.returncode == 0, r.stderr
    grid = _pixels(tmp_path / "interp.png")
    assert grid.shape == (2 * 98 + 2, 6 * 98 + 2, 3)  # a row per pair, 6 faces a row

    def cell(row, col):
        return grid[2 + row * 98:2 + row * 98 + 96, 2 + col * 98:2 + col * 98 + 96]

    r = cli("generate", "--nogpu", f"--netg-path={g}", "--seeds=5,9,13",
            f"--out-dir={tmp_path / 'ends'}", f"--gen-img={tmp_path / 'ends.png'}")
    assert r.returncode == 0, r.stderr
    ends = sorted((tmp_path / "ends").glob("face_*.png"))
    assert np.array_equal(cell(0, 0), _pixels(ends[0]))   # seed 5
    assert np.array_equal(cell(0, 5), _pixels(ends[1]))   # seed 9
    assert np.array_equal(cell(1, 0), _pixels(ends[1]))
    assert np.array_equal(cell(1, 5), _pixels(ends[2]))   # seed 13
    assert not np.array_equal(cell(0, 2), cell(0, 0))     # the middle is something else

    gif = Image.open(tmp_path / "interp.gif")
    assert gif.n_frames == 3 * 5  # 5 new frames per leg, 3 legs: 5 -> 9 -> 13 -> 5
    assert gif.info.get("loop") == 0
    # its frames are the grid's rows in order (give or take the GIF's 256 colours), then
    # 13's face on the leg back: a leg drawn backwards had the right count and first frame
    def frame(k):
        gif.seek(k)
        return np.asarray(gif.convert("RGB"), dtype=np.int16)
    faces = [cell(0, c) for c in range(6)] + [cell(1, c) for c in range(1, 6)]  # 9's once
    for k in range(11):
        far = [np.abs(frame(k) - face.astype(np.int16)).mean() for face in faces]
        assert far.index(min(far)) == k and min(far) < 3, (k, far)
    # --scale=2 frames are each face twice the side, every pixel doubled (--resample's
    # nearest, the default), and lanczos draws them otherwise
    for resample in ("nearest", "lanczos"):
        r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=5,9", "--steps=3",
                "--scale=2", f"--resample={resample}", f"--out={tmp_path / 'big.png'}",
                f"--gif={tmp_path / f'{resample}.gif'}")
        assert r.returncode == 0, r.stderr
    big, smooth = (np.asarray(Image.open(tmp_path / f"{name}.gif").convert("RGB"),
                              dtype=np.int16) for name in ("nearest", "lanczos"))
    assert big.shape == smooth.shape == (192, 192, 3)
    assert np.abs(big[::2, ::2] - cell(0, 0)).mean() < 3
    assert np.array_equal(big[::2, ::2], big[1::2, 1::2])
    assert not np.array_equal(smooth, big) and np.abs(smooth - big).mean() < 20
    # the GIF draws from the noise asked for, as the grid does: its first frame is seed 5's
    # face at --gen-mean=20 (give or take the GIF's 256 colours), not the default's
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=5,9", "--steps=3",
            "--gen-mean=20", f"--out={tmp_path / 'shifted.png'}",
            f"--gif={tmp_path / 'shifted.gif'}")
    assert r.returncode == 0, r.stderr
    r = cli("generate", "--nogpu", f"--netg-path={g}", "--seeds=5", "--gen-mean=20",
            f"--out-dir={tmp_path / 'shifted'}", f"--gen-img={tmp_path / 'shifted-grid.png'}")
    assert r.returncode == 0, r.stderr
    frame = np.asarray(Image.open(tmp_path / "shifted.gif").convert("RGB"), dtype=np.int16)
    shifted = _pixels(next((tmp_path / "shifted").glob("face_*.png"))).astype(np.int16)
    plain = _pixels(ends[0]).astype(np.int16)
    assert np.abs(frame - shifted).mean() < np.abs(frame - plain).mean() / 3

    # a seed twice in a row (a typo for 5,9 say) draws a row of one face: said
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=5,5,9", "--steps=6",
            f"--out={tmp_path / 'twice.png'}")
    assert r.returncode == 0, r.stderr
    assert "note: --seeds names 5 twice in a row: that row is 6 copies of one face" in r.stdout
    twice = _pixels(tmp_path / "twice.png")
    assert all(np.array_equal(twice[2:98, 2 + k * 98:98 + k * 98], cell(0, 0)) for k in range(6))
    # the GIF's loop leaves out a leg from a seed to itself (here the last seed back to the
    # first): it was a pause, which PIL wrote as one frame, so the file held fewer frames than
    # the line said (11 of 15 here; with --seeds=5,5, 1 of 10)
    for seeds, frames in (("5,9,5", 10), ("5,5", 1)):
        r = cli("interpolate", "--nogpu", f"--netg-path={g}", f"--seeds={seeds}", "--steps=6",
                f"--out={tmp_path / 'back.png'}", f"--gif={tmp_path / 'back.gif'}")
        assert r.returncode == 0, r.stderr
        assert f"wrote {tmp_path / 'back.gif'}: {frames} frame" in r.stdout
        assert Image.open(tmp_path / "back.gif").n_frames == frames


def test_slerp_walks_the_great_circle_from_the_first_latent():
    """A morph's middle faces: the textbook slerp, sin((1-t)w) a + sin(tw) b over sin(w), at
    t = k / (steps - 1) from the first latent (weights swapped, the ends held and every
    middle ran backwards)."""
    z = noise([5, 9], 100)
    a, b = z[0].flatten().double(), z[1].flatten().double()
    w = torch.arccos(a @ b / (a.norm() * b.norm()))
    path = slerp_path(z, 6)
    for k in range(6):
        t = k / 5
        expected = (torch.sin((1 - t) * w) * a + torch.sin(t * w) * b) / torch.sin(w)
        assert torch.allclose(path[k].flatten().double(), expected, atol=1e-5), k


def test_a_morph_between_one_seed_and_itself_keeps_its_noise_exactly():
    # the pixel check above compares faces: a latent one float step off moved a pixel by a
    # level on some CPUs only (a failed CI run); the latents themselves must be the seed's
    z = noise([5, 5, 9], 100)
    path = slerp_path(z, 6)
    assert all(torch.equal(path[k], z[0]) for k in range(6))
    assert torch.equal(path[6], z[1]) and torch.equal(path[11], z[2])
    # two seeds whose noise nearly points one way still morph smoothly, without NaN
    near = torch.stack([z[0], z[0] * (1 + 1e-7) + 1e-7])
    steps = slerp_path(near, 5)
    assert torch.isfinite(steps).all() and (steps - z[0]).abs().max() < 1e-5


def test_interpolation_without_seeds_names_the_seed_that_draws_it_again(tmp_path):
    g, _ = _save_nets(tmp_path)
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--steps=3",
            f"--out={tmp_path / 'fresh.png'}")
    assert r.returncode == 0, r.stderr
    told = [line for line in r.stdout.splitlines() if "pass --seed=" in line]
    assert len(told) == 1, r.stdout  # one seed to note, not one per end of the morph
    seed = int(told[0].split("pass --seed=")[1].split()[0])
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--steps=3", f"--seed={seed}",
            f"--out={tmp_path / 'again.png'}")
    assert r.returncode == 0, r.stderr
    assert f"seeds {seed} -> {seed + 1}" in r.stdout and "note:" not in r.stdout
    assert np.array_equal(_pixels(tmp_path / "fresh.png"), _pixels(tmp_path / "again.png"))
    # --seed beside --seeds plays no part, as in generate: said, not passed over in silence
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--steps=3", f"--seed={seed}",
            "--seeds=1,2", f"--out={tmp_path / 'named.png'}")
    assert r.returncode == 0, r.stderr
    assert "note: --seed is not used with --seeds: it morphs between the seeds it names" \
        in r.stdout and "seeds 1 -> 2" in r.stdout


def test_api_on_a_device_the_machine_lacks_says_so(tmp_path, monkeypatch):
    """Faces.load(..., device="cuda") on a machine without CUDA said the file was truncated or
    not a PyTorch checkpoint."""
    from errors import UserError
    g, _ = _save_nets(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="device='cuda': no CUDA device is available here"):
        Faces.load(g, device="cuda")
    for device in ("mps", "gpu"):  # "gpu": torch's own error listing its device types
        with pytest.raises(UserError, match="'cpu' or 'cuda'"):
            Faces.load(g, device=device)
    assert Faces.load(g, device="cpu").tensors([1]).shape == (1, 3, 96, 96)
    # "cpu:0" is the CPU (it was blamed on the file: "truncated or not a PyTorch checkpoint")
    assert torch.equal(Faces.load(g, device="cpu:0").tensors([1]),
                       Faces.load(g, device="cpu").tensors([1]))


def test_noise_is_the_seeds_normal_draw_scaled_by_std_and_moved_by_mean():
    """--gen-mean/--gen-std: N(mean, std) is std times the seed's N(0, 1) plus mean (a
    mean added before the scaling drew from N(mean * std, std), and only repeats were
    tested)."""
    plain = noise([3, 8], 100)
    assert torch.allclose(noise([3, 8], 100, 0.5, 2.0), plain * 2.0 + 0.5)


def test_best_ranks_every_seed_of_the_search_even_in_a_last_short_pass():
    """17 seeds at 16 a pass: the 17th is ranked too (the search's end one short passed
    every test), and wins where D likes it best."""
    netg, _ = drawing_nets()

    class Likes(torch.nn.Module):  # a D that scores the 17th seed's face highest
        def __init__(self):
            super().__init__()
            self.favourite = netg(noise([16], 100))

        def forward(self, x):
            return -(x - self.favourite).flatten(1).abs().mean(1)

    faces = Faces(netg, Likes(), batch_size=16)
    assert faces.best(1, 17, first_seed=0)[2] == [16]


def test_api_refuses_what_the_command_line_refuses(tmp_path):
    """The command line checks seeds, scales and counts; from Python, -1 drew another seed's
    face, 2**64 overflowed deep in torch, scale=0 and 2.5 failed in PIL, and best() returned
    fewer faces than asked without a word."""
    g, d = _save_nets(tmp_path)
    faces = Faces.load(g, d, device="cpu")
    # 2**32 + 17: torch reads a seed's low 32 bits, so it drew seed 17's face
    for seeds in ([-1], [2**64], [2**32 + 17], [2**32], [1.5], [True]):
        with pytest.raises(ValueError, match="a seed is a whole number from 0 to 2\\*\\*32-1"):
            faces.tensors(seeds)
    for scale in (0, 2.5, 1000):
        with pytest.raises(ValueError, match="scale is a whole number from 1 to 32"):
            faces.images([1], scale=scale)
    # numpy's and torch's integers are seeds too (they were refused as not whole numbers)
    assert torch.equal(faces.tensors(np.arange(3)), faces.tensors([0, 1, 2]))
    assert torch.equal(faces.tensors(torch.arange(3)), faces.tensors([0, 1, 2]))
    # each mistake said as such, not a torch error from deep inside (an empty stack, a
    # division by zero, an overflow)
    for call, said in ((lambda: faces.tensors([]), "no seeds"),
                       (lambda: faces.tensors(17), "a list of seeds"),
                       (lambda: faces.morph([0], 8), "at least two"),
                       (lambda: faces.morph([0, 23], 1), "steps is a whole number from 2"),
                       (lambda: faces.best(4, 8, first_seed=2**32 - 4), "first_seed"),
                       (lambda: faces.best(16.0, 64), "num is a whole number"),
                       (lambda: faces.scores(faces.tensors([1])[0]), "(N, 3, 96, 96)"),
                       (lambda: Faces.load(g, device="cpu", batch_size=0), "batch_size"),
                       # a string was read a character at a time: "17" as seeds 1 and 7
                       (lambda: faces.tensors("17"), "a list of seeds, e.g. [17, 42], not '17'"),
                       # uint8 pixels would be scored as if 0..255 were -1..1
                       (lambda: faces.scores(to_uint8(faces.tensors([1]))), "not torch.uint8"),
                       # the noise as --gen-mean and --gen-std take it: std=0 drew one face
                       # for every seed, NaN faces of NaN, std="1" an error deep in torch
                       (lambda: Faces.load(g, std=0), "std is a number above 0 and at most"),
                       (lambda: Faces.load(g, std=-1), "std is a number above 0"),
                       (lambda: Faces.load(g, std="1"), "std is a number above 0"),
                       (lambda: Faces.load(g, mean=float("nan")), "mean is a number from -1000"),
                       (lambda: Faces.load(g, mean=1e6), "mean is a number from -1000 to 1000")):
        with pytest.raises(ValueError, match=re.escape(said)):
            call()
    # float64 faces (numpy's default) are scored as D's float32 (torch refused them)
    one = faces.tensors([1])
    assert torch.allclose(faces.scores(one.double()), faces.scores(one))
    assert Faces.load(g, mean=np.float32(0.5), std=torch.tensor(0.5)).std == 0.5
    with pytest.raises(ValueError, match="resample is 'nearest' or 'lanczos'"):
        faces.images([1], resample="bicubic")
    with pytest.raises(ValueError, match="num=20 and search_num=10"):
        faces.best(20, 10)
    assert len(faces.best(3, 10)[2]) == 3
    assert len(Faces.load(g, device="cpu").best(20, 10)[2]) == 20  # no D: the first 20 seeds


def test_api_loads_both_checkpoint_formats(tmp_path, toy_dir):
    from config import parse
    from train import train
    train(parse("train", dict(data_path=str(toy_dir), gpu=False, vis=False, max_epoch=1,
                              batch_size=32, ngf=8, ndf=8, seed=0, save_path=str(tmp_path),
                              checkpoint_dir=str(tmp_path))))
    book = Faces.load(tmp_path / "netg_0.pth", tmp_path / "netd_0.pth", device="cpu")
    full = Faces.load(tmp_path / "last.pth", tmp_path / "last.pth", device="cpu")
    a, b = book.tensors([1, 2, 3]), full.tensors([1, 2, 3])
    assert a.shape == (3, 3, 96, 96) and torch.equal(a, b)
    images = full.images([4], scale=2, resample="lanczos")
    assert images[0].size == (192, 192) and images[0].mode == "RGB"
    # seed 4's face, upscaled as asked (a resample passed over drew it nearest), by a G
    # whose faces have detail (this one-epoch G's are nearly flat: both resamples agree)
    drawing = Faces(*drawing_nets())
    face = Image.fromarray(to_uint8(drawing.tensors([4])[0]).permute(1, 2, 0).numpy())
    for resample, method in (("lanczos", Image.LANCZOS), ("nearest", Image.NEAREST)):
        assert np.array_equal(np.asarray(drawing.images([4], 2, resample)[0]),
                              np.asarray(face.resize((192, 192), method))), resample
    assert not np.array_equal(np.asarray(face.resize((192, 192), Image.LANCZOS)),
                              np.asarray(face.resize((192, 192), Image.NEAREST)))
    faces, scores, seeds = book.best(2, 8, first_seed=0)
    assert len(seeds) == 2 and scores[0] >= scores[1]


def test_a_large_gif_shows_a_bar_while_it_is_drawn(tmp_path, monkeypatch):
    """1,020 frames of 3072x3072 (--steps=256 --scale=32, 4 seeds) ran for many minutes
    without a word; a small GIF, done in a moment, shows none."""
    import generate
    g, _ = _save_nets(tmp_path)
    args = ("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=5,9,13", "--steps=6",
            f"--out={tmp_path / 'interp.png'}", f"--gif={tmp_path / 'interp.gif'}")
    small = cli(*args)
    assert small.returncode == 0, small.stderr
    assert "drawing the GIF" not in small.stderr
    monkeypatch.setattr(generate, "GIF_BAR", 15 * 96 * 96 - 1)  # these 15 frames: large
    large = cli(*args)
    assert large.returncode == 0, large.stderr
    assert re.search(r"drawing the GIF: 100%\S* *\| *15/15", large.stderr), large.stderr
    assert Image.open(tmp_path / "interp.gif").n_frames == 15


def test_a_gif_too_large_for_the_free_memory_is_refused_before_any_drawing(tmp_path,
                                                                           monkeypatch):
    """interpolate held every --gif frame in memory, upscaled: --steps=256 --scale=32 needed
    some 25 GB and ended in the OOM killer, after all the drawing."""
    import generate
    g, _ = _save_nets(tmp_path)
    small = ("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=1,2", "--steps=3",
             "--scale=2", f"--out={tmp_path / 'small.png'}", f"--gif={tmp_path / 'small.gif'}")
    monkeypatch.setattr(generate, "MEMINFO", str(tmp_path / "none"))  # not Linux: no check
    monkeypatch.setattr(generate, "PROC_CGROUP", str(tmp_path / "none"))
    r = cli(*small)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "small.gif").n_frames == 4
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("")
    monkeypatch.setattr(generate, "MEMINFO", str(meminfo))

    def loaded(*args, **kwargs):
        raise AssertionError("the weights were loaded before the memory was checked")
    monkeypatch.setattr(generate.Faces, "load", loaded)
    before = sorted(p.name for p in tmp_path.iterdir())
    for available, said in ((2**21, ("510 frames of 3072x3072 pixels", "about 7.2 GB",
                                     "2.1 GB available", "lower --scale (to 17 at most), "
                                     "--steps, or give fewer --seeds")),
                            (4, ("4.1 KB available: lower --steps, or give fewer "  # not "0.0
                                 "--seeds",))):  # GiB"; too large at --scale=1
        meminfo.write_text(f"MemTotal:       24684084 kB\nMemAvailable:   {available} kB\n")
        assert_clean_error(cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=1,2",
                               "--steps=256", "--scale=32", f"--out={tmp_path / 'big.png'}",
                               f"--gif={tmp_path / 'big.gif'}"), "--gif: ", *said)
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_onednns_refusal_under_a_shells_memory_limit_is_the_out_of_memory_line(tmp_path,
                                                                               monkeypatch):
    """Under ulimit -v, 1 in 4 interpolate --gif runs (and train's step now and then) ended in
    oneDNN's traceback "RuntimeError: could not create a primitive", the buffer it asked for
    refused, where torch's own refusal is the out-of-memory line naming the limit. Without a
    limit that error is not one of memory and keeps its traceback."""
    import resource
    import generate
    g, _ = _save_nets(tmp_path)

    def refused(frames, duration=80):
        raise RuntimeError("could not create a primitive")
    monkeypatch.setattr(generate, "gif_bytes", refused)
    flags = ("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=3,4", "--steps=3",
             f"--out={tmp_path / 'i.png'}", f"--gif={tmp_path / 'i.gif'}")
    with pytest.raises(RuntimeError, match="could not create a primitive"):
        cli(*flags)
    real = resource.getrlimit
    limit = generate._mapped() + 2**31  # a limit that leaves the GIF's check 2 GiB
    monkeypatch.setattr(resource, "getrlimit", lambda which: (limit, limit)
                        if which == resource.RLIMIT_AS else real(which))
    line = assert_clean_error(cli(*flags), "error: out of memory on this machine: this shell "
                              "lets a program use ", "(ulimit -v): raise that limit or lower "
                              "--steps, the seeds or --batch-size")
    assert "primitive" not in line
    assert not (tmp_path / "i.gif").exists()


def test_a_gif_over_a_shells_memory_limit_is_refused_before_any_drawing(tmp_path,
                                                                        monkeypatch):
    """Under a shell's address-space limit (ulimit -v), with the machine's memory free, the
    check read the machine alone: a GIF too large for the limit was drawn for minutes, then
    broken off by it; faces it cannot hold were to be had by freeing memory. Here the limit
    leaves nothing beyond what the process has mapped."""
    import resource
    import generate
    g, _ = _save_nets(tmp_path)
    real = resource.getrlimit

    def mapped_and_no_more(which):
        if which != resource.RLIMIT_AS:
            return real(which)
        size = generate._mapped()
        return size, size
    monkeypatch.setattr(resource, "getrlimit", mapped_and_no_more)
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=3,4", "--steps=3",
            f"--out={tmp_path / 'i.png'}", f"--gif={tmp_path / 'i.gif'}")
    assert_clean_error(r, "--gif: 4 frames", "and this shell's limit on a program's memory "
                       "(ulimit -v) leaves 0.0 KB available")
    assert not (tmp_path / "i.gif").exists() and not (tmp_path / "i.png").exists()
    r = cli("generate", "--nogpu", f"--netg-path={g}", "--gen-num=64",
            f"--gen-img={tmp_path / 'g.png'}")  # not even one face: more memory, not fewer
    assert_clean_error(r, "(ulimit -v) leaves 0.0 KB available: raise that limit")
    assert generate.memory_holder() == ("this shell's limit on a program's memory (ulimit -v) "
                                        "leaves", "raise that limit")
    monkeypatch.setattr(resource, "getrlimit", real)
    assert generate.memory_holder()[0] == "this machine has"


def test_more_faces_than_the_free_memory_holds_are_refused_before_any_drawing(tmp_path,
                                                                          monkeypatch):
    """generate held every face drawn, and its grid, in memory: --gen-num=200000 needed some
    40 GB and ended in the OOM killer's bare 'Killed' after minutes of drawing. The count it
    names instead is one that draws."""
    import generate
    g, d = _save_nets(tmp_path)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24684084 kB\nMemAvailable:      51200 kB\n")  # 50 MiB
    monkeypatch.setattr(generate, "MEMINFO", str(meminfo))
    monkeypatch.setattr(generate, "PROC_CGROUP", str(tmp_path / "none"))
    nets = (f"--netg-path={g}", f"--netd-path={d}")
    load = generate.Faces.load

    def loaded(*args, **kwargs):
        raise AssertionError("the weights were loaded before the memory was checked")
    monkeypatch.setattr(generate.Faces, "load", loaded)
    before, refusals = sorted(p.name for p in tmp_path.iterdir()), []
    for flags, said in ((("--gen-num=1000", "--gen-search-num=2000"),
                         ("--gen-num: 1000 faces need about 224.9 MB of memory, and this "
                          "machine has 52.4 MB available: lower --gen-num (to ",)),  # (not "0.2
                        ((f"--seeds={','.join(map(str, range(300)))}",),  # GiB ... 0.0 GiB")
                         ("--seeds: 300 faces need about 67.8 MB", "give fewer --seeds (",))):
        r = cli("generate", "--nogpu", "--seed=0", *nets, *flags,
                f"--gen-img={tmp_path / 'big.png'}", f"--out-dir={tmp_path / 'big'}")
        assert_clean_error(r, *said)
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
        refusals.append(r.stderr)
    most = int(re.search(r"to (\d+) at most", refusals[0]).group(1))
    assert 100 < most < 1000
    monkeypatch.setattr(generate.Faces, "load", load)
    r = cli("generate", "--nogpu", "--seed=0", *nets, f"--gen-num={most}",
            "--gen-search-num=2000", f"--gen-img={tmp_path / 'most.png'}")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "most.png").size == grid_size(most)
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=1,2,3", "--steps=256",
            f"--out={tmp_path / 'morph.png'}")
    assert_clean_error(r, "--steps and --seeds: 512 faces need about 115.5 MB",
                       "lower --steps or give fewer --seeds (")
    assert not (tmp_path / "morph.png").exists()


def test_the_seed_line_and_the_manifest_name_the_noise_that_draws_the_faces_again(tmp_path):
    """--gen-mean and --gen-std change every seed's face, but neither the line naming the
    seed nor manifest.csv said them: the command as printed drew other faces."""
    g, d = _save_nets(tmp_path)
    nets = (f"--netg-path={g}", f"--netd-path={d}", "--gen-num=3", "--gen-search-num=20")
    r = cli("generate", "--nogpu", *nets, "--gen-mean=0.3", "--gen-std=0.6",
            f"--out-dir={tmp_path / 'first'}", f"--gen-img={tmp_path / 'first.png'}")
    assert r.returncode == 0, r.stderr
    told = [line for line in r.stdout.splitlines() if "pass --seed=" in line]
    assert len(told) == 1, r.stdout
    flags = told[0].split("(pass ")[1].split(" to draw")[0].split()
    r = cli("generate", "--nogpu", *nets, *flags, f"--gen-img={tmp_path / 'again.png'}")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(_pixels(tmp_path / "again.png"), _pixels(tmp_path / "first.png"))
    assert flags[1:] == ["--gen-mean=0.3", "--gen-std=0.6"]

    with open(tmp_path / "first" / "manifest.csv") as f:
        assert f.readline().startswith("file,rank,d_score,seed,")  # as before, then the noise
        f.seek(0)
        rows = list(csv.DictReader(f))
    assert len(rows) == 3  # one a face of --gen-num (an empty manifest passed the loop below)
    for row in rows:
        r = cli("generate", "--nogpu", f"--netg-path={g}", f"--seeds={row['seed']}",
                f"--gen-mean={row['gen_mean']}", f"--gen-std={row['gen_std']}",
                f"--gen-img={tmp_path / 'one.png'}")
        assert r.returncode == 0, r.stderr
        assert np.array_equal(_pixels(tmp_path / "one.png"),
                              _pixels(tmp_path / "first" / row["file"]))
    # with the default noise nothing more is said
    r = cli("generate", "--nogpu", *nets, f"--gen-img={tmp_path / 'plain.png'}")
    assert r.returncode == 0, r.stderr
    assert "to draw the same faces again)" in r.stdout and "--gen-" not in r.stdout


def test_a_manifest_csv_generate_did_not_write_is_refused(tmp_path):
    """--out-dir wrote over any manifest.csv in the folder, a user's own file too."""
    g, _ = _save_nets(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.csv").write_text("name,amount\nrent,900\n")
    (tmp_path / "junk.pth").write_bytes(b"not weights")  # read only if the check came late
    for seeds in (["--seeds=1"], ["--seed=3"], []):  # refused before any work, seeds or not
        assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'junk.pth'}",
                               *seeds,
                               f"--out-dir={mine}", f"--gen-img={tmp_path / 'grid.png'}"),
                           f"--out-dir: {mine / 'manifest.csv'} is not a manifest generate "
                           f"wrote", "pick another folder")
        assert (mine / "manifest.csv").read_text() == "name,amount\nrent,900\n"
        assert [p.name for p in mine.iterdir()] == ["manifest.csv"]
        assert not (tmp_path / "grid.png").exists()
    # a manifest of an earlier version (without the noise's columns) is ours: replaced
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "manifest.csv").write_text("file,rank,d_score,seed\nface_000_seed1.png,0,,1\n")
    (ours / "face_000_seed1.png").write_bytes(b"")
    r = cli("generate", "--nogpu", f"--netg-path={g}", "--seeds=1", f"--out-dir={ours}",
            f"--gen-img={tmp_path / 'grid.png'}")
    assert r.returncode == 0, r.stderr
    assert f"wrote 1 face and manifest.csv to {ours}" in r.stdout
    assert _pixels(ours / "face_000_seed1.png").shape == (96, 96, 3)


def test_scale_without_faces_or_frames_to_apply_to_says_so(tmp_path):
    """--scale upscales --out-dir's faces and --gif's frames; the grid alone it left as it
    was, without a word."""
    g, _ = _save_nets(tmp_path)
    r = cli("generate", "--nogpu", f"--netg-path={g}", "--seeds=1,2", "--scale=4",
            f"--gen-img={tmp_path / 'grid.png'}")
    assert r.returncode == 0, r.stderr
    assert "note: --scale applies to --out-dir's faces, not the grid" in r.stdout
    assert _pixels(tmp_path / "grid.png").shape == (100, 198, 3)  # the grid as it was
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=1,2", "--steps=2",
            "--scale=4", f"--out={tmp_path / 'interp.png'}")
    assert r.returncode == 0, r.stderr
    assert "note: --scale applies to --gif's frames, not the grid" in r.stdout
    for given in ((f"--out-dir={tmp_path / 'faces'}",), ()):  # where it applies, or unset
        r = cli("generate", "--nogpu", f"--netg-path={g}", "--seeds=1,2", *given,
                *(["--scale=4"] if given else []), f"--gen-img={tmp_path / 'grid.png'}")
        assert r.returncode == 0, r.stderr
        assert "--scale" not in r.stdout
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=1,2", "--steps=2",
            "--scale=4", f"--out={tmp_path / 'interp.png'}", f"--gif={tmp_path / 'i.gif'}")
    assert r.returncode == 0, r.stderr
    assert "--scale" not in r.stdout
    # --resample without --scale, and --gen-search-num without a D: each passed over without
    # a word, though neither changed a pixel
    r = cli("generate", "--nogpu", f"--netg-path={g}", "--gen-num=4", "--gen-search-num=40",
            "--resample=lanczos", f"--out-dir={tmp_path / 'plain'}",
            f"--gen-img={tmp_path / 'plain.png'}")
    assert r.returncode == 0, r.stderr
    assert ("note: --resample is the filter of --scale's upscaling, and --scale is 1: it "
            "changes nothing (e.g. --scale=4 with --out-dir)") in r.stdout
    assert ("note: --gen-search-num is how many faces D ranks, and no --netd-path is given: "
            "the first 4 seeds are drawn") in r.stdout
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=1,2", "--steps=2",
            "--resample=lanczos", f"--out={tmp_path / 'interp.png'}")
    assert "(e.g. --scale=4 with --gif)" in r.stdout
    # a G that cannot be loaded is refused without a note above the refusal
    (tmp_path / "broken.pth").write_bytes(g.read_bytes()[:1000])
    for command, flags in [("generate", ["--gen-num=5"]), ("interpolate", ["--seeds=3,3"])]:
        r = cli(command, "--nogpu", f"--netg-path={tmp_path / 'broken.pth'}", "--seeds=3,3",
                "--scale=4", *flags)
        assert_clean_error(r, "broken.pth")
        assert "note:" not in r.stdout, command


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_the_memory_left_is_the_containers_where_it_holds_less(tmp_path, monkeypatch, version):
    """Inside a container or a batch job with --mem the machine's MemAvailable is not the
    limit: the OOM killer still ended a GIF the check had let through."""
    import generate
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemAvailable:   20971520 kB\n")  # 20 GiB on the machine
    cgroup = tmp_path / "cgroup"
    if version == "v2":
        (tmp_path / "self").write_text("0::/job/42\n")
        folder, files = cgroup / "job" / "42", ("memory.max", "memory.current")
    else:
        (tmp_path / "self").write_text("5:memory:/job/42\n4:cpu:/job/42\n")
        folder, files = cgroup / "memory" / "job" / "42", ("memory.limit_in_bytes",
                                                            "memory.usage_in_bytes")
    folder.mkdir(parents=True)
    (folder / files[0]).write_text(f"{4 * 2**30}\n")  # 4 GiB allowed, 1 used
    (folder / files[1]).write_text(f"{2**30}\n")
    monkeypatch.setattr(generate, "MEMINFO", str(meminfo))
    monkeypatch.setattr(generate, "PROC_CGROUP", str(tmp_path / "self"))
    monkeypatch.setattr(generate, "CGROUP", str(cgroup))
    assert generate._available_memory() == 3 * 2**30
    # of the 1 GiB used, the files it read and has not touched since: the kernel frees them
    # first, so they are room (counted as used, a container that had just read a data set
    # refused what fitted)
    (folder / "memory.stat").write_text(  # v1's inactive_file: this group's own, not below
        "anon 1000\nactive_file 4096\ninactive_file 536870912\n" if version == "v2" else
        "cache 9999\ninactive_file 4096\ntotal_inactive_file 536870912\n")
    assert generate._available_memory() == 3 * 2**30 + 2**29
    # a container allowed more than the machine has free: the machine's (a check that took
    # the container's room whenever there was one trusted 29.5 GiB here)
    (folder / files[0]).write_text(f"{30 * 2**30}\n")
    assert generate._available_memory() == 20 * 2**30
    (folder / files[0]).write_text("max\n" if version == "v2" else f"{2**63 - 4096}\n")
    assert generate._available_memory() == 20 * 2**30  # no limit: the machine's


def test_the_gif_line_counts_the_frames_the_file_holds(tmp_path):
    """Faces a hair apart (a tiny --gen-std) are the same pixels: PIL merged such a frame into
    the one before it, and the line counted the frames drawn (14 where the file held 8)."""
    g, _ = _save_nets(tmp_path)
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=5,9", "--steps=8",
            "--gen-std=0.00001", f"--out={tmp_path / 'i.png'}", f"--gif={tmp_path / 'i.gif'}")
    assert r.returncode == 0, r.stderr
    frames = Image.open(tmp_path / "i.gif").n_frames
    assert frames < 14  # merged
    assert f"wrote {tmp_path / 'i.gif'}: {frames} frame" in r.stdout
