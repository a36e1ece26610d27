"""Training end to end, the D/G schedule, and what each update step may touch."""
import json
import os
import re
import shlex
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import checkpoint
import steps
import train as train_module
from config import parse
from model import NetG

from conftest import ROOT, assert_clean_error, cli, run_cli, tiny_nets


@pytest.mark.slow
def test_book_command_writes_checkpoints_and_grids_then_generate_uses_them(toy_dir, tmp_path):
    ckpt, imgs = tmp_path / "C", tmp_path / "I"
    result = run_cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False",
                     "--max-epoch=2", "--save-every=1", "--batch-size=16", "--num-workers=0",
                     f"--save-path={imgs}", f"--checkpoint-dir={ckpt}", "--seed=0")
    assert result.returncode == 0, result.stderr
    for name in ("netg_0.pth", "netd_0.pth", "netg_1.pth", "netd_1.pth"):
        state = torch.load(ckpt / name, weights_only=True)
        assert all(k.startswith("main.") for k in state)  # the book's bare state_dict
    for name in ("0.png", "1.png"):
        grid = Image.open(imgs / name)
        assert grid.size == (8 * 96 + 9 * 2, 8 * 96 + 9 * 2)  # 64 faces, 8 per row
    # and 1.png is what netg_1.pth draws from the run's fixed noise, to a level (a grid of
    # any 64 faces, or a blank one, had the same size)
    import numpy as np
    netg = NetG(100, 64)
    netg.load_state_dict(torch.load(ckpt / "netg_1.pth", weights_only=True))
    fixed = torch.load(ckpt / "last.pth", weights_only=True)["fixed_noise"]
    redrawn = tmp_path / "redrawn.png"
    checkpoint.save_grid(train_module.fixed_samples(netg, fixed), redrawn)
    drawn = [np.asarray(Image.open(p), dtype=np.int16) for p in (imgs / "1.png", redrawn)]
    assert np.abs(drawn[0] - drawn[1]).max() <= 1
    options = json.loads((ckpt / "options.json").read_text())
    from config import USED  # train's options, not explore's port or evaluate's metrics
    assert set(options) == set(USED["train"]) and "port" not in options
    assert options["batch_size"] == 16 and options["seed"] == 0
    assert "64 images, 4 batches of 16 per epoch" in result.stdout
    # an epoch shorter than the book's --plot-every=20: the loss log and curves were empty,
    # as visdom was (the book counts batches within an epoch)
    assert "an epoch has 4 batches, fewer than --plot-every=20" in result.stdout
    with open(imgs / "losses.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["4", "8"]
    assert (imgs / "losses.png").is_file()

    # its last line names the pair to draw from (a netg_200.pth after 200 epochs would be
    # none of them), as a command to paste where train ran
    last = result.stdout.rstrip().splitlines()[-1]
    assert last.startswith(f"done: weights in {ckpt}, sample grids in {imgs}; draw faces "
                           f"with `"), last
    python, main, *args = shlex.split(last.split("`")[1])
    assert os.path.abspath(shutil.which(python) or python) == os.path.abspath(sys.executable)
    assert Path(main).resolve() == ROOT / "main.py"
    assert args == ["generate", f"--netg-path={ckpt / 'netg_1.pth'}",
                    f"--netd-path={ckpt / 'netd_1.pth'}"]
    out = tmp_path / "result.png"  # (generate as a process of its own: test_generate.py)
    result = cli(*args, "--nogpu", "--gen-num=16", "--gen-search-num=64", f"--gen-img={out}")
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (786, 198)


def test_the_time_left_counts_the_saves(toy_dir, tmp_path, capsys, monkeypatch):
    """The time left came from the batches' pace alone: with one batch an epoch and the
    book's nets, whose last.pth (76 MB) is written every epoch, it said 5 minutes for 11."""
    from types import SimpleNamespace
    clock = {"now": 0.0}

    def perf_counter():  # the batches take next to no time on this clock ...
        clock["now"] += 0.001
        return clock["now"]
    save = train_module.Run.save

    def slow_save(self):  # ... and each save two minutes
        clock["now"] += 120
        return save(self)
    monkeypatch.setattr(train_module, "time", SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(train_module.Run, "save", slow_save)
    opt = parse("train", dict(data_path=str(toy_dir), gpu=False, vis=False, max_epoch=4,
                              batch_size=64, ngf=8, ndf=8, seed=0, save_path=str(tmp_path / "I"),
                              checkpoint_dir=str(tmp_path / "C")))
    train_module.train(opt)
    said = [line for line in capsys.readouterr().out.splitlines() if " left: " in line]
    assert said == ["3 epochs left: about 6 min", "2 epochs left: about 4 min",
                    "1 epoch left: about 2 min"]


def test_the_logged_means_start_again_at_each_save_point(toy_dir, tmp_path):
    """losses.csv's rows are the running means since the last save point, as the book plots
    them: kept from the run's start, the curves flattened and hid a late divergence. Two
    runs that train alike, one saving every epoch: the same rows in the first epoch, then
    the saving one's first row is that step's own loss (read from the other's means)."""
    import csv
    from conftest import train_small
    rows = {}
    for every in (1, 10):
        folder = tmp_path / str(every)
        train_small(toy_dir, folder, max_epoch=2, plot_every=1, save_every=every)
        with open(folder / "imgs" / "losses.csv") as f:
            rows[every] = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    saving, running = rows[1], rows[10]
    assert len(saving) == len(running) == 8  # 4 batches an epoch
    for k in range(4):
        assert saving[k]["loss_d"] == running[k]["loss_d"]
    own = 5 * running[4]["loss_d"] - 4 * running[3]["loss_d"]  # step 5's loss alone
    assert saving[4]["loss_d"] == pytest.approx(own, abs=1e-4)
    assert saving[4]["loss_d"] != pytest.approx(running[4]["loss_d"], abs=1e-4)


def test_save_every_and_last_epoch(toy_dir, tmp_path, capsys):
    opt = parse("train", dict(data_path=str(toy_dir), gpu=False, vis=False, max_epoch=3,
                              save_every=2, batch_size=32, ngf=8, ndf=8, seed=0,
                              save_path=str(tmp_path / "I"), checkpoint_dir=str(tmp_path / "C")))
    train_module.train(opt)
    # epochs of a moment: the time left once, not after each (200 lines on a small set)
    assert capsys.readouterr().out.count(" left: ") == 1
    assert sorted(p.name for p in (tmp_path / "C").glob("netg_*.pth")) == ["netg_1.pth",
                                                                           "netg_2.pth"]
    assert sorted(p.name for p in (tmp_path / "I").glob("*.png")) == ["1.png", "2.png",
                                                                     "losses.png"]


@pytest.mark.parametrize("d_every,g_every,d_steps,g_steps",
                         [(1, 5, 10, 2), (1, 1, 10, 10), (2, 3, 5, 4), (3, 1, 4, 10)])
def test_schedule(toy_dir, tmp_path, monkeypatch, d_every, g_every, d_steps, g_steps):
    calls = {"d": 0, "g": 0}
    real_d, real_g = train_module.d_step, train_module.g_step

    def counted_d(*a, **k):
        calls["d"] += 1
        return real_d(*a, **k)

    def counted_g(*a, **k):
        calls["g"] += 1
        return real_g(*a, **k)

    monkeypatch.setattr(train_module, "d_step", counted_d)
    monkeypatch.setattr(train_module, "g_step", counted_g)
    # 64 images in batches of 6: 10 batches in the epoch
    opt = parse("train", dict(data_path=str(toy_dir), gpu=False, vis=False, max_epoch=1,
                              batch_size=6, ngf=4, ndf=4, seed=0, d_every=d_every,
                              g_every=g_every, save_path=str(tmp_path / "I"),
                              checkpoint_dir=str(tmp_path / "C")))
    train_module.train(opt)
    assert (calls["d"], calls["g"]) == (d_steps, g_steps)


def test_lazy_r1_comes_every_16th_d_step_weighted_16_times(toy_dir, tmp_path, monkeypatch):
    """--r1 with --d-every=2 (make demo-long's D): the penalty is due every 16th step of D,
    not of the run, so its strength stays the one asked for (it came twice as often)."""
    from conftest import r1_weights
    from steps import R1_EVERY
    weights = r1_weights(monkeypatch)
    # 64 images in batches of 2, 2 epochs: 64 batches, 32 steps of D
    opt = parse("train", dict(data_path=str(toy_dir), gpu=False, vis=False, max_epoch=2,
                              batch_size=2, ngf=4, ndf=4, seed=0, d_every=2, r1=0.5,
                              save_path=str(tmp_path / "I"), checkpoint_dir=str(tmp_path / "C")))
    train_module.train(opt)
    assert len(weights) == 32
    assert {i: w for i, w in enumerate(weights) if w} == {0: 0.5 * R1_EVERY,
                                                          R1_EVERY: 0.5 * R1_EVERY}


def test_d_step_leaves_g_untouched():
    netg, netd = tiny_nets()
    g_before = {k: v.clone() for k, v in netg.state_dict().items() if "num_batches" not in k
                and "running" not in k}
    d_before = [p.clone() for p in netd.parameters()]
    opt_d = torch.optim.Adam(netd.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.rand(6, 3, 96, 96) * 2 - 1
    loss, d_real, d_fake = steps.d_step(netg, netd.logits, opt_d, steps.Objective(), real, 16)
    assert all(p.grad is None for p in netg.parameters())  # no gradient reached G
    for k, v in g_before.items():
        assert torch.equal(netg.state_dict()[k], v)
    assert any(not torch.equal(a, b) for a, b in zip(d_before, netd.parameters()))
    assert loss.item() > 0 and 0 < d_real.item() < 1 and 0 < d_fake.item() < 1


def test_g_step_leaves_d_weights_untouched():
    netg, netd = tiny_nets()
    d_before = [p.clone() for p in netd.parameters()]
    g_before = [p.clone() for p in netg.parameters()]
    opt_g = torch.optim.Adam(netg.parameters(), lr=2e-4, betas=(0.5, 0.999))
    steps.g_step(netg, netd, opt_g, steps.Objective(), 6, 16, "cpu")
    assert all(p.grad is None for p in netd.parameters())
    assert all(torch.equal(a, b) for a, b in zip(d_before, netd.parameters()))
    assert all(p.requires_grad for p in netd.parameters())  # D is trainable again afterwards
    assert any(not torch.equal(a, b) for a, b in zip(g_before, netg.parameters()))


def test_start_from_existing_weights(toy_dir, tmp_path):
    netg = NetG(100, 8)
    with torch.no_grad():
        for p in netg.parameters():
            p.fill_(0.01)
    torch.save(netg.state_dict(), tmp_path / "start.pth")
    opt = parse("train", dict(data_path=str(toy_dir), gpu=False, vis=False, max_epoch=1,
                              batch_size=32, ngf=8, ndf=8, seed=0, g_every=100,
                              netg_path=str(tmp_path / "start.pth"), lr1=1e-12,
                              save_path=str(tmp_path / "I"), checkpoint_dir=str(tmp_path / "C")))
    train_module.train(opt)
    saved = torch.load(tmp_path / "C" / "netg_0.pth", weights_only=True)
    # one G step with a vanishing learning rate: the weights are still the ones we gave
    assert torch.allclose(saved["main.0.weight"], torch.full_like(saved["main.0.weight"], 0.01),
                          atol=1e-6)


def test_a_learning_rate_of_0_keeps_that_nets_weights(toy_dir, tmp_path):
    """--lr1=0 was refused ("must be positive"); the book takes it, to train D against a
    fixed G. G's weights stay those it was given; D, at its own rate, learns."""
    from conftest import train_args
    netg, netd = tiny_nets(nz=100)
    torch.save(netg.state_dict(), tmp_path / "g.pth")
    torch.save(netd.state_dict(), tmp_path / "d.pth")
    r = cli(*train_args(toy_dir, tmp_path / "C", "--lr1=0", "--max-epoch=1", "--batch-size=16",
                        "--ngf=8", "--ndf=8", "--g-every=1", f"--netg-path={tmp_path / 'g.pth'}",
                        f"--netd-path={tmp_path / 'd.pth'}"))
    assert r.returncode == 0, r.stderr
    assert "note: --lr1=0: G's weights stay as they start" in r.stdout
    g = torch.load(tmp_path / "C" / "netg_0.pth", weights_only=True)
    d = torch.load(tmp_path / "C" / "netd_0.pth", weights_only=True)
    assert all(torch.equal(g[k], v) for k, v in netg.state_dict().items()
               if k.endswith(("weight", "bias")))
    assert not torch.equal(d["main.0.weight"], netd.state_dict()["main.0.weight"])
    assert_clean_error(cli(*train_args(toy_dir, tmp_path / "N", "--lr1=0", "--lr2=0")),
                       "--lr1 and --lr2 are both 0: neither net would learn")
    assert not (tmp_path / "N").exists()


def test_a_d_file_started_from_with_its_batchnorm_taken_away_or_added_is_said(toy_dir,
                                                                            tmp_path):
    """--netd-path with --d-bn=False dropped the file's BatchNorm without a word, though D's
    scores change with it; a D trained without BatchNorm is written with identities there,
    which the default (with it) would start to train as BatchNorm."""
    from conftest import train_args
    from model import NetD, batchnorm_is_identity, book_state_dict, remove_batchnorm
    _, netd = tiny_nets(nz=100)
    torch.save(netd.state_dict(), tmp_path / "d.pth")
    without = NetD(8)
    without.load_state_dict(book_state_dict(remove_batchnorm(tiny_nets(nz=100)[1])))
    assert batchnorm_is_identity(without) and not batchnorm_is_identity(netd)
    small = ("--max-epoch=1", "--batch-size=16", "--ngf=8", "--ndf=8")
    r = cli(*train_args(toy_dir, tmp_path / "C", "--d-bn=False", *small,
                        f"--netd-path={tmp_path / 'd.pth'}"))
    assert r.returncode == 0, r.stderr
    assert f"note: D starts from {tmp_path / 'd.pth'}, trained with BatchNorm, without it " \
           f"now, so it judges differently at first; pass --d-bn=True to keep it as it was" \
           in r.stdout
    # the file this run saved is one without BatchNorm, and the default says so of it
    saved = NetD(8)
    saved.load_state_dict(torch.load(tmp_path / "C" / "netd_0.pth", weights_only=True))
    assert batchnorm_is_identity(saved)
    r = cli(*train_args(toy_dir, tmp_path / "D", *small,
                        f"--netd-path={tmp_path / 'C' / 'netd_0.pth'}"))
    assert r.returncode == 0, r.stderr
    assert "trained without BatchNorm, with it now, so it judges differently at first; pass " \
           "--d-bn=False to keep it as it was" in r.stdout


def test_the_resume_command_names_main_py_from_where_the_run_was_started(tmp_path,
                                                                         monkeypatch):
    """Started from a subfolder (../main.py train ...), a stopped run said `python main.py
    train --resume=...`, and there was no main.py there to run; and started as the README
    does (.venv/bin/python), it said `python` and `torchrun`, which the shell found elsewhere
    or not at all (a pyenv Python without the packages: ModuleNotFoundError)."""
    venv = ROOT / ".venv" / "bin"  # `make test`'s: the venv the README's commands run
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # not activated
    monkeypatch.chdir(ROOT)
    assert train_module._resume_command("--resume=x", 1) == \
        "`.venv/bin/python main.py train --resume=x`"
    monkeypatch.chdir(ROOT / "docs")
    assert train_module._resume_command("--resume=x", 1) == \
        "`../.venv/bin/python ../main.py train --resume=x`"
    assert train_module._resume_command("--resume=x", 2).startswith(
        "`../.venv/bin/torchrun --standalone --nproc_per_node=2 ../main.py train --resume=x`")
    far = tmp_path / "a" / "b" / "c"
    far.mkdir(parents=True)
    monkeypatch.chdir(far)
    assert train_module._resume_command("--resume=x", 1) == \
        f"`{venv / 'python'} {ROOT / 'main.py'} train --resume=x`"
    monkeypatch.setenv("PATH", f"{venv}:/usr/bin:/bin")  # activated: the names as typed
    monkeypatch.chdir(ROOT)
    assert train_module._resume_command("--resume=x", 1) == "`python main.py train --resume=x`"
    assert train_module._resume_command("--resume=x", 2).startswith(
        "`torchrun --standalone --nproc_per_node=2 main.py train --resume=x`")


def test_bf16_only_where_the_gpu_does_it_natively(monkeypatch):
    from config import use_bf16
    # a pre-Ampere card: bf16 only through emulation
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation)
    assert use_bf16(None, torch.device("cuda")) is False
    assert use_bf16(True, torch.device("cuda")) is True  # --amp still forces it
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert use_bf16(None, torch.device("cuda")) is True


def test_a_folder_of_one_image_trains_on_1_image(toy_dir, tmp_path, capsys):
    """The start line counted one image as "1 images"."""
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(sorted((Path(toy_dir) / "faces").glob("*.jpg"))[0], one / "face.jpg")
    train_module.train(_opt(one, tmp_path, batch_size=1))
    assert "seed 0: 1 image, 1 batch of 1 per epoch" in capsys.readouterr().out


def _opt(toy_dir, tmp_path, **flags):
    base = dict(data_path=str(toy_dir), gpu=False, vis=False, max_epoch=1, batch_size=16,
                ngf=8, ndf=8, seed=0, save_path=str(tmp_path / "I"),
                checkpoint_dir=str(tmp_path / "C"))
    base.update(flags)
    return parse("train", base)


@pytest.mark.slow
def test_nan_stops_training_with_one_line_and_saves_nothing(toy_dir, tmp_path):
    from model import NetD
    netd = NetD(8)
    with torch.no_grad():  # finite, so the file loads (NaN in a file is refused), but its
        netd.main[0].weight.fill_(1e38)  # first layer overflows: as after a step that blew up
    torch.save(netd.state_dict(), tmp_path / "huge.pth")
    result = cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--ngf=8",
                 "--ndf=8", "--batch-size=16", "--max-epoch=3", "--save-every=1",
                 f"--netd-path={tmp_path / 'huge.pth'}", f"--checkpoint-dir={tmp_path / 'C'}",
                 f"--save-path={tmp_path / 'I'}")
    line = assert_clean_error(result, "became NaN or infinite in epoch 1:",
                              "lower --lr1/--lr2")
    assert "loss_d" in line
    assert not list((tmp_path / "C").glob("*.pth"))  # no NaN weights written as a save point


def test_a_divergence_after_a_save_says_how_to_go_on_from_it(tmp_path):
    """It said "start again from the last save" with no command, and a resume took back the
    rates of the run that diverged; and a resumed run that raised --max-epoch was told to
    resume without it, which said "nothing to do" (the state's own, lower)."""
    from config import parse
    from errors import UserError
    opt = parse("train", dict(checkpoint_dir=str(tmp_path / "ck sp"), max_epoch=7))
    with pytest.raises(UserError) as refused:
        train_module._check_finite(["G's weights"], 2, opt,
                                   saved=tmp_path / "ck sp" / "last.pth")
    assert str(refused.value).endswith(
        f"start again from the last save: --resume='{tmp_path / 'ck sp' / 'last.pth'}' "
        f"--max-epoch=7 with the lower rates")


def test_a_divergence_names_the_state_this_run_resumed_not_another_runs(toy_dir, tmp_path,
                                                                        monkeypatch):
    """Resumed from A's last.pth into folder B, which holds a finished run, a divergence
    before the first save named B's last.pth, the other run's, to start again from."""
    from errors import UserError
    a, b = tmp_path / "A", tmp_path / "B"
    train_module.train(_opt(toy_dir, a, max_epoch=1))
    train_module.train(_opt(toy_dir, b, max_epoch=1))
    g_step = train_module.g_step

    def blows_up(netg, *args, **kwargs):
        loss = g_step(netg, *args, **kwargs)
        with torch.no_grad():
            netg.main[0].weight.fill_(float("nan"))
        return loss
    monkeypatch.setattr(train_module, "g_step", blows_up)
    resumed = a / "C" / "last.pth"
    with pytest.raises(UserError) as refused:
        train_module.train(_opt(toy_dir, tmp_path, max_epoch=2, resume=str(resumed),
                                g_every=1, checkpoint_dir=str(b / "C"),
                                save_path=str(b / "new")))
    assert f"start again from the last save: --resume={resumed} --max-epoch=2 with" in \
        str(refused.value)  # A ran 1 epoch: resumed without --max-epoch=2, "nothing to do"


def test_weights_that_turn_nan_in_the_last_step_are_not_saved(toy_dir, tmp_path, monkeypatch):
    """The losses are read before each step: a last step that left G's weights NaN was saved,
    a file no command loads (they refuse NaN weights)."""
    from errors import UserError
    calls, g_step = [], train_module.g_step

    def last_step_blows_up(netg, *args, **kwargs):
        loss = g_step(netg, *args, **kwargs)
        calls.append(1)
        if len(calls) == 4:  # the epoch's last batch (64 faces, 16 a batch)
            with torch.no_grad():
                netg.main[0].weight.fill_(float("nan"))
        return loss
    monkeypatch.setattr(train_module, "g_step", last_step_blows_up)
    with pytest.raises(UserError, match="G's weights became NaN or infinite in epoch 1"):
        train_module.train(_opt(toy_dir, tmp_path, g_every=1))
    assert not list((tmp_path / "C").glob("*.pth"))


def test_weights_that_turn_nan_before_a_ctrl_c_are_not_saved_over_the_last_good_state(
        toy_dir, tmp_path, monkeypatch):
    """The save a Ctrl-C asks for checked the losses only: weights the last step left NaN
    replaced the last good last.pth with a file no command loads, and its line said to
    continue with --resume from it."""
    import os
    import signal
    from errors import UserError
    train_module.train(_opt(toy_dir, tmp_path, g_every=1, max_epoch=1))
    last = tmp_path / "C" / "last.pth"
    good = last.read_bytes()
    g_step = train_module.g_step

    def blows_up_then_ctrl_c(netg, *args, **kwargs):
        loss = g_step(netg, *args, **kwargs)
        with torch.no_grad():
            netg.main[0].weight.fill_(float("nan"))
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: a save after this step
        return loss
    monkeypatch.setattr(train_module, "g_step", blows_up_then_ctrl_c)
    with pytest.raises(UserError, match="G's weights became NaN or infinite in epoch 2"):
        train_module.train(_opt(toy_dir, tmp_path, g_every=1, max_epoch=2, resume=str(last)))
    assert last.read_bytes() == good


def test_a_full_disk_says_how_to_go_on(toy_dir, tmp_path, monkeypatch):
    """Every save's full disk said "continue with --resume": generate's and evaluate's too,
    which have none, and a run with no save yet, which has nothing to resume."""
    import errno
    import checkpoint
    from errors import UserError, sized
    from model import NetD
    train_module.train(_opt(toy_dir, tmp_path, max_epoch=1))
    last = tmp_path / "C" / "last.pth"
    good = last.read_bytes()

    write = checkpoint.Path.write_bytes

    def full(path, data):  # the checkpoints' (temporary) files
        if ".pth" in path.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(path, data)
    monkeypatch.setattr(checkpoint.Path, "write_bytes", full)
    with pytest.raises(UserError) as refused:
        train_module.train(_opt(toy_dir, tmp_path, max_epoch=2, resume=str(last)))
    assert str(refused.value).startswith(f"disk full while writing {tmp_path / 'C'}")
    # how much room to make: the size of a last.pth, and of the epoch's netg and netd files
    need = last.stat().st_size + sum(p.stat().st_size for p in (tmp_path / "C").glob("net?_0.pth"))
    said = re.search(r"free some space \(an epoch's save writes about ([0-9.]+) MB\)",
                     str(refused.value))
    assert said and abs(float(said[1]) - need / 1e6) <= 0.1 * need / 1e6, str(refused.value)
    assert f"then continue with `{train_module._resume_command(f'--resume={last}', 1)[1:]}" \
        in str(refused.value)  # (the command's words: the test above)
    assert last.read_bytes() == good
    with pytest.raises(UserError) as refused:  # a new run: nothing of its own to go on from
        train_module.train(_opt(toy_dir, tmp_path / "new", max_epoch=1, ngf=24, ndf=24))
    # how much (it said no size: freed too little, it failed again): the weights, Adam's two
    # averages of each and the epoch's weights, in the words of every other size ("17 MB")
    weights = sum(t.nbytes for net in (NetG(100, 24), NetD(24))
                  for t in net.state_dict().values())
    assert f"free some space (an epoch's save writes about {sized(4 * weights)}), then run the " \
        f"command again" in str(refused.value), str(refused.value)
    assert "--resume" not in str(refused.value)


def test_a_folder_gone_read_only_keeps_the_epoch_and_says_how_to_go_on(toy_dir, tmp_path,
                                                                       monkeypatch):
    """--save-path's disk remounted read-only as an epoch saved: the grid, written first, was
    refused, so the state that was to follow it was not saved (the epoch lost), and the line
    ("cannot write or read ...png: Read-only file system; check the path ...") said nothing of
    the run's last save or how to go on from it."""
    import errno
    import os
    import checkpoint
    from errors import UserError
    train_module.train(_opt(toy_dir, tmp_path, max_epoch=1))
    last = tmp_path / "C" / "last.pth"
    write = checkpoint.Path.write_bytes

    def read_only(path, data):  # the grids' (temporary) files
        if ".png" in path.name:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return write(path, data)
    monkeypatch.setattr(checkpoint.Path, "write_bytes", read_only)
    with pytest.raises(UserError) as refused:
        train_module.train(_opt(toy_dir, tmp_path, max_epoch=2, resume=str(last)))
    said = str(refused.value)
    assert said.startswith(f"cannot write or read {tmp_path / 'I' / '1.png'}: Read-only file "
                           f"system; ")
    assert f"then continue with `{train_module._resume_command(f'--resume={last}', 1)[1:]}" \
        in said and "(its state at step 8 is saved there)" in said, said
    assert torch.load(last, weights_only=False)["epoch"] == 2  # the second epoch's, kept


def test_a_full_disk_under_the_loss_log_keeps_the_steps_and_no_half_row(toy_dir, tmp_path,
                                                                         monkeypatch):
    """The loss log on a disk that filled mid-epoch: a bare "cannot write or read: No space
    left" naming no file, the steps since the last save lost, and half a row in losses.csv."""
    import csv
    import errno
    import os
    import curves
    from errors import UserError
    train_module.train(_opt(toy_dir, tmp_path, max_epoch=1, batch_size=8, plot_every=2))
    real_write, rows = os.write, {"left": 2}  # two more rows fit, then the disk is full

    def filling(fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith("losses.csv"):
            return real_write(fd, data)
        rows["left"] -= 1
        if rows["left"] < -1:  # full: the write of the rest says so, as the system's does
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data if rows["left"] >= 0 else data[:9])  # part of a row
    monkeypatch.setattr(curves.os, "write", filling)
    last = tmp_path / "C" / "last.pth"
    with pytest.raises(UserError) as refused:
        train_module.train(_opt(toy_dir, tmp_path, max_epoch=2, batch_size=8, plot_every=2,
                                resume=str(last)))
    said = str(refused.value)
    assert said.startswith(f"disk full while writing {tmp_path / 'I' / 'losses.csv'}: ")
    assert f"--resume={last}` (its state at step 14 is saved there)" in said
    assert torch.load(last, weights_only=False)["step"] == 14  # 8 + the 3 read-backs' 6
    with open(tmp_path / "I" / "losses.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [2, 4, 6, 8, 10, 12]  # whole rows only, up to the last that fitted


def test_label_smooth_sets_the_target_d_learns_for_real_faces(toy_dir, tmp_path, monkeypatch):
    targets = []

    class Spy(steps.Objective):
        def __init__(self, loss, real_label):
            targets.append(real_label)
            super().__init__(loss, real_label)
    monkeypatch.setattr(train_module, "Objective", Spy)
    train_module.train(_opt(toy_dir, tmp_path / "plain"))
    train_module.train(_opt(toy_dir, tmp_path / "smooth", label_smooth=0.25))
    assert targets == [1.0, 0.75]
    plain = torch.load(tmp_path / "plain" / "C" / "netd_0.pth", weights_only=True)
    smooth = torch.load(tmp_path / "smooth" / "C" / "netd_0.pth", weights_only=True)
    assert not torch.equal(plain["main.0.weight"], smooth["main.0.weight"])


def test_amp_and_noamp_say_which_and_compute_differently(toy_dir, tmp_path, capsys):
    train_module.train(_opt(toy_dir, tmp_path / "on", amp=True))
    on = capsys.readouterr().out
    train_module.train(_opt(toy_dir, tmp_path / "off", amp=False))
    off = capsys.readouterr().out
    assert "training on cpu with bf16 autocast, seed 0" in on
    assert "training on cpu, seed 0" in off and "bf16" not in off
    a = torch.load(tmp_path / "on" / "C" / "netg_0.pth", weights_only=True)
    b = torch.load(tmp_path / "off" / "C" / "netg_0.pth", weights_only=True)
    assert not torch.equal(a["main.0.weight"], b["main.0.weight"])  # bf16 rounds, fp32 not
    result = cli("train", f"--data-path={toy_dir}", "--noamp", "--nogpu", "--vis=False",
                 "--ngf=8", "--ndf=8", "--batch-size=16", "--max-epoch=1",
                 f"--checkpoint-dir={tmp_path / 'C3'}", f"--save-path={tmp_path / 'I3'}")
    assert result.returncode == 0, result.stderr
    assert "training on cpu, seed" in result.stdout  # fire's --noamp is --amp=False


@pytest.mark.parametrize("d_low", [0, 8])
def test_start_d_from_existing_weights(toy_dir, tmp_path, capsys, d_low):
    from model import NetD
    netd = NetD(8)
    with torch.no_grad():
        for p in netd.parameters():
            p.fill_(0.01)
    torch.save(netd.state_dict(), tmp_path / "start.pth")
    # D learns once (batch 0 of d_every=100), with a vanishing learning rate
    train_module.train(_opt(toy_dir, tmp_path, d_every=100, lr2=1e-12, d_low=d_low,
                            netd_path=str(tmp_path / "start.pth")))
    # the file holds D alone: with --d-low the user is told that the judge starts afresh
    said = "the low-resolution judge of --d-low=8 starts afresh" in capsys.readouterr().out
    assert said == bool(d_low)
    saved = torch.load(tmp_path / "C" / "netd_0.pth", weights_only=True)
    for key in ("main.0.weight", "main.2.weight", "main.11.weight"):
        assert torch.allclose(saved[key], torch.full_like(saved[key], 0.01), atol=1e-6), key


def test_sync_bn_on_the_cpu_is_one_line(toy_dir, tmp_path):
    assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False",
                           "--batch-size=16", "--max-epoch=1", "--sync-bn",
                           f"--checkpoint-dir={tmp_path}", f"--save-path={tmp_path / 'i'}"),
                       "--sync-bn", "GPU")  # (the default imgs/ was locked by another run)


def test_sync_bn_on_the_cpu_is_refused_before_the_images_are_decoded(toy_dir):
    """--sync-bn --nogpu cannot work whatever the data: refused with the other flags, not
    after every image of the folder was decoded into the cache."""
    from config import parse
    from errors import UserError
    with pytest.raises(UserError, match="--sync-bn needs GPUs"):
        parse("train", dict(data_path=str(toy_dir), gpu=False, sync_bn=True))


def test_an_isa_capped_cpu_trains_in_fp32_like_an_avx2_one(monkeypatch):
    """ATEN_CPU_CAPABILITY=avx2 makes an AVX512-BF16 CPU compute as an AVX2-only one (how
    the README's AVX2 figures can be measured here): no native bf16 then."""
    from config import use_bf16
    cpu = torch.device("cpu")
    for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert use_bf16(None, cpu) is True
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN's convolutions capped alone
    assert use_bf16(None, cpu) is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")  # AVX512 without its bf16
    assert use_bf16(None, cpu) is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert use_bf16(None, cpu) is True
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert use_bf16(None, cpu) is False
    assert use_bf16(True, cpu) is True  # --amp still forces it


def test_bench_names_the_cpu_kind_from_its_flags():
    from bench import cpu_kind
    assert cpu_kind({"sse4_2", "avx2", "fma"}) == "avx2"
    assert cpu_kind({"avx2", "avx512f"}) == "avx512"
    assert cpu_kind({"avx2", "avx512f", "avx512_bf16"}) == "avx512_bf16"
    assert cpu_kind({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}) == "amx"
    assert cpu_kind({"sse2"}) == "other"


def test_bench_measures_an_isa_capped_cpu_as_the_older_kind(monkeypatch):
    import bench
    from config import isa_cap
    monkeypatch.setattr(bench, "cpu_kind", lambda: "avx512_bf16")
    for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    assert isa_cap() is None and bench.measured_kind("cpu") == "avx512_bf16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert bench.measured_kind("cpu") == "avx512"
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # the older of the two caps
    assert bench.measured_kind("cpu") == "avx2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # above the CPU: no effect
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    assert bench.measured_kind("cpu") == "avx512_bf16"


def test_bench_counts_zen4_and_zen5_laptop_avx512_at_half_rate_and_zen5_at_full():
    import bench
    amd = ["vendor_id\t: AuthenticAMD", "model name\t: AMD EPYC"]
    zen4, zen5 = amd + ["cpu family\t: 25"], amd + ["cpu family\t: 26"]
    intel = ["vendor_id\t: GenuineIntel", "cpu family\t: 6"]
    assert bench.flops_per_cycle(zen4, "avx512_bf16") == {"fp32": 32, "bf16": 64}
    assert bench.flops_per_cycle(zen5, "avx512_bf16") == {"fp32": 64, "bf16": 128}
    assert bench.flops_per_cycle(intel, "avx512_bf16") == {"fp32": 64, "bf16": 128}
    assert bench.flops_per_cycle(zen4, "avx2") == {"fp32": 32}
    assert bench.flops_per_cycle(zen5, "avx2") == {"fp32": 32}
    assert bench.flops_per_cycle(zen5, "other") is None
    laptop = ["vendor_id\t: AuthenticAMD", "cpu family\t: 26",
              "model name\t: AMD Ryzen AI 9 HX 370 w/ Radeon 890M"]
    assert bench.flops_per_cycle(laptop, "avx512_bf16") == {"fp32": 32, "bf16": 64}
    halo = ["vendor_id\t: AuthenticAMD", "cpu family\t: 26",
            "model name\t: AMD RYZEN AI MAX+ 395 w/ Radeon 8060S"]
    assert bench.flops_per_cycle(halo, "avx512_bf16") == {"fp32": 64, "bf16": 128}


def test_bench_counts_gs_step_once_every_g_every_batches():
    """bench.py's GFLOP/s and share of peak: D steps every batch, G once every --g-every
    batches, so a higher --g-every costs fewer FLOPs per image, by G's step's share."""
    from bench import train_flops_per_image as flops
    every, second = flops(1), flops(2)
    g_step = 2 * (every - second)  # G's step, per image, when it comes every batch
    assert 0 < g_step < every
    assert flops(5) == pytest.approx(every - 4 / 5 * g_step)


def test_bench_reads_the_losses_back_as_often_as_train(monkeypatch):
    """"ours" read the losses back once 2 * plot_every of them were pending: with the default
    --g-every=5 after about 34 batches, not train's 20, so a default run (25 batches) timed it
    without the sync train makes."""
    import types
    import torch
    import bench
    read = []
    monkeypatch.setattr(bench, "read_back", lambda pending: (read.append(len(pending)),
                                                             pending.clear()))

    class Source:
        count = 4

        def batches(self, order):
            while True:
                yield torch.zeros(2, 3, 96, 96)
    args = types.SimpleNamespace(g_every=5, plot_every=20, warmup=5, measure=20, batch_size=2)
    bench._ours(args, torch.device("cpu"), Source(), 0.0)
    assert read == [20 + 4]  # after batch 20: its 20 D losses and the G losses of 0, 5, 10, 15


def test_bench_help_gives_each_flags_default(monkeypatch, capsys):
    """bench.py --help listed --batch-size, --g-every and --plot-every without their values,
    so the figures it printed could not be read against the flags they came from."""
    import sys
    import bench
    monkeypatch.setattr(sys, "argv", ["bench.py", "--help"])
    with pytest.raises(SystemExit) as stop:
        bench.main()
    assert stop.value.code == 0
    page = " ".join(capsys.readouterr().out.split("options:")[1].split())
    for flag, value in [("--data-path", "data-toy"), ("--batch-size", 64),
                        ("--num-workers", 4), ("--g-every", 5), ("--plot-every", 20),
                        ("--warmup", 5), ("--measure", 20), ("--repeats", 3)]:
        help_line = page.split(f"{flag} {flag[2:].upper().replace('-', '_')}")[1]
        assert help_line.split(" --")[0].endswith(f"(default: {value})"), flag


@pytest.mark.slow
def test_bench_reads_paths_from_where_it_is_run_and_refuses_bad_values(toy_dir, tmp_path,
                                                                        monkeypatch):
    """Its runs start in the project's folder, so a relative --data-path used to name a
    folder there (the project's own data-toy, or nothing and a traceback)."""
    import contextlib
    import io
    import shutil
    import subprocess
    import sys
    import bench as tool
    from conftest import ROOT
    shutil.copytree(toy_dir, tmp_path / "mine")

    def process(*flags):
        return subprocess.run([sys.executable, str(ROOT / "bench.py"), *flags], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    def bench(*flags):
        """bench.py FLAGS run from tmp_path in this process (no Python and torch to start
        for each): its exit status and stderr."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", ["bench.py", *flags])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                tool.command()
                code = 0
            except SystemExit as e:
                code = e.code
        return subprocess.CompletedProcess(flags, code, out.getvalue(), err.getvalue())
    line = assert_clean_error(bench("--data-path=mine", "--batch-size=100"),
                              "lower --batch-size to 64 or less")  # (named the flag alone)
    assert f"{tmp_path / 'mine'} has 64 images" in line
    r = process("--data-path=nowhere")  # exit 1 where argparse's own refusals were 2
    assert_clean_error(r, str(tmp_path / "nowhere"))
    assert r.returncode == 2
    assert "is a file, not a folder" in assert_clean_error(
        bench("--data-path=mine/attributes.csv"), "--data-path")
    assert_clean_error(bench("--data-path=mine", "--repeats=0"), "--repeats")
    assert_clean_error(bench("--data-path=mine", "--json=mine/attributes.csv/b.json"), "--json")
    # each was a traceback, a hang (a cache smaller than a batch) or a silent CPU run (--gpu)
    assert_clean_error(bench("--data-path=mine", "--g-every=0"), "--g-every")
    # argparse's own refusals: its usage block stood above the line
    assert_clean_error(bench("--data-path=mine", "--batch-size=abc"), "--batch-size", "'abc'")
    for sizes in ("abc", "0", "8"):
        assert_clean_error(bench(f"--cache-sizes={sizes}", "--batch-size=16"), "--cache-sizes")
    assert_clean_error(bench("--cache-sizes=16", "--batch-size=16", "--scratch=/proc/x"),
                       "--scratch")
    # --cache-sizes= ran the whole benchmark on the project's data-toy, --json= wrote
    # nothing, and --json=new/ a file named new
    assert_clean_error(bench("--cache-sizes=", "--batch-size=16"), "--cache-sizes= names nothing")
    assert_clean_error(bench("--data-path=mine", "--json="), "--json= names nothing")
    assert_clean_error(bench("--data-path=mine", "--json=new/"), "is a folder")
    # ImageFolder refuses a folder with an empty class folder, and stops at an unreadable
    # image: each was a torchvision traceback, the second after our cache was built
    (tmp_path / "mine" / "empty").mkdir()
    assert_clean_error(bench("--data-path=mine"), f"{tmp_path / 'mine' / 'empty'} holds no images")
    (tmp_path / "mine" / "empty").rmdir()
    (tmp_path / "mine" / ".ipynb_checkpoints").mkdir()  # a class to ImageFolder, hidden or not
    assert_clean_error(bench("--data-path=mine"), ".ipynb_checkpoints holds no images")
    (tmp_path / "mine" / ".ipynb_checkpoints").rmdir()
    # images beside the class folder, which ImageFolder leaves out: its loader gave no batch,
    # and the benchmark spun for ever
    (tmp_path / "top" / "faces").mkdir(parents=True)
    for i, p in enumerate(sorted((tmp_path / "mine" / "faces").iterdir())[:16]):
        shutil.copy(p, tmp_path / "top" / ("faces" if i < 4 else "") / p.name)
    assert_clean_error(bench("--data-path=top", "--batch-size=8"),
                       "reads only the images in", "4 of them, fewer than one batch of 8")
    (tmp_path / "mine" / "faces" / "zz.jpg").write_text("not an image")
    assert_clean_error(bench("--data-path=mine", "--batch-size=8", "--warmup=0", "--measure=1"),
                       "1 image file in", "cannot be read (e.g. ", "zz.jpg)")
    (tmp_path / "mine" / "faces" / "zz.jpg").unlink()
    assert not (tmp_path / "new").exists()
    r = process("--data-path=mine", "--gpu=ture")
    assert r.returncode == 2 and "--gpu: takes true or false, not 'ture'" in r.stderr
    # --cache-sizes reads no data folder (there is none here), and makes its scratch folder
    r = bench("--cache-sizes=32", "--batch-size=16", "--measure=1", "--warmup=0",
              "--scratch=scratch", "--json=out/sizes.json", "--repeats=5")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "sizes.json").read_text())[0]["images"] == 32
    assert "| 32 | 0.9 MB |" in r.stdout  # it said 0.0 GB
    # flags the measurement does not read were passed over without a word
    assert "note: --repeats is not used with --cache-sizes" in r.stdout
    r = bench("--data-path=mine", "--batch-size=100", "--scratch=scratch")  # refused after it
    assert "note: --scratch is not used without --cache-sizes" in r.stdout


def test_bench_json_is_a_json_file_not_any_file(toy_dir, tmp_path, monkeypatch):
    """--json=checkpoints/netg_199.pth wrote the figures over the checkpoint after the whole
    benchmark (evaluate's --out takes a .json name alone)."""
    import contextlib
    import io
    import subprocess
    import bench as tool
    kept = tmp_path / "netg_199.pth"
    kept.write_bytes(b"PK\x03\x04 a checkpoint")
    # a batch larger than the set: the line without the check, before any benchmark runs
    monkeypatch.setattr(sys, "argv", ["bench.py", f"--data-path={toy_dir}", f"--json={kept}",
                                      "--batch-size=100"])
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), \
            pytest.raises(SystemExit) as stop:
        tool.command()
    r = subprocess.CompletedProcess([], stop.value.code, "", err.getvalue())
    assert_clean_error(r, "--json", "would hold JSON: name it with .json")
    assert kept.read_bytes() == b"PK\x03\x04 a checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netg_199.pth"]


@pytest.mark.parametrize("signum, to_group, status, word", [
    (signal.SIGINT, True, 130, "interrupted"),  # Ctrl-C in a terminal
    (signal.SIGTERM, False, 143, "terminated"),  # kill to bench.py alone
], ids=["ctrl-c", "sigterm-alone"])
def test_a_stopped_benchmark_ends_in_one_line_with_its_measuring(toy_dir, tmp_path, signum,
                                                                  to_group, status, word):
    """Ctrl-C in the middle of bench.py printed a KeyboardInterrupt traceback; a SIGTERM to
    bench.py alone left its measuring process running on, slowing whatever ran next."""
    import shutil
    import subprocess
    import sys
    import time
    from conftest import ROOT, children, group_ends, kill_group
    data = shutil.copytree(toy_dir, tmp_path / "toy")  # bench removes the folder's cache
    out = tmp_path / "bench.json"
    bench = subprocess.Popen([sys.executable, str(ROOT / "bench.py"), f"--data-path={data}",
                              "--batch-size=16", "--num-workers=0", "--measure=2000",
                              f"--json={out}"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert bench.stdout.readline().startswith("device ")
        deadline = time.monotonic() + 60
        while not children(bench.pid):  # its measuring process has started
            assert time.monotonic() < deadline and bench.poll() is None
            time.sleep(0.01)
        (os.killpg if to_group else os.kill)(bench.pid, signum)
        _, err = bench.communicate(timeout=60)
        assert group_ends(bench.pid), "its measuring process is still running"
    finally:
        kill_group(bench)
    assert bench.returncode == status, err
    assert err.strip().splitlines() == [f"{word}: nothing measured was written"], err
    assert not out.exists()


def test_the_benchmark_reports_both_pipelines_side_by_side_and_says_where_it_wrote(toy_dir,
                                                                                 tmp_path):
    """bench.py end to end, tiny: the article's pipeline and ours on the same images, their
    ratio, and the JSON it wrote named (it wrote it, into folders it made, without a word)."""
    import shutil
    import subprocess
    import sys
    from conftest import ROOT
    data = shutil.copytree(toy_dir, tmp_path / "toy")  # bench removes the folder's cache
    out = tmp_path / "new" / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench.py"), f"--data-path={data}",
                        "--batch-size=16", "--measure=1", "--warmup=0", "--repeats=1",
                        f"--json={out}"], cwd=tmp_path, text=True, capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    rows = {line.split("|")[1].strip(): line for line in r.stdout.splitlines()
            if line.startswith("| ")}
    assert {"article", "ours"} <= set(rows), r.stdout
    assert report["article"]["images_per_s"] > 0 and report["ours"]["images_per_s"] > 0
    ratio = report["ours"]["images_per_s"] / report["article"]["images_per_s"]
    assert report["speedup"] == pytest.approx(ratio)
    assert f"speed-up ours/article: {report['speedup']:.2f}x" in r.stdout
    assert r.stdout.rstrip().splitlines()[-1] == f"wrote {out}"
    # it says that it rebuilds the folder's cache (1.4 GB for 50,000 faces), the peak's unit,
    # and counts in English ("1 batches")
    assert f"the decoded cache of {data}, which train builds" in r.stdout
    assert "1 batch timed after 0, 1 alternating repeat" in r.stdout
    assert re.search(r"\| ours \| [^|]+ \| [^|]+ \| [0-9.]+% of [0-9]+ GFLOP/s \|", rows["ours"])


def test_a_refused_run_leaves_none_of_the_folders_it_made(tmp_path, toy_dir):
    """The folders a run refused before training made are removed, its lock files with them:
    with --checkpoint-dir inside --save-path (run/ck in run/), run/ stayed, holding the run's
    lock; with both inside a new folder (new/ck and new/imgs), new/ stayed, empty."""
    for ck, imgs in (("run/ck", "run"), ("new/ck", "new/imgs"), ("own", "own/imgs")):
        assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False",
                               "--batch-size=65", "--ngf=8", "--ndf=8",
                               f"--checkpoint-dir={tmp_path / ck}",
                               f"--save-path={tmp_path / imgs}"), "fewer than one batch")
        assert sorted(p.name for p in tmp_path.iterdir()) == [], (ck, imgs)


def test_a_folder_named_as_a_file_train_writes_is_refused_before_any_work(tmp_path, toy_dir):
    """A folder ck/last.pth/ (or imgs/0.png/) failed the first save, an epoch later, with a
    line naming a hidden temporary file, and netd_0.pth saved without its netg_0.pth."""
    for folder, name, flag in (("ck", "last.pth", "--checkpoint-dir"),
                               ("ck", "netg_0.pth", "--checkpoint-dir"),
                               ("imgs", "0.png", "--save-path")):
        run = tmp_path / name
        (run / folder / name).mkdir(parents=True)
        line = assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu",
                                      "--vis=False", "--batch-size=16", "--ngf=8", "--ndf=8",
                                      "--max-epoch=1", f"--checkpoint-dir={run / 'ck'}",
                                      f"--save-path={run / 'imgs'}"), flag)
        assert str(run / folder / name) in line and ".tmp" not in line
        written = sorted(str(p.relative_to(run)) for p in run.rglob("*")
                         if p.name != ".train.lock")  # the run's lock, taken first
        assert written == sorted([folder, f"{folder}/{name}"]), written
    # a folder named as a file this run does not write (no --ema here) is left alone
    run = tmp_path / "other"
    (run / "ck" / "netg_ema_0.pth").mkdir(parents=True)
    result = cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--batch-size=16",
                 "--ngf=8", "--ndf=8", "--max-epoch=1", f"--checkpoint-dir={run / 'ck'}",
                 f"--save-path={run / 'imgs'}")
    assert result.returncode == 0, result.stderr
    assert (run / "ck" / "netg_0.pth").is_file()
