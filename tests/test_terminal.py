"""When the terminal closes (an SSH connection lost, a window shut) or the reader of the output
goes away: training saves and stops on the hang-up, goes on where hang-ups are ignored (nohup,
a background job), and never dies at its next line."""
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest
import torch

from conftest import ROOT, cli, kill_group, train_args


def _in_a_terminal(args, ignore_hangup=False):
    """``main.py ARGS`` with a terminal of its own (a pseudo-terminal, 100 columns, as its
    controlling terminal, for all three streams), as a user starts it in a window. Returns the
    process and the terminal's other end: closing that hangs the terminal up."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))

    def take_terminal():  # in the child, a session leader by then (start_new_session)
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if ignore_hangup:  # as nohup and a shell's `trap '' HUP` leave it
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=take_terminal, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    os.close(slave)
    return proc, master


def _read_until(master, text, seconds=120):
    """What the terminal shows, read as it comes until ``text`` is among it."""
    seen, deadline = b"", time.monotonic() + seconds
    while text.encode() not in seen:
        assert time.monotonic() < deadline, seen[-2000:]
        if select.select([master], [], [], 1)[0]:
            seen += os.read(master, 4096)
    return seen.decode(errors="replace")


def _train(toy_dir, ckpt, epochs):
    return train_args(toy_dir, ckpt, "--batch-size=4", "--ngf=32", "--ndf=32",
                      f"--max-epoch={epochs}")


@pytest.mark.slow
def test_a_closed_terminal_saves_and_the_run_resumes(toy_dir, tmp_path):
    """By default a hang-up ended training at once, losing everything since the last save;
    now it saves as SIGTERM does, and --resume finishes the run."""
    proc, master = _in_a_terminal(_train(toy_dir, tmp_path, 500))  # far from its end
    try:
        _read_until(master, "epoch 2/500")
        os.close(master)  # the window shut
        status = proc.wait(timeout=120)
    finally:
        kill_group(proc)
    assert status == 143, f"train ended with status {status} on a hang-up (-1: killed by it)"
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert 1 <= state["epoch"] < 500 and state["step"] > 16  # saved past the first epoch
    end = state["epoch"] + 1
    result = cli("train", f"--resume={tmp_path / 'last.pth'}", f"--max-epoch={end}")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"netg_{end - 1}.pth").is_file()


@pytest.mark.slow
def test_training_that_ignores_hangups_outlives_its_terminal(toy_dir, tmp_path):
    """nohup, or a job left in the background: the terminal is gone but training goes on.
    Its lines then fail (EIO), and the first one of its own ended the run with a traceback."""
    proc, master = _in_a_terminal(_train(toy_dir, tmp_path, 3), ignore_hangup=True)
    try:
        _read_until(master, "epoch 2/3")
        os.close(master)
        status = proc.wait(timeout=180)
    finally:
        kill_group(proc)
    assert status == 0, f"train ended with status {status} once its terminal was gone"
    assert (tmp_path / "netg_2.pth").is_file() and (tmp_path / "2.png").is_file()
    assert torch.load(tmp_path / "last.pth", weights_only=True)["epoch"] == 3


def test_a_command_whose_reader_is_gone_finishes_its_work(tmp_path):
    """``python main.py ... | tee log`` with tee killed: the lines have nowhere to go (EPIPE),
    and the work still ends as it would have, status 0."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "toyfaces",
                           f"--out-dir={tmp_path / 'toy'}", "--num=12"],
                          stdout=write, stderr=write, timeout=300)
    os.close(write)
    assert proc.returncode == 0, f"status {proc.returncode} once the reader was gone"
    assert len(list((tmp_path / "toy" / "faces").glob("*.jpg"))) == 12
    assert (tmp_path / "toy" / "attributes.csv").is_file()
