"""experiments/settings.py: every setting it trains is a command line train accepts."""
import argparse
import sys
from pathlib import Path

import config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import settings  # noqa: E402


def test_every_setting_is_a_train_command_with_its_own_values(toy_dir):
    args = argparse.Namespace(width=32, batch_size=64, ema=0.995, amp=False)
    for name, (_, flags) in settings.SETTINGS.items():
        opt = config.parse("train", dict(data_path=str(toy_dir), **settings._options(name, args)))
        for key, value in flags.items():  # the setting's own values win over the script's
            assert getattr(opt, key) == value, (name, key)


def test_a_setting_stopped_by_a_ctrl_c_of_the_sweep_trains_again(toy_dir, tmp_path, monkeypatch):
    """A sweep stopped by Ctrl-C left the setting's last.pth unfinished, and train refuses a
    new run over it: the rerun of the sweep stopped at that setting."""
    import torch
    from conftest import run_cli, train_small
    run = tmp_path / "demo_seed0"
    train_small(toy_dir, run, max_epoch=1)
    state = torch.load(run / "last.pth", weights_only=True)
    state["options"]["max_epoch"] = 2  # stopped after its first epoch of two
    torch.save(state, run / "last.pth")
    calls = []
    monkeypatch.setattr(settings, "_cli", lambda *a, log: calls.append(a))
    monkeypatch.setattr(settings, "_epochs", lambda name, args: 2)
    args = argparse.Namespace(width=8, batch_size=16, ema=0.995, amp=False, gpu=False,
                              data=str(toy_dir), out=str(tmp_path), num=64)
    settings.train_and_evaluate("demo", 0, args)
    assert calls[0][0] == "train"
    result = run_cli(*calls[0])  # the sweep's train command, over the stopped run: it trains
    assert result.returncode == 0, result.stderr
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 2
