"""The synthetic face set: deterministic, described by its CSV, every attribute in range."""
import csv
import hashlib
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import toyfaces
from errors import pasted, quoted
from toyfaces import ATTRIBUTES, CHOICES, face, make_toyfaces

from conftest import (ROOT, assert_clean_error, cli, read_until, run_cli, stop_in_a_bar,
                      within)


def _digest(folder):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_files_whatever_the_workers(tmp_path):
    make_toyfaces(tmp_path / "a", num=80, seed=3, workers=1)
    make_toyfaces(tmp_path / "b", num=80, seed=3, workers=2)
    make_toyfaces(tmp_path / "c", num=80, seed=4, workers=1)
    a, b, c = (_digest(tmp_path / x / "faces") for x in "abc")
    assert a == b
    assert (tmp_path / "a" / "attributes.csv").read_text() == \
        (tmp_path / "b" / "attributes.csv").read_text()
    assert sum(a[k] != c[k] for k in a) > 70  # another seed, other faces
    assert not set(a.values()) & set(c.values())  # not the same faces under other names


def test_a_set_larger_than_a_block_is_written_whole(tmp_path, monkeypatch):
    """The faces go to the workers a block at a time (4,096): every block is drawn and
    listed, not the first alone under a line that says all were written."""
    monkeypatch.setattr(toyfaces, "BLOCK", 16)
    listed = make_toyfaces(tmp_path / "t", num=40, seed=0, workers=1)
    with open(listed) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40
    assert sorted(p.name for p in (tmp_path / "t" / "faces").glob("*.jpg")) == \
        sorted(r["file"] for r in rows)


def test_csv_names_every_file_and_attribute(toy_dir):
    with open(toy_dir / "attributes.csv") as f:
        rows = list(csv.DictReader(f))
    files = sorted(p.name for p in (toy_dir / "faces").glob("*.jpg"))
    assert sorted(r["file"] for r in rows) == files and len(files) == 64
    for row in rows:
        for name in ATTRIBUTES:
            assert row[name] in CHOICES[name]


def _values_seen(seed, count):
    seen = {name: set() for name in ATTRIBUTES}
    for i in range(count):
        attrs, _ = face(seed, i)
        for name in ATTRIBUTES:
            seen[name].add(attrs[name])
    return seen


def test_attribute_ranges_are_wide_enough_and_all_drawn():
    assert len(CHOICES["hair_color"]) >= 8 and len(CHOICES["hair_style"]) >= 4
    assert len(CHOICES["eye_color"]) >= 6 and len(CHOICES["skin_tone"]) >= 3
    assert len(CHOICES["mouth"]) >= 3 and len(CHOICES["background"]) >= 2
    seen = _values_seen(1, 400)
    assert all(seen[name] == set(CHOICES[name]) for name in ATTRIBUTES)


def test_faces_are_drawn_from_their_attributes():
    """Hair colour shows in the hair region and background colour in the corners."""
    for i in range(12):
        attrs, img = face(5, i)
        a = np.asarray(img).astype(int)
        assert img.size == (96, 96) and img.mode == "RGB"
        corner = a[:4, :4].reshape(-1, 3).mean(0)
        assert np.abs(corner - toyfaces.BACKGROUNDS[attrs["background"]]).max() < 20
        top_of_head = a[16:24, 40:56].reshape(-1, 3)  # hair above the forehead
        hair = np.array(toyfaces.HAIR_COLORS[attrs["hair_color"]])
        assert (np.abs(top_of_head - hair).max(1) < 60).mean() > 0.5


@pytest.mark.parametrize("name, pixels", [
    ("hair_color", 1000), ("hair_style", 500), ("eye_color", 100), ("skin_tone", 500),
    ("mouth", 10), ("blush", 20), ("background", 1000)])
def test_every_value_of_every_attribute_draws_another_face(name, pixels):
    """Each face drawn again with one attribute changed, the same jitter: every two values
    differ on at least ``pixels`` pixels (by more than 30 levels), so attributes.csv names
    what is drawn (irises of one colour whatever eye_color said passed the test above)."""
    import random
    for index in range(3):
        attrs = face(0, index)[0]
        drawn = [np.asarray(toyfaces.draw_face({**attrs, name: value}, random.Random(7)),
                            dtype=int) for value in CHOICES[name]]
        for i, a in enumerate(drawn):
            for j, b in enumerate(drawn[:i]):
                changed = (np.abs(a - b).max(2) > 30).sum()
                assert changed >= pixels, (index, CHOICES[name][j], CHOICES[name][i], changed)


def test_the_readme_grid_shows_every_attribute_value():
    """docs/toyfaces.jpg is faces 0-63 of seed 0, 8 a row: every value of every attribute is
    in it."""
    grid = np.asarray(Image.open(ROOT / "docs" / "toyfaces.jpg").convert("RGB")).astype(int)
    assert grid.shape == (8 * 98 + 2, 8 * 98 + 2, 3)
    for i in range(64):
        row, col = divmod(i, 8)
        cell = grid[2 + row * 98:2 + row * 98 + 96, 2 + col * 98:2 + col * 98 + 96]
        drawn = np.asarray(face(0, i)[1]).astype(int)
        assert np.abs(cell - drawn).mean() < 10, i  # JPEG's loss (another face: 30 and up)
    seen = _values_seen(0, 64)
    assert all(seen[name] == set(CHOICES[name]) for name in ATTRIBUTES)


def test_the_command_writes_the_set_and_says_where(tmp_path):
    out = tmp_path / "toy"
    result = run_cli("toyfaces", f"--out-dir={out}", "--num=12", "--seed=5")
    assert result.returncode == 0, result.stderr
    assert f"wrote 12 faces to {out}/faces/ and {out / 'attributes.csv'}" in result.stdout
    files = sorted((out / "faces").glob("*.jpg"))
    assert len(files) == 12
    with open(out / "attributes.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["file"] for r in rows) == [p.name for p in files]
    # the same faces the library draws for this seed
    attrs, img = face(5, 0)
    first = next(r for r in rows if r["file"] == files[0].name)
    assert all(first[a] == attrs[a] for a in ATTRIBUTES)
    drawn = np.asarray(Image.open(files[0])).astype(int)
    assert np.abs(drawn - np.asarray(img).astype(int)).mean() < 8  # JPEG's loss only

    # a second set into the same folder would mix its faces with these, out of step with
    # the CSV (it wrote 4 faces over 12 and a CSV of 4 rows): refused, nothing touched
    before = {p.name: p.read_bytes() for p in (out / "faces").iterdir()}
    csv_before = (out / "attributes.csv").read_bytes()
    from conftest import assert_clean_error
    assert_clean_error(cli("toyfaces", f"--out-dir={out}", "--num=4", "--seed=7"),
                       "already holds a face set")
    assert {p.name: p.read_bytes() for p in (out / "faces").iterdir()} == before
    assert (out / "attributes.csv").read_bytes() == csv_before
    # what an interrupted run leaves (faces, no CSV yet) is written again, so `make demo`
    # can be run again; faces a smaller set would not overwrite are refused
    (out / "attributes.csv").unlink()
    line = assert_clean_error(cli("toyfaces", f"--out-dir={out}", "--num=4", "--seed=5"),
                              "left unfinished", "up to 000011.jpg", "at least 12")
    assert "already holds a face set" not in line  # as it said: a set, 8 other files
    (out / "faces" / "notes.txt").write_text("mine")  # not a face: a folder of other files
    assert_clean_error(cli("toyfaces", f"--out-dir={out}", "--num=4", "--seed=5"),
                       "9 other files", "000004.jpg")
    (out / "faces" / "notes.txt").unlink()
    result = cli("toyfaces", f"--out-dir={out}", "--num=12", "--seed=5")
    assert result.returncode == 0, result.stderr
    assert (out / "attributes.csv").read_bytes() == csv_before
    # a folder of real faces (--out-dir=data/faces by mistake) took a toy set beside them,
    # and the next training mixed the two
    real = tmp_path / "real"
    shutil.copytree(out / "faces", real / "crawl")
    assert_clean_error(cli("toyfaces", f"--out-dir={real}", "--num=4"),
                       "already holds images", "mix the toy faces")
    assert sorted(p.name for p in real.iterdir()) == ["crawl"]


def test_the_data_path_it_says_to_train_with_is_quoted_to_paste(tmp_path, monkeypatch):
    """"train on them with --data-path=my toy" split at the space when pasted: the folder
    named in the line was 'my', and the marker's command beside it was quoted."""
    out = tmp_path / "my toy"
    result = cli("toyfaces", f"--out-dir={out}", "--num=4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(f"train on them with --data-path='{out}'"), \
        result.stdout
    monkeypatch.chdir(tmp_path)
    result = cli("toyfaces", "--out-dir=data/my toy", "--num=4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("always pass --data-path='data/my toy'"), \
        result.stdout


def test_ctrl_c_while_drawing_is_one_line(tmp_path):
    """Ctrl-C reaches the drawing pool's workers too: each printed a traceback of its own."""
    import subprocess
    import sys
    from conftest import ctrl_c_to_group, kill_group
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "toyfaces",
                             f"--out-dir={tmp_path / 'toy'}", "--num=20000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        read_until(proc, "face/s")  # the bar has counted the first faces
        err = ctrl_c_to_group(proc, 30)  # as a terminal sends it: to every process
    finally:
        kill_group(proc)
    assert proc.returncode == 130
    assert "Traceback" not in err and "ForkPoolWorker" not in err, err
    assert err.splitlines()[-1] == ("interrupted: the set is not finished; the same command "
                                    "again draws it whole")
    assert not (tmp_path / "toy" / "attributes.csv").exists()


def test_a_ctrl_c_lost_while_the_faces_come_in_still_stops_before_the_csv(tmp_path,
                                                                         monkeypatch):
    """A KeyboardInterrupt that CPython loses (raised in a finaliser, or under C code that
    clears errors) let the set be drawn to its end and its CSV written, as if no Ctrl-C had
    been pressed. Here the progress bar swallows one on purpose, at the third face."""
    import os
    import signal
    import time
    import errors

    def progress(rows, total):
        for i, row in enumerate(rows):
            if i == 2:
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(5)
                except KeyboardInterrupt:
                    pass
            yield row

    previous = signal.signal(signal.SIGINT, errors._raise_interrupt)  # main.py's
    try:
        with pytest.raises(KeyboardInterrupt):
            make_toyfaces(tmp_path / "toy", num=100, workers=1, progress=progress)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not (tmp_path / "toy" / "attributes.csv").exists()


def test_two_runs_drawing_the_same_set_at_once_both_finish_it(tmp_path):
    """make demo and make demo-long started in two terminals on a fresh clone draw data-toy
    at the same time: both wrote their CSV into one temporary file, and the later to finish
    found it renamed by the other, a FileNotFoundError traceback. Here the second run draws
    the whole set while the first is at its fifth face."""
    out = tmp_path / "toy"
    alone = make_toyfaces(tmp_path / "alone", num=30, seed=0, workers=1).read_text()

    def another_run_meanwhile(rows, total):
        for i, row in enumerate(rows):
            if i == 5:
                make_toyfaces(out, num=30, seed=0, workers=1)
            yield row

    make_toyfaces(out, num=30, seed=0, workers=1, progress=another_run_meanwhile)
    assert (out / "attributes.csv").read_text() == alone
    assert sorted(p.name for p in out.iterdir()) == ["attributes.csv", "faces"]  # no mark


def _another_run_meanwhile(monkeypatch, start):
    """toyfaces' drawing, with ``start()`` called (another run starting) as it begins to draw
    its first face."""
    real = toyfaces.make_toyfaces

    def drawing(*args, progress, **kwargs):
        toyfaces.make_toyfaces = real  # (the other run's own drawing, where it draws)

        def meanwhile(rows, total):
            start()
            yield from rows
        return real(*args, progress=meanwhile, **kwargs)
    monkeypatch.setattr(toyfaces, "make_toyfaces", drawing)


def test_a_run_drawing_another_set_into_a_folder_being_drawn_is_refused(tmp_path,
                                                                         monkeypatch):
    """toyfaces --seed=0 and --seed=1 started together into one new folder both drew there
    and both said they wrote their set: the faces were a mix of the two seeds under the
    attributes.csv of one."""
    out, other = tmp_path / "toy", []
    alone = tmp_path / "alone"
    make_toyfaces(alone, num=30, seed=0, workers=1)
    _another_run_meanwhile(monkeypatch, lambda: other.append(
        cli("toyfaces", f"--out-dir={out}", "--num=30", "--seed=1")))
    first = cli("toyfaces", f"--out-dir={out}", "--num=30", "--seed=0")
    assert first.returncode == 0, first.stderr
    assert_clean_error(other[0], f"--out-dir: another run is writing into {out} now (process "
                                 f"{os.getpid()}: "
                                 f"{pasted(f'toyfaces --out-dir={out} --num=30 --seed=0')}): "
                                 f"wait for it to end, or pick another --out-dir")
    assert _digest(out / "faces") == _digest(alone / "faces")
    assert (out / "attributes.csv").read_text() == (alone / "attributes.csv").read_text()


def test_a_run_drawing_the_same_set_at_once_waits_for_the_other_and_ends_with_it(
        tmp_path, monkeypatch):
    """make demo and make demo-long started together on a fresh clone: the second toyfaces
    waits for the first, says so, and ends with the set the first drew."""
    import subprocess
    import sys
    from types import SimpleNamespace
    out, other = tmp_path / "toy", []
    alone = make_toyfaces(tmp_path / "alone", num=30, seed=0, workers=1).read_text()

    def second():
        other.append(subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "toyfaces", f"--out-dir={out}", "--num=30"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        read_until(SimpleNamespace(stderr=other[0].stdout),  # (its lines: stdout)
                   f"another toyfaces (process {os.getpid()}) is drawing this set into {out}: "
                   f"waiting for it to end\n")
    _another_run_meanwhile(monkeypatch, second)
    try:
        first = cli("toyfaces", f"--out-dir={out}", "--num=30")
        assert first.returncode == 0, first.stderr
        said, _ = other[0].communicate(timeout=120)
        assert other[0].returncode == 0, said
    finally:
        for run in other:
            run.kill()
            run.wait()
    assert said == f"{out} holds the set now: another toyfaces drew it as this one waited; " \
                   f"train on them with --data-path={out}\n"
    assert (out / "attributes.csv").read_text() == alone
    assert sorted(p.name for p in out.iterdir()) == ["attributes.csv", "faces"]


def _another_run_before_its_mark(monkeypatch, out, seed, ended=0):
    """toyfaces --num=30 --seed=SEED into ``out``, a process of its own, started as this
    process's toyfaces, holding the folder, checks it (before its UNFINISHED mark: a busy
    machine took over 5 s there); waits until it says it waits, or at most ``ended``
    seconds for it to end. Returns the list that takes the process."""
    import subprocess
    import sys
    import time
    from types import SimpleNamespace
    real, other = toyfaces.room, []

    def checking(*args):
        if not other:
            other.append(subprocess.Popen(
                [sys.executable, str(ROOT / "main.py"), "toyfaces", f"--out-dir={out}",
                 "--num=30", f"--seed={seed}"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            if ended:
                deadline = time.monotonic() + ended
                while other[0].poll() is None and time.monotonic() < deadline:
                    time.sleep(0.1)
            else:
                read_until(SimpleNamespace(stderr=other[0].stdout),
                           f"(process {os.getpid()}) is drawing this set into {out}: waiting "
                           f"for it to end\n")
        return real(*args)
    monkeypatch.setattr(toyfaces, "room", checking)
    return other


def _said_beside(other, *flags):
    """``toyfaces FLAGS`` in this process, the other run of ``other`` started as it checked
    its folder: what that run said once it ended (it is killed, whatever comes)."""
    try:
        first = cli("toyfaces", *flags)
        assert first.returncode == 0, first.stderr
        return other[0].communicate(timeout=120)[0]
    finally:
        for run in other:
            run.kill()
            run.wait()


def test_a_run_of_the_same_set_waits_for_one_slow_to_begin(tmp_path, monkeypatch):
    """The second toyfaces of make demo and make demo-long knew the first by its UNFINISHED
    mark, written once the first had checked the folder, and gave it 5 s: on a busy machine
    (torch's import alone took 2.6 s there) the same set was refused ("another toyfaces is
    drawing a set into data-toy now")."""
    out = tmp_path / "toy"
    alone = make_toyfaces(tmp_path / "alone", num=30, seed=0, workers=1).read_text()
    other = _another_run_before_its_mark(monkeypatch, out, seed=0)
    said = _said_beside(other, f"--out-dir={out}", "--num=30")
    assert other[0].returncode == 0 and said.endswith(f"{out} holds the set now: another "
                                                      f"toyfaces drew it as this one waited; "
                                                      f"train on them with --data-path={out}\n")
    assert (out / "attributes.csv").read_text() == alone
    assert sorted(p.name for p in out.iterdir()) == ["attributes.csv", "faces"]


def test_a_killed_runs_mark_does_not_pass_for_the_run_drawing_there(tmp_path, monkeypatch):
    """A toyfaces --seed=0 killed as it began left its mark (and its note); --seed=1 then drew
    there, and a --seed=0 started as it checked the folder took the dead run's mark for it:
    it waited, then said the folder held its set, the faces of --seed=1."""
    from types import SimpleNamespace
    out = tmp_path / "toy"
    out.mkdir()
    (out / toyfaces.UNFINISHED).write_text(toyfaces.finishing(out, 30, 0))
    (out / ".held-by").write_text(f"4194305 {toyfaces.finishing(out, 30, 0)}")  # (no process)
    other = _another_run_before_its_mark(monkeypatch, out, seed=0, ended=30)
    said = _said_beside(other, f"--out-dir={out}", "--num=30", "--seed=1")
    assert_clean_error(SimpleNamespace(returncode=other[0].returncode, stdout="", stderr=said),
                       f"--out-dir: another run is writing into {out} now (process "
                       f"{os.getpid()}: {pasted(f'toyfaces --out-dir={out} --num=30 --seed=1')}"
                       f"): wait for it to end, or pick another --out-dir")
    assert toyfaces.drawn_here(out / "faces" / "000000.jpg", 1)
    assert sorted(p.name for p in out.iterdir()) == ["attributes.csv", "faces"]


def test_a_training_on_a_stopped_set_says_it_is_not_whole(tmp_path, capsys):
    """A training on the faces a stopped toyfaces left took them for a whole set and said
    nothing: the user trained on part of it without knowing."""
    from conftest import train_small
    from data import list_images

    def stop_at_40(rows, total):
        for i, row in enumerate(rows):
            if i == 40:
                raise KeyboardInterrupt
            yield row
    toy = tmp_path / "my toy"  # the command said is one to paste: the space quoted
    with pytest.raises(KeyboardInterrupt):
        make_toyfaces(toy, num=100, seed=5, workers=1, progress=stop_at_40)
    drawn = len(list(toy.glob("faces/*.jpg")))
    capsys.readouterr()
    train_small(toy, tmp_path / "run", max_epoch=1)
    out = capsys.readouterr().out
    # named as every command to paste is: this Python (a bare python may lack the packages)
    assert (f"note: {toy} holds a toy set whose drawing was stopped, {drawn} faces so far: "
            f"{pasted(f'toyfaces --out-dir={quoted(toy)} --num=100 --seed=5')} draws it whole"
            in out), out
    list_images(toy / "faces")  # the faces' own folder as --data-path
    assert f"{drawn} faces so far" in capsys.readouterr().out
    result = cli("toyfaces", f"--out-dir={toy}", "--num=100", "--seed=5")  # as it says
    assert result.returncode == 0, result.stderr
    assert len(list_images(toy)) == 100
    assert "stopped" not in capsys.readouterr().out


def test_a_stop_closes_the_progress_bar_before_it_leaves(tmp_path):
    """The stop's line must be the last the user sees: a bar that a Ctrl-C caught before its
    own clean-up (just as it first showed) was closed only when Python freed it, after
    main.py had said the line, and drew itself again under it."""
    assert stop_in_a_bar(lambda bar: make_toyfaces(tmp_path / "toy", num=10, workers=1,
                                                   progress=bar)) == ["closed", "left"]
    assert not (tmp_path / "toy" / "attributes.csv").exists()


def test_images_of_its_names_that_it_did_not_draw_are_not_written_over(tmp_path):
    """A folder of the user's own images named 000000.jpg, 000001.jpg, ... (no
    attributes.csv) was taken for a set a stopped run had left, and written over."""
    faces = tmp_path / "mine" / "faces"
    faces.mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (96, 96), (40 * i, 90, 200)).save(faces / f"{i:06d}.jpg")
    before = {p.name: p.read_bytes() for p in faces.iterdir()}
    line = assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'mine'}", "--num=10"),
                              f"{faces} holds images that toyfaces did not draw with --seed=0",
                              "000000.jpg", "new or empty --out-dir")
    assert {p.name: p.read_bytes() for p in faces.iterdir()} == before, line
    assert not (tmp_path / "mine" / "attributes.csv").exists()
    # more of them than --num: they were taken for a stopped run of a larger set, and the
    # user told to draw that many to finish it
    assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'mine'}", "--num=2"),
                       "did not draw with --seed=0", "000002.jpg")
    # a stopped run's faces are its own: drawn again, and the set finished (another seed
    # would mix two sets' faces under one CSV: refused the same way)
    make_toyfaces(tmp_path / "toy", num=6, seed=3, workers=1)
    (tmp_path / "toy" / "attributes.csv").unlink()
    assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'toy'}", "--num=6", "--seed=4"),
                       "did not draw with --seed=4")
    result = cli("toyfaces", f"--out-dir={tmp_path / 'toy'}", "--num=6", "--seed=3")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "toy" / "attributes.csv").is_file()


def test_num_zero_is_one_line(tmp_path):
    assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'toy'}", "--num=0"), "--num")
    assert not (tmp_path / "toy").exists()


def test_running_the_module_says_where_the_command_is():
    import subprocess
    import sys
    from conftest import ROOT
    r = subprocess.run([sys.executable, str(ROOT / "toyfaces.py"), "--num=12"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "python main.py toyfaces" in r.stderr


def test_seeds_out_of_range_and_a_huge_num_are_answered_at_once(tmp_path):
    """--seed=-1 drew the faces of seed 1, where every other command refuses it; and
    --num=10**15 listed every face's name before looking at the folder."""
    for seed in ("-1", str(2**31 + 1)):
        assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 's'}", "--num=2",
                               f"--seed={seed}"), "--seed", seed)
    assert not (tmp_path / "s").exists()
    faces = tmp_path / "big" / "faces"
    faces.mkdir(parents=True)
    (faces / "000003.jpg").write_bytes(b"")  # a face this set would draw again
    (faces / "notes.txt").write_text("not a face")

    with within(10, "toyfaces looking at its folder"):
        line = assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'big'}",
                                      f"--num={10**15}"), "1 other file", "notes.txt")
    assert "000003.jpg" not in line


def _face_room(path):
    """What a face takes of the disk of ``path``: its 5.4 KB in the disk's whole blocks."""
    block = os.statvfs(path).f_frsize
    return -(-toyfaces.FACE_BYTES // block) * block


def _set_room(out, num, drawn=0):
    """What the command counts a set of ``num`` faces in ``out`` to take of its disk."""
    return toyfaces.room(num, drawn, os.statvfs(out.parent).f_frsize,
                         toyfaces.finishing(out, num, 0))


def test_more_faces_than_the_disk_holds_are_refused_before_drawing(tmp_path):
    """--num=10**8 built a list of every face's job first (memory growing by 100 MB a second,
    no bar), then would have filled the disk with 540 GB of faces."""
    from errors import sized
    with within(10, "toyfaces checking the free space"):
        assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'toy'}", f"--num={10**12}"),
                           f"--num={10**12} faces need about "
                           f"{sized(_set_room(tmp_path / 'toy', 10**12))}",
                           f"the disk of {tmp_path / 'toy'} has")
    assert not (tmp_path / "toy").exists()


def test_a_small_disk_is_said_in_mb(tmp_path, monkeypatch):
    """A disk with a few MB free said "the faces need about 0.0 GB, and the disk has 0.0 GB
    free"."""
    import shutil
    from types import SimpleNamespace
    from errors import sized
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=1_000_000))
    need = sized(_set_room(tmp_path / "toy", 1000))
    assert need.endswith(" MB")
    assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'toy'}", "--num=1000"),
                       f"--num=1000 faces need about {need}, and the disk of "
                       f"{tmp_path / 'toy'} has 1.0 MB free: lower --num")


@pytest.mark.parametrize("short", [4096, 1])
def test_a_nearly_full_disk_says_its_sizes_apart_in_kb(tmp_path, monkeypatch, short):
    """A disk with 32 KB free (a tmpfs of 32k, --num=3) said "the faces need about 0.0 MB, and
    the disk has 0.0 MB free"; one byte short of the room asked for said the same size twice."""
    import shutil
    from types import SimpleNamespace
    need = _set_room(tmp_path / "toy", 3)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=need - short))
    line = assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'toy'}", "--num=3"),
                              "--num=3 faces need about ", "lower --num")
    said = re.fullmatch(r"error: --num=3 faces need about (\S+) KB, and the disk of .* has (\S+) "
                        r"KB free: lower --num or pick another --out-dir", line)
    assert said, line
    asked, free = map(float, said.groups())
    assert asked > free > 0  # in as many digits as tell them apart
    assert abs(asked * 1e3 - need) < 50 and abs(free * 1e3 - (need - short)) < 50
    assert not (tmp_path / "toy").exists()


def test_the_free_space_is_counted_in_whole_blocks_of_the_disk(tmp_path, monkeypatch):
    """A 5.4 KB face takes 8 KB of a disk of 4 KB blocks: the check let through a set the
    disk held three quarters of (100 faces on 600 KB), which then stopped on a full disk."""
    import shutil
    from types import SimpleNamespace
    room = _face_room(tmp_path)
    if room == toyfaces.FACE_BYTES:
        pytest.skip("a disk whose blocks a face fills exactly")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=20 * room - 1))
    assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'toy'}", "--num=20"),
                       "--num=20 faces need about", "lower --num")
    assert not (tmp_path / "toy").exists()


def test_the_free_space_counts_the_csv_and_the_mark_besides_the_faces(tmp_path, monkeypatch):
    """The check counted the faces alone, which of seed 0 take just 2 blocks each of 4 KB: on
    a disk with room for them alone (a tmpfs of 800 KB, --num=100) it let the set through,
    and the disk filled at its end ("no space left ... after some of the faces", 99 drawn,
    no attributes.csv). What the set's files take is counted, each in whole blocks."""
    import shutil
    from types import SimpleNamespace
    out, block = tmp_path / "toy", os.statvfs(tmp_path).f_frsize
    assert cli("toyfaces", f"--out-dir={out}", "--num=20").returncode == 0
    files = [*(out / "faces").iterdir(), out / "attributes.csv"]
    mark = toyfaces.finishing(out, 20, 0)  # there until the set is whole
    taken = sum(-(-n // block) * block for n in [p.stat().st_size for p in files] +
                [len(mark.encode())])
    assert taken <= _set_room(out, 20)
    faces = 20 * _face_room(tmp_path)  # what the check asked for
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=faces))
    assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'full'}", "--num=20"),
                       "--num=20 faces need about", "lower --num")
    assert not (tmp_path / "full").exists()


def _stopped_set(out, num, drawn):
    """``out`` as a toyfaces run of ``num`` faces left it when stopped after ``drawn``."""
    make_toyfaces(out, num=num, seed=0, workers=1)
    (out / "attributes.csv").unlink()
    for i in range(drawn, num):
        (out / "faces" / f"{i:06d}.jpg").unlink()
    (out / toyfaces.UNFINISHED).write_text(f"python main.py toyfaces --out-dir={out} "
                                           f"--num={num} --seed=0\n")


def test_the_rerun_a_full_disk_asked_for_needs_room_only_for_the_faces_left(tmp_path,
                                                                              monkeypatch):
    """The faces the stopped run drew are drawn again over themselves, yet the rerun its line
    asked for wanted room for the whole set besides them: refused on the very disk they had
    filled ("need about 0.5 MB, and the disk has 0.0 MB free") once space was freed."""
    import shutil
    from types import SimpleNamespace
    out = tmp_path / "toy"
    _stopped_set(out, num=20, drawn=15)
    room = _face_room(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: SimpleNamespace(free=_set_room(out, 20, drawn=15)))
    r = cli("toyfaces", f"--out-dir={out}", "--num=20")
    assert r.returncode == 0 and r.stderr.count("error") == 0, r.stderr
    assert r.stdout.startswith("wrote 20 faces")
    assert len(list((out / "faces").iterdir())) == 20 and (out / "attributes.csv").is_file()
    # with less room than the faces left need: refused, and said with the faces drawn
    _stopped_set(tmp_path / "other", num=20, drawn=15)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(free=4 * room))
    assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'other'}", "--num=20"),
                       "faces need about", "more (15 are drawn already)")


def test_a_face_a_kill_cut_short_goes_with_the_rerun(tmp_path):
    """A kill -9 ended the workers as they wrote: their temporary faces (.000017.jpg.PID.tmp)
    stayed hidden in faces/ for good, beside the set the rerun drew whole. A living
    process's is another run's, drawing there now, and stays."""
    out = tmp_path / "toy"
    _stopped_set(out, num=20, drawn=15)
    dead = out / "faces" / ".000017.jpg.4194305.tmp"  # above Linux's largest process number
    dead.write_bytes(b"\xff\xd8 cut short")
    alive = out / "faces" / f".000018.jpg.{os.getppid()}.tmp"  # (this process draws 18)
    alive.write_bytes(b"\xff\xd8 being written")
    # and the CSV's own temporary file, cut short the same way (or another run's, kept)
    dead_csv = out / ".attributes.csv.4194305-0a1b2c3d.tmp"
    dead_csv.write_text("name,hair\n000000.jpg,bl")
    alive_csv = out / f".attributes.csv.{os.getppid()}-0a1b2c3d.tmp"
    alive_csv.write_text("name,hair\n")
    r = cli("toyfaces", f"--out-dir={out}", "--num=20")
    assert r.returncode == 0, r.stderr
    assert not dead.exists() and alive.exists()
    assert not dead_csv.exists() and alive_csv.exists()
    assert len(list((out / "faces").glob("*.jpg"))) == 20


@pytest.mark.parametrize("full, said", [
    ("ENOSPC", "no space left on the disk of {out}"),
    # over a disk quota (a cluster's home folder): "cannot write or read ...: Disk quota
    # exceeded; check the path, its permissions ...", without the way on
    ("EDQUOT", "the disk quota of {out} is used up")])
def test_a_disk_that_fills_up_leaves_whole_faces_and_says_how_to_go_on(tmp_path, monkeypatch,
                                                                       full, said):
    """The error named no path, and the face being written was left cut short under its
    final name, where the next run took it for drawn."""
    import errno
    import os
    from pathlib import Path
    write, written = Path.write_bytes, []
    code = getattr(errno, full)

    def filling(path, data):
        if len(written) == 5:  # the disk is full from the sixth face on, halfway through it
            open(path, "wb").write(b"\xff\xd8 half")
            raise OSError(code, os.strerror(code))
        written.append(path)
        return write(path, data)
    monkeypatch.setattr(Path, "write_bytes", filling)
    r = cli("toyfaces", f"--out-dir={tmp_path / 'toy'}", "--num=20")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: {said.format(out=tmp_path / 'toy')} after some of the faces: free some, and "
        f"the same command again draws the set whole")
    assert sorted(os.listdir(tmp_path / "toy" / "faces")) == [f"{i:06d}.jpg" for i in range(5)]
    # no CSV, no temporary one; the mark that the set is not whole, for a training on it
    assert sorted(os.listdir(tmp_path / "toy")) == [".toyfaces-unfinished", "faces"]


def test_a_file_size_limit_leaves_no_cut_short_face(tmp_path):
    """A file size limit (ulimit -f) smaller than a face: PIL's JPEG writer took no notice
    of the short write, and the command ended with 0 over 50 cut-short faces."""
    import resource
    import signal
    import subprocess
    import sys

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
    out = tmp_path / "toy"
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "toyfaces",
                             f"--out-dir={out}", "--num=20", "--seed=0"], capture_output=True,
                            text=True, timeout=120, preexec_fn=limited)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "File too large" in errors[0] and "(ulimit -f)" in errors[0]
    assert f"cannot write or read {out / 'faces'}{os.sep}0000" in errors[0], errors[0]
    assert list((out / "faces").iterdir()) == []  # no face, whole or cut short
    assert not (out / "attributes.csv").exists()


def test_a_set_inside_the_default_data_folder_is_said_to_mix_with_its_other_images(
        tmp_path, monkeypatch):
    """--out-dir=data/toy (where the older demo drew its set): a later `train --gpu` with the
    book's data/faces/ beside it read both sets, without a word."""
    from data import list_images
    monkeypatch.chdir(tmp_path)
    result = cli("toyfaces", "--out-dir=data/toy", "--num=4")
    assert result.returncode == 0, result.stderr
    note = result.stdout.strip().splitlines()[-1]
    assert note.startswith("note: data/toy lies inside data/, the folder train reads when "
                           "--data-path is not given"), note
    assert "--data-path=data/toy" in note
    assert len(list_images("data")) == 4  # as it says: train's default reads them
    # a set beside data/, as the demo's data-toy, is not mixed in: nothing to say
    result = cli("toyfaces", "--out-dir=data-toy", "--num=4")
    assert result.returncode == 0, result.stderr
    assert "note:" not in result.stdout
