"""Data-parallel training under torchrun: one process per device, gradients averaged.

    torchrun --standalone --nproc_per_node=2 main.py train --nogpu ...     # gloo, 2 CPU processes
    torchrun --standalone --nproc_per_node=8 main.py train --gpu ...       # NCCL, 8 GPUs

``python main.py train`` alone is a world of one: nothing here does anything then. Under
torchrun every process reads its rank from the environment, trains on its own shard of each
epoch with ``batch_size`` images per step, and DDP averages the gradients, so the combined
batch is ``batch_size * world size``. Only rank 0 writes files and talks to visdom.
"""
import contextlib
import os
import signal
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from config import resolve_device
from errors import UserError, stop_signals


def is_main_process():
    """Rank 0 under torchrun (read from its environment, so usable before ``setup``), or the
    only process without it: the one that prints and writes files."""
    return os.environ.get("RANK", "0") == "0"


# how long the other processes wait while rank 0 decodes the images once: NCCL's default of
# 10 minutes (gloo's 30) is too short for a large folder on a slow disk
DECODE_WAIT = timedelta(hours=12)


class World:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    def __init__(self, rank=0, size=1, local_rank=0, waiting=None):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.waiting = waiting  # a gloo group with a long timeout, for wait_for_main

    @property
    def main(self):
        return self.rank == 0

    def shard(self, perm):
        """This rank's share of an epoch's permutation; every rank gets the same count."""
        usable = len(perm) // self.size * self.size
        return perm[self.rank:usable:self.size]

    def mean(self, tensor):
        """The mean of ``tensor`` over all ranks (the tensor itself in a world of one)."""
        if self.size > 1:
            tensor = tensor.clone()
            dist.all_reduce(tensor)
            tensor /= self.size
        return tensor

    def any(self, flag, device):
        """True on every rank when ``flag`` is True on any rank."""
        if self.size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def agree(self, number, device):
        """Whether every rank has the same ``number`` (a world of one always does)."""
        if self.size == 1:
            return True
        t = torch.tensor([number, -number], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t[0].item() == -t[1].item()

    def union(self, items):
        """The union of every rank's set ``items`` (``items`` itself in a world of one)."""
        if self.size == 1:
            return items
        every = [None] * self.size
        dist.all_gather_object(every, sorted(items))
        return set().union(*every)

    def from_main(self, number):
        """Rank 0's whole ``number``, on every rank (``number`` itself in a world of one)."""
        if self.size == 1:
            return number
        t = torch.tensor([number], dtype=torch.int64)
        dist.broadcast(t, src=0, group=self.waiting)  # a CPU (gloo) group, NCCL or not
        return int(t.item())

    def barrier(self):
        if self.size > 1:
            dist.barrier()

    def wait_for_main(self, ok=True):
        """Rank 0: tell the others its slow work is over, and whether it succeeded (``ok``);
        the others: wait for that as long as it takes (up to DECODE_WAIT), and return it.
        Through a CPU group of its own: the training's group keeps its short timeout, so a
        real hang there is still reported."""
        if self.size == 1:
            return ok
        outcome = torch.tensor([1 if ok else 0])
        dist.broadcast(outcome, src=0, group=self.waiting)
        return bool(outcome.item())

    def close(self):
        """The end of a finished run: every rank leaves together. Rank 1 tore its groups down
        while rank 0 was still saving the last epoch, and once (a CI run under load) died
        there with "terminate called without an active exception" (SIGABRT). The barrier
        made that rarer, not impossible: the C++ teardown of the gloo threads as Python exits
        did it again once, so main.py ends each torchrun process with os._exit once its exit
        hooks have run."""
        if self.size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def setup(gpu, timeout=None):
    """(World, device) for this process: torchrun's environment, or a world of one.
    ``timeout``: that of the training's collectives (torch's default when None)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(gpu)
    if size == 1:
        return World(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started {size} processes on this node but there are "
                            f"{torch.cuda.device_count()} GPUs: lower --nproc_per_node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    with _stops_heard_while_joining(rank == 0):
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        waiting = dist.new_group(backend="gloo", timeout=DECODE_WAIT)
    return World(rank, size, local_rank, waiting), device


# what a process that a stop ends at once (see _stops_heard_while_joining) does first: only
# these, not the exit hooks, some of which may wait for the main thread, held in torch's C++
AT_ONCE = []


@contextlib.contextmanager
def _stops_heard_while_joining(main):
    """A stop while a process waits in torch's C++ for the others to join ends it at once:
    rank 0 (``main``) with the line a stop before training has (nothing is trained or saved
    yet), the others quietly (rank 0 says it). A Python handler runs only once the C++
    returns, which was when the last process joined: never, where the same Ctrl-C had ended
    that one, or where rank 0 had ended on an error of its own (another run holding the
    folder): torchrun killed the process left waiting after its 30 s, with no line. Python's
    C handler still notes each signal on a wakeup file, which a thread reads meanwhile.
    (The other ranks took stops with the default action there, but CPython drops a stop
    that comes just before such a switch: "ignored due to race condition".)"""
    import select
    import sys
    import threading
    stops = set(stop_signals())
    wake, noted = os.pipe()
    over, told = os.pipe()  # the join is over: the thread ends
    os.set_blocking(noted, False)
    kept = signal.set_wakeup_fd(noted, warn_on_full_buffer=False)
    acting = threading.Lock()  # taken by the thread that acts, or by the join's end

    def listen():
        while True:
            ready = select.select([wake, over], [], [])[0]
            if over in ready:
                return
            for number in os.read(wake, 64):
                if number in stops and acting.acquire(blocking=False):
                    what = "interrupted" if number == signal.SIGINT else "terminated"
                    if main:
                        print(f"\n{what} before training began: nothing was trained",
                              file=sys.stderr, flush=True)
                    for clean_up in AT_ONCE:  # the folders it made and left empty go
                        clean_up()
                    os._exit(130 if number == signal.SIGINT else 143)

    thread = threading.Thread(target=listen, name="stops while joining", daemon=True)
    thread.start()
    try:
        yield
    finally:
        acting.acquire()  # a stop the thread is acting on ends the process meanwhile
        signal.set_wakeup_fd(kept)
        os.write(told, b"x")
        thread.join()
        for fd in (wake, noted, over, told):
            os.close(fd)


class Logits(nn.Module):
    """NetD's logits as a module's forward, so DDP can wrap them (DDP only wraps forward)."""

    def __init__(self, netd):
        super().__init__()
        self.netd = netd

    def forward(self, x):
        return self.netd.logits(x)


def wrap_low(low, world, device):
    """``--d-low``'s judge for D's step: DDP-wrapped in a world of several (its two passes
    each run forward then backward, as D's do; it has no BatchNorm to synchronise)."""
    return low if world.size == 1 else _ddp(low, device)


def _ddp(module, device):
    """``module`` under DDP, on this process's GPU (or the CPU)."""
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda"
                                   else None)


def wrap(netg, netd, world, device, sync_bn=False):
    """(G for the G step, D's logits for the D step): DDP-wrapped in a world of several.

    D's two passes (real, then fake) each run forward then backward, so DDP's one-forward-
    per-backward rule holds and their gradients are averaged over the ranks separately and
    summed, exactly as in one process. In the G step D is only a frozen judge: it is called
    unwrapped, so DDP never waits for gradients D does not get.
    """
    if sync_bn and device.type != "cuda":  # in one process too: it says GPUs only
        raise UserError("--sync-bn needs GPUs (torch's SyncBatchNorm does not run on the CPU): "
                        "drop it for CPU processes")
    if world.size == 1:
        return netg, netd.logits
    if sync_bn:
        netg = nn.SyncBatchNorm.convert_sync_batchnorm(netg)
        netd = nn.SyncBatchNorm.convert_sync_batchnorm(netd)
    return _ddp(netg, device), _ddp(Logits(netd), device)
