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
