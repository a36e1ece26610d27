"""Never lose a night: exact resume, Ctrl-C, and the full state in last.pth."""
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoint
import curves
import train as train_module
from config import parse
from curves import read_rows
from errors import UserError

from conftest import (ROOT, assert_clean_error, children, cli, draw_grid, kill_group,
                      read_until, running, same_weights, stderr_within, stopped_run,
                      train_args, train_small, within)


@pytest.mark.parametrize("extra", [{}, {"cache": False, "num_workers": 2}, {"ema": 0.99},
                                   {"d_bn": False}],  # (D's weights saved as they train)
                         ids=["cache", "workers", "ema", "no-d-bn"])
def test_three_epochs_equal_one_then_resume(toy_dir, tmp_path, extra):
    train_small(toy_dir, tmp_path / "straight", max_epoch=3, **extra)
    train_small(toy_dir, tmp_path / "split", max_epoch=1, **extra)
    assert torch.load(tmp_path / "split" / "last.pth", weights_only=True)["epoch"] == 1
    train_small(toy_dir, tmp_path / "split", max_epoch=3, resume=True, **extra)
    names = ["netg_2.pth", "netd_2.pth"] + (["netg_ema_2.pth"] if extra.get("ema") else [])
    for name in names:
        assert same_weights(tmp_path / "straight" / name, tmp_path / "split" / name), name


class _StepClock:
    """train's clock, in which each step of the run takes a second: a budget then ends at a
    known step, however fast the machine."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def perf_counter():
        return float(train_module.training.step) if train_module.training else 0.0


def test_a_time_budget_ends_the_run_at_the_step_that_ends_it_and_resume_goes_on(
        toy_dir, tmp_path, capsys, monkeypatch):
    """--max-minutes (make demo's 10) ends the run at the step that ends the budget, its state
    saved to last.pth (which generate draws from); at an epoch's end, that epoch's checkpoints
    and grid too, although --save-every would not save them. It decided per epoch, by the
    last one's length, and a CPU just too slow for one more epoch lost up to an epoch of the
    minutes given. --resume, given no budget, trains the rest, to the weights of a run that
    had time for all three epochs (a budget of an hour changes nothing)."""
    monkeypatch.setattr(train_module, "time", _StepClock())
    straight = tmp_path / "straight"
    train_small(toy_dir, straight, max_epoch=3, max_minutes=60, plot_every=1)
    assert "--max-minutes" not in capsys.readouterr().out
    within, ending = tmp_path / "within", tmp_path / "ending"
    # 4 batches an epoch: 6 steps end in the second epoch, after its second batch
    train_small(toy_dir, within, max_epoch=3, max_minutes=6 / 60, plot_every=1)
    said = capsys.readouterr().out
    assert (f"--max-minutes=0.1: the time is up in epoch 2 of 3, after batch 2 of 4: the run's "
            f"state is saved to {within / 'last.pth'}, which generate also draws from; "
            f"continue it with") in said, said
    assert f"--resume={within / 'last.pth'}" in said, said
    state = torch.load(within / "last.pth", weights_only=True)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 2, 6)
    assert not list(within.glob("net*.pth"))  # --save-every=10: no epoch's files yet
    assert (within / "imgs" / "losses.png").is_file()  # the curves up to the stop
    # its last line said "weights in ..., sample grids in ...", where it wrote neither
    last = said.rstrip().splitlines()[-1]
    assert last.startswith("done: no epoch reached a save point this time (--save-every=10), "
                           "so no netg_N.pth and no grid were written; draw faces from the "
                           "state where it stopped with `"), last
    assert last.endswith(
        f"generate --netg-path={within / 'last.pth'} --netd-path={within / 'last.pth'}`")
    # 4 steps end with the first epoch, which saves as a last epoch does
    train_small(toy_dir, ending, max_epoch=3, max_minutes=4 / 60)
    said = capsys.readouterr().out
    assert (f"--max-minutes={4 / 60:g}: the time is up with the end of epoch 1 of 3; continue "
            f"the run with") in said, said
    assert sorted(p.name for p in ending.glob("net*.pth")) == ["netd_0.pth", "netg_0.pth"]
    assert (ending / "imgs" / "0.png").is_file()
    assert said.rstrip().splitlines()[-1].endswith(
        f"generate --netg-path={ending / 'netg_0.pth'} --netd-path={ending / 'netd_0.pth'}`")
    # stopped within an epoch after a save point (make demo on a slow CPU): the files to draw
    # from are the state where it stopped, not the older save point's
    later = tmp_path / "later"
    train_small(toy_dir, later, max_epoch=3, max_minutes=6 / 60, save_every=1, ema=0.9)
    said = capsys.readouterr().out
    assert (later / "netg_ema_0.pth").is_file()
    assert said.rstrip().splitlines()[-1].endswith(
        f"generate --netg-path={later / 'last.pth'} --netd-path={later / 'last.pth'}`")
    assert torch.load(ending / "last.pth", weights_only=True)["epoch"] == 1
    # the same command again (without --resume) is refused, naming the stop as the time-up
    # line did: "the end of epoch 1" was "a run stopped in epoch 2" there
    for run, where in ((within, "in epoch 2 of 3"), (ending, "after epoch 1 of 3")):
        with pytest.raises(UserError, match=f"holds a run stopped {where}: continue"):
            train_small(toy_dir, run, max_epoch=3)
    for run in (within, ending):
        train_small(toy_dir, run, max_epoch=3, resume=True)
        assert "--max-minutes" not in capsys.readouterr().out
        for name in ("netg_2.pth", "netd_2.pth"):
            assert same_weights(straight / name, run / name), (run, name)
    # and the curves go on as the straight run's: the running means since the last save
    # point come back with the state (without them, the losses logged, plotted and shown in
    # the bar after the resume were means of its own steps only, a jump in every curve)
    assert _rows(within) == _rows(straight) and len(_rows(straight)) == 12


def test_a_budget_that_ends_as_an_epoch_saves_its_state_names_that_state_to_draw_from(
        toy_dir, tmp_path, capsys, monkeypatch):
    """The minutes ran out while the state of an epoch that is no save point was written
    (epoch 3 of 4, --save-every=2): the done line named netg_1.pth, an epoch older than the
    last.pth that generate also draws from."""
    saves = []
    save = train_module.Run.save

    def counted_save(self):
        saves.append(1)
        return save(self)

    class Clock(_StepClock):  # a step a second, and an hour more once epoch 3 saved
        @staticmethod
        def perf_counter():
            return _StepClock.perf_counter() + (3600.0 if len(saves) >= 3 else 0.0)
    monkeypatch.setattr(train_module.Run, "save", counted_save)
    monkeypatch.setattr(train_module, "time", Clock())
    train_small(toy_dir, tmp_path, max_epoch=4, max_minutes=30, save_every=2)
    said = capsys.readouterr().out
    assert "the time is up with the end of epoch 3 of 4" in said, said
    assert sorted(p.name for p in tmp_path.glob("netg_*.pth")) == ["netg_1.pth"]
    assert torch.load(tmp_path / "last.pth", weights_only=True)["epoch"] == 3
    assert said.rstrip().splitlines()[-1].endswith(
        f"generate --netg-path={tmp_path / 'last.pth'} --netd-path={tmp_path / 'last.pth'}`")


def test_lazy_r1_falls_on_every_16th_d_step_straight_and_across_a_resume(toy_dir, tmp_path,
                                                                        monkeypatch):
    """--r1 with --d-every=3 and 32 batches an epoch (11 steps of D each): the penalty, 16
    times its weight, is due every 16th step of D. Counted from the run's batches (step //
    d_every) it came at D's steps 0 and 17, then 33, 50: too seldom; with other counts, on two
    steps in a row. A run stopped in mid-epoch and resumed puts it on the same steps."""
    from conftest import r1_weights
    from steps import R1_EVERY
    weights = r1_weights(monkeypatch)
    monkeypatch.setattr(train_module, "time", _StepClock())
    flags = dict(max_epoch=2, batch_size=2, ngf=4, ndf=4, d_every=3, r1=0.5)
    train_small(toy_dir, tmp_path / "straight", **flags)
    straight, weights[:] = list(weights), []
    assert len(straight) == 22
    assert {i: w for i, w in enumerate(straight) if w} == {0: 0.5 * R1_EVERY,
                                                          16: 0.5 * R1_EVERY}
    split = tmp_path / "split"  # stopped at step 50: epoch 2, after its 18th batch
    train_small(toy_dir, split, **flags, max_minutes=50 / 60)
    state = torch.load(split / "last.pth", weights_only=True)
    assert (state["epoch"], state["batch"], state["d_steps"]) == (1, 18, 17)
    train_small(toy_dir, split, **flags, resume=str(split / "last.pth"))
    assert weights == straight


def test_a_demo_stopped_names_the_make_command_that_goes_on(toy_dir, tmp_path, capsys,
                                                            monkeypatch):
    """Under make demo (which sets ANIMEGAN_CONTINUE), the stop's line names `make demo
    RESUME=1`, which draws result.png again at the end, not train --resume, which did not.
    The progress bar closes at the batch the line names. Its done line named a generate
    command to type, which make then ran itself: it says make draws the faces next."""
    monkeypatch.setattr(train_module, "time", _StepClock())
    monkeypatch.setenv("ANIMEGAN_CONTINUE", "make demo RESUME=1")
    train_small(toy_dir, tmp_path / "a", max_epoch=3, max_minutes=6 / 60)
    said = capsys.readouterr()
    assert "from; continue it with `make demo RESUME=1`\n" in said.out, said.out
    assert "--resume" not in said.out, said.out
    # make draws the result itself next: the done line named a generate command to type
    done = said.out.strip().splitlines()[-1]
    assert done.startswith("done: no epoch reached a save point") and done.endswith(
        "; make draws the demo's faces from the state where it stopped next"), done
    opt = parse("train", dict(checkpoint_dir="checkpoints/demo", save_path="imgs/demo"))
    assert train_module._done_line(opt, 4, False, 5, None) == (
        "done: weights in checkpoints/demo, sample grids in imgs/demo; make draws the demo's "
        "faces from its last.pth next")
    # the bar closed at the batch the line names (it showed one fewer: 1/4)
    bar = said.err.replace("\r", "\n").strip().splitlines()[-1]
    assert bar.startswith("epoch 2/3:  50%|") and "| 2/4 [" in bar, bar


def test_the_time_left_names_the_budget_that_ends_the_run_sooner(toy_dir, tmp_path, capsys,
                                                                  monkeypatch):
    """The time left that training prints after its first epoch is the whole run's; with a
    budget that ends the run sooner, it says so and when (make demo on a slow CPU)."""
    class Slow(_StepClock):  # a minute a step: 4 minutes an epoch
        @staticmethod
        def perf_counter():
            return 60 * _StepClock.perf_counter()

    monkeypatch.setattr(train_module, "time", Slow())
    train_small(toy_dir, tmp_path / "a", max_epoch=4, max_minutes=10)
    said = capsys.readouterr().out
    assert "3 epochs left: about 12 min; --max-minutes=10 ends the run in about 6 min" in said
    assert "the time is up in epoch 3 of 4, after batch 2 of 4" in said, said
    train_small(toy_dir, tmp_path / "b", max_epoch=3, max_minutes=60)
    assert "2 epochs left: about 8 min\n" in capsys.readouterr().out


def test_the_loss_plot_draws_each_curve_from_its_column_in_the_runs_loss(tmp_path,
                                                                          monkeypatch):
    """losses.png is the curves of a user without visdom: each line is its own column of
    losses.csv, and the losses' axis names the loss the run trains with."""
    from matplotlib.axes import Axes
    drawn, named = {}, []
    plot, ylabel = Axes.plot, Axes.set_ylabel

    def recorded(self, x, y, *args, label=None, **kwargs):
        drawn[label] = (list(x), list(y))
        return plot(self, x, y, *args, label=label, **kwargs)

    def said(self, text, *args, **kwargs):
        named.append(text)
        return ylabel(self, text, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recorded)
    monkeypatch.setattr(Axes, "set_ylabel", said)
    for loss, word in (("bce", "BCE"), ("hinge", "hinge")):
        (tmp_path / loss).mkdir()
        log = curves.LossLog(tmp_path / loss, loss=loss)
        log.append(4, 0, dict(loss_d=1.5, loss_g=0.7, d_real=0.9, d_fake=0.1), 50.0)
        log.append(8, 1, dict(loss_d=1.25, loss_g=0.75, d_real=0.8, d_fake=0.2), 51.0)
        drawn.clear()
        named.clear()
        log.plot()
        assert drawn == {"D loss": ([4, 8], [1.5, 1.25]), "G loss": ([4, 8], [0.7, 0.75]),
                         "D(x), real": ([4, 8], [0.9, 0.8]),
                         "D(G(z)), fake": ([4, 8], [0.1, 0.2])}
        assert named[0].startswith(f"{word} loss"), named
        assert (tmp_path / loss / "losses.png").stat().st_size > 0


def test_a_loss_log_row_cut_short_is_left_out_on_resume(toy_dir, tmp_path):
    """A run killed (or a disk full) while it appended a row leaves half a row: the resumed
    run stopped with a TypeError traceback after its first batch."""
    import csv
    train_small(toy_dir, tmp_path, max_epoch=1, plot_every=1)
    log = tmp_path / "imgs" / "losses.csv"
    rows = log.read_text().splitlines()
    with open(log, "a") as f:
        f.write("5,1,1.1,0.")  # the next row, cut short
    train_small(toy_dir, tmp_path, max_epoch=2, resume=True)
    with open(log, newline="") as f:
        after = list(csv.reader(f))
    assert [",".join(r) for r in after[:len(rows)]] == rows  # the first epoch's rows kept
    assert [int(r[0]) for r in after[1:]] == list(range(1, 9))  # then the second's, whole
    assert all(len(r) == 7 for r in after)
    assert (tmp_path / "imgs" / "losses.png").is_file()
    # saved again by a spreadsheet (a byte-order mark first) with a hand edit that is not
    # UTF-8: the resume failed with a KeyError, then a UnicodeDecodeError, as tracebacks
    kept = log.read_bytes()
    log.write_bytes(b"\xef\xbb\xbf" + kept + b"16,2,0.5,0.5,0.5,0.5,\xe9\n")
    train_small(toy_dir, tmp_path, max_epoch=3, resume=True)
    with open(log, newline="") as f:
        again = list(csv.reader(f))
    assert again[:len(after)] == after  # every row kept, the spoilt one left out
    assert [int(r[0]) for r in again[1:]] == list(range(1, 13))
    # a column added by hand in a spreadsheet: the resume's rewrite of the file failed with
    # a ValueError traceback; the column is left out, every row of ours kept
    with open(log, "w", newline="") as f:
        csv.writer(f).writerows([again[0] + ["note"]] + [r + ["1"] for r in again[1:]])
    train_small(toy_dir, tmp_path, max_epoch=4, resume=True)
    with open(log, newline="") as f:
        last = list(csv.reader(f))
    assert last[:len(again)] == again
    assert [int(r[0]) for r in last[1:]] == list(range(1, 17))


@pytest.mark.parametrize("saved", ["spaces", "semicolons", "tabs"])
def test_a_resume_keeps_the_rows_of_a_loss_log_saved_again_by_hand(tmp_path, saved):
    """A log opened and saved again, by hand with a space after each comma or by a
    spreadsheet set to a language with decimal commas (";" or a tab between columns): none
    of its names matched ours, and the resume rewrote the log without a single row."""
    import csv
    log = curves.LossLog(tmp_path)
    for step in range(1, 7):
        log.append(step, step // 3, dict(loss_d=1.25 + step, loss_g=0.5, d_real=0.75,
                                          d_fake=0.125), 40.5)
    ours = curves.read_rows(tmp_path / "losses.csv")
    with open(tmp_path / "losses.csv", newline="") as f:
        table = list(csv.reader(f))
    if saved == "spaces":
        text = "".join(", ".join(r) + "\n" for r in table)
    else:
        comma = ";" if saved == "semicolons" else "\t"
        text = "".join(comma.join(v.replace(".", ",") for v in r) + "\r\n" for r in table)
    (tmp_path / "losses.csv").write_text(text)
    resumed = curves.LossLog(tmp_path, resume_step=4)
    assert resumed.rows() == ours[:4]
    first = (tmp_path / "losses.csv").read_text().splitlines()[1]
    assert first == "1,0,2.25,0.5,0.75,0.125,40.5"  # written back as ours


def test_the_loss_plot_of_a_single_row_shows_it(tmp_path):
    """A run of one logged row (an epoch of one batch, a first save point) drew losses.png
    as empty axes: a line through one point is no line at all."""
    import numpy as np
    from PIL import Image
    log = curves.LossLog(tmp_path)
    log.append(1, 0, dict(loss_d=1.36, loss_g=0.74, d_real=0.57, d_fake=0.54), 5.4)
    log.plot()
    pixels = np.asarray(Image.open(tmp_path / "losses.png").convert("RGB")).astype(int)
    middle = pixels[:, pixels.shape[1] // 3:2 * pixels.shape[1] // 3]  # the point, not the
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)):  # legend
        assert (np.abs(middle - colour).sum(-1) < 30).sum() > 20, colour


def test_a_second_ctrl_c_in_the_loss_plot_is_the_ctrl_c(tmp_path, monkeypatch):
    """A second Ctrl-C while the save point drew losses.png landed in matplotlib's renderer,
    which made it "ValueError: Invalid bounding box": a traceback and status 1 where train
    stops at once with its line and 130 (1 double Ctrl-C in 12)."""
    import signal
    import time
    from matplotlib.backends import backend_agg
    import errors
    log = curves.LossLog(tmp_path)
    for step in range(1, 4):
        log.append(step, 0, dict(loss_d=1.0, loss_g=2.0, d_real=0.6, d_fake=0.4), 10.0)
    drawn = backend_agg.RendererAgg.draw_path

    def renderer(*args):  # as the renderer does: the Ctrl-C lost, an error of its own raised
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            pass
        raise ValueError("Invalid bounding box")

    with train_module.StopSignal() as stop:
        stop._handle(signal.SIGINT, None)  # training's first Ctrl-C
        assert signal.getsignal(signal.SIGINT) is errors._raise_interrupt  # then the second's
        monkeypatch.setattr(backend_agg.RendererAgg, "draw_path", renderer)
        with pytest.raises(KeyboardInterrupt):
            log.plot()
        assert not (tmp_path / "losses.png").exists()
        monkeypatch.setattr(backend_agg.RendererAgg, "draw_path", drawn)
        log.plot()
        png = (tmp_path / "losses.png").read_bytes()
        assert png.startswith(b"\x89PNG")
        # an error of the renderer's own, with no Ctrl-C, is not taken for one
        monkeypatch.setattr(backend_agg.RendererAgg, "draw_path",
                            lambda *a: (_ for _ in ()).throw(ValueError("its own")))
        with pytest.raises(ValueError, match="its own"):
            log.plot()
    assert (tmp_path / "losses.png").read_bytes() == png  # left whole


@pytest.mark.slow
def test_resume_takes_the_saved_options_and_refuses_changes(toy_dir, tmp_path):
    train_small(toy_dir, tmp_path, max_epoch=1, g_every=2)
    opt = parse("train", dict(resume=True, checkpoint_dir=str(tmp_path), max_epoch=2))
    assert (opt.g_every, opt.batch_size, opt.ngf, opt.data_path) == (2, 16, 8, str(toy_dir))
    # what shapes the nets or the data's order: changing it would not be the same run (a
    # second judge added on resume, --d-low=12, passed when d_low left the list)
    for flag, value in (("ngf", 16), ("ndf", 16), ("nz", 50), ("batch_size", 8),
                        ("sn", True), ("d_low", 12), ("sle", True), ("seed", 7)):
        with pytest.raises(UserError, match=f"--{flag.replace('_', '-')}=.* differs"):
            parse("train", {"resume": True, "checkpoint_dir": str(tmp_path), flag: value})
    assert_clean_error(cli("train", "--resume", f"--checkpoint-dir={tmp_path / 'none'}"),
                       "last.pth")
    # a run's other file given: its state beside it is named, not a new run from its weights
    # (which lost the epoch's steps and Adam's averages)
    for wrong, why in (("netg_0.pth", "not a full training state"),
                       ("options.json", "not a PyTorch checkpoint")):
        line = assert_clean_error(cli("train", f"--resume={tmp_path / wrong}"), why,
                                  f"pass --resume={tmp_path / 'last.pth'}, the training state")
        assert "new run" not in line


@pytest.mark.slow
def test_sigint_mid_epoch_saves_and_resume_continues_exactly(toy_dir, tmp_path):
    common = [f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--batch-size=4",
              "--ngf=32", "--ndf=32", "--seed=1", "--max-epoch=3"]
    straight = tmp_path / "straight"
    assert cli("train", *common, f"--checkpoint-dir={straight}",
               f"--save-path={straight}").returncode == 0

    split = tmp_path / "split"
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "train", *common,
                             f"--checkpoint-dir={split}", f"--save-path={split}"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    read_until(proc, "epoch 2/3")
    proc.send_signal(signal.SIGINT)  # epoch 2 has just begun: its first step is under way
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert "--resume" in err.splitlines()[-1]
    state = torch.load(split / "last.pth", weights_only=True)
    assert state["epoch"] == 1 and 0 < state["batch"] < 16  # stopped inside epoch 2
    # the curves up to the stop, as a time budget draws them: before any save point
    # (--save-every=10) a Ctrl-C left losses.csv alone, with no plot
    assert (split / "losses.png").is_file()

    assert state["processes"] == 1
    other = tmp_path / "other"  # the same state as a run in 2 processes would have left it
    shutil.copytree(split, other)
    state["processes"] = 2
    torch.save(state, other / "last.pth")

    result = cli("train", "--resume", f"--checkpoint-dir={split}")
    assert result.returncode == 0, result.stderr
    assert same_weights(straight / "netg_2.pth", split / "netg_2.pth")
    assert same_weights(straight / "netd_2.pth", split / "netd_2.pth")
    assert "shards" not in result.stdout

    # another number of processes shards the epoch otherwise: its batch count no longer says
    # which images are done, so the epoch starts again (1 -> 2 processes skipped the rest of
    # it, 2 -> 1 trained some of its images twice, both without a word)
    result = cli("train", "--resume", f"--checkpoint-dir={other}", f"--save-path={other}")
    assert result.returncode == 0, result.stderr
    assert (f"stopped after batch {state['batch']} of epoch 2 in 2 processes, and this run has "
            f"1: the epoch's shards of images differ, so it starts again from its first batch"
            in result.stdout)
    assert torch.load(other / "last.pth", weights_only=True)["step"] == 48 + state["batch"]


@pytest.mark.parametrize("signum, status, word", [(signal.SIGINT, 130, "interrupted"),
                                                   (signal.SIGTERM, 143, "terminated")])
def test_a_ctrl_c_while_an_epoch_saves_stops_there(toy_dir, tmp_path, monkeypatch, signum,
                                                   status, word):
    """A Ctrl-C (or a scheduler's SIGTERM) that came while an epoch's state was written was
    acted on only after a step of the next epoch, saved again: the run trained on past the
    stop, and its line said it stopped in epoch 2 after batch 1. A SIGTERM stops there with
    its own word and status, as at any other step (a scheduler's script reads the status)."""
    save = train_module.Run.save

    def ctrl_c_as_it_saves(self):
        path = save(self)
        os.kill(os.getpid(), signum)
        return path
    monkeypatch.setattr(train_module.Run, "save", ctrl_c_as_it_saves)
    result = cli(*train_args(toy_dir, tmp_path, "--max-epoch=3", "--batch-size=16", "--ngf=8",
                             "--ndf=8"))
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"{word}: stopped after epoch 1: state saved to {tmp_path / 'last.pth'}; "
        f"continue with `"), result.stderr
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 0, 4)


@pytest.mark.parametrize("when", ["before", "after", "unsaid"])
def test_a_stop_once_the_run_has_saved_all_ends_it_as_finished(toy_dir, tmp_path, monkeypatch,
                                                               when):
    """A scheduler's SIGTERM that came once the last epoch was saved (as the last samples went
    to visdom, or the done line was said) said "terminated at once: nothing saved since its
    last save; continue from it with ... --resume=...", and 143; that resume found nothing to
    do. The run had finished: its done line, once, and 0."""
    import errors
    said = train_module.say

    def stop_as_done_is_said(line):
        if when in ("before", "unsaid") and line.startswith("done:"):
            os.kill(os.getpid(), signal.SIGTERM)
        said(line)
        if when == "after" and line.startswith("done:"):
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(train_module, "say", stop_as_done_is_said)
    if when == "unsaid":  # the stop acts before the line is said (not put off): main says it
        monkeypatch.setattr(train_module.checkpoint, "stops_put_off", contextlib.nullcontext)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM,
                                                     signal.SIGHUP)}
    errors.stop_on_signals()  # main.py's handlers, as in its own process
    try:
        result = cli(*train_args(toy_dir, tmp_path, "--max-epoch=1", "--batch-size=16",
                                 "--ngf=8", "--ndf=8"))
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert result.returncode == 0, result.stderr
    assert "terminated" not in result.stderr and "Traceback" not in result.stderr
    done = [line for line in result.stdout.splitlines() if line.startswith("done:")]
    assert done == [f"done: weights in {tmp_path}, sample grids in {tmp_path}; draw faces with "
                    f"{done[0].partition('draw faces with ')[2]}"], result.stdout
    assert result.stdout.rstrip().splitlines()[-1] == done[0]
    for name in ("netg_0.pth", "netd_0.pth", "0.png", "losses.png"):
        assert (tmp_path / name).is_file(), name
    assert torch.load(tmp_path / "last.pth", weights_only=True)["epoch"] == 1


def test_last_state_holds_everything(toy_dir, tmp_path):
    train_small(toy_dir, tmp_path, max_epoch=1)
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    for key in ("netg", "netd", "optimizer_g", "optimizer_d", "fixed_noise", "meters", "rng",
                "options", "format", "epoch", "batch", "step"):
        assert key in state
    assert state["step"] == 4 and state["options"]["seed"] == 0
    assert state["optimizer_d"]["state"][0]["step"].item() == 4


@pytest.mark.slow
def test_every_new_option_resumes_exactly_and_saves_book_files(toy_dir, tmp_path):
    """--loss=hinge --sn --d-bn=False --diffaug=... --r1 --beta2 --d-low --sle (with its third
    gate, --sle-gates=3): one epoch then resume to three gives the same weights, and
    netd_N.pth is a book-format file generate reads."""
    extra = dict(loss="hinge", sn=True, d_bn=False, diffaug="color,translation,cutout", r1=0.5,
                 beta1=0.0, beta2=0.9, ema=0.9, d_low=12, sle=True, sle_gates=3)
    train_small(toy_dir, tmp_path / "straight", max_epoch=3, **extra)
    train_small(toy_dir, tmp_path / "split", max_epoch=1, **extra)
    train_small(toy_dir, tmp_path / "split", max_epoch=3, resume=True)
    for name in ("netg_2.pth", "netd_2.pth", "netg_ema_2.pth"):
        assert same_weights(tmp_path / "straight" / name, tmp_path / "split" / name), name
    netd = torch.load(tmp_path / "split" / "netd_2.pth", weights_only=True)
    assert all(k.startswith("main.") and k.count(".") == 2 for k in netd)
    netg = torch.load(tmp_path / "split" / "netg_ema_2.pth", weights_only=True)
    assert {k.split(".")[0] for k in netg} == {"main", "excite4", "excite8", "excite4b"}
    draw_grid(tmp_path / "split" / "last.pth", tmp_path / "split" / "last.pth",
              tmp_path / "result.png", 4, 8)


def test_resume_gives_the_optimisers_the_settings_of_the_device_it_runs_on(toy_dir, tmp_path):
    """A last.pth saved on a GPU (fused Adam) resumed on the CPU runs the CPU's Adam."""
    train_small(toy_dir, tmp_path, max_epoch=1)
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    for key in ("optimizer_g", "optimizer_d"):
        for group in state[key]["param_groups"]:
            group["fused"] = True  # as train writes it on CUDA
    torch.save(state, tmp_path / "last.pth")
    train_small(toy_dir, tmp_path, max_epoch=2, resume=True)
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert state["epoch"] == 2
    assert all(not group["fused"] for key in ("optimizer_g", "optimizer_d")
               for group in state[key]["param_groups"])


def _start(toy_dir, ckpt, *flags):
    """``main.py train`` in the background, as a user starts it; stderr read as it comes."""
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"),
                             *train_args(toy_dir, ckpt, *flags)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            start_new_session=True)  # a process group of its own, as a job


@pytest.mark.slow
@pytest.mark.parametrize("group, second", [(False, None), (True, None), (False, "soon"),
                                           (False, "after its line")],
                         ids=["process", "group-with-workers", "process-twice",
                              "process-again-after-its-line"])
def test_sigterm_saves_like_ctrl_c_and_the_run_resumes(toy_dir, tmp_path, group, second):
    """What `kill` sends to the process, and a cluster's scheduler to every process of the
    job, decoding workers too: the state is saved, the message says how to go on, and
    --resume finishes the run. Twice (a scheduler's and a sweep's): said once, saved once;
    the second printed the line again, or, after the save, ended the process by the signal
    or with a traceback."""
    # with workers, an epoch long enough (32 steps of the wider nets: about 2 s here) that
    # the half second the workers are given to start ends within it: 16 narrow steps took 0.6 s
    # on an AMX Xeon, and the stop came after epoch 2, not in it
    size = ["--cache=False", "--num-workers=2", "--batch-size=2", "--ngf=64", "--ndf=64"] \
        if group else ["--batch-size=4", "--ngf=32", "--ndf=32"]
    ckpt = tmp_path / "a run"  # a name with a space: the command to paste quotes it
    proc = _start(toy_dir, ckpt, "--max-epoch=3", *size)
    read_until(proc, "epoch 2/3")
    said = ""
    if group:
        time.sleep(0.5)  # the workers of epoch 2 are under way, with torch's handlers
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
        if second == "soon":
            time.sleep(0.05)
        elif second == "after its line":  # saved: the process is on its way out
            said = read_until(proc, "terminated: stopped")
        if second:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        if said:  # the rest of the pipe, after what read_until took
            proc.wait(timeout=120)
            said += proc.stderr.read()
    err = said + stderr_within(proc, 120, "train hung after SIGTERM")
    # SIGTERM's status and word, as every other stop by it (Ctrl-C's 130 and "interrupted")
    assert proc.returncode == 143
    assert err.count("SIGTERM: saving after this step") == 1 and "Traceback" not in err, err
    pasted = shlex.split(err.splitlines()[-1].split("`")[1])
    assert pasted[-2:] == ["train", f"--resume={ckpt / 'last.pth'}"], err.splitlines()[-1]
    state = torch.load(ckpt / "last.pth", weights_only=True)
    # counted as the bar counts: epoch 2 of 3 is state epoch 1, and batches from 1; or, where
    # the workers' half second outlasted the epoch on a fast machine, as epoch 2 ended
    assert err.splitlines()[-1].startswith((
        f"terminated: stopped in epoch {state['epoch'] + 1} after batch {state['batch']} ",
        f"terminated: stopped after epoch {state['epoch']}: state saved")), err
    assert state["epoch"] >= 1 and state["step"] > 16  # saved past the first epoch
    result = cli("train", *pasted[pasted.index("train") + 1:])
    assert result.returncode == 0, result.stderr
    assert (ckpt / "netg_2.pth").is_file()


def test_the_cpu_time_limit_saves_the_run_and_says_which_limit(toy_dir, tmp_path):
    """A shared machine's CPU time limit below its hard one (ulimit -St): the kernel sends
    SIGXCPU, then again every second. By default it ended the run at once (a core dump,
    status 152) without a word and with nothing saved since the last checkpoint."""
    ckpt = tmp_path / "run"
    proc = _start(toy_dir, ckpt, "--batch-size=4", "--max-epoch=50", "--save-every=50")
    read_until(proc, "epoch 2/50")
    try:
        while proc.poll() is None:  # as the kernel does, until the process is gone
            proc.send_signal(signal.SIGXCPU)
            time.sleep(0.2)
    except ProcessLookupError:
        pass
    err = stderr_within(proc, 120, "train hung after SIGXCPU")
    assert proc.returncode == 143, err
    assert "Traceback" not in err, err
    assert err.count("SIGXCPU: the CPU time this shell allows (ulimit -t) is used up: saving "
                     "after this step") == 1, err
    assert err.splitlines()[-1].startswith("terminated: stopped in epoch "), err
    assert torch.load(ckpt / "last.pth", weights_only=True)["epoch"] >= 1


def _cpu_limited(seconds):
    """A preexec_fn: a plain ``ulimit -t seconds``, which sets the soft and the hard limit."""
    def limit():
        import resource
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
    return limit


@pytest.mark.slow
def test_a_plain_cpu_time_limit_leaves_room_to_save_the_run(toy_dir, tmp_path):
    """A plain ``ulimit -t 50`` (soft and hard limit both 50 s): the kernel sent SIGKILL when
    it was used up, with no SIGXCPU first, so the run ended without a word, status 137, and
    unsaved since its last epoch. Train keeps 30 s for a save below the hard limit (20 s of
    it left: a slow machine's start takes several)."""
    ckpt = tmp_path / "run"
    result = subprocess.run([sys.executable, str(ROOT / "main.py"),
                             *train_args(toy_dir, ckpt, "--ngf=8", "--ndf=8", "--batch-size=8",
                                         "--num-workers=0", "--max-epoch=100000")],
                            capture_output=True, text=True, timeout=300,
                            preexec_fn=_cpu_limited(50),
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    err = result.stderr
    assert result.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "note: the CPU time" not in result.stdout, err[-2000:]
    assert err.count("SIGXCPU: the CPU time this shell allows (ulimit -t) is nearly used up: "
                     "saving after this step") == 1, err[-2000:]
    last = err.splitlines()[-1]
    state = torch.load(ckpt / "last.pth", weights_only=True)
    # within an epoch, or (its 8 steps are short beside its end's work) as one ended
    assert last.startswith((f"terminated: stopped in epoch {state['epoch'] + 1} after batch "
                            f"{state['batch']} ", f"terminated: stopped after epoch "
                                                  f"{state['epoch']}: state saved")), last
    assert f"--resume={ckpt / 'last.pth'}" in last, last


@pytest.mark.slow
def test_a_cpu_time_limit_too_short_to_save_in_is_said(toy_dir, tmp_path):
    """``ulimit -t 30``: no 30 s to keep for a save below it, which the run says at its start
    (a run that used it up would be ended unsaved); this one-epoch run ends in time."""
    result = subprocess.run([sys.executable, str(ROOT / "main.py"),
                             *train_args(toy_dir, tmp_path / "run", "--ngf=8", "--ndf=8",
                                         "--batch-size=8", "--num-workers=0", "--max-epoch=1")],
                            capture_output=True, text=True, timeout=300,
                            preexec_fn=_cpu_limited(30),
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    notes = [line for line in result.stdout.splitlines() if "(ulimit -t 30; " in line]
    assert len(notes) == 1 and notes[0].startswith("note: the CPU time this shell allows "), \
        result.stdout
    assert "is too short to keep the 30 s a save needs" in notes[0], notes[0]


def test_a_sigterm_while_a_stop_is_acted_on_changes_nothing():
    """A scheduler's SIGTERM and a sweep's both reach train: the second, while the first's
    save is under way, must not break into it (and is not noted as a stop of its own)."""
    import errors
    with pytest.raises(errors.Terminated):  # the handler itself, with no stop under way
        errors._raise_terminated(signal.SIGTERM, None)
    assert errors._seen == [signal.SIGTERM]
    errors._seen.clear()
    errors.stop_under_way(signal.SIGTERM)
    errors._raise_terminated(signal.SIGTERM, None)  # would raise Terminated into the save
    assert errors._seen == []


def test_a_second_ctrl_c_stops_at_once():
    """The first Ctrl-C asks for a save after the step; the second does not wait for it."""
    before = signal.getsignal(signal.SIGINT)
    with train_module.StopSignal() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs at the next bytecode
        assert stop.requested  # the first one only raises the flag
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_a_second_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import main

    def interrupted(*args, **flags):
        raise KeyboardInterrupt
    monkeypatch.setitem(main.COMMANDS, "train", interrupted)
    from types import SimpleNamespace
    # the second Ctrl-C comes in training, after a save: the line said nothing of going on
    run = object.__new__(train_module.Run)
    run.saved, run.processes = "ck/last.pth", 1
    monkeypatch.setattr(train_module, "training", run)
    assert main.main(["main.py", "train"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "interrupted at once: nothing saved since its last save; continue from it with `")
    assert err[0].endswith(f"main.py train --resume=ck/last.pth`"), err
    # ... or in the first epoch of a new run, which has no save point to speak of
    monkeypatch.setattr(train_module, "training", SimpleNamespace(saved=None))
    assert main.main(["main.py", "train"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "interrupted at once: the run had finished no epoch, so none of it was saved"]


def test_a_finished_run_resumed_says_there_is_nothing_to_do(toy_dir, tmp_path, monkeypatch):
    train_small(toy_dir, tmp_path, max_epoch=1)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.pth")}
    result = cli("train", "--resume", f"--checkpoint-dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "has already trained 1 epoch: nothing to do; raise --max-epoch" in result.stdout
    # under `make demo RESUME=1` there is no flag to raise: the line says the demo is done
    monkeypatch.setenv("ANIMEGAN_CONTINUE", "make demo RESUME=1")
    result = cli("train", "--resume", f"--checkpoint-dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "--max-epoch" not in result.stdout and "the run is finished (the same make " \
        "command without RESUME=1 trains a new one)" in result.stdout, result.stdout
    monkeypatch.delenv("ANIMEGAN_CONTINUE")
    assert "training on" not in result.stdout and "done:" not in result.stdout  # no run
    assert "resuming" not in result.stdout  # it does not say it resumes, then that it will not
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.pth")} == before
    # asked to go on in new folders, it made them, wrote nothing there, and left them behind
    result = cli("train", f"--resume={tmp_path / 'last.pth'}", "--nogpu", "--vis=False",
                 f"--checkpoint-dir={tmp_path / 'ck2'}", f"--save-path={tmp_path / 'im2'}")
    assert result.returncode == 0 and "nothing to do" in result.stdout, result.stderr
    assert not (tmp_path / "ck2").exists() and not (tmp_path / "im2").exists()


def test_fresh_starts_a_new_run_over_a_stopped_one(toy_dir, tmp_path):
    """The refusal above names --fresh for a user who wants the stopped run gone (make demo
    run again after a Ctrl-C): the new run trains, says what it replaces, and replaces it."""
    stopped_run(toy_dir, tmp_path, of=3)
    again = [f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--batch-size=16", "--ngf=8",
             "--ndf=8", f"--checkpoint-dir={tmp_path}", f"--save-path={tmp_path / 'imgs'}"]
    assert_clean_error(cli("train", *again, "--max-epoch=3"), "or over it with --fresh")
    for folder in (tmp_path, tmp_path / "empty"):  # the two flags clash, last.pth or not
        assert_clean_error(cli("train", "--resume", "--fresh", f"--checkpoint-dir={folder}"),
                           "--fresh starts a new run and --resume continues one")
    # a new run refused after the first checks leaves the stopped run as it was (--fresh
    # deleted its last.pth first, so it could no longer be resumed)
    (tmp_path / "empty").mkdir()
    before = (tmp_path / "last.pth").read_bytes()
    assert_clean_error(cli("train", *again[1:], f"--data-path={tmp_path / 'empty'}",
                           "--max-epoch=2", "--fresh"), "no images")
    assert (tmp_path / "last.pth").read_bytes() == before
    # without the cache, unreadable files are found only as the epoch reaches them: the
    # stopped run went before the first of them, though nothing was trained
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"{i}.jpg").write_text("not an image")
    result = cli("train", *[f for f in again[1:] if not f.startswith("--batch-size")],
                 f"--data-path={broken}", "--batch-size=2", "--cache=False", "--max-epoch=2",
                 "--fresh")
    assert_clean_error(result, "none of its 3 image files could be read")
    assert "deleted" not in result.stdout
    assert (tmp_path / "last.pth").read_bytes() == before
    result = cli("train", *again, "--max-epoch=2", "--fresh")
    assert result.returncode == 0, result.stderr
    assert (f"note: --fresh: deleted {tmp_path / 'last.pth'}, a run stopped after epoch 1 of 3"
            in result.stdout)
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert (state["epoch"], state["options"]["max_epoch"]) == (2, 2)  # the new run's
    # a run that began with --fresh resumes as any other (the flag was for its start)
    assert not parse("train", dict(resume=True, checkpoint_dir=str(tmp_path))).fresh


def test_fresh_over_a_finished_run_says_it_replaces_it(toy_dir, tmp_path, monkeypatch):
    """make demo run a second time (--fresh, under ANIMEGAN_CONTINUE): the note on the
    finished demo said "another --checkpoint-dir keeps both; raise --max-epoch with --resume
    to train it on", advice a make user cannot follow, and none for a run told to start
    afresh."""
    train_small(toy_dir, tmp_path, max_epoch=1)
    monkeypatch.setenv("ANIMEGAN_CONTINUE", "make demo RESUME=1")
    result = cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--batch-size=16",
                 "--ngf=8", "--ndf=8", f"--checkpoint-dir={tmp_path}",
                 f"--save-path={tmp_path / 'imgs'}", "--max-epoch=1", "--fresh")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert notes[0] == (f"note: --fresh: {tmp_path} holds a finished run of 1 epoch: this run "
                        f"replaces it, deleting that run's checkpoints and grids once it has "
                        f"trained its first batch")
    assert "--max-epoch" not in result.stdout and "--resume" not in result.stdout
    assert "another --checkpoint-dir" not in result.stdout


def test_fresh_deletes_the_numbered_files_of_the_run_it_replaces(toy_dir, tmp_path):
    """make demo run again in a slower hour: its 10 minutes stopped it an epoch before the
    first demo's last, whose netg_ema_4.pth stayed beside the new run's files, so explore,
    which draws the newest G of a folder, drew the old run's faces. --fresh deletes the
    replaced run's numbered checkpoints and grids once the new run has trained its first batch:
    not before (a run refused for its data keeps them), and not grids of a folder that run did
    not log in."""
    from config import newest_checkpoint
    train_small(toy_dir, tmp_path, max_epoch=3, ema=0.9, save_every=1)
    old = sorted(p.name for p in tmp_path.glob("net*_*.pth"))
    assert len(old) == 9 and "netg_ema_2.pth" in old
    assert (tmp_path / "imgs" / "2.png").is_file()
    again = [f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--batch-size=16", "--ngf=8",
             "--ndf=8", "--ema=0.9", f"--checkpoint-dir={tmp_path}", "--max-epoch=1", "--fresh"]
    (tmp_path / "empty").mkdir()
    assert_clean_error(cli("train", *again[1:], f"--data-path={tmp_path / 'empty'}",
                           f"--save-path={tmp_path / 'imgs'}"), "no images")
    assert sorted(p.name for p in tmp_path.glob("net*_*.pth")) == old
    assert (tmp_path / "imgs" / "2.png").is_file()
    result = cli("train", *again, f"--save-path={tmp_path / 'imgs'}")
    assert result.returncode == 0, result.stderr
    assert (f"note: --fresh: deleted the 9 checkpoint files and 3 grids of the run it replaces, "
            f"in {tmp_path} and {tmp_path / 'imgs'}") in result.stdout
    assert "they stay beside its own" not in result.stdout
    assert sorted(p.name for p in tmp_path.glob("net*_*.pth")) == \
        ["netd_0.pth", "netg_0.pth", "netg_ema_0.pth"]
    assert sorted(p.name for p in (tmp_path / "imgs").glob("[0-9]*.png")) == ["0.png"]
    assert newest_checkpoint(tmp_path, "netg", average=True) == tmp_path / "netg_ema_0.pth"
    # grids in a folder the replaced run did not log in are another run's: kept
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "7.png").write_bytes((tmp_path / "imgs" / "0.png").read_bytes())
    (mine / ".checkpoint-dir").write_text(f"{tmp_path / 'elsewhere'}\n")
    result = cli("train", *again, f"--save-path={mine}")
    assert result.returncode == 0, result.stderr
    assert (f"note: --fresh: deleted the 3 checkpoint files of the run it replaces, in "
            f"{tmp_path}\n") in result.stdout
    assert (mine / "7.png").is_file() and (mine / "0.png").is_file()


def test_a_damaged_last_pth_keeps_the_weights_beside_it_and_names_them(toy_dir, tmp_path):
    """A last.pth cut short (a full disk, a bad copy): the same command again trained a new
    run whose saves replaced the stopped run's netg_N/netd_N, the only work of it left, with
    a note; --resume said the file was truncated and not what to do."""
    stopped_run(toy_dir, tmp_path, of=3)
    (tmp_path / "last.pth").write_bytes((tmp_path / "last.pth").read_bytes()[:100])
    before = {p.name: p.read_bytes() for p in tmp_path.glob("net*.pth")}
    again = [f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--batch-size=16", "--ngf=8",
             "--ndf=8", f"--checkpoint-dir={tmp_path}", f"--save-path={tmp_path / 'imgs'}",
             "--max-epoch=1"]
    # with the widths and the data folder the run had: followed, the line met "pass
    # --ngf=8", then "pass --ndf=8", then no images in data/, one refusal at a time
    weights = (f"--netg-path={tmp_path / 'netg_0.pth'} --netd-path={tmp_path / 'netd_0.pth'} "
               f"--ngf=8 --ndf=8 --data-path={toy_dir}")
    line = assert_clean_error(
        cli("train", *again), "is not a training state this version can resume",
        "would write over the checkpoints beside it (e.g. netg_0.pth)",
        f"start a new run from the newest weights beside it, {weights}, with another "
        f"--checkpoint-dir and --save-path (the run's other options, its recipe and rates, "
        f"are in {tmp_path / 'options.json'})", "or replace them with --fresh")
    new = tmp_path / "new"
    result = cli("train", *line.split("beside it, ", 1)[1].split(", with")[0].split(),
                 "--nogpu", "--vis=False", "--batch-size=16", "--max-epoch=1",
                 f"--checkpoint-dir={new}", f"--save-path={new / 'imgs'}")
    assert result.returncode == 0 and (new / "netg_0.pth").is_file(), result.stderr
    assert_clean_error(cli("train", "--nogpu", f"--resume={tmp_path / 'last.pth'}"),
                       "truncated", f"start a new run from the newest weights beside it, "
                       f"{weights}, with another --checkpoint-dir")
    assert {p.name: p.read_bytes() for p in tmp_path.glob("net*.pth")} == before
    # the newest pair cut short too (by the same kill or full disk): the pair named is the
    # newest that loads, where it named netg_1.pth, which a run from it refused in turn
    for cut in ("netg_1.pth", "netd_1.pth"):
        for kind in ("netg", "netd"):
            whole = before[f"{kind}_0.pth"]
            (tmp_path / f"{kind}_1.pth").write_bytes(whole[:100] if cut.startswith(kind)
                                                     else whole)
        assert_clean_error(cli("train", "--nogpu", f"--resume={tmp_path / 'last.pth'}"),
                           "truncated", f"start a new run from the newest weights beside it, "
                           f"{weights}, with another --checkpoint-dir")
    for kind in ("netg", "netd"):
        (tmp_path / f"{kind}_1.pth").unlink()
    result = cli("train", *again, "--fresh")
    assert result.returncode == 0, result.stderr
    assert f"note: --fresh: deleted {tmp_path / 'last.pth'}, which was not a training " \
           f"state" in result.stdout
    assert torch.load(tmp_path / "last.pth", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("gates, flags", [(2, "--sle"), (3, "--sle --sle-gates=3")])
def test_the_newest_weights_of_a_run_with_sle_are_named_with_the_flag(toy_dir, tmp_path, gates,
                                                                      flags):
    """The way on from a damaged last.pth of a --sle run: without --sle (or --sle-gates=3),
    the run it named was refused in turn (its G file holds the gates)."""
    train_small(toy_dir, tmp_path, max_epoch=1, sle=True, sle_gates=gates)
    (tmp_path / "last.pth").write_bytes((tmp_path / "last.pth").read_bytes()[:100])
    line = assert_clean_error(cli("train", "--nogpu", f"--resume={tmp_path / 'last.pth'}"),
                              "truncated", f"--ngf=8 --ndf=8 {flags} ")
    new = tmp_path / "new"
    result = cli("train", *line.split("beside it, ", 1)[1].split(", with")[0].split(),
                 "--nogpu", "--vis=False", "--batch-size=16", "--max-epoch=1",
                 f"--checkpoint-dir={new}", f"--save-path={new / 'imgs'}")
    assert result.returncode == 0, result.stderr
    keys = torch.load(new / "netg_0.pth", weights_only=True)
    assert "excite4.1.weight" in keys and ("excite4b.1.weight" in keys) == (gates == 3)


def test_the_same_command_again_after_a_stop_keeps_the_stopped_run(toy_dir, tmp_path):
    """Ctrl-C, then the up arrow instead of --resume: the new run's first save went over the
    stopped run's last.pth, and with it everything it had trained."""
    stopped_run(toy_dir, tmp_path, of=3)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.pth")}
    again = [f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--batch-size=16", "--ngf=8",
             "--ndf=8", f"--checkpoint-dir={tmp_path}", f"--save-path={tmp_path / 'imgs'}",
             "--max-epoch=3"]
    assert_clean_error(cli("train", *again), "stopped after epoch 1 of 3",
                       f"--resume={tmp_path / 'last.pth'}", "another --checkpoint-dir and "
                       f"--save-path (its loss log and grids are in {tmp_path / 'imgs'})")
    # its grids kept apart already: the folder of checkpoints is what is left to change
    assert_clean_error(cli("train", *[f for f in again if not f.startswith("--save-path")],
                           f"--save-path={tmp_path / 'other'}"),
                       "start a new run with another --checkpoint-dir, or over it with --fresh")
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.pth")} == before
    # a torchrun run's stop is continued under torchrun in as many processes (the one-process
    # command it named starts the stopped epoch again)
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    checkpoint.save({**state, "processes": 2}, tmp_path / "last.pth")
    assert_clean_error(cli("train", *again), "continue it with `", "torchrun --standalone "
                       f"--nproc_per_node=2 main.py train --resume={tmp_path / 'last.pth'}`")
    (tmp_path / "last.pth").write_bytes(before["last.pth"])
    result = cli("train", "--resume", f"--checkpoint-dir={tmp_path}")  # as it says
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / "last.pth", weights_only=True)["epoch"] == 3
    # a finished run's folder takes a new run, as the book's does, naming what it leaves
    result = cli("train", *again[:-1], "--max-epoch=1")
    assert result.returncode == 0, result.stderr
    assert (f"note: {tmp_path} holds a finished run of 3 epochs: this run writes its own "
            f"last.pth and checkpoints over that run's") in result.stdout
    assert (f"note: {tmp_path} holds 2 checkpoint files of an earlier run that this run will "
            f"not replace (e.g. netg_2.pth)") in result.stdout  # netd_2, netg_2; not *_0
    # a last.pth that cannot be resumed: the weights beside it are all that is left of its
    # run, kept unless --fresh (the test above); a run with none to replace says it replaces it
    (tmp_path / "last.pth").write_bytes(b"not a state")
    for name in ("netg_0.pth", "netd_0.pth"):  # (netg_2.pth and netd_2.pth stay: not its)
        (tmp_path / name).unlink()
    result = cli("train", *again[:-1], "--max-epoch=1")
    assert result.returncode == 0, result.stderr
    assert f"note: {tmp_path / 'last.pth'} is not a training state" in result.stdout
    # the same run again (the book's `python main.py train` twice) replaces every file
    (tmp_path / "netd_2.pth").unlink()
    (tmp_path / "netg_2.pth").unlink()
    result = cli("train", *again[:-1], "--max-epoch=1")
    assert result.returncode == 0, result.stderr
    assert "checkpoint file" not in result.stdout


def test_a_refused_run_says_nothing_of_the_folder_it_did_not_train_in(toy_dir, tmp_path):
    """A new run in a finished run's folder, refused for its data or its G file, printed the
    folder's notes ("this run writes its own last.pth ... over that run's") above the error,
    as if it had begun."""
    train_small(toy_dir, tmp_path, max_epoch=1)  # a finished run, and its netg_0.pth
    (tmp_path / "netg_5.pth").write_bytes(b"")  # an earlier run's, that a new one keeps
    empty = tmp_path / "empty"
    empty.mkdir()
    flags = [f"--checkpoint-dir={tmp_path}", f"--save-path={tmp_path / 'imgs'}", "--nogpu",
             "--vis=False", "--batch-size=16", "--ngf=8", "--ndf=8", "--max-epoch=2"]
    for refused, culprit in ((f"--data-path={empty}", str(empty)),
                             (f"--netg-path={tmp_path / 'netg_5.pth'}", "netg_5.pth")):
        result = cli("train", f"--data-path={toy_dir}", *flags, refused)
        assert_clean_error(result, culprit)
        assert result.stdout == ""
    result = cli("train", f"--data-path={toy_dir}", *flags)  # trained: the notes, as before
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    assert notes[0].startswith(f"note: {tmp_path} holds a finished run of 1 epoch: ")
    assert notes[1].startswith(f"note: {tmp_path} holds 3 checkpoint files of an earlier run "
                               f"that this run will not replace (e.g. netg_5.pth)")  # and *_0


def test_a_new_run_keeps_off_the_loss_log_of_a_stopped_run_in_another_folder(toy_dir,
                                                                             tmp_path):
    """A new --checkpoint-dir with the save path left as it was (the default imgs/): the
    stopped run's loss log was started over and its grids written over, and its resume then
    went on in the new run's log."""
    stopped_run(toy_dir, tmp_path / "ck", of=3)  # its grids and log in ck/imgs
    imgs = tmp_path / "ck" / "imgs"
    before = {p.name: p.read_bytes() for p in imgs.iterdir()}
    again = ["train", f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--batch-size=16",
             "--ngf=8", "--ndf=8", f"--checkpoint-dir={tmp_path / 'ck2'}",
             f"--save-path={imgs}", "--max-epoch=1"]
    line = assert_clean_error(cli(*again), f"{imgs} holds the loss log and grids of the run "
                              f"stopped in {tmp_path / 'ck'} (after epoch 1 of 3)",
                              "another --save-path", "--fresh")
    assert {p.name: p.read_bytes() for p in imgs.iterdir()} == before, line
    assert not (tmp_path / "ck2").exists()
    # the stopped run finished: a new run there is said, as in a finished run's folder
    assert cli("train", f"--resume={tmp_path / 'ck' / 'last.pth'}").returncode == 0
    result = cli(*again)
    assert result.returncode == 0, result.stderr
    assert (f"note: {imgs} holds the loss log and grids of the finished run in "
            f"{tmp_path / 'ck'}: this run starts its own losses.csv there") in result.stdout
    # and --fresh starts over a stopped run's log, as asked
    stopped_run(toy_dir, tmp_path / "ck3", of=3)
    imgs = tmp_path / "ck3" / "imgs"
    result = cli(*again[:-3], f"--checkpoint-dir={tmp_path / 'ck4'}", f"--save-path={imgs}",
                 "--max-epoch=1", "--fresh")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ck3" / "last.pth").is_file()  # that run's state: not its to delete
    assert len(read_rows(imgs / "losses.csv")) == 1  # the new run's own row


def test_rates_and_betas_given_on_resume_are_the_ones_it_goes_on_with(toy_dir, tmp_path):
    """--lr1/--lr2/--beta1/--beta2 on --resume were saved in options.json, and the optimiser's
    state put the old ones back without a word (the README's advice after a divergence:
    lower the rates and resume); --seed was printed and saved, and changed nothing."""
    train_small(toy_dir, tmp_path, max_epoch=1)
    resume = ["train", f"--resume={tmp_path / 'last.pth'}", "--max-epoch=2"]
    assert_clean_error(cli(*resume, "--seed=7"), "--seed=7 differs from the 0",
                       "cannot change it: leave it out")  # it said what, not what to do
    result = cli(*resume, "--lr1=1e-3", "--beta1=0", "--beta2=0.9")
    assert result.returncode == 0, result.stderr
    assert ("note: G's Adam goes on with lr 0.001 and betas (0, 0.9) from step 4 (it had lr "
            "0.0002 and betas (0.5, 0.999))") in result.stdout
    assert "note: D's Adam goes on with lr 0.0002 and betas (0, 0.9) from step 4" in result.stdout
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    groups = {key: state[key]["param_groups"][0] for key in ("optimizer_g", "optimizer_d")}
    assert groups["optimizer_g"]["lr"] == 1e-3 and groups["optimizer_d"]["lr"] == 2e-4
    assert all(tuple(g["betas"]) == (0.0, 0.9) for g in groups.values())
    # resumed as saved (no flag): nothing said, the same rates on
    again = cli(*resume[:2], "--max-epoch=3")
    assert again.returncode == 0 and "Adam" not in again.stdout, again.stderr
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert state["optimizer_g"]["param_groups"][0]["lr"] == 1e-3


def test_resuming_on_another_data_folder_says_so(toy_dir, tmp_path):
    """--data-path changed on --resume trained on other images without a word (a change in
    the count alone was said)."""
    train_small(toy_dir, tmp_path, max_epoch=1)
    other = tmp_path / "other"
    shutil.copytree(toy_dir, other)
    result = cli("train", f"--resume={tmp_path / 'last.pth'}", "--max-epoch=2",
                 f"--data-path={other}")
    assert result.returncode == 0, result.stderr
    assert (f"note: the run trained on {toy_dir} until step 4; from here it trains on "
            f"{other}") in result.stdout
    # the folder it trained on moved away: the line names the flag that goes on from there,
    # where it said a new run's "data folder ... does not exist: check the path"
    moved = tmp_path / "moved"
    train_small(other, moved, max_epoch=1)
    other.rename(tmp_path / "elsewhere")
    last = moved / "last.pth"
    kept = last.read_bytes()
    assert_clean_error(cli("train", f"--resume={last}", "--max-epoch=2"),
                       f"--resume: {last} trained on {str(other)!r}, which does not exist: add "
                       f"--data-path=FOLDER, the folder its images are in now")
    assert last.read_bytes() == kept
    # moved with its folders too (another machine): the images' line first, then the
    # folders', each naming flags to add to the ones given
    shutil.copytree(moved, tmp_path / "copied")
    copied = tmp_path / "copied" / "last.pth"
    assert_clean_error(cli("train", f"--resume={copied}", "--max-epoch=2"),
                       "which does not exist: add --data-path=FOLDER")
    assert_clean_error(cli("train", f"--resume={copied}", "--max-epoch=2",
                           f"--data-path={tmp_path / 'elsewhere'}"),
                       f"--checkpoint-dir={tmp_path / 'copied'}")
    result = cli("train", f"--resume={last}", "--max-epoch=2",
                 f"--data-path={tmp_path / 'elsewhere'}")
    assert result.returncode == 0, result.stderr
    assert torch.load(last, weights_only=True)["epoch"] == 2


def test_resuming_into_another_runs_folders_is_refused(toy_dir, tmp_path):
    """--resume=ck/b/last.pth --checkpoint-dir=ck/a --save-path=im/a (a copied command):
    run a's last.pth was replaced and its loss log continued with b's rows, without a word."""
    for name, seed in (("a", 1), ("b", 2)):
        stopped_run(toy_dir, tmp_path / name, of=3) if name == "a" else \
            train_small(toy_dir, tmp_path / name, max_epoch=1, seed=seed)
    kept = {p: p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    resume = ["train", f"--resume={tmp_path / 'b' / 'last.pth'}", "--max-epoch=2"]
    line = assert_clean_error(cli(*resume, f"--checkpoint-dir={tmp_path / 'a'}",
                                  f"--save-path={tmp_path / 'a' / 'imgs'}"),
                              f"{tmp_path / 'a' / 'last.pth'} holds another run, stopped after "
                              f"epoch 1 of 3", "another --checkpoint-dir")
    # its own checkpoint folder, a's grids and log
    line = assert_clean_error(cli(*resume, f"--checkpoint-dir={tmp_path / 'b2'}",
                                  f"--save-path={tmp_path / 'a' / 'imgs'}"),
                              f"{tmp_path / 'a' / 'imgs' / 'losses.csv'} is another run's loss "
                              f"log", str(tmp_path / "b" / "imgs"), "another --save-path")
    assert {p: p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()} == kept
    assert not (tmp_path / "b2").exists()
    # a copy of b resumed beside itself keeps its copied log: its own
    shutil.copytree(tmp_path / "b", tmp_path / "copy")
    result = cli(*resume[:1], f"--resume={tmp_path / 'copy' / 'last.pth'}", "--max-epoch=2",
                 f"--checkpoint-dir={tmp_path / 'copy'}",
                 f"--save-path={tmp_path / 'copy' / 'imgs'}")
    assert result.returncode == 0, result.stderr
    assert [r["epoch"] for r in read_rows(tmp_path / "copy" / "imgs" / "losses.csv")] == [0, 1]


def test_a_rollback_goes_on_in_its_own_run_but_not_in_a_new_run_started_there(toy_dir,
                                                                               tmp_path):
    """cp ck/last.pth bak/; a new run in ck/ (another seed); train --resume=bak/last.pth
    --checkpoint-dir=ck, as the refusal of a bare resume of the copy suggests: it wrote over the
    new run's last.pth without a word and went on in its losses.csv, one log of two runs."""
    ck, bak = tmp_path / "ck", tmp_path / "bak"
    train_small(toy_dir, ck, max_epoch=1, seed=1)
    bak.mkdir()
    shutil.copy(ck / "last.pth", bak / "last.pth")
    rollback = ["train", f"--resume={bak / 'last.pth'}", "--max-epoch=2",
                f"--checkpoint-dir={ck}"]
    line = assert_clean_error(cli(*rollback[:3]), f"--checkpoint-dir={ck} alone to go on in "
                              f"that run's folders (a rollback)")  # the same run there
    # the same run trained on in ck/, then rolled back to the copy: its own folders
    train_small(toy_dir, ck, max_epoch=2, resume=str(ck / "last.pth"), seed=1)
    result = cli(*rollback)
    assert result.returncode == 0, result.stderr
    assert [r["epoch"] for r in read_rows(ck / "imgs" / "losses.csv")] == [0, 1]
    # a new run there since: refused, and nothing of it touched
    train_small(toy_dir, ck, max_epoch=1, seed=2, fresh=True)
    kept = {p: p.read_bytes() for p in ck.rglob("*") if p.is_file()}
    assert_clean_error(cli(*rollback), f"{ck / 'imgs' / 'losses.csv'} is the loss log of "
                       f"another run, the one now in {ck} (seed 2; {bak / 'last.pth'} is of "
                       f"seed 1)", "another --checkpoint-dir and --save-path")
    assert {p: p.read_bytes() for p in ck.rglob("*") if p.is_file()} == kept
    # nor does the refusal of a bare resume of the copy offer that rollback any more
    line = assert_clean_error(cli("train", f"--resume={bak / 'last.pth'}", "--max-epoch=2"),
                              f"--checkpoint-dir={bak}",
                              f"(a run of another seed, 2, has since started in {ck})")
    assert "(a rollback)" not in line
    # stopped, that run is refused as any other stopped run in the folder
    stopped_run(toy_dir, ck, of=3)
    assert_clean_error(cli(*rollback), f"{ck / 'last.pth'} holds another run, stopped after "
                       f"epoch 1 of 3")


def test_resuming_with_another_save_path_or_loss_says_where_the_log_went(toy_dir, tmp_path,
                                                                        capsys):
    """A new --save-path began a losses.csv of the later rows only, and a new --loss drew the
    whole log under the new loss's name, both without a word."""
    ckpt = tmp_path / "ck"
    train_small(toy_dir, ckpt, max_epoch=1, loss="bce")
    capsys.readouterr()
    train_small(toy_dir, ckpt, max_epoch=2, resume=str(ckpt / "last.pth"),
                save_path=str(tmp_path / "later"), loss="hinge")
    out = capsys.readouterr().out
    assert (f"note: the run kept its loss log and grids in {ckpt / 'imgs'}; from here they go "
            f"to {tmp_path / 'later'}, whose losses.csv begins after step 4 (the rows before "
            f"stay in {ckpt / 'imgs' / 'losses.csv'})") in out
    assert "note: the run trained with --loss=bce until step 4" in out
    # the same folders and loss again: nothing to say
    train_small(toy_dir, ckpt, max_epoch=3, resume=str(ckpt / "last.pth"),
                save_path=str(tmp_path / "later"), loss="hinge")
    assert "note: the run" not in capsys.readouterr().out


@pytest.mark.slow
def test_ema_switched_on_at_resume_saves_the_average_from_then_on(toy_dir, tmp_path, capsys):
    train_small(toy_dir, tmp_path, max_epoch=1, g_every=1)
    assert not (tmp_path / "netg_ema_0.pth").exists()
    train_small(toy_dir, tmp_path, max_epoch=2, resume=True, ema=0.9)
    g = torch.load(tmp_path / "netg_1.pth", weights_only=True)
    average = torch.load(tmp_path / "netg_ema_1.pth", weights_only=True)
    assert g.keys() == average.keys()
    assert not torch.equal(g["main.0.weight"], average["main.0.weight"])
    assert "ema" in torch.load(tmp_path / "last.pth", weights_only=True)
    draw_grid(tmp_path / "netg_ema_1.pth", tmp_path / "netd_1.pth", tmp_path / "r.png", 4, 8)
    # switched off again, the average is left behind, and a line says so
    train_small(toy_dir, tmp_path, max_epoch=3, resume=True, ema=0)
    out = capsys.readouterr().out
    assert "note: --ema=0: the moving average of G" in out
    assert not (tmp_path / "netg_ema_2.pth").exists() and (tmp_path / "netg_2.pth").exists()


def _rows(folder):
    import csv
    with open(folder / "imgs" / "losses.csv") as f:
        return [{k: v for k, v in row.items() if k != "images_per_s"} for row in csv.DictReader(f)]


def test_a_run_begun_from_weights_resumes_after_their_files_are_gone(toy_dir, tmp_path):
    """last.pth holds the weights: the --netg-path/--netd-path a run began from play no part
    in its resume (kept, a resume after the start files were cleaned up was refused with
    "--netg-path: no file", a flag the user had not given)."""
    from conftest import tiny_nets
    netg, netd = tiny_nets(nz=100)
    torch.save(netg.state_dict(), tmp_path / "g.pth")
    torch.save(netd.state_dict(), tmp_path / "d.pth")
    run = tmp_path / "run"
    train_small(toy_dir, run, max_epoch=1, netg_path=str(tmp_path / "g.pth"),
                netd_path=str(tmp_path / "d.pth"))
    (tmp_path / "g.pth").unlink()
    (tmp_path / "d.pth").unlink()
    train_small(toy_dir, run, max_epoch=2, resume=True)
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 2


def test_resume_from_an_older_state_trims_the_loss_log(toy_dir, tmp_path):
    """Steps logged after the state being resumed belong to a run that no longer exists: the
    log holds each step once, and equals the straight run's."""
    train_small(toy_dir, tmp_path / "straight", max_epoch=2, plot_every=1, save_every=1)
    run = tmp_path / "run"
    train_small(toy_dir, run, max_epoch=1, plot_every=1)
    older = (run / "last.pth").read_bytes()
    files = {name: (run / "imgs" / name).stat().st_ino for name in ("losses.csv", "losses.png")}
    train_small(toy_dir, run, max_epoch=2, resume=True)
    assert len(_rows(run)) == 8
    # both rewritten whole into a new file that then took the name, never in place: a stop
    # or a full disk halfway through the rewrite would have cut the run's history short
    assert all((run / "imgs" / name).stat().st_ino != ino for name, ino in files.items())
    (run / "last.pth").write_bytes(older)  # back to the end of epoch 1
    train_small(toy_dir, run, max_epoch=2, resume=True)
    rows = _rows(run)
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert rows == _rows(tmp_path / "straight")


def test_a_run_that_diverges_before_saving_does_not_point_at_an_older_save(toy_dir, tmp_path):
    """The message sent users to 'the last save' in a folder that held none of this run."""
    from conftest import cli
    args = ("train", "--nogpu", f"--data-path={toy_dir}", "--vis=False", "--batch-size=8",
            "--ngf=8", "--ndf=8", "--lr1=1e30", "--lr2=1e30", "--plot-every=2",
            f"--checkpoint-dir={tmp_path}", f"--save-path={tmp_path}")
    line = assert_clean_error(cli(*args), "diverged")
    assert "this run saved no checkpoint" in line and "last save" not in line


def test_naming_visdom_on_resume_turns_its_plots_on(toy_dir, tmp_path):
    """A run trained with --vis=False and resumed with --vis-port and --env plotted nothing,
    without a word: the saved --vis=False held."""
    ckpt = tmp_path / "c"
    train_small(toy_dir, ckpt, max_epoch=1)  # vis=False
    last = str(ckpt / "last.pth")
    assert not parse("train", dict(resume=last, max_epoch=2)).vis
    assert parse("train", dict(resume=last, max_epoch=2, vis_port=8431, env="e")).vis
    for named in (dict(env="e"), dict(vis_port=8431), dict(vis_server="http://127.0.0.1")):
        assert parse("train", dict(resume=last, **named)).vis, named  # each one alone too
    assert not parse("train", dict(resume=last, vis_port=8431, vis=False)).vis


def test_resuming_on_a_folder_with_another_image_count_says_so(toy_dir, tmp_path, capsys):
    """The saved data order is for the images the run began with: the run goes on, and says
    that it no longer follows that order (an epoch could otherwise end early in silence)."""
    data = tmp_path / "set"
    (data / "faces").mkdir(parents=True)
    for path in sorted((toy_dir / "faces").glob("*.jpg"))[:32]:
        (data / "faces" / path.name).write_bytes(path.read_bytes())
    ckpt = tmp_path / "c"
    train_small(data, ckpt, max_epoch=1)
    assert "now has" not in capsys.readouterr().out
    train_module.train(parse("train", dict(resume=str(ckpt / "last.pth"), max_epoch=2)))
    assert "now has" not in capsys.readouterr().out  # the same folder: no note
    for path in sorted((toy_dir / "faces").glob("*.jpg"))[32:48]:
        (data / "faces" / path.name).write_bytes(path.read_bytes())
    train_module.train(parse("train", dict(resume=str(ckpt / "last.pth"), max_epoch=3)))
    out = capsys.readouterr().out
    assert "now has 48 images, and the run began with 32" in out
    assert torch.load(ckpt / "last.pth", weights_only=False)["images"] == 48
    # a broken file is left out by the cache and counted without it: the folder has not
    # changed since, and the note says the switch is why the count differs
    (data / "faces" / "broken.jpg").write_text("not an image")
    train_module.train(parse("train", dict(resume=str(ckpt / "last.pth"), max_epoch=4)))
    assert "now has" not in capsys.readouterr().out
    train_module.train(parse("train", dict(resume=str(ckpt / "last.pth"), max_epoch=5,
                                           cache=False, num_workers=0)))
    out = capsys.readouterr().out
    assert "now has" not in out
    assert (f"the run trained with --cache=True, which counted 48 images in {data}, and "
            f"--cache=False counts 49") in out
    # switched back with images added meanwhile: the folder's change is what the note names
    for path in sorted((toy_dir / "faces").glob("*.jpg"))[48:51]:
        (data / "faces" / path.name).write_bytes(path.read_bytes())
    train_module.train(parse("train", dict(resume=str(ckpt / "last.pth"), max_epoch=6,
                                           cache=True)))
    out = capsys.readouterr().out
    assert "now has 51 images, and the run began with 49" in out and "--cache=" not in out


@pytest.mark.slow
def test_a_run_killed_outright_loses_one_epoch_at_most(toy_dir, tmp_path):
    """last.pth was written at the save points only (every 10 epochs by default): a kill -9,
    the OOM killer or a power cut lost every epoch since the last one."""
    ckpt = tmp_path / "c"
    run = _start(toy_dir, ckpt, "--max-epoch=100000", "--save-every=1000", "--batch-size=8",
                 "--ngf=8", "--ndf=8")
    try:
        read_until(run, "epoch 3/100000")  # two epochs done, no save point reached
        run.kill()
        run.wait(timeout=30)
    finally:
        kill_group(run)
    state = torch.load(ckpt / "last.pth", weights_only=False)
    assert state["epoch"] >= 2 and state["batch"] == 0
    assert not list(ckpt.glob("netg_*.pth"))  # the book's files stay at the save points
    again = cli("train", "--resume", f"--checkpoint-dir={ckpt}",
                f"--max-epoch={state['epoch'] + 1}")
    assert again.returncode == 0, again.stderr
    assert torch.load(ckpt / "last.pth", weights_only=False)["epoch"] == state["epoch"] + 1


def test_a_run_killed_while_it_draws_the_loss_plot_resumes_after_its_saved_epoch(toy_dir,
                                                                                  tmp_path):
    """At a save point the checkpoints were written, then losses.png (a second or so of
    matplotlib), then last.pth: a kill -9 in the plot left netg_0.pth saved and last.pth an
    epoch behind, so the resume trained epoch 1 again and wrote its files once more."""
    from conftest import train_args
    ckpt = tmp_path / "c"
    args = train_args(toy_dir, ckpt, "--max-epoch=3", "--save-every=1", "--batch-size=16",
                      "--ngf=8", "--ndf=8")
    script = ("import os, runpy, sys\n"
              f"sys.path.insert(0, {str(ROOT)!r})\n"
              "import curves\n"
              "curves.LossLog.plot = lambda self: os._exit(137)  # killed in the plot\n"
              f"sys.argv = ['main.py'] + {args!r}\n"
              f"runpy.run_path({str(ROOT / 'main.py')!r}, run_name='__main__')\n")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert killed.returncode == 137, killed.stderr
    assert (ckpt / "netg_0.pth").is_file() and not (ckpt / "netg_1.pth").exists()
    state = torch.load(ckpt / "last.pth", weights_only=False)
    assert (state["epoch"], state["batch"]) == (1, 0)  # after the epoch it had saved


@pytest.mark.slow
def test_a_run_killed_while_its_cache_is_built_leaves_no_worker_and_no_lock(tmp_path):
    """kill -9 (the OOM killer) as a pool decoded the images: its workers waited for jobs
    for ever, each in a process group of its own, holding the run's folder locks they had
    inherited, so the same command and --resume were refused, naming the dead process; and
    each killed build's temporary cache file stayed until a build finished."""
    import numpy as np
    from PIL import Image
    data = tmp_path / "big"
    (data / "faces").mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(data / "faces" / "0.png")  # slow to decode: a window to kill
    for i in range(1, 320):  # more than 256: a pool decodes them
        shutil.copy(data / "faces" / "0.png", data / "faces" / f"{i}.png")
    flags = [f"--data-path={data}", "--nogpu", "--vis=False", "--ngf=8", "--ndf=8",
             "--batch-size=64", "--max-epoch=1", f"--checkpoint-dir={tmp_path / 'c'}",
             f"--save-path={tmp_path / 'i'}"]
    run = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "train", *flags],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2:  # the pool's processes
            assert run.poll() is None and time.monotonic() < deadline, "no pool was started"
            workers = children(run.pid)
            time.sleep(0.01)
        time.sleep(0.5)
        assert list(tmp_path.glob(".big.*.tmp")), "the cache was built before the kill"
        run.kill()
        run.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(running(pid) for pid in workers)
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # the same command: trained, not refused (the faces made quick to decode first: the
    # killed build's file goes by the folder's name, whatever the images)
    small = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    for path in (data / "faces").iterdir():
        Image.fromarray(small).save(path)
    again = cli("train", *flags)
    assert again.returncode == 0, again.stderr
    assert not list(tmp_path.glob(".big.*.tmp"))


@pytest.mark.slow
def test_the_folder_lock_goes_with_a_killed_run_not_with_its_loader_workers(toy_dir, tmp_path):
    """With --cache=False the DataLoader's workers had inherited the lock, and held it for
    about 5 s after a kill -9 of the run, until torch's watchdog ended them: a scheduler's
    retry at once was refused, naming the dead process."""
    import fcntl
    ckpt = tmp_path / "c"
    run = _start(toy_dir, ckpt, "--max-epoch=100000", "--batch-size=4", "--cache=False",
                 "--num-workers=2")
    try:
        read_until(run, "epoch 1/100000")
        deadline = time.monotonic() + 60
        while len(children(run.pid)) < 2:  # its loader's workers
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.5)
        run.kill()
        run.wait(timeout=30)
        with open(ckpt / ".train.lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: still held
    finally:
        kill_group(run)


# a folder lock taken as train takes it, then a worker forked with every descriptor in use;
# prints whether the lock was free while that worker lived
_FORKED_WITH_NO_DESCRIPTOR_LEFT = """import fcntl, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
import train
lock = open(sys.argv[2], "a+")
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
train._HELD_LOCKS.add(lock.fileno())
started, has_started = os.pipe()
lowest = os.open(os.devnull, os.O_RDONLY)  # the number a next file would take
os.close(lowest)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
worker = os.fork()
if worker == 0:
    os.write(has_started, b"1")  # its fork hooks have run
    time.sleep(3)
    os._exit(0)
os.read(started, 1)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
train._HELD_LOCKS.clear()
lock.close()
with open(sys.argv[2]) as again:
    try:
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("free")
    except BlockingIOError:
        print("held")
os.waitpid(worker, 0)
"""


@pytest.mark.slow
def test_a_worker_forked_with_no_descriptor_left_lets_the_lock_go_without_a_word(tmp_path):
    """Under a small open-file limit (ulimit -n) a decoding worker forked with no descriptor
    left for /dev/null: an "Exception ignored" traceback stood above the run's error line,
    and the worker kept the folder's lock."""
    ran = subprocess.run([sys.executable, "-c", _FORKED_WITH_NO_DESCRIPTOR_LEFT, str(ROOT),
                          str(tmp_path / ".train.lock")], capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0 and ran.stdout.split() == ["free"], ran.stdout + ran.stderr
    assert ran.stderr == ""


@pytest.mark.slow
def test_a_second_run_on_the_same_checkpoint_folder_is_refused(toy_dir, tmp_path):
    """Two runs in one folder interleaved their checkpoints, options.json, loss log and
    last.pth, and a --resume hint of one led to the other's state."""
    ckpt = tmp_path / "c"
    # epochs enough to outlive the two runs below on a busy machine (it is killed after them)
    first = _start(toy_dir, ckpt, "--max-epoch=100000", "--batch-size=4", "--ngf=8", "--ndf=8")
    try:
        read_until(first, "epoch 1/100000")
        second = cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False",
                     f"--checkpoint-dir={ckpt}", f"--save-path={tmp_path / 'i2'}")
        line = assert_clean_error(second, "another training run", f"process {first.pid}",
                                  "--checkpoint-dir")
        assert str(ckpt) in line and not (tmp_path / "i2").exists()
        # its sample grids and loss log are its own too (the first writes both into ckpt)
        third = cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False",
                    f"--checkpoint-dir={tmp_path / 'c3'}", f"--save-path={ckpt}")
        assert_clean_error(third, "another training run", "--save-path")
        assert not (tmp_path / "c3").exists()
    finally:
        first.kill()
        first.wait(timeout=30)
    # the lock went with the process (killed, not stopped): the folder can be trained in
    # again, and what a save cut short left behind is cleared. --fresh: on a slow or busy
    # machine the first run has saved its own last.pth by now, which a new run keeps
    (ckpt / ".last.pth.abc123.tmp").write_bytes(b"half a checkpoint")
    (ckpt / "imgs").mkdir(exist_ok=True)
    (ckpt / "imgs" / "..checkpoint-dir.abc123.tmp").write_bytes(b"half a name")
    train_small(toy_dir, ckpt, max_epoch=1, fresh=True)
    assert not list(ckpt.glob("*.tmp")) and (ckpt / "last.pth").is_file()
    assert not list((ckpt / "imgs").glob("*.tmp"))


def _a_run_starting_on(folder, data):
    """``train`` on ``data`` into the new ``folder``, as a user starts it."""
    return cli("train", f"--data-path={data}", "--nogpu", "--vis=False",
               f"--checkpoint-dir={folder}", f"--save-path={folder}")


def test_a_run_refused_on_a_folder_it_found_new_leaves_it_to_the_run_holding_it(
        tmp_path, monkeypatch):
    """Two runs started at once on a new folder each found it new, and the one refused there
    removed it as its own, with the other's lock: a third run then took the folder too."""
    import contextlib
    import fcntl
    folder, nothing = tmp_path / "c", tmp_path / "no images"
    nothing.mkdir()
    real, first, started = fcntl.flock, contextlib.ExitStack(), []

    def the_other_run_first(lock, how):  # it takes the folder as this one is about to
        if not started and lock.name == str(folder / ".train.lock"):
            started.append(lock.name)
            first.enter_context(train_module._only_run_in(folder, "--checkpoint-dir"))
        return real(lock, how)
    monkeypatch.setattr(fcntl, "flock", the_other_run_first)
    with first:
        assert_clean_error(_a_run_starting_on(folder, nothing), "another training run",
                           f"(process {os.getpid()}) is using {folder}")
        assert_clean_error(_a_run_starting_on(folder, nothing), "another training run",
                           f"(process {os.getpid()}) is using {folder}")  # not "no images"


def test_a_run_that_takes_a_lock_removed_with_its_folder_takes_the_folder_again(
        tmp_path, monkeypatch):
    """A run that ended where it had made its folder and written nothing removed the folder
    with its lock file, as another run there had opened that file and was locking it: that
    one then held a lock on a file gone, and a third run took the folder, made again."""
    import fcntl
    folder, nothing = tmp_path / "c", tmp_path / "no images"
    nothing.mkdir()
    real, ended = fcntl.flock, []

    def the_other_run_ends_first(lock, how):
        if not ended and lock.name == str(folder / ".train.lock"):
            ended.append(lock.name)
            train_module._untouched_gone(folder, folder / ".train.lock", folder)
        return real(lock, how)
    monkeypatch.setattr(fcntl, "flock", the_other_run_ends_first)
    with train_module._only_run_in(folder, "--checkpoint-dir"):  # what a run does first
        assert ended
        assert_clean_error(_a_run_starting_on(folder, nothing), "another training run",
                           f"(process {os.getpid()}) is using {folder}")
    assert not folder.exists()  # (it wrote nothing there)


def test_a_users_folder_left_with_a_killed_runs_lock_stays_with_a_run_that_fails(tmp_path):
    """A folder the user made, where a run killed as it began had left its lock alone, was
    taken for one that run had made: the next run there, refused for a data folder without
    images, removed the user's folder."""
    folder, nothing = tmp_path / "c", tmp_path / "no images"
    nothing.mkdir()
    folder.mkdir()
    (folder / ".train.lock").write_text("process 4194305")  # (no process has that number)
    assert_clean_error(_a_run_starting_on(folder, nothing), "no images")
    assert folder.is_dir() and [p.name for p in folder.iterdir()] == [".train.lock"]


# a run's first moment in its folder: the lock taken, its pid written a second later
_TAKING_THE_LOCK = """import fcntl, os, sys, time
lock = open(sys.argv[1], "a+")
fcntl.flock(lock, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(1)
os.ftruncate(lock.fileno(), 0)
os.write(lock.fileno(), f"process {os.getpid()}".encode())
time.sleep(60)
"""


def test_a_run_refused_as_the_other_takes_the_folder_names_its_process(tmp_path):
    """A run started as another had taken the lock, before that one wrote its pid there,
    said "another training run (process N)" with the pid of the run before it, killed long
    ago (or "another process", in a new folder)."""
    folder, nothing = tmp_path / "c", tmp_path / "no images"
    nothing.mkdir()
    folder.mkdir()
    (folder / ".train.lock").write_text("process 4194305")  # a killed run's
    other = subprocess.Popen([sys.executable, "-c", _TAKING_THE_LOCK, str(folder / ".train.lock")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "locked\n"
        assert_clean_error(_a_run_starting_on(folder, nothing),
                           f"another training run (process {other.pid}) is using {folder}")
    finally:
        other.kill()
        other.wait()


def test_resume_where_a_run_left_weights_but_no_state_says_how_to_go_on(toy_dir, tmp_path):
    """kill -9 during the first last.pth save leaves netg_0/netd_0 and no state: the message
    only said to pass --resume=PATH."""
    from conftest import cli
    from model import NetD, NetG
    for epoch in (0, 2, 10):
        torch.save(NetG(100, 8).state_dict(), tmp_path / f"netg_{epoch}.pth")
        torch.save(NetD(8).state_dict(), tmp_path / f"netd_{epoch}.pth")
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg_ema_11.pth")
    line = assert_clean_error(cli("train", "--nogpu", f"--data-path={toy_dir}", "--resume",
                                  f"--checkpoint-dir={tmp_path}"), "last.pth")
    assert "without --resume" in line and "netg_10.pth" in line and "--netg-path" in line
    line = assert_clean_error(cli("train", "--nogpu", f"--data-path={toy_dir}", "--resume",
                                  f"--checkpoint-dir={tmp_path / 'empty'}"), "last.pth")
    assert "--netg-path" not in line


def test_a_folder_that_cannot_be_locked_still_trains(toy_dir, tmp_path, monkeypatch, capsys):
    """NFS without its lock service answers ENOLCK: training went on there before the lock,
    and must still."""
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    train_small(toy_dir, tmp_path, max_epoch=1)
    assert "cannot be locked (No locks available)" in capsys.readouterr().out
    assert (tmp_path / "last.pth").is_file()


def test_a_run_starting_leaves_the_faces_another_command_is_writing_there(tmp_path,
                                                                         monkeypatch):
    """generate --out-dir=imgs/run, the run's own folder of grids, as a training (or its
    --resume) starts there: the run took the temporary file of the face being written for one
    a kill -9 left, and generate ended in a FileNotFoundError traceback."""
    from pathlib import Path
    from conftest import cli
    from model import NetG
    from train import _only_run_in
    torch.save(NetG(100, 8).state_dict(), tmp_path / "g.pth")
    imgs, started = tmp_path / "imgs", []
    real_write = checkpoint._atomic_write

    def a_run_starts_meanwhile(path, write):
        def written_then(tmp):
            write(tmp)
            if Path(path).parent == imgs and not started:  # its first face, half saved
                started.append(path)
                with _only_run_in(imgs, "--save-path"):  # what a run does first there
                    pass
        real_write(path, written_then)
    monkeypatch.setattr(checkpoint, "_atomic_write", a_run_starts_meanwhile)
    r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'g.pth'}", "--seeds=3,4",
            f"--out-dir={imgs}", f"--gen-img={tmp_path / 'grid.png'}")
    assert r.returncode == 0, r.stderr
    assert started == [imgs / "face_000_seed3.png"]
    assert {p.name for p in imgs.iterdir()} == {"face_000_seed3.png", "face_001_seed4.png",
                                                 "manifest.csv", ".train.lock"}


def test_a_huge_max_epoch_starts_at_once_and_still_names_earlier_files(tmp_path, toy_dir):
    """--max-epoch=1000000000 ("until I stop it") froze the start for minutes, listing every
    epoch's file names, and ran out of memory; the earlier run's files are still named."""
    from config import parse
    from train import _earlier_files
    for name in ("netg_1.pth", "netd_1.pth", "netg_ema_7.pth", "netg_2.pth"):
        (tmp_path / name).write_bytes(b"")
    opt = parse("train", dict(data_path=str(toy_dir), checkpoint_dir=str(tmp_path),
                              max_epoch=10**18, save_every=2))
    with within(10, "listing the earlier files"):  # no --ema: netg_ema_7 is an earlier
        out = "\n".join(_earlier_files(opt))  # run's; no save after 2
    assert (f"note: {tmp_path} holds 2 checkpoint files of an earlier run that this run will "
            f"not replace (e.g. netg_ema_7.pth)") in out
    # and those it replaces, with no last.pth to speak for their run (the book's files,
    # copied in, were written over without a word)
    assert (f"note: {tmp_path} holds 2 checkpoint files of an earlier run that this run writes "
            f"over when it saves the same epochs (e.g. netg_1.pth): to keep them, move them "
            f"away first or pass another --checkpoint-dir") in out


def test_the_resume_command_it_prints_can_be_pasted_with_a_space_in_the_path(tmp_path, toy_dir):
    """`--resume=ck sp/last.pth`, pasted, was two arguments and an error."""
    import shlex
    ckpt = tmp_path / "ck sp"
    stopped_run(toy_dir, ckpt, of=2)
    line = assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False",
                                  "--batch-size=16", "--ngf=8", "--ndf=8", "--max-epoch=2",
                                  f"--checkpoint-dir={ckpt}", f"--save-path={ckpt / 'imgs'}"),
                              "stopped after epoch 1 of 2")
    pasted = shlex.split(line.split("`")[1])
    assert pasted[1:3] == ["main.py", "train"]  # and the Python this run ran with:
    assert pasted[0] == "python" or os.path.abspath(pasted[0]) == os.path.abspath(sys.executable)
    result = cli(*pasted[2:])
    assert result.returncode == 0, result.stderr
    assert torch.load(ckpt / "last.pth", weights_only=True)["epoch"] == 2


def test_resuming_a_copied_run_does_not_write_into_the_original(tmp_path, toy_dir):
    """cp -r ck1 ck2; train --resume=ck2/last.pth wrote ck1's last.pth, checkpoints and loss
    log (the folders the state names), saying so only in its last line."""
    import shlex
    import shutil
    original = tmp_path / "ck1"
    stopped_run(toy_dir, original, of=2)
    shutil.copytree(original, tmp_path / "ck2")
    copy = tmp_path / "ck2"
    before = {p: p.read_bytes() for p in original.rglob("*") if p.is_file()}
    more = ("--nogpu", "--vis=False")
    line = assert_clean_error(cli("train", f"--resume={copy / 'last.pth'}", *more),
                              f"--checkpoint-dir={original}", f"--checkpoint-dir={copy}")
    assert f"--save-path={copy / 'imgs'}" in line  # where the run kept its grids: imgs/
    assert f"--checkpoint-dir={original} alone to go on in that run's folders" in line
    assert_clean_error(cli("train", f"--resume={copy / 'last.pth'}", f"--checkpoint-dir={copy}",
                           *more), "--save-path")
    # a new run in the copy's folder names the command that goes on there; pasted, it does
    line = assert_clean_error(cli("train", f"--data-path={toy_dir}", "--batch-size=16",
                                  "--ngf=8", "--ndf=8", f"--checkpoint-dir={copy}",
                                  f"--save-path={tmp_path / 'other'}", *more),
                              "stopped after epoch 1 of 2")
    pasted = shlex.split(line.split("`")[1])
    result = cli(*pasted[2:], *more)
    assert result.returncode == 0, result.stderr
    assert torch.load(copy / "last.pth", weights_only=True)["epoch"] == 2
    assert (copy / "imgs" / "1.png").is_file()
    assert {p: p.read_bytes() for p in original.rglob("*") if p.is_file()} == before
    # moved away, the run's own folders are gone: no rollback into them is offered
    moved = original.rename(tmp_path / "moved")
    line = assert_clean_error(cli("train", f"--resume={moved / 'last.pth'}", *more),
                              f"--checkpoint-dir={moved}", "that folder is no longer there")
    assert "rollback" not in line


def test_a_copied_run_with_its_grids_beside_its_checkpoints_is_named_with_both(tmp_path,
                                                                              toy_dir):
    """run/ck and run/imgs copied as run2/: the command it gave to go on with named run2/ck/imgs
    for the grids, so the pasted resume began a second loss log there."""
    import shutil
    first = tmp_path / "run"
    train_small(toy_dir, first / "ck", save_path=str(first / "imgs"), max_epoch=1)
    state = torch.load(first / "ck" / "last.pth", weights_only=True)
    state["options"]["max_epoch"] = 2  # stopped after its first epoch of two
    torch.save(state, first / "ck" / "last.pth")
    shutil.copytree(first, tmp_path / "run2")
    copy = tmp_path / "run2"
    line = assert_clean_error(cli("train", f"--data-path={toy_dir}", "--batch-size=16",
                                  "--ngf=8", "--ndf=8", "--nogpu", "--vis=False",
                                  f"--checkpoint-dir={copy / 'ck'}",
                                  f"--save-path={copy / 'imgs'}"), "stopped after epoch 1 of 2")
    assert f"--checkpoint-dir={copy / 'ck'} --save-path={copy / 'imgs'}`" in line
    # a backup of the checkpoints beside them (run/ck_bak): its grids go inside it, where the
    # side-by-side rule named run/imgs, the original run's grids and loss log
    shutil.copytree(first / "ck", first / "ck_bak")
    line = assert_clean_error(cli("train", f"--resume={first / 'ck_bak' / 'last.pth'}",
                                  "--nogpu", "--vis=False"), "--checkpoint-dir=")
    assert f"--checkpoint-dir={first / 'ck_bak'} --save-path={first / 'ck_bak' / 'imgs'} " \
        in line
    assert f"--save-path={first / 'imgs'}" not in line.split("it would write there")[1]


def test_a_run_started_with_relative_folders_resumes_from_any_working_folder(tmp_path, toy_dir,
                                                                           monkeypatch):
    """Its folders are saved as typed: resumed from elsewhere, it would have trained on and
    written to folders of those names there (a new ck/ beside the command), or been refused."""
    import shutil
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    shutil.copytree(toy_dir, start / "toy")
    monkeypatch.chdir(start)
    more = ("--nogpu", "--vis=False", "--batch-size=16", "--ngf=8", "--ndf=8")
    result = cli("train", "--data-path=toy", "--checkpoint-dir=ck", "--save-path=im",
                 "--max-epoch=1", *more)
    assert result.returncode == 0, result.stderr
    monkeypatch.chdir(elsewhere)
    result = cli("train", f"--resume={start / 'ck' / 'last.pth'}", "--max-epoch=2")
    assert result.returncode == 0, result.stderr
    assert torch.load(start / "ck" / "last.pth", weights_only=True)["epoch"] == 2
    assert (start / "im" / "1.png").is_file() and not list(elsewhere.iterdir())


def test_a_resumed_run_says_which_of_the_steps_options_it_changes(toy_dir, tmp_path):
    """--lr1 and --loss changed on --resume got a line; --ema (an average of G begun in mid
    run), --diffaug, --r1 and the D/G ratio changed without a word."""
    train_small(toy_dir, tmp_path, max_epoch=1, ema=0.9, r1=0.1)
    r = cli("train", "--nogpu", f"--resume={tmp_path / 'last.pth'}", "--max-epoch=2",
            "--diffaug=translation", "--r1=1", "--g-every=2", "--ema=0.99", "--d-every=2",
            "--label-smooth=0.1")
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stdout.splitlines() if line.startswith("note: the run trained")]
    assert notes == ["note: the run trained with --d-every=1 until step 4; from here with "
                     "--d-every=2",
                     "note: the run trained with --g-every=5 until step 4; from here with "
                     "--g-every=2",
                     "note: the run trained with --label-smooth=0.0 until step 4; from here "
                     "with --label-smooth=0.1",
                     "note: the run trained without --diffaug until step 4; from here with "
                     "--diffaug=translation",
                     "note: the run trained with --r1=0.1 until step 4; from here with --r1=1.0",
                     "note: the run trained with --ema=0.9 until step 4; from here with "
                     "--ema=0.99"], r.stdout
    again = cli("train", "--nogpu", f"--resume={tmp_path / 'last.pth'}", "--max-epoch=3")
    assert again.returncode == 0, again.stderr
    assert "note: the run trained" not in again.stdout  # nothing changed: nothing said
    # the same kinds in another order, or twice, augment as before: no change to say, also
    # for a run whose state kept them as typed (an earlier version)
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    state["options"]["diffaug"] = "translation,color"
    torch.save(state, tmp_path / "last.pth")
    same = cli("train", "--nogpu", f"--resume={tmp_path / 'last.pth'}", "--max-epoch=4",
               "--diffaug=color,translation,color")
    assert same.returncode == 0, same.stderr
    assert "note: the run trained" not in same.stdout, same.stdout


def test_a_loss_row_over_the_users_disk_quota_is_disk_full_and_no_half_row(tmp_path,
                                                                            monkeypatch):
    """A quota reached (EDQUOT) is a full disk to the user as ENOSPC is: the disk-full line
    and no part of the row left, not an OSError traceback."""
    import errno
    from errors import DiskFull
    log = curves.LossLog(tmp_path)
    log.append(1, 0, dict(loss_d=1.0, loss_g=2.0, d_real=0.6, d_fake=0.4), 10.0)
    before = (tmp_path / "losses.csv").read_bytes()
    real_write = os.write

    def over_quota(fd, data):
        real_write(fd, data[:5])  # part of it went in before the quota stopped it
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    monkeypatch.setattr(curves.os, "write", over_quota)
    with pytest.raises(DiskFull):
        log.append(2, 0, dict(loss_d=1.0, loss_g=2.0, d_real=0.6, d_fake=0.4), 10.0)
    assert (tmp_path / "losses.csv").read_bytes() == before


def test_a_loss_row_over_a_file_size_limit_names_the_log_and_leaves_no_half_row(tmp_path):
    """A file size limit (ulimit -f) reached in the row: the row's first bytes stayed, and
    the error named no file (os.write's). Here the limit lets 5 bytes of the row in."""
    import errno
    program = f"""
import os, resource, signal, sys
sys.path.insert(0, {str(ROOT)!r})
import curves
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
log = curves.LossLog({str(tmp_path)!r})
row = dict(loss_d=1.0, loss_g=2.0, d_real=0.6, d_fake=0.4)
log.append(1, 0, row, 10.0)
room = os.path.getsize(log.csv) + 5
resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))
try:
    log.append(2, 0, row, 10.0)
except OSError as e:
    print(e.errno, e.filename)
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(errno.EFBIG), str(tmp_path / "losses.csv")]
    rows = curves.read_rows(tmp_path / "losses.csv")
    assert [r["step"] for r in rows] == [1]
    assert (tmp_path / "losses.csv").read_text().endswith("\n")  # no part of row 2


def test_a_resume_keeps_off_its_save_path_once_another_run_logs_there(toy_dir, tmp_path):
    """Run A finished with its grids in imgs; run B, in another --checkpoint-dir with the same
    save path (the default imgs/ left as it was), was told that it starts its own log there.
    A, resumed to train further, went on in B's losses.csv without a word: B's rows as A's
    first epoch, A's after them, in one log and one plot."""
    imgs = tmp_path / "imgs"
    base = ["train", f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--batch-size=16",
            "--ngf=8", "--ndf=8", f"--save-path={imgs}", "--max-epoch=1"]
    assert cli(*base, f"--checkpoint-dir={tmp_path / 'a'}", "--seed=1").returncode == 0
    assert cli(*base, f"--checkpoint-dir={tmp_path / 'b'}", "--seed=2").returncode == 0
    before = {p.name: p.read_bytes() for p in imgs.iterdir()}
    assert_clean_error(cli("train", f"--resume={tmp_path / 'a' / 'last.pth'}", "--max-epoch=2"),
                       f"{imgs / 'losses.csv'} is now the loss log of another run, the one in "
                       f"{tmp_path / 'b'}", "another --save-path")
    assert {p.name: p.read_bytes() for p in imgs.iterdir()} == before
    # B itself goes on in its own log, and A in a save path of its own
    assert cli("train", f"--resume={tmp_path / 'b' / 'last.pth'}", "--max-epoch=2"
               ).returncode == 0
    result = cli("train", f"--resume={tmp_path / 'a' / 'last.pth'}", "--max-epoch=2",
                 f"--save-path={tmp_path / 'imgs-a'}")
    assert result.returncode == 0, result.stderr


def test_a_run_begun_in_a_utf8_terminal_resumes_under_the_c_locale(toy_dir, tmp_path):
    # a cron job or a bare ssh session: LC_ALL=C, Python's UTF-8 mode off; the run's folders,
    # named in UTF-8 by the run, were a UnicodeEncodeError traceback
    ckpt = tmp_path / "run é中"
    train_small(toy_dir, ckpt, max_epoch=1)
    env = dict(os.environ, LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    args = [sys.executable, ROOT / "main.py", "train", "--resume", "--max-epoch=2",
            f"--checkpoint-dir={ckpt}", f"--save-path={ckpt / 'imgs'}"]
    result = subprocess.run(list(map(os.fsencode, args)), capture_output=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"Traceback" not in result.stderr
    assert (ckpt / "netg_1.pth").is_file()


def test_a_run_begun_under_the_c_locale_resumes_on_the_same_folder(toy_dir, tmp_path, capsys):
    # there the run's folders were saved with their bytes as surrogates: resumed in a UTF-8
    # terminal, the same data folder read as another one ("from here it trains on ...")
    faces = tmp_path / "faces é"
    shutil.copytree(toy_dir, faces)
    ckpt = tmp_path / "run"
    train_small(faces, ckpt, max_epoch=1)
    state = torch.load(ckpt / "last.pth", weights_only=True)
    state["options"]["data_path"] = os.fsencode(faces).decode("ascii", "surrogateescape")
    torch.save(state, ckpt / "last.pth")
    capsys.readouterr()
    train_small(faces, ckpt, max_epoch=2, resume=True)
    assert "trains on" not in capsys.readouterr().out
    assert (ckpt / "netg_1.pth").is_file()
