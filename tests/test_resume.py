"""Never lose a night: exact resume, Ctrl-C, and the full state in last.pth."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train as train_module
from config import parse
from errors import UserError

from conftest import ROOT, assert_clean_error, draw_grid, run_cli


def _train(toy_dir, ckpt, **flags):
    base = dict(data_path=str(toy_dir), gpu=False, vis=False, batch_size=16, ngf=8, ndf=8,
                seed=0, save_path=str(ckpt / "imgs"), checkpoint_dir=str(ckpt))
    base.update(flags)
    train_module.train(parse("train", base))


def _same(a, b):
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("extra", [{}, {"cache": False, "num_workers": 2}, {"ema": 0.99}],
                         ids=["cache", "workers", "ema"])
def test_three_epochs_equal_one_then_resume(toy_dir, tmp_path, extra):
    _train(toy_dir, tmp_path / "straight", max_epoch=3, **extra)
    _train(toy_dir, tmp_path / "split", max_epoch=1, **extra)
    assert torch.load(tmp_path / "split" / "last.pth", weights_only=True)["epoch"] == 1
    _train(toy_dir, tmp_path / "split", max_epoch=3, resume=True, **extra)
    names = ["netg_2.pth", "netd_2.pth"] + (["netg_ema_2.pth"] if extra.get("ema") else [])
    for name in names:
        assert _same(tmp_path / "straight" / name, tmp_path / "split" / name), name


def test_resume_takes_the_saved_options_and_refuses_changes(toy_dir, tmp_path):
    _train(toy_dir, tmp_path, max_epoch=1, g_every=2)
    opt = parse("train", dict(resume=True, checkpoint_dir=str(tmp_path), max_epoch=2))
    assert (opt.g_every, opt.batch_size, opt.ngf, opt.data_path) == (2, 16, 8, str(toy_dir))
    with pytest.raises(UserError, match="--ngf=16 differs"):
        parse("train", dict(resume=True, checkpoint_dir=str(tmp_path), ngf=16))
    assert_clean_error(run_cli("train", "--resume", f"--checkpoint-dir={tmp_path / 'none'}"),
                       "last.pth")
    assert_clean_error(run_cli("train", f"--resume={tmp_path / 'netg_0.pth'}"),
                       "not a full training state")


def test_sigint_mid_epoch_saves_and_resume_continues_exactly(toy_dir, tmp_path):
    common = [f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--batch-size=4",
              "--ngf=32", "--ndf=32", "--seed=1", "--max-epoch=3"]
    straight = tmp_path / "straight"
    assert run_cli("train", *common, f"--checkpoint-dir={straight}",
                   f"--save-path={straight}").returncode == 0

    split = tmp_path / "split"
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "train", *common,
                             f"--checkpoint-dir={split}", f"--save-path={split}"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    seen = ""
    deadline = time.time() + 120
    while "epoch 2/3" not in seen and time.time() < deadline:
        seen += proc.stderr.read(1)
    proc.send_signal(signal.SIGINT)  # epoch 2 has just begun: its first step is under way
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert "--resume" in err.splitlines()[-1]
    state = torch.load(split / "last.pth", weights_only=True)
    assert state["epoch"] == 1 and 0 < state["batch"] < 16  # stopped inside epoch 2

    result = run_cli("train", "--resume", f"--checkpoint-dir={split}")
    assert result.returncode == 0, result.stderr
    assert _same(straight / "netg_2.pth", split / "netg_2.pth")
    assert _same(straight / "netd_2.pth", split / "netd_2.pth")


def test_last_state_holds_everything(toy_dir, tmp_path):
    _train(toy_dir, tmp_path, max_epoch=1)
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    for key in ("netg", "netd", "optimizer_g", "optimizer_d", "fixed_noise", "meters", "rng",
                "options", "format", "epoch", "batch", "step"):
        assert key in state
    assert state["step"] == 4 and state["options"]["seed"] == 0
    assert state["optimizer_d"]["state"][0]["step"].item() == 4


def test_every_new_option_resumes_exactly_and_saves_book_files(toy_dir, tmp_path):
    """--loss=hinge --sn --d-bn=False --diffaug=... --r1 --beta2: one epoch then resume to three gives
    the same weights, and netd_N.pth is a book-format file generate reads."""
    extra = dict(loss="hinge", sn=True, d_bn=False, diffaug="color,translation,cutout", r1=0.5,
                 beta1=0.0, beta2=0.9, ema=0.9)
    _train(toy_dir, tmp_path / "straight", max_epoch=3, **extra)
    _train(toy_dir, tmp_path / "split", max_epoch=1, **extra)
    _train(toy_dir, tmp_path / "split", max_epoch=3, resume=True)
    for name in ("netg_2.pth", "netd_2.pth", "netg_ema_2.pth"):
        assert _same(tmp_path / "straight" / name, tmp_path / "split" / name), name
    netd = torch.load(tmp_path / "split" / "netd_2.pth", weights_only=True)
    assert all(k.startswith("main.") and k.count(".") == 2 for k in netd)
    draw_grid(tmp_path / "split" / "last.pth", tmp_path / "split" / "last.pth",
              tmp_path / "result.png", 4, 8)


def test_resume_gives_the_optimisers_the_settings_of_the_device_it_runs_on(toy_dir, tmp_path):
    """A last.pth saved on a GPU (fused Adam) resumed on the CPU runs the CPU's Adam."""
    _train(toy_dir, tmp_path, max_epoch=1)
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    for key in ("optimizer_g", "optimizer_d"):
        for group in state[key]["param_groups"]:
            group["fused"] = True  # as train writes it on CUDA
    torch.save(state, tmp_path / "last.pth")
    _train(toy_dir, tmp_path, max_epoch=2, resume=True)
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert state["epoch"] == 2
    assert all(not group["fused"] for key in ("optimizer_g", "optimizer_d")
               for group in state[key]["param_groups"])
