"""experiments/settings.py: every setting it trains is a command line train accepts."""
import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

import config
from errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import settings  # noqa: E402


def test_every_setting_is_a_train_command_with_its_own_values(toy_dir):
    args = argparse.Namespace(width=24, batch_size=48, ema=0.99, amp=False)
    for name, (_, flags) in settings.SETTINGS.items():
        opt = config.parse("train", dict(data_path=str(toy_dir), **settings._options(name, args)))
        for key, value in flags.items():  # the setting's own values win over the script's
            assert getattr(opt, key) == value, (name, key)
        # and the script's --width (both nets), --batch-size and --ema where it sets none
        for key, value in dict(ngf=24, ndf=24, batch_size=48, ema=0.99).items():
            if key not in flags:
                assert getattr(opt, key) == value, (name, key)


@pytest.mark.slow
def test_a_setting_stopped_by_a_ctrl_c_of_the_sweep_goes_on_from_where_it_stopped(
        toy_dir, tmp_path, monkeypatch):
    """A sweep stopped by Ctrl-C left the setting's last.pth unfinished: train refused a new
    run over it (the rerun stopped at that setting), then, with --fresh, the setting was
    trained again from the start, also where only its evaluation had been stopped."""
    import torch
    from conftest import cli, same_weights, stopped_run
    run = tmp_path / "demo_seed0"
    calls = []
    monkeypatch.setattr(settings, "_cli", lambda *a, log: calls.append(a))
    monkeypatch.setattr(settings, "_epochs", lambda name, args: 2)
    args = argparse.Namespace(width=8, batch_size=16, ema=0.995, amp=False, gpu=False,
                              data=str(toy_dir), out=str(tmp_path), num=64)
    # the sweep's training of two epochs, whole (saved after each, as a stop after the
    # first saves: a save draws from the random state, for the average's BatchNorm)
    settings.train_and_evaluate("demo", 0, args)
    fresh = calls[0]
    assert fresh[0] == "train" and "--fresh" in fresh
    every_epoch = [f for f in fresh if not f.startswith("--save-every=")] + ["--save-every=1"]
    assert cli(*every_epoch).returncode == 0
    whole = tmp_path / "whole"
    shutil.copytree(run, whole)
    # the same, stopped after its first epoch: it goes on from there, to the same weights
    shutil.rmtree(run)
    one_epoch = [f for f in every_epoch if not f.startswith("--max-epoch=")] + ["--max-epoch=1"]
    assert cli(*one_epoch).returncode == 0
    state = torch.load(run / "last.pth", weights_only=True)
    state["options"]["max_epoch"] = 2  # as a stop in epoch 2 of 2 leaves it
    torch.save(state, run / "last.pth")
    options = json.loads((run / "options.json").read_text())
    (run / "options.json").write_text(json.dumps({**options, "max_epoch": 2}))
    calls.clear()
    settings.train_and_evaluate("demo", 0, args)
    assert calls[0][:2] == ("train", f"--resume={run / 'last.pth'}")
    # in its own folders, wherever it began: an --out moved since held a last.pth naming
    # the old ones, and train refused it, asking for flags this script does not have
    assert {f"--checkpoint-dir={run}", f"--save-path={run}"} <= set(calls[0])
    assert cli(*calls[0]).returncode == 0
    for name in ("netg_1.pth", "netg_ema_1.pth", "netd_1.pth"):
        assert same_weights(run / name, whole / name), name
    # trained, its evaluation stopped: nothing to train, then the evaluations
    calls.clear()
    settings.train_and_evaluate("demo", 0, args)
    assert calls[0][:2] == ("train", f"--resume={run / 'last.pth'}")
    assert "nothing to do" in cli(*calls[0]).stdout
    assert [c[0] for c in calls[1:]] == ["evaluate", "evaluate"]
    # a stopped run of other flags (the book's defaults, no average): trained afresh
    shutil.rmtree(run)
    stopped_run(toy_dir, run, of=2)
    calls.clear()
    settings.train_and_evaluate("demo", 0, args)
    assert calls[0] == fresh
    result = cli(*calls[0])  # over the stopped run: it trains
    assert result.returncode == 0, result.stderr
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 2


def test_a_stopped_run_whose_options_lack_one_is_trained_afresh(toy_dir, tmp_path,
                                                              monkeypatch):
    """A stopped run (last.pth, no figures yet) whose options.json was edited so that it
    lacks an option: nothing of it can be trusted to go on from, and nothing measured is
    lost, so the sweep trains it afresh (--fresh), where a finished one is refused."""
    run = tmp_path / "demo_seed0"
    run.mkdir()
    (run / "last.pth").write_bytes(b"a stopped run's state")
    (run / "options.json").write_text(json.dumps({"data_path": str(toy_dir), "max_epoch": 2}))
    calls = []
    monkeypatch.setattr(settings, "_cli", lambda *a, log: calls.append(a))
    monkeypatch.setattr(settings, "_epochs", lambda name, args: 2)
    args = argparse.Namespace(width=8, batch_size=16, ema=0.995, amp=False, gpu=False,
                              data=str(toy_dir), out=str(tmp_path), num=64, only="demo",
                              minutes=None)
    settings._refuse_runs_of_other_flags(args, [0])  # not refused
    settings.train_and_evaluate("demo", 0, args)
    assert calls[0][0] == "train" and "--fresh" in calls[0]


def _sweep(toy_dir, tmp_path, epochs, **popen):
    import subprocess
    from conftest import ROOT
    return subprocess.Popen(
        [sys.executable, str(ROOT / "experiments" / "settings.py"), "--only=demo", "--seeds=0",
         f"--epochs={epochs}", "--width=8", "--batch-size=16", f"--data={toy_dir}",
         f"--out={tmp_path / 'sweep'}", "--num=64"], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


@contextlib.contextmanager
def _training_sweep(toy_dir, tmp_path, **popen):
    """A sweep of 500 epochs in a session of its own, given as (the sweep, its setting's log,
    the training's pid) once that training is in epoch 2; what is left of either is killed
    afterwards (the training has a session of its own: not in the sweep's group)."""
    import time
    from conftest import children, kill_group
    sweep = _sweep(toy_dir, tmp_path, 500, start_new_session=True, **popen)
    log = tmp_path / "sweep" / "demo_seed0" / "log.txt"
    training = []
    try:
        deadline = time.monotonic() + 120
        while not (log.is_file() and "epoch 2/500" in log.read_text()):
            assert time.monotonic() < deadline and sweep.poll() is None, sweep.stderr.read()
            time.sleep(0.05)
        training = children(sweep.pid)
        assert len(training) == 1
        yield sweep, log, training[0]
    finally:
        kill_group(sweep)
        for pid in training:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
@pytest.mark.parametrize("signum, to_group, status, word", [
    (signal.SIGINT, True, 130, "interrupted"),  # Ctrl-C in a terminal
    (signal.SIGINT, False, 130, "interrupted"),  # kill -INT to the sweep alone
    (signal.SIGTERM, False, 143, "terminated"),  # kill to the sweep alone
    (signal.SIGHUP, False, 143, "terminated"),  # its terminal closed
], ids=["ctrl-c", "sigint-alone", "sigterm-alone", "sighup-alone"])
def test_a_stopped_sweep_stops_its_training_after_it_saved(toy_dir, tmp_path, signum,
                                                           to_group, status, word):
    """Ctrl-C stopped the sweep with a KeyboardInterrupt traceback, and the sweep killed the
    training it had started 0.25 s later, often in the middle of the save that Ctrl-C asks
    for (2 of 3 tries). Later: a stop sent to the sweep alone (kill, a closed terminal) left
    that training running to its end, or kept the sweep waiting for it."""
    import torch
    from conftest import group_ends
    with _training_sweep(toy_dir, tmp_path) as (sweep, log, training):
        (os.killpg if to_group else os.kill)(sweep.pid, signum)
        _, err = sweep.communicate(timeout=120)
        assert group_ends(sweep.pid)
        with pytest.raises(ProcessLookupError):  # the training ended with the sweep
            os.kill(training, 0)
    assert sweep.returncode == status, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines() == [
        f"{word}: run the same command again to go on with the settings not yet done"]
    run = log.parent
    said = log.read_text()
    assert f"{'SIGINT' if signum == signal.SIGINT else 'SIGTERM'}: saving after this step" in said
    assert said.count("saving after this step") == 1  # the stop reached it once
    assert 1 <= torch.load(run / "last.pth", weights_only=True)["epoch"] < 500
    assert not list(run.glob("*.tmp"))  # no half-written file


@pytest.mark.slow
def test_a_sweep_under_nohup_trains_on_after_a_hang_up(toy_dir, tmp_path):
    """nohup leaves the hang-up ignored, for the work to outlive the terminal; the sweep put
    its own handler in its place and stopped on it."""
    import time
    with _training_sweep(toy_dir, tmp_path, preexec_fn=_ignore_hangups) as (sweep, log, _):
        os.killpg(sweep.pid, signal.SIGHUP)  # the terminal closed; the shell passes it on
        deadline = time.monotonic() + 120
        while "epoch 4/500" not in log.read_text():
            assert sweep.poll() is None, f"the sweep ended: {sweep.communicate()[1]}"
            assert time.monotonic() < deadline, "the training made no progress"
            time.sleep(0.05)
        assert "saving after this step" not in log.read_text()


def _ignore_hangups():
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup leaves it


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_sweep_leaves_no_training_behind(toy_dir, tmp_path):
    """The sweep's training runs in a session of its own: a SIGKILL to the sweep (or the
    out-of-memory killer) left it training on alone, unseen, to its last epoch."""
    import time
    import torch
    from conftest import running
    with _training_sweep(toy_dir, tmp_path) as (sweep, log, training):
        sweep.kill()
        sweep.communicate(timeout=30)
        deadline = time.monotonic() + 60
        while running(training):
            assert time.monotonic() < deadline, "the training still runs without its sweep"
            time.sleep(0.1)
    said = log.read_text()
    assert "SIGTERM: saving after this step" in said
    assert 1 <= torch.load(log.parent / "last.pth", weights_only=True)["epoch"] < 500
    assert not list(log.parent.glob("*.tmp"))


def test_a_setting_that_fails_is_one_line_naming_its_log(tmp_path):
    """A command of the sweep that failed ended it with a CalledProcessError traceback, and
    its own error was only in a log the traceback did not name."""
    empty = tmp_path / "empty"
    (empty / "faces").mkdir(parents=True)
    sweep = _sweep(empty, tmp_path, 1)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 1
    log = tmp_path / "sweep" / "demo_seed0" / "log.txt"
    said = f"no images in {empty}"  # train's own line, quoted
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: `main.py train` failed (exit status 2): ") and said in err
    assert err.strip().endswith(f"; its output is at the end of {log}")
    assert "error:" in log.read_text()


def test_a_failure_without_an_error_line_quotes_no_earlier_commands(tmp_path, monkeypatch):
    """A run's log.txt keeps every command's output: a training killed outright (the
    out-of-memory killer) was said to have failed with the line of an earlier failure in
    that log ("no images in ...", for a folder filled since)."""
    log = tmp_path / "log.txt"
    log.write_text("error: no images in /old: put the faces in /old/faces/\n")
    killed = tmp_path / "python"  # the command, killed by SIGKILL as it starts
    killed.write_text("#!/bin/sh\nkill -9 $$\n")
    killed.chmod(0o755)
    monkeypatch.setattr(settings.sys, "executable", str(killed))
    with pytest.raises(settings.CommandFailed) as failed:
        settings._cli("train", log=log)
    assert str(failed.value) == (f"`main.py train` was killed by signal 9; its output is at "
                                 f"the end of {log}")


def _settings(*flags, cwd):
    """settings.py run as a user runs it, from ``cwd``; its completed process."""
    import subprocess
    from conftest import ROOT
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "settings.py"), *flags],
                          cwd=cwd, text=True, capture_output=True, timeout=300)


@pytest.mark.slow
def test_paths_are_taken_from_the_folder_the_sweep_is_run_in(toy_dir, tmp_path):
    """Run from another folder than the project's, the commands took --data and --out from
    the project's folder and the script from its own: a relative --data was not found, the
    runs went to one folder, the logs to another, the table came out empty and a rerun
    trained everything again."""
    import shutil
    here = tmp_path / "here"
    # the faces without attributes.csv: its evaluations count no modes, so they need no
    # attribute classifier (on a machine without one cached they trained it, minutes, into
    # the user's own cache folder)
    shutil.copytree(toy_dir / "faces", tmp_path / "plain" / "faces")
    here.mkdir()
    flags = ("--only=demo", "--seeds=0", "--epochs=1", "--width=8", "--num=64",
             f"--data={os.path.relpath(tmp_path / 'plain', here)}", "--out=../sweep")
    first = _settings(*flags, cwd=here)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "sweep" / "demo_seed0"
    assert (run / "metrics_ema.json").is_file() and (run / "log.txt").is_file()
    assert "| demo: " in first.stdout  # the table has the run
    assert "nan" not in first.stdout  # no modes on a folder of plain faces: "-", not nan
    again = _settings(*flags, cwd=here)
    assert again.returncode == 0, again.stderr
    assert "done" not in again.stdout  # nothing trained twice
    assert "| demo: " in again.stdout
    # at another --num the runs are measured again (the table showed the other num's
    # figures, and the floor at that num), not trained again
    before = (run / "last.pth").read_bytes()
    fewer = _settings(*[f for f in flags if f != "--num=64"], "--num=32", cwd=here)
    assert fewer.returncode == 0, fewer.stderr
    assert json.loads((run / "metrics_ema.json").read_text())["num"] == 32
    assert (run / "last.pth").read_bytes() == before
    # the same runs with other flags were kept and reported as that sweep's
    wider = _settings(*flags, "--width=16", cwd=here)
    assert wider.returncode == 2 and wider.stderr.strip().splitlines() == [
        f"error: {run} was made with --width=8, not 16: its figures are not this sweep's; "
        f"pass another --out for these flags, or delete {run} to make it again"]
    # trained in bf16 where the machine has it (--amp unset), kept for an fp32 sweep
    fp32 = _settings(*flags, "--amp=False", cwd=here)
    assert fp32.returncode == 2 and "was made with --amp left unset, not False" in fp32.stderr
    # the report tables the runs as they were trained: it wanted this sweep's flags again
    # (or told the user to delete the runs), and drew the 10,000 toy faces of the default
    # --data first
    alone = _settings("--report", "--out=../sweep", "--only=demo", cwd=here)
    assert alone.returncode == 0, alone.stderr
    assert "| demo: " in alone.stdout
    assert "SWD floor (real vs real, 32 faces compared)" in alone.stdout
    assert not (tmp_path / "sweep" / "toyfaces.log").exists()


@pytest.mark.parametrize("flag, said", [
    ("--only=book,nosuch", ["'nosuch'", "book, base, g2"]),  # book is not trained first
    ("--seeds=0,a", ["--seeds", "'0,a'"]),
    # train refused it, after every setting of seed 0 had trained
    ("--seeds=0,4294967296", ["--seeds", "0 to 2**31", "not 4294967296"]),
    ("--minutes=1", ["speed.json", "--time"]),  # no speed pass yet
    ("--epochs=0", ["--epochs", "at least 1"]),
    ("--epochs=a", ["--epochs", "'a'"]),
    ("--data=nosuch", ["--data", "nosuch"]),
    ("--ema=0", ["--ema", "less than 1", "not 0.0"]),  # no average: no metrics_ema.json
    ("--ema=1", ["--ema", "not 1.0"]),
    ("--out=", ["--out= names no folder"]),  # the folder it was run in took the runs
    ("--data=", ["--data= names no folder"]),
    # a folder named with the space was made (and trained into) beside the one meant
    ("--out=sweep ", ["--out: 'sweep ' has a space at its end, which would name another path "
                      "than 'sweep': remove it"]),
    ("--gpu", ["--gpu asks for CUDA", "leave it out"]),  # after the run's folder was made
    ("--report", ["--report", "nothing of book is measured", "without --report"]),  # was an
    # empty table
])
def test_a_mistake_in_the_flags_is_one_line_before_any_run(toy_dir, tmp_path, flag, said):
    """A KeyError, ValueError or FileNotFoundError traceback, some after the settings before
    the unknown name had trained; a usage block before argparse's own line."""
    result = _settings("--only=book", "--seeds=0", "--epochs=1", "--width=8", "--num=64",
                       f"--data={toy_dir}", f"--out={tmp_path / 'sweep'}", flag, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(words in lines[0] for words in said), lines[0]
    assert not (tmp_path / "sweep" / "book_seed0").exists()


def test_epochs_beside_minutes_and_a_setting_named_twice(toy_dir, tmp_path):
    """--minutes sets each setting's epochs, and --epochs beside it was passed over without a
    word; --only=book,book named (and would train) book twice."""
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "speed.json").write_text(
        json.dumps({"book": {"images_per_s": 100.0, "with": {}}}))
    common = ("--seeds=0", "--width=8", f"--data={toy_dir}", f"--out={tmp_path / 'sweep'}")
    r = _settings("--only=book", "--epochs=1", "--minutes=1", *common, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: --epochs and --minutes were both given: --minutes trains each setting the "
        "epochs its speed fits into them; pass one of them"), r.stderr
    assert not (tmp_path / "sweep" / "book_seed0").exists()
    r = _settings("--only=book,book", "--report", *common, cwd=tmp_path)
    assert r.returncode == 2 and "nothing of book is measured" in r.stderr, r.stderr


def test_the_scripts_take_main_pys_spellings_of_their_flags(toy_dir, tmp_path):
    """--batch_size (the book's spelling, which main.py takes), --nogpu and --amp=false were
    refused by settings.py and bench.py ('unrecognized arguments', 'invalid choice')."""
    import subprocess
    from conftest import ROOT
    r = _settings("--batch_size=8", "--nogpu", "--amp=false", "--report", f"--data={toy_dir}",
                  f"--out={tmp_path / 'none'}", cwd=tmp_path)
    assert r.stderr.strip().splitlines() == [  # the flags were read: the next check speaks
        f"error: --report: nothing is measured in {tmp_path / 'none'} yet: run the sweep "
        f"first (the same command without --report)"]
    for device in ("--nogpu", "--gpu=False"):
        r = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--batch_size=4", device,
                            "--measure=0"], cwd=tmp_path, text=True, capture_output=True)
        assert r.stderr.strip() == "error: --measure must be at least 1, not 0", r.stderr
    r = _settings("--batch_size=8", "--gpu=false", "--noamp", "--report", f"--data={toy_dir}",
                  f"--out={tmp_path / 'none'}", cwd=tmp_path)
    assert "nothing is measured" in r.stderr, r.stderr
    r = _settings("--amp=maybe", cwd=tmp_path)
    assert r.returncode == 2 and "--amp: takes true or false, not 'maybe'" in r.stderr
    # --noamp=False takes --noamp back, as main.py reads it (argparse: "argument
    # --noamp/--no-amp: ignored explicit argument 'False'")
    for given, amp in ((["--noamp=False"], None), (["--noamp=True"], False),
                       (["--no-amp=no"], None), (["--noamp"], False)):
        assert settings._parser().parse_args(given).amp is amp, given
    r = _settings("--amp", "--noamp=False", cwd=tmp_path)
    assert r.stderr.strip() == "error: --amp and --noamp were both given: pass one of them"
    r = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--nogpu=False",
                        "--measure=0"], cwd=tmp_path, text=True, capture_output=True)
    assert r.stderr.strip() == "error: --measure must be at least 1, not 0", r.stderr


@pytest.mark.slow
def test_time_measures_again_when_run_again(toy_dir, tmp_path):
    """The timing's run stayed in timing/NAME, so --time a second time (after a change, or on
    another device) resumed it, "nothing to do", and wrote the first run's speed again."""
    flags = ("--time", "--only=book", "--width=8", f"--data={toy_dir}",
             f"--out={tmp_path / 'sweep'}")
    losses = tmp_path / "sweep" / "timing" / "book" / "losses.csv"
    first = _settings(*flags, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # the first run's speed marked: the one row of a one-batch epoch is the same in both
    # runs but for its speed, which a second run can measure the same to 0.1 image/s
    header, row = losses.read_text().splitlines()
    losses.write_text(f"{header}\n{row.rsplit(',', 1)[0]},-1.0\n")
    again = _settings(*flags, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" not in (tmp_path / "sweep" / "timing.log").read_text()
    speed = losses.read_text().splitlines()[-1].rsplit(",", 1)[1]
    assert speed != "-1.0"  # trained again: its own speed, its own times


def test_minutes_names_the_settings_with_no_measured_speed(toy_dir, tmp_path):
    """speed.json without one of the settings: a KeyError once the ones before it trained."""
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "speed.json").write_text('{"book": 500.0}')
    result = _settings("--only=book,base", "--seeds=0", "--width=8", "--num=64", "--minutes=1",
                       f"--data={toy_dir}", f"--out={out}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --minutes needs each setting's speed, and {out / 'speed.json'} has none for "
        f"base: measure it first, the same command with --time in place of --minutes and "
        f"--only=base"]
    assert not (out / "book_seed0").exists()


@pytest.mark.parametrize("text", ['{"book": 500', '[500]', '{"book": "fast"}'])
@pytest.mark.parametrize("flag", ["--minutes=1", "--epochs=1", "--report"])
def test_a_damaged_speed_file_is_one_line_before_any_run(toy_dir, tmp_path, text, flag):
    """A speed.json cut short (a full disk) or edited by hand: a JSONDecodeError or TypeError
    traceback, with --epochs too once the settings trained (the table reads the speeds)."""
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "speed.json").write_text(text)
    result = _settings("--only=book", "--seeds=0", "--width=8", "--num=64", flag,
                       f"--data={toy_dir}", f"--out={out}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {out / 'speed.json'} is not a file of the speed pass's speeds (damaged or "
        f"edited): delete it and measure again with --time"]
    assert not (out / "book_seed0").exists()
    assert (out / "speed.json").read_text() == text  # left for the user to look at


@pytest.mark.parametrize("damaged, text", [
    ("metrics.json", '{"swd": {"mean": 0.03'),  # cut short by a full disk
    ("metrics_ema.json", '{"swd": 31.0}'),  # edited by hand
    ("options.json", '{"data_path": "data-toy"}'),
])
def test_damaged_results_of_a_run_are_one_line_in_the_report(toy_dir, tmp_path, damaged,
                                                              text):
    """A run's metrics or options file damaged or edited by hand: a JSONDecodeError,
    TypeError or KeyError traceback from --report (and from the sweep's own table)."""
    run = tmp_path / "sweep" / "book_seed0"
    run.mkdir(parents=True)
    figures = {"num": 64, "swd": {"mean": 0.031}, "swd_floor": {"mean": 0.005},
               "modes": {"kl": 2.0, "confident_share": 0.1, "modes": 12, "values_covered": 30}}
    for name in ("metrics.json", "metrics_ema.json"):
        (run / name).write_text(json.dumps(figures))
    (run / "options.json").write_text(json.dumps({"max_epoch": 1, "data_path": str(toy_dir)}))
    (run / damaged).write_text(text)
    result = _settings("--only=book", "--report", f"--out={run.parent}", cwd=tmp_path)
    assert result.returncode == 2
    fix = (f"delete {run} and run the sweep again to make it again" if damaged == "options.json"
           else f"delete {run / 'metrics.json'} and {run / 'metrics_ema.json'} and run the "
                f"sweep again to measure them again (the training is kept)")
    assert result.stderr.strip().splitlines() == [
        f"error: {run / damaged} is damaged or not this script's: {fix}"]
    assert (run / damaged).read_text() == text  # left for the user to look at


@pytest.mark.parametrize("text", ['{"data_path": "data-toy", "max_epoch": 1}', '[1]'])
def test_a_finished_runs_damaged_options_are_one_line_in_the_sweep(toy_dir, tmp_path, text):
    """A finished run whose options.json was edited so that it lacks an option: the sweep
    named it "made with --width=None" (a list: an AttributeError traceback)."""
    run = tmp_path / "sweep" / "book_seed0"
    run.mkdir(parents=True)
    (run / "metrics_ema.json").write_text(json.dumps({"num": 64}))
    (run / "options.json").write_text(text)
    result = _settings("--only=book", "--seeds=0", f"--data={toy_dir}", f"--out={run.parent}",
                       cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {run / 'options.json'} is damaged or not this script's: delete {run} and run "
        f"the sweep again to make it again"]
    assert (run / "options.json").read_text() == text


def test_the_report_of_a_run_whose_images_are_gone_and_of_one_seed(toy_dir, tmp_path):
    """The table stopped at a run whose training folder was deleted, asking for a
    --data-path this script does not have (only its minutes need the folder); one seed's
    counts read 12.0 modes; the floor's line named --num, not the faces compared."""
    import torch
    from conftest import ROOT, drawing_nets
    run = tmp_path / "sweep" / "book_seed0"
    run.mkdir(parents=True)
    figures = {"num": 32, "num_asked": 1024, "swd": {"mean": 31.0},
               "swd_floor": {"mean": 5.0}, "modes": {"kl": 2.0, "confident_share": 0.1,
                                                     "modes": 12, "values_covered": 30}}
    swd = {"metrics.json": 31.0, "metrics_ema.json": 24.0}  # G's, its average's
    for name in ("metrics.json", "metrics_ema.json"):
        (run / name).write_text(json.dumps({**figures, "swd": {"mean": swd[name]}}))
    (run / "options.json").write_text(json.dumps({"max_epoch": 1, "ngf": 8, "ndf": 8,
                                                  "data_path": str(tmp_path / "gone")}))
    netg = drawing_nets()[0]  # G's faces differ from each other and from its average's
    with torch.no_grad():
        netg.main[12].weight.mul_(4)  # more contrast: JPEG keeps the faces apart
    torch.save(netg.state_dict(), run / "netg_0.pth")
    with torch.no_grad():
        netg.main[12].weight.neg_()  # the average's: each face's colours inverted
    torch.save(netg.state_dict(), run / "netg_ema_0.pth")
    (run.parent / "speed.json").write_text(json.dumps({"book": {"images_per_s": 100.0,
                                                                "with": None}}))
    result = _settings("--only=book", "--report", f"--out={run.parent}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| book: "))
    assert row.split(" | ")[2:4] == ["1", "-"]  # its epochs, and no minutes
    # its header is the README's table's, where the report's said "confident"
    header = result.stdout.splitlines()[0]
    assert header.startswith("| setting |") and header in (ROOT / "README.md").read_text()
    assert row.endswith("| 30 | 12 |")
    # each SWD column reads its own file: G's, then its average's
    assert header.split(" | ")[4:6] == ["SWD x1e3, G", "SWD x1e3, average"]
    assert row.split(" | ")[4:6] == [f"{swd['metrics.json']:.1f}",
                                     f"{swd['metrics_ema.json']:.1f}"]
    assert "SWD floor (real vs real, 32 faces compared): 5.0" in result.stdout
    # grids.jpg: the row of each G's first 8 seeds, the last step's, then its average's (a
    # sheet of labels without the faces was a file as well)
    import numpy as np
    from PIL import Image
    from generate import Faces, to_pil
    sheet = np.asarray(Image.open(run.parent / "grids.jpg").convert("RGB"), dtype=np.int16)
    label = sheet.shape[1] - 2 * 8 * 96 - 8  # the names' column, as wide as the longest
    def coarse(image):  # 8x8 blocks' means: what JPEG keeps of the faces' grain
        return image.reshape(12, 8, 12, 8, 3).mean((1, 3))
    faces = [coarse(np.asarray(to_pil(face), dtype=np.float64))
             for g in ("netg_0.pth", "netg_ema_0.pth")
             for face in Faces.load(run / g, device=torch.device("cpu")).tensors(range(8))]
    for i in range(16):  # each cell nearest its own face of the 16
        left = label + (i // 8) * (8 * 96 + 8) + 96 * (i % 8)
        cell = coarse(sheet[20:116, left:left + 96].astype(np.float64))
        far = [np.abs(cell - face).mean() for face in faces]
        assert far.index(min(far)) == i and min(far) < 4, (i, far)
    # the disk full or a file size limit as it is written again: it was written in place,
    # cut short, and said "wrote"; the one before is kept now
    import resource
    import subprocess
    before = (run.parent / "grids.jpg").read_bytes()

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, len(before) // 2))
    cut = subprocess.run([sys.executable, str(ROOT / "experiments" / "settings.py"),
                          "--only=book", "--report", f"--out={run.parent}"], cwd=tmp_path,
                         text=True, capture_output=True, timeout=300, preexec_fn=limited)
    assert cut.returncode == 2, cut.stderr
    assert cut.stderr.strip().splitlines()[-1].startswith(
        f"error: cannot write or read {run.parent / 'grids.jpg'}: File too large;")
    assert (run.parent / "grids.jpg").read_bytes() == before
    # a grids.jpg the system refuses (here a folder of that name): an IsADirectoryError
    # traceback, where the commands say it in one line
    (run.parent / "grids.jpg").unlink()
    (run.parent / "grids.jpg").mkdir()
    refused = _settings("--only=book", "--report", f"--out={run.parent}", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: cannot write or read {run.parent / 'grids.jpg'}: Is a directory; check the "
        f"path, its permissions and the free space"]


def test_a_stopped_run_of_other_flags_is_refused_not_deleted(toy_dir, tmp_path):
    """A sweep stopped halfway, run again with another flag (a forgotten --width): the
    stopped run was deleted (train's --fresh) with a note in its log.txt alone, and trained
    again from the start, where a finished run of other flags is refused."""
    from conftest import stopped_run
    run = tmp_path / "sweep" / "book_seed0"
    stopped_run(toy_dir, run, of=3)
    before = (run / "last.pth").read_bytes()
    result = _settings("--only=book", "--seeds=0", "--width=16", "--epochs=3",
                       "--batch-size=16", "--num=32", f"--data={toy_dir}",
                       f"--out={run.parent}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {run} holds a run stopped halfway, begun with --width=8, not 16: these flags "
        f"would train it again from the start; pass another --out for them, the run's own "
        f"flags to go on with it, or delete {run}"]
    assert (run / "last.pth").read_bytes() == before


def test_minutes_refuses_speeds_measured_with_other_flags(toy_dir, tmp_path):
    """speed.json kept only the speeds: one measured at --width=8 gave a --width=32 sweep its
    epochs without a word. A file of the earlier kind (speeds alone) is still read."""
    out = tmp_path / "sweep"
    out.mkdir()
    measured = {"ngf": 16, "ndf": 16, "batch_size": 64, "amp": None, "gpu": False}
    (out / "speed.json").write_text(json.dumps({"book": {"images_per_s": 500.0,
                                                         "with": measured}}))
    flags = ("--only=book", "--seeds=0", "--num=64", "--minutes=1", f"--data={toy_dir}",
             f"--out={out}")
    result = _settings(*flags, "--width=8", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --minutes: {out / 'speed.json'} has the speed of book with --width=16, not "
        f"8: measure it again, the same command with --time in place of --minutes"]
    result = _settings(*flags, "--width=16", "--amp=False", cwd=tmp_path)
    assert "with --amp left unset, not False" in result.stderr
    assert not (out / "book_seed0").exists()


def test_minutes_gives_a_setting_the_epochs_its_speed_fits_into_them(toy_dir, tmp_path):
    """--minutes is minutes of training: a run done at other epochs is refused, naming the
    epochs the minutes give, minutes x 60 x the measured images/s over the folder's images
    (read as seconds, a 90-minute budget trained 1.5 minutes' epochs)."""
    out = tmp_path / "sweep"
    run = out / "book_seed0"
    run.mkdir(parents=True)
    (out / "speed.json").write_text(json.dumps({"book": {"images_per_s": 500.0,
                                                         "with": None}}))
    (run / "metrics_ema.json").write_text("{}")  # done, at one epoch
    (run / "options.json").write_text(json.dumps({
        "max_epoch": 1, "ngf": 8, "ndf": 8, "batch_size": 64, "ema": 0.995, "amp": None,
        "data_path": str(toy_dir)}))
    result = _settings("--only=book", "--seeds=0", "--width=8", "--minutes=1.5",
                       f"--data={toy_dir}", f"--out={out}", cwd=tmp_path)
    faces = len(list((toy_dir / "faces").glob("*.jpg")))
    epochs = round(1.5 * 60 * 500.0 / faces)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {run} was made with 1 epoch, not the {epochs} that --minutes=1.5 gives it: "
        f"its figures are not this sweep's; pass another --out for these flags, or delete "
        f"{run} to make it again"]


def test_a_finished_seed_of_other_flags_is_refused_not_averaged_with_this_sweep(toy_dir,
                                                                                tmp_path):
    """A sweep of seed 1 at 2 epochs beside a finished seed 0 of 1 epoch trained it, and the
    table averaged the two in one row that said "2 seeds, 1 epoch"."""
    data = tmp_path / "plain"  # no attributes.csv: no classifier, where it is trained
    shutil.copytree(toy_dir / "faces", data / "faces")
    out = tmp_path / "sweep"
    run = out / "book_seed0"
    run.mkdir(parents=True)
    (run / "metrics_ema.json").write_text("{}")  # done, at one epoch
    (run / "options.json").write_text(json.dumps({
        "max_epoch": 1, "ngf": 8, "ndf": 8, "batch_size": 16, "ema": 0.995, "amp": None,
        "data_path": str(data)}))
    result = _settings("--only=book", "--seeds=1", "--epochs=2", "--width=8",
                       "--batch-size=16", "--num=32", f"--data={data}", f"--out={out}",
                       cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {run} was made with --epochs=1, not 2: the table would average its figures "
        f"with this sweep's; pass another --out for these flags, or delete {run}"]
    assert not (out / "book_seed1").exists()


def test_a_stopped_seed_of_other_flags_is_no_reason_to_refuse_the_sweep(tmp_path):
    """The table averages the finished seeds alone: a seed 0 of 1 epoch stopped halfway is
    in no figure of a sweep of seed 1 at 2 epochs, so that sweep goes on; finished, it is
    refused (its figures would be averaged with the sweep's)."""
    out = tmp_path / "sweep"
    run = out / "book_seed0"
    run.mkdir(parents=True)
    (run / "last.pth").write_bytes(b"a stopped run's state")
    (run / "options.json").write_text(json.dumps({
        "max_epoch": 1, "ngf": 8, "ndf": 8, "batch_size": 16, "ema": 0.995, "amp": None,
        "data_path": str(tmp_path / "data")}))
    args = settings._parser().parse_args([
        "--only=book", "--seeds=1", "--epochs=2", "--width=8", "--batch-size=16",
        f"--data={tmp_path / 'data'}", f"--out={out}"])
    settings._refuse_runs_of_other_flags(args, [1])  # not refused
    (run / "metrics_ema.json").write_text("{}")
    with pytest.raises(UserError, match="the table would average its figures"):
        settings._refuse_runs_of_other_flags(args, [1])


def test_minutes_that_are_not_a_number_are_one_line(toy_dir, tmp_path):
    """--minutes=nan and --minutes=inf passed the check and ended in a ValueError or
    OverflowError traceback as the first setting's epochs were worked out."""
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "speed.json").write_text(json.dumps({"book": {"images_per_s": 500.0,
                                                         "with": None}}))
    for minutes in ("nan", "inf"):
        result = _settings("--only=book", "--seeds=0", "--width=8", f"--minutes={minutes}",
                           f"--data={toy_dir}", f"--out={out}", cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"error: --minutes must be a number more than 0, not {minutes}"]
    assert not (out / "book_seed0").exists()
    # --time and --report do not read it, and took it without a word: --time --minutes=nan
    # began the speed pass
    for mode, minutes in (("--time", "nan"), ("--time", "-1"), ("--report", "inf")):
        result = _settings(mode, "--only=book", f"--minutes={minutes}", f"--data={toy_dir}",
                           f"--out={out}", cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"error: --minutes must be a number more than 0, not {float(minutes)}"]
    assert sorted(p.name for p in out.iterdir()) == ["speed.json"]


def test_out_inside_a_file_and_time_with_report_are_one_line(toy_dir, tmp_path):
    (tmp_path / "afile").write_text("")
    r = _settings("--only=book", f"--data={toy_dir}", f"--out={tmp_path / 'afile' / 'sub'}",
                  cwd=tmp_path)  # was a NotADirectoryError traceback
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: --out: {tmp_path / 'afile'} is a file, so no folder can be made inside it: "
        f"name another --out"]
    r = _settings("--time", "--report", f"--data={toy_dir}", f"--out={tmp_path / 'o'}",
                  cwd=tmp_path)  # only the speeds were measured, the --report left out
    assert r.returncode == 2 and "pass one of them" in r.stderr


@pytest.mark.slow
def test_a_stopped_speed_pass_keeps_the_speeds_it_measured(toy_dir, tmp_path):
    """speed.json was written at the end only: a Ctrl-C after the first setting's speed lost
    it, and the next --time measured it again."""
    import subprocess
    from conftest import ROOT
    out = tmp_path / "sweep"
    sweep = subprocess.Popen(
        [sys.executable, "-u", str(ROOT / "experiments" / "settings.py"), "--time",
         "--only=book,g2", "--width=8", "--batch-size=16", f"--data={toy_dir}", f"--out={out}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert any(line.startswith("book: ") for line in sweep.stdout)  # (the first setting)
        sweep.send_signal(signal.SIGINT)
        _, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    # "run the same command again to go on" measured book again: --time measures every
    # setting it names
    assert err.strip().splitlines()[-1] == (
        f"interrupted: the speeds measured so far are kept in {out / 'speed.json'}; measure "
        f"the others with the same command and --only=g2")
    speeds = json.loads((out / "speed.json").read_text())
    assert list(speeds) == ["book"] and speeds["book"]["images_per_s"] > 0
    assert speeds["book"]["with"] == {"ngf": 8, "ndf": 8, "batch_size": 16, "amp": None,
                                      "gpu": False}


def test_the_help_says_what_the_script_does_and_every_flag_with_its_default(tmp_path):
    """The description stopped mid-sentence ("which settings give the"), and --epochs,
    --seeds, --only, --num, --data and --out said nothing, not even their defaults."""
    import re
    result = _settings("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "which settings give the\nbest faces for a budget." in result.stdout
    assert "minutes for the budget." in result.stdout  # to the docstring's end
    options = result.stdout.split("\noptions:\n")[1]
    flags = {block.split()[0]: " ".join(block.split()[1:])
             for block in re.split(r"\n  (?=--)", options) if block.startswith("--")}
    assert {"--epochs", "--seeds", "--only", "--num", "--data", "--out"} <= set(flags)
    for flag, said in flags.items():
        assert "default: " in said, flag
