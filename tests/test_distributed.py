"""Data-parallel training: torchrun with 2 CPU processes (gloo), and DDP's arithmetic."""
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from conftest import ROOT, draw_grid, tiny_nets

TORCHRUN_TRAIN = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node=2", str(ROOT / "main.py"), "train"]


def _torchrun_env(**extra):
    """The environment of a torchrun test: its lines as they come, one thread a process."""
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)


def _torchrun_train(*flags, timeout=300, **extra):
    """``train`` with ``flags`` in two torchrun processes, ``extra`` in their environment:
    the finished run, its output kept."""
    return subprocess.run([*TORCHRUN_TRAIN, *flags], capture_output=True, text=True,
                          env=_torchrun_env(**extra), timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_torchrun_two_processes_write_one_set_of_book_checkpoints(toy_dir, tmp_path):
    data = tmp_path / "data"  # a folder with no decoded cache yet: rank 0 builds it alone
    shutil.copytree(toy_dir / "faces", data / "faces")
    result = _torchrun_train(f"--data-path={data}", "--nogpu", "--vis=False", "--max-epoch=2",
                             "--save-every=1", "--batch-size=8", "--ngf=8", "--ndf=8",
                             "--plot-every=2", "--seed=0", f"--save-path={tmp_path / 'I'}",
                             f"--checkpoint-dir={tmp_path / 'C'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(tmp_path.glob(".data.faces96-*.npy"))) == 1
    assert result.stdout.count("4 batches of 8 per epoch in each of 2 processes") == 1
    assert sorted(p.name for p in (tmp_path / "C").glob("net*.pth")) == [
        "netd_0.pth", "netd_1.pth", "netg_0.pth", "netg_1.pth"]
    with open(tmp_path / "I" / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]  # rank 0 alone writes the log
    state = torch.load(tmp_path / "C" / "netg_1.pth", weights_only=True)
    assert all(k.startswith("main.") for k in state)
    draw_grid(tmp_path / "C" / "netg_1.pth", tmp_path / "C" / "netd_1.pth",
              tmp_path / "result.png", 8, 16)


@pytest.mark.slow
def test_under_torchrun_a_time_budget_stops_every_process_at_the_same_step(toy_dir, tmp_path):
    """--max-minutes under torchrun: the processes agree at the plot_every read-backs that the
    time is up (one process alone would stop while the others wait in their next step's
    collectives), rank 0 saves the state and says so once, and the run ends with status 0."""
    result = _torchrun_train(f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--max-epoch=2",
                             "--batch-size=8", "--ngf=8", "--ndf=8", "--plot-every=2", "--seed=0",
                             "--max-minutes=0.0001", f"--save-path={tmp_path / 'I'}",
                             f"--checkpoint-dir={tmp_path / 'C'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("the time is up in epoch 1 of 2, after batch 2 of 4") == 1, \
        result.stdout
    state = torch.load(tmp_path / "C" / "last.pth", weights_only=True)
    assert (state["epoch"], state["batch"], state["step"]) == (0, 2, 2)


@pytest.mark.slow
def test_a_folder_rank_0_cannot_decode_is_its_one_error_line(tmp_path):
    """Rank 0 decodes the images while the others wait; a folder of broken files stopped it
    with its error line, and the others then failed in their wait with a gloo traceback."""
    faces = tmp_path / "data" / "faces"
    faces.mkdir(parents=True)
    for i in range(3):
        (faces / f"{i}.jpg").write_text("not an image")
    result = _torchrun_train(f"--data-path={tmp_path / 'data'}", "--nogpu", "--vis=False",
                             "--batch-size=1", "--ngf=8", "--ndf=8",
                             f"--save-path={tmp_path / 'I'}", f"--checkpoint-dir={tmp_path / 'C'}",
                             timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: none of the 3 image files in {tmp_path / 'data'} could be read: "
                      f"check that they are real images (e.g. 0.jpg)"]
    assert "[rank1]" not in result.stderr, result.stderr[-3000:]


@pytest.mark.slow
def test_a_mistake_under_torchrun_is_its_error_line_when_rank_0_is_the_slower(tmp_path):
    """A misspelt flag ends every process with 2 and rank 0 alone says it; torchrun
    terminated rank 0 as soon as a quicker process ended, and the only line was "terminated
    before training began" (about one run in three). Rank 0 is made the slower here (a
    sitecustomize that sleeps in it before anything else), so that race is lost every time."""
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import os, time\nif os.environ.get('RANK') == '0':\n    time.sleep(3)\n")
    result = _torchrun_train("--nogpu", "--bach-size=8", timeout=120, PYTHONPATH=str(slow))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: unknown option --bach-size; did you mean --batch-size?"], \
        result.stderr[-3000:]
    assert "terminated before training began" not in result.stderr, \
        result.stderr[-3000:]


@pytest.mark.slow
def test_a_write_only_rank_0_fails_is_its_error_line_alone(toy_dir, tmp_path):
    """Rank 0 alone writes the checkpoints, so a write that fails (a full disk, a file too
    large) ends it alone; the other process, in its next collective, then printed a gloo
    traceback of about 45 lines ("Connection closed by peer") under rank 0's error line.
    Here rank 0 may write no file over 64 kB (a sitecustomize sets its limit; no loader
    workers, whose shared memory is a file too)."""
    small = tmp_path / "small"
    small.mkdir()
    (small / "sitecustomize.py").write_text(
        "import os, resource, signal\nif os.environ.get('RANK') == '0':\n"
        "    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n")
    result = _torchrun_train(f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--cache=False",
                             "--num-workers=0", "--max-epoch=3", "--save-every=1", "--ngf=8",
                             "--ndf=8", "--batch-size=8", "--seed=0",
                             f"--save-path={tmp_path / 'I'}", f"--checkpoint-dir={tmp_path / 'C'}",
                             PYTHONPATH=str(small))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "File too large" in errors[0], result.stderr[-3000:]
    assert "[rank1]" not in result.stderr and "by peer" not in result.stderr, \
        result.stderr[-3000:]


@pytest.mark.slow
def test_a_folder_another_run_holds_is_refused_under_torchrun_without_a_hang(toy_dir,
                                                                              tmp_path):
    """Rank 0 alone takes the folder's lock, before the processes join up, and ended on the
    refusal; the other, waiting in torch's C++ for it to join, did not hear torchrun's
    SIGTERM, and the run ended only after torchrun's 30 s of grace, with that process
    killed (-9)."""
    import fcntl
    (tmp_path / "C").mkdir()
    with open(tmp_path / "C" / ".train.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run, training there
        result = _torchrun_train(f"--data-path={toy_dir}", "--nogpu", "--vis=False",
                                 "--batch-size=8", "--ngf=8", "--ndf=8",
                                 f"--save-path={tmp_path / 'I'}",
                                 f"--checkpoint-dir={tmp_path / 'C'}", timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another training run" in errors[0], result.stderr[-3000:]
    assert "forcefully exiting via 9" not in result.stderr, result.stderr[-3000:]


def _wrapped_in(tmp_path, module, attribute, wrap):
    """A folder for PYTHONPATH whose sitecustomize, in each torchrun process, replaces
    ``attribute`` of our ``module`` (``dist.init_process_group``: of the module's ``dist``)
    as the module loads, by ``wrap(the original)``; ``wrap`` is Python source defining it."""
    folder = tmp_path / "hook"
    folder.mkdir()
    owner, _, name = attribute.rpartition(".")
    (folder / "sitecustomize.py").write_text(f"""\
import importlib.abc
import importlib.machinery
import os
import sys
import time
from pathlib import Path

{wrap}

class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != {module!r}:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            owner = getattr(module, {owner!r}) if {owner!r} else module
            setattr(owner, {name!r}, wrap(getattr(owner, {name!r})))
        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, Hook())
""")
    return folder


DIES_IN_A_G_STEP = """\
def wrap(real):
    if os.environ.get("RANK") != "1":
        return real
    calls = []

    def g_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == int(os.environ["DIE_IN_G_STEP"]):
            os._exit(9)
        return real(*args, **kwargs)
    return g_step
"""


@pytest.mark.slow
@pytest.mark.parametrize("step", [1, 6])
def test_a_process_that_dies_while_training_is_rank_0s_one_line(toy_dir, tmp_path, step):
    """Another process killed mid-training (the out-of-memory killer's way) left rank 0 in
    a collective whose peer was gone: a gloo traceback ("Connection closed by peer") and
    no word of what to do. Here rank 1 ends in its 1st G step (nothing saved yet) or in
    its 6th, in the second epoch after the first epoch's save (a sitecustomize wraps its
    g_step)."""
    hook = _wrapped_in(tmp_path, "steps", "g_step", DIES_IN_A_G_STEP)
    # torchrun looks at its processes every 0.1 s and stops the others once one has ended: on
    # a loaded machine (CI, beside another test) its SIGTERM reached rank 0 before the lost
    # peer did, and rank 0 said "terminated" instead; 2 s leaves rank 0 the time to notice
    result = _torchrun_train(f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--max-epoch=3",
                             "--save-every=1", "--g-every=1", "--batch-size=8", "--ngf=8",
                             "--ndf=8", "--seed=0", f"--save-path={tmp_path / 'I'}",
                             f"--checkpoint-dir={tmp_path / 'C'}", PYTHONPATH=str(hook),
                             DIE_IN_G_STEP=str(step), PET_MONITOR_INTERVAL="2")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("error: another process of this torchrun run ended while it "
                                "trained"), errors[0]
    if step == 1:
        assert errors[0].endswith("nothing was saved yet: run the same command again"), \
            errors[0]
        assert not (tmp_path / "C" / "last.pth").exists()
    else:
        assert "continue from its last save with `" in errors[0]
        assert f"--resume={tmp_path / 'C' / 'last.pth'}`" in errors[0], errors[0]
    assert "by peer" not in result.stderr and "[rank0]" not in result.stderr, \
        result.stderr[-3000:]


RANK_1_JOINS_LATE = """\
def wrap(real):
    def init_process_group(*args, **kwargs):
        if os.environ["RANK"] == "0":
            Path(os.environ["JOINING"]).write_text(str(os.getpid()))
        else:
            time.sleep(60)  # rank 0 waits in torch's join meanwhile
        return real(*args, **kwargs)
    return init_process_group
"""


@pytest.mark.slow
def test_a_stop_while_rank_0_waits_for_the_others_to_join_is_heard_at_once(toy_dir,
                                                                           tmp_path):
    """A Ctrl-C or SIGTERM that reached rank 0 while it waited in torch's C++ for the other
    processes to join was heard only once they had joined (a process the same Ctrl-C had
    ended never did: torchrun killed rank 0 after its 30 s, with no line). Here rank 1
    joins 60 s late, and rank 0 gets a SIGTERM as it waits."""
    hook = _wrapped_in(tmp_path, "distributed", "dist.init_process_group", RANK_1_JOINS_LATE)
    joining = tmp_path / "joining"
    proc = subprocess.Popen(
        [*TORCHRUN_TRAIN, f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--batch-size=8",
         "--ngf=8", "--ndf=8", f"--save-path={tmp_path / 'I'}",
         f"--checkpoint-dir={tmp_path / 'C'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=_torchrun_env(PYTHONPATH=str(hook), JOINING=str(joining)))
    try:
        for _ in range(1200):
            if joining.is_file() and joining.read_text():
                break
            time.sleep(0.1)
        time.sleep(1)  # in torch's join by now
        os.kill(int(joining.read_text()), signal.SIGTERM)
        stopped = time.monotonic()
        _, err = proc.communicate(timeout=120)
        waited = time.monotonic() - stopped
    finally:
        proc.kill()
        proc.wait()
    assert waited < 30, (waited, err[-3000:])  # not when rank 1 joins, 60 s on
    assert "terminated before training began: nothing was trained" in err, err[-3000:]
    assert "Traceback" not in err.split("terminated before training began")[0], err[-3000:]
    assert not (tmp_path / "C").exists() and not (tmp_path / "I").exists()  # made, unused


def _two_processes_without_the_cache(toy_dir, tmp_path, good, broken, *flags):
    """torchrun's 2 processes training with --cache=False on ``good`` toy faces and files
    named ``broken`` that are no images; the completed process, after checking that every
    broken file is listed in skipped_files.txt."""
    faces = tmp_path / "data" / "faces"
    faces.mkdir(parents=True)
    for p in sorted((toy_dir / "faces").iterdir())[:good]:
        shutil.copy(p, faces / p.name)
    for name in broken:
        (faces / name).write_text("not an image")
    result = _torchrun_train(f"--data-path={tmp_path / 'data'}", "--nogpu", "--vis=False",
                             "--cache=False", "--num-workers=0", "--ngf=8", "--ndf=8",
                             f"--save-path={tmp_path / 'I'}", f"--checkpoint-dir={tmp_path / 'C'}",
                             *flags, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = (tmp_path / "C" / "skipped_files.txt").read_text().split()
    assert sorted(p.rsplit("/", 1)[-1] for p in listed) == broken
    return result


@pytest.mark.slow
def test_without_the_cache_a_batch_of_broken_files_in_one_process_does_not_hang(toy_dir,
                                                                                tmp_path):
    """A batch whose files were all broken was dropped in its process alone, and the other
    process waited in that step's collectives for ever (gloo's 30 minutes). Batches of one
    image, 4 good and 4 broken: with --seed=3 each epoch gives one process one broken file
    and the other three. Each process decodes its own shard of an epoch, and only rank 0's
    broken files were counted and listed in skipped_files.txt: all four are (the helper
    checks), said in one line."""
    result = _two_processes_without_the_cache(  # the broken ones after the faces: 4 to 7
        toy_dir, tmp_path, 4, [f"zbroken{i}.jpg" for i in range(4)], "--max-epoch=2",
        "--batch-size=1", "--seed=3")
    assert (tmp_path / "C" / "netg_1.pth").is_file()
    assert result.stdout.count("skipped 4 unreadable image files") == 1, result.stdout


def _real(rank):
    return torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(100 + rank)) * 2 - 1


def _joined(rank, size, store):
    """This process's World in a gloo group of ``size`` that meets in the file ``store``."""
    import distributed
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size,
                            init_method=f"file://{store}")
    return distributed.World(rank, size)


def _leave(net, path):
    """Save ``net``'s weights (without BatchNorm's running statistics) to ``path`` and end
    this process of the group."""
    torch.save({k: v for k, v in net.state_dict().items() if "running" not in k
                and "num_batches" not in k}, path)
    dist.destroy_process_group()
    os._exit(0)  # the work is saved; gloo's threads can abort the interpreter's own teardown


def _ddp_d_step(rank, size, store, out, with_low=False):
    """One D step in each of ``size`` processes, through the same wrap train uses; with
    ``with_low``, --d-low's judge too (its start and its state saved beside D's)."""
    import distributed
    from model import LowJudge
    from steps import Objective, d_step
    world = _joined(rank, size, store)
    netg, netd = tiny_nets()
    low = None
    if with_low:
        torch.manual_seed(0)
        low = LowJudge(8, 4)
        if rank == 0:
            torch.save(low.state_dict(), f"{out}.low.start")
    _, d_logits = distributed.wrap(netg, netd, world, torch.device("cpu"))
    optimizer = torch.optim.Adam([*netd.parameters(), *(low.parameters() if low else ())],
                                 lr=1e-3, betas=(0.5, 0.999))
    torch.manual_seed(200 + rank)  # this process's noise; each has its own real batch too
    d_step(netg, d_logits, optimizer, Objective(), _real(rank), 16,
           low=distributed.wrap_low(low, world, torch.device("cpu")) if low else None)
    if low:
        torch.save(low.state_dict(), f"{out}.low.{rank}")
    _leave(netd, f"{out}.{rank}")


def _ddp_g_step(rank, size, store, out):
    """One G step in each of ``size`` processes, through the same wrap train uses."""
    import distributed
    from steps import Objective, g_step
    world = _joined(rank, size, store)
    netg, netd = tiny_nets()
    g, _ = distributed.wrap(netg, netd, world, torch.device("cpu"))
    optimizer = torch.optim.Adam(netg.parameters(), lr=1e-3, betas=(0.5, 0.999))
    torch.manual_seed(300 + rank)  # this process's noise
    g_step(g, netd, optimizer, Objective(), 4, 16, torch.device("cpu"))
    _leave(netg, f"{out}.{rank}")


def _agree(rank, size, store, out):
    world = _joined(rank, size, store)
    cpu = torch.device("cpu")
    said = [world.agree(105, cpu), world.agree(64 if rank == 0 else 105, cpu),
            world.agree(2**40 + rank, cpu),
            # the losses and D's outputs the log and visdom show: the processes' mean
            world.mean(torch.tensor(1.0 + 2 * rank)).item(), world.any(rank == 1, cpu)]
    (out / f"agree.{rank}").write_text(repr(said))
    dist.destroy_process_group()
    os._exit(0)


def test_the_processes_tell_whether_they_found_the_same_number_of_images(tmp_path):
    """Each process lists the data folder itself; a folder that changed meanwhile gave them
    different image counts, and training hung for good at the first epoch's end. They also
    average what they report (summed, D(x) read above 1) and share a stop."""
    mp.spawn(_agree, args=(2, tmp_path / "store", tmp_path), nprocs=2)
    for rank in (0, 1):
        assert (tmp_path / f"agree.{rank}").read_text() == "[True, False, False, 2.0, True]"


@pytest.mark.slow
def test_the_low_judge_learns_the_same_in_every_process(tmp_path):
    """--d-low under torchrun: its gradients are averaged over the processes, so its copies
    stay one judge (unwrapped, each would learn from its own batches and drift apart)."""
    mp.spawn(_ddp_d_step, args=(2, tmp_path / "store", tmp_path / "d.pth", True), nprocs=2)
    start, rank0, rank1 = (torch.load(f"{tmp_path / 'd.pth'}.low.{k}", weights_only=True)
                           for k in ("start", 0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert not all(torch.equal(rank0[k], start[k]) for k in rank0)  # and it learned


@pytest.mark.slow
def test_ddp_d_step_averages_both_passes_of_every_process(tmp_path):
    """DDP's D step == one process averaging each rank's real-pass and fake-pass gradients.

    This, not "one process on the combined batch of 8", is what the maths promises: BatchNorm
    normalises each process's 4 images with their own statistics (SyncBatchNorm would pool
    them), so the combined-batch gradients differ. Each rank also keeps its two passes apart,
    as the article wants: real and fake never share a BatchNorm batch.
    """
    mp.spawn(_ddp_d_step, args=(2, tmp_path / "store", tmp_path / "d.pth"), nprocs=2)
    rank0 = torch.load(f"{tmp_path / 'd.pth'}.0", weights_only=True)
    rank1 = torch.load(f"{tmp_path / 'd.pth'}.1", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # the replicas agree

    criterion = nn.BCEWithLogitsLoss()
    grads, fakes = [], []
    for rank in (0, 1):
        netg, netd = tiny_nets()
        logits = netd.logits(_real(rank))
        criterion(logits, torch.ones_like(logits)).backward()
        torch.manual_seed(200 + rank)
        with torch.no_grad():
            fake = netg(torch.randn(4, 16, 1, 1))
        fakes.append(fake)
        logits = netd.logits(fake)
        criterion(logits, torch.zeros_like(logits)).backward()
        grads.append([p.grad.clone() for p in netd.parameters()])
    _, netd = tiny_nets()
    for p, g0, g1 in zip(netd.parameters(), *grads):
        p.grad = (g0 + g1) / 2
    torch.optim.Adam(netd.parameters(), lr=1e-3, betas=(0.5, 0.999)).step()
    single = {k: v for k, v in netd.state_dict().items() if k in rank0}
    for k in rank0:
        assert torch.allclose(rank0[k], single[k], atol=1e-6, rtol=1e-5), k

    # and it is not what one process makes of the same 8 + 8 images as single batches
    _, combined = tiny_nets()
    logits = combined.logits(torch.cat([_real(0), _real(1)]))
    criterion(logits, torch.ones_like(logits)).backward()
    logits = combined.logits(torch.cat(fakes))
    criterion(logits, torch.zeros_like(logits)).backward()
    assert not all(torch.allclose(p.grad, (g0 + g1) / 2, atol=1e-5)
                   for p, g0, g1 in zip(combined.parameters(), *grads))


@pytest.mark.slow
def test_ddp_g_step_averages_every_process_gradients(tmp_path):
    """DDP's G step == one process averaging each rank's gradients from its own noise, so
    G's copies stay one G (a G left unwrapped learnt from its own faces alone in each
    process, and the copies drifted apart: no other test noticed)."""
    from steps import Objective
    mp.spawn(_ddp_g_step, args=(2, tmp_path / "store", tmp_path / "g.pth"), nprocs=2)
    rank0 = torch.load(f"{tmp_path / 'g.pth'}.0", weights_only=True)
    rank1 = torch.load(f"{tmp_path / 'g.pth'}.1", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # the replicas agree
    grads = []
    for rank in (0, 1):
        netg, netd = tiny_nets()
        torch.manual_seed(300 + rank)
        Objective().g(netd.logits(netg(torch.randn(4, 16, 1, 1)))).backward()
        grads.append([p.grad.clone() for p in netg.parameters()])
    netg, _ = tiny_nets()
    for p, g0, g1 in zip(netg.parameters(), *grads):
        p.grad = (g0 + g1) / 2
    torch.optim.Adam(netg.parameters(), lr=1e-3, betas=(0.5, 0.999)).step()
    single = netg.state_dict()
    assert len(rank0) == len(list(netg.parameters()))  # every weight compared, no buffer
    for k in rank0:
        assert torch.allclose(rank0[k], single[k], atol=1e-6, rtol=1e-5), k
    # and each process's own gradient alone is not that
    assert not all(torch.allclose(g0, (g0 + g1) / 2, atol=1e-6) for g0, g1 in zip(*grads))


def _rank_0_of_two(monkeypatch):
    """train in this process as rank 0 of a world of two whose collectives are answered
    locally: the world, which counts the stop flag's checks (``checks``)."""
    import distributed

    class Pair(distributed.World):
        checks = 0

        def mean(self, tensor):
            return tensor

        def any(self, flag, device):
            self.checks += 1
            return flag

        def agree(self, number, device):
            return True

        def barrier(self):
            pass

        def wait_for_main(self):
            pass

    world = Pair(rank=0, size=2)
    monkeypatch.setattr(distributed, "setup", lambda gpu: (world, torch.device("cpu")))
    monkeypatch.setattr(distributed, "wrap", lambda netg, netd, *a: (netg, netd.logits))
    return world


def test_stop_flag_is_shared_only_at_the_plot_every_read_backs(toy_dir, tmp_path, monkeypatch):
    """Under torchrun, asking the other processes whether to stop is a synchronisation: at
    most once per plot_every batches, not every batch."""
    import train as train_module
    from config import parse
    world = _rank_0_of_two(monkeypatch)
    train_module.train(parse("train", dict(
        data_path=str(toy_dir), gpu=False, vis=False, batch_size=4, ngf=8, ndf=8, seed=0,
        max_epoch=2, plot_every=4, save_path=str(tmp_path), checkpoint_dir=str(tmp_path))))
    batches = 2 * (64 // 2 // 4)  # 2 epochs of this rank's half of 64 faces
    assert world.checks == batches // 4


def test_a_stop_under_torchrun_says_when_the_processes_stop_together(toy_dir, tmp_path,
                                                                      monkeypatch, capsys):
    """A SIGTERM in batch 2 is acted on at batch 4 (--plot-every=4), where the processes ask
    each other; the line said "saving after this step", two batches early."""
    import errors
    import train as train_module
    from config import parse
    _rank_0_of_two(monkeypatch)
    steps = []

    def d_step(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_d_step(*args, **kwargs)
    real_d_step = train_module.d_step
    monkeypatch.setattr(train_module, "d_step", d_step)
    with pytest.raises(errors.Interrupted, match="after batch 4 "):
        train_module.train(parse("train", dict(
            data_path=str(toy_dir), gpu=False, vis=False, batch_size=4, ngf=8, ndf=8, seed=0,
            max_epoch=2, plot_every=4, save_path=str(tmp_path), checkpoint_dir=str(tmp_path))))
    assert len(steps) == 4
    said = capsys.readouterr().err
    assert "SIGTERM: saving at the epoch's next batch that is a multiple of 4, where the " \
        "processes stop together" in said, said
    assert "after this step" not in said


def _slow_main(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")
    import distributed
    world, _ = distributed.setup(False, timeout=timedelta(seconds=3))
    if world.main:
        time.sleep(6)  # decoding a large folder: longer than the collectives' timeout
    world.wait_for_main()
    world.barrier()  # the training's own group still works afterwards
    (out / f"{rank}.waited").write_text("ok")
    world.close()
    os._exit(0)  # as above: nothing is left to do but gloo's teardown


def _seeds(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")
    import distributed
    import train
    world, _ = distributed.setup(False)
    seeds = [train.run_seed(None, world), train.run_seed(None, world), train.run_seed(5, world)]
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(seeds[0]))
    (out / f"{rank}.seeds").write_text(repr(seeds))
    (out / f"{rank}.share").write_text(repr(sorted(world.shard(perm).tolist())))
    world.close()
    os._exit(0)


def test_without_a_seed_every_process_takes_rank_0s_and_a_share_of_one_shuffle(tmp_path):
    """torchrun without --seed: each process drew a seed of its own, so each took its share
    of a different shuffle of the data (two processes on 300 images: 66 twice in an
    epoch, 66 never), and the seed said and saved was rank 0's alone."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_seeds, args=(port, tmp_path), nprocs=2)
    seeds = [eval((tmp_path / f"{rank}.seeds").read_text()) for rank in (0, 1)]
    assert seeds[0] == seeds[1] and seeds[0][0] != seeds[0][1] and seeds[0][2] == 5
    shares = [set(eval((tmp_path / f"{rank}.share").read_text())) for rank in (0, 1)]
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == 64


@pytest.mark.slow
def test_the_others_wait_while_rank_0_decodes_past_the_collectives_timeout(tmp_path):
    """Rank 0 decodes the whole folder before anyone trains. The wait must outlast the
    training group's timeout (NCCL's 10 minutes; 3 s here), which still holds elsewhere."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_slow_main, args=(port, tmp_path), nprocs=2)
    assert (tmp_path / "0.waited").is_file() and (tmp_path / "1.waited").is_file()


def test_every_process_gets_the_same_count_of_an_epochs_images():
    """Shares of unequal length (5 images in 2 processes: 3 and 2) make the processes run
    different numbers of batches, and the one with more waits in DDP's collectives until
    its timeout; the torchrun tests' sets divide evenly, so dropping the cut passed."""
    from distributed import World
    for count, size in ((5, 2), (7, 3), (6, 3), (2, 3)):
        perm = torch.randperm(count)
        shares = [World(rank, size).shard(perm) for rank in range(size)]
        assert {len(share) for share in shares} == {count // size}, (count, size)
        together = torch.cat(shares)
        assert len(set(together.tolist())) == len(together)  # none twice


def test_torchrun_with_more_processes_than_gpus_says_to_lower_nproc(monkeypatch):
    """Process 2 of 3 on a node with 2 GPUs asked for cuda:2, an "invalid device ordinal"
    traceback; only the GPU path reaches this, so no torchrun test on the CPU did."""
    import distributed
    from errors import UserError
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setattr(distributed, "resolve_device", lambda gpu: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match="3 processes on this node but there are 2 GPUs: "
                                        "lower --nproc_per_node"):
        distributed.setup(gpu=True)
