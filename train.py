"""Training: the article's adversarial loop, read top to bottom.

    python main.py train --gpu                      # the book's command
    python main.py train --data-path=data-toy --nogpu --max-epoch=5

Each batch: (1) every ``d_every`` batches, D learns real -> 1 then fake -> 0 with two backward
passes (the article found this better than one mixed batch), the fakes made without a graph
so no gradient reaches G; (2) every ``g_every`` batches, G learns D(G(z)) -> 1 on fresh noise.
BCE is computed from D's logits (the same objective, numerically stable).
"""
import errno
import fcntl
import json
import math
import os
import random
import resource
import signal
import sys
import time
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import torch
from torchnet.meter import AverageValueMeter
from tqdm import tqdm

import checkpoint
import distributed
from augment import DiffAugment, parse as parse_augment
from config import (beside_flags, lies_elsewhere, saved_options, start_from_weights,
                    use_bf16)
from curves import LossLog, read_rows
from data import cached_batches, folder_batches
from ema import EMA
from errors import (DiskFull, Interrupted, UserError, again_interrupts, counted, listed, pasted,
                    program, python_and_main, quoted, refusal, running, shown, sized,
                    stop_signals, stop_under_way)
from model import (LowJudge, NetD, NetG, add_spectral_norm, batchnorm_is_identity,
                   book_state_dict, remove_batchnorm, weights_init)
from steps import R1_EVERY, Objective, d_step, g_step

GRID = 64  # faces in the fixed-noise sample grid, 8 per row


class Meters:
    """Running means (torchnet AverageValueMeter) of the losses and D's outputs.

    Step values stay on the device and are read in one go at ``flush``, so the loop does not
    wait for the GPU on every batch. Under torchrun they are averaged over the processes
    first, so every process sees the same means (and the same NaN, and stops with the rest).
    """

    NAMES = ("loss_d", "loss_g", "d_real", "d_fake")

    def __init__(self, world):
        self.world = world
        self.meters = {name: AverageValueMeter() for name in self.NAMES}
        self.pending = {name: [] for name in self.NAMES}

    def add(self, name, value):
        self.pending[name].append(value)

    def flush(self):
        """Move pending values into the meters; return the names that saw NaN or inf."""
        diverged = []
        for name, values in self.pending.items():
            if values:
                for v in self.world.mean(torch.stack(values).float()).cpu().tolist():
                    if not math.isfinite(v):
                        diverged.append(name)
                        break
                    self.meters[name].add(v)
            values.clear()
        return diverged

    def means(self):
        return {name: m.value()[0] for name, m in self.meters.items()}

    def reset(self):
        for m in self.meters.values():
            m.reset()


def fixed_samples(netg, fixed_noise):
    """G's faces for the fixed noise, in eval mode (no BatchNorm statistics change), on the CPU."""
    was_training = netg.training
    netg.eval()
    with torch.no_grad():
        faces = netg(fixed_noise).float().cpu()
    netg.train(was_training)
    return faces


def save_point(epoch, netg, netd, fixed_noise, opt, ema=None):
    """The book's outputs for ``epoch``: imgs/{epoch}.png, netg_{epoch}.pth, netd_{epoch}.pth.

    With ``--ema`` the averaged G draws the grid and is saved as netg_ema_{epoch}.pth too.
    """
    drawer = ema.sampler() if ema else netg
    checkpoint.save_grid(fixed_samples(drawer, fixed_noise), Path(opt.save_path) / f"{epoch}.png")
    checkpoint.save(book_state_dict(netd), Path(opt.checkpoint_dir) / f"netd_{epoch}.pth")
    checkpoint.save(netg.state_dict(), Path(opt.checkpoint_dir) / f"netg_{epoch}.pth")
    if ema:
        checkpoint.save(drawer.state_dict(), Path(opt.checkpoint_dir) / f"netg_ema_{epoch}.pth")


def _format(means):
    return {"loss_d": f"{means['loss_d']:.3f}", "loss_g": f"{means['loss_g']:.3f}",
            "D(x)": f"{means['d_real']:.2f}", "D(G(z))": f"{means['d_fake']:.2f}"}


training = None  # the Run training in this process, once begun (main's line for a stop: what
# is saved)


def train(opt):
    global training
    training = None  # (a run before it in this process, the tests' say, is over)
    with ExitStack() as locks:
        seen = set()
        # a folder before the folders inside it (--save-path=run --checkpoint-dir=run/ck), so
        # that it is made by its own lock and, unused, goes last
        for folder, flag in sorted(((opt.checkpoint_dir, "--checkpoint-dir"),
                                    (opt.save_path, "--save-path")),
                                   key=lambda pair: len(Path(pair[0]).resolve().parts)):
            if Path(folder).resolve() not in seen:
                seen.add(Path(folder).resolve())
                locks.enter_context(_only_run_in(folder, flag))
        try:
            return _train(opt)
        except DiskFull as e:  # the command that goes on from this run's last save, if any
            if training is None or not distributed.is_main_process():
                raise
            # a full disk of the loss log or the grids: the checkpoints' may have room
            kept = _save_what_it_can(training, DiskFull)
            # how much room to make (a first save's too: freed too little, it failed again)
            room = f"free some space (an epoch's save writes about {sized(training.save_size())})"
            if not training.saved:
                raise UserError(f"disk full while writing {e.path}: {room}, then run the "
                                f"command again (the files written before it are intact)") \
                    from None
            again = training.resume_command()
            raise UserError(f"disk full while writing {e.path}: {room}, then continue with "
                            f"{again}{kept} (the files written before it are intact)") from None
        except OSError as e:  # a folder that took files before and takes none now (its disk
            # gone read-only, --save-path's on another): as a full disk, the steps since the
            # last save are kept where they can be, and the line says how to go on (it said
            # neither, and a grid refused first lost the epoch whose state was to follow)
            line = refusal(e)
            if line is None or training is None or not distributed.is_main_process():
                raise
            kept = _save_what_it_can(training, (OSError, UserError))  # (that folder refused too)
            if not training.saved:
                raise
            raise UserError(f"{line}, then continue with {training.resume_command()}{kept}") \
                from None


def _save_what_it_can(training, refused):
    """Save ``training``'s state where a write failed, if a step has trained since it began:
    the steps since the last save point are kept. The words to add to the error line, or ""
    where there was nothing to save or the save met ``refused`` too."""
    try:
        if training.step:
            training.save()
            return f" (its state at step {training.step} is saved there)"
    except refused:
        pass
    return ""


# the temporary files of a run's atomic saves (checkpoint.py), in its folders (OWNER's too):
# of its own files alone. Any .png's took the face that a generate --out-dir=imgs/run was
# writing there as the run started, and generate ended in a traceback
STALE = (".net[gd]_*.pth.*.tmp", ".last.pth.*.tmp", ".[0-9]*.png.*.tmp", ".losses.png.*.tmp",
         ".losses.csv.*.tmp", ".options.json.*.tmp", ".skipped_files.txt.*.tmp",
         "..checkpoint-dir.*.tmp")
NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}  # NFS, Lustre, ...


_HELD_LOCKS = set()  # the descriptors of the folder locks this process holds


def _locks_stay_with_the_parent():
    """In a forked child (a decoding worker, a DataLoader's): the folder locks' descriptors
    point at /dev/null. A flock belongs to the open file, which the fork shared: a worker that
    outlived a killed run (kill -9 during the cache build) held its folders, and every new
    run and --resume there was refused, naming the dead process."""
    if not _HELD_LOCKS:
        return
    try:
        null = os.open(os.devnull, os.O_RDONLY)
    except OSError:  # no descriptor left (ulimit -n): an "Exception ignored" traceback
        null = None  # stood above the run's error line, and the worker kept the locks
    for fd in _HELD_LOCKS:
        if null is None:
            os.close(fd)  # (a worker ends with os._exit: its copy of the file object stays)
        else:
            os.dup2(null, fd)  # (the number stays open: the file object's close is harmless)
    if null is not None:
        os.close(null)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_locks_stay_with_the_parent)


@contextmanager
def _only_run_in(folder, flag):
    """Hold a lock on ``folder`` while training: a second run there would interleave its
    checkpoints, options.json, loss log, grids and last.pth with this one's. The system drops
    the lock when the process ends, however it ends. Under torchrun rank 0 holds it. A folder
    this run made stays only if the run wrote something there (not after "nothing to do")."""
    if not distributed.is_main_process():
        yield
        return
    folder = Path(folder)
    # not where it holds only a lock: the user's own folder, where a killed run had left its
    # lock, went with a run that then failed (no images), as a folder that run had made
    made = not folder.exists()
    top = folder  # the outermost folder the mkdir makes (run/ of run/ck), gone with it unused
    while not top.parent.exists():
        top = top.parent
    path = folder / ".train.lock"
    lock, unlocked = _locked(folder, path, flag)  # (refused: the folder is the other run's)
    if unlocked:
        say(f"note: {folder} cannot be locked ({unlocked}); nothing stops a second run "
            f"from writing there at the same time")
    gone = partial(_untouched_gone, folder, path, top)
    if made:  # also where a stop ends the process at once (rank 0 in torch's join)
        distributed.AT_ONCE.append(gone)
    try:
        _HELD_LOCKS.add(lock.fileno())
        if lock.writable():  # who holds it, for the message above (unbuffered: a full disk
            os.ftruncate(lock.fileno(), 0)  # refuses it here, not again as the file closes)
            try:
                os.write(lock.fileno(), f"process {os.getpid()}".encode())
            except OSError as e:  # the run's first file says the disk is full, naming it
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
        for pattern in STALE:  # a save cut short by kill -9: no writer of them now
            for stale in folder.glob(pattern):
                stale.unlink(missing_ok=True)
        yield
    finally:
        try:
            if made:  # with the lock held: a run that opened its file meanwhile and takes
                # the lock once it goes finds the file gone (_locked), and takes it again
                distributed.AT_ONCE.remove(gone)
                gone()
        finally:
            _HELD_LOCKS.discard(lock.fileno())
            lock.close()  # and with it the lock


def _locked(folder, path, flag):
    """``path``, the lock file of ``folder`` (made where it is not there), opened and locked,
    with None; or with the reason where its file system cannot lock (NFS without its lock
    service). A run that ends in a folder it made removes both (_untouched_gone): a run that
    had opened the file just before took the lock of a file gone, a third run the lock of
    the folder made again, and the two trained there together. So the lock counts only on
    the file that ``path`` names once it is taken; else it is taken again. The run holding
    it writes its pid there as it has taken it: until then the file holds nothing, or the pid
    of the run before it, ended (a message named "another process", or a dead one)."""
    patience = None  # set once it is found held
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            lock = open(path, "a+")
        except PermissionError:  # a colleague's lock file in a shared folder: flock reads too
            lock = open(path)
        except FileNotFoundError:  # the folder removed as this run opened it: made again
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip()
            lock.close()
            patience, live = patience or time.monotonic() + 5, _named_live(holder)
            if not live and time.monotonic() < patience:
                time.sleep(0.05)  # it has just taken the lock: its pid comes next
                continue
            raise UserError(f"another training run ({holder if live else 'another process'}) "
                            f"is using {folder}: wait for it, or pass another {flag}") from None
        except OSError as e:
            if e.errno not in NO_LOCKS:
                lock.close()
                raise
            return lock, e.strerror
        try:
            if os.path.samestat(os.fstat(lock.fileno()), os.stat(path)):
                return lock, None
        except FileNotFoundError:
            pass
        lock.close()  # removed with its folder as this run took it: taken again


def _named_live(holder):
    """Whether a lock file's text ("process 123") names a process alive now."""
    pid = holder.removeprefix("process ")
    return pid.isdigit() and running(int(pid))


def _holds_only(folder, name):
    """Whether ``folder`` holds the file ``name`` and nothing else."""
    try:
        return [p.name for p in folder.iterdir()] == [name]
    except OSError:
        return False


def _untouched_gone(folder, lock, top):
    """A folder the run made and wrote nothing in but its ``lock`` file: removed, no trace,
    and the empty folders above it that the run made, up to ``top``. Where another run's
    files came meanwhile (its lock file, waiting for this run's), they stay with the folder."""
    try:
        if _holds_only(folder, lock.name):
            lock.unlink(missing_ok=True)
            folder.rmdir()
            while folder != top and not any(folder.parent.iterdir()):
                folder = folder.parent
                folder.rmdir()
    except OSError:
        pass


def _keep_unfinished_run(opt):
    """A new run would write its first save over the ``last.pth`` of a run that Ctrl-C, a
    scheduler or a divergence stopped: the same command again (the up arrow) instead of
    --resume would lose all of it. Refused, saying how to go on or start afresh, unless
    --fresh asks for a new run there. Returns what --fresh is to delete once the new run has
    trained its first batch (a new run refused, for a data folder without images, say, took
    the stopped run with it), or None, and the note to print then, or None."""
    path = Path(opt.checkpoint_dir) / "last.pth"
    if not path.is_file():
        return None, None
    found = _progress(path)
    if found is None:
        why = "not a training state this version can resume (damaged, from another " \
              "version, or holding NaN values)"
        if opt.fresh:
            return path, f"note: --fresh: deleted {path}, which was {why}"
        replaced = _checkpoint_files(opt)[0]
        # its run's weights, the only work of it left, which this run's saves would replace
        # without a word (whether that run had finished, the state cannot say)
        if replaced:
            keep = start_from_weights(path.parent) or "move them away first"
            raise UserError(f"{path} is {why}, and this run would write over the checkpoints "
                            f"beside it (e.g. {replaced[-1]}): {keep}, or replace them with "
                            f"--fresh")
        return None, f"note: {path} is {why}: this run writes its own over it"
    done, total, state = found
    if done < total and opt.fresh:
        return path, f"note: --fresh: deleted {path}, a run stopped {_stopped_at(state, total)}"
    if done < total:
        saved = saved_options(state)
        beside = " " + " ".join(beside_flags(path, saved)) if lies_elsewhere(path, saved) \
            else ""  # a copied run: refused without them
        again = _resume_command(f"--resume={quoted(path)}{beside}", state.get("processes", 1))
        grids = saved["save_path"]  # the stopped run's loss log and grids: kept apart too,
        # unless this run's --save-path already is another folder
        apart = ("another --checkpoint-dir" if Path(opt.save_path).resolve() !=
                 Path(grids).resolve() else f"another --checkpoint-dir and --save-path (its "
                 f"loss log and grids are in {grids})")
        raise UserError(f"{path} holds a run stopped {_stopped_at(state, total)}: continue "
                        f"it with {again}, or start a new run with {apart}, or over it with "
                        f"--fresh")
    # the book's way: a new run there writes over it; said, so that it is a choice. With
    # --fresh (make demo run again) it is made: the advice to keep or resume it was none a
    # make user could follow
    if opt.fresh:
        return None, _over_a_finished_run(path.parent, total, fresh=True)
    return None, (_over_a_finished_run(path.parent, total) + " (another --checkpoint-dir "
                  "keeps both; raise --max-epoch with --resume to train it on)")


def run_seed(given, world):
    """The run's seed: ``given``, or one drawn by rank 0 for every process. Each drawing its
    own (torchrun without --seed) gave each its share of a different shuffle of the data,
    so an epoch trained some images twice and others never, and the seed printed and saved
    was rank 0's alone. (Each process's noise differs all the same: see the loop.)"""
    if given is not None:
        return given
    return world.from_main(random.SystemRandom().randrange(2**31))


def _resume_command(flags, processes):
    """The command that continues a run saved by ``processes`` processes, with ``flags``; a
    torchrun run in as many processes (in another count its stopped epoch starts again).
    Named as it runs from the folder the run was started in: the Python (and torchrun) of
    this run, and main.py from there (a bare `python` was another Python than the venv's,
    without the project's packages, where the venv was not activated). Started by `make
    demo`, the make command that resumes it (ANIMEGAN_CONTINUE, set by the Makefile): that
    draws result.png again at the end, where this command alone left it as it was."""
    if processes == 1:
        made = os.environ.get("ANIMEGAN_CONTINUE", "").strip()
        return f"`{made}`" if made else pasted(f"train {flags}")
    python, main = python_and_main()
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = program(torchrun, "torchrun") if torchrun.is_file() else \
        f"{python} -m torch.distributed.run"
    return (f"`{launcher} --standalone --nproc_per_node={processes} {main} train {flags}` (as "
            f"many processes as it had)")


def _over_a_finished_run(folder, epochs, fresh=False):
    """The note of a run that saves into ``folder``, where a finished run of ``epochs`` is
    (``fresh``: the run was told to start over it)."""
    if fresh:
        return (f"note: --fresh: {folder} holds a finished run of {counted(epochs, 'epoch')}: "
                f"this run replaces it, deleting that run's checkpoints and grids once it has "
                f"trained its first batch")
    return (f"note: {folder} holds a finished run of {counted(epochs, 'epoch')}: this run "
            f"writes its own last.pth and checkpoints over that run's as it saves")


def _stopped_at(state, epochs):
    """Where the training state ``state`` of a run of ``epochs`` stopped: "in epoch N of T",
    or "after epoch N of T" at an epoch's end, as the time-up line says it (where it said
    "the time is up with the end of epoch 1", the next refusal said "stopped in epoch 2")."""
    if state["epoch"] and not state.get("batch"):
        return f"after epoch {state['epoch']} of {epochs}"
    return f"in epoch {state['epoch'] + 1} of {epochs}"


def _progress(path):
    """(epochs done, epochs planned, the state) of the training state at ``path``; None where
    there is none this version can resume (no file, damaged, another version's, NaN)."""
    try:
        state = checkpoint.load_state(path)
        return state["epoch"], state["options"]["max_epoch"], state
    except (UserError, KeyError, TypeError):
        return None


def _keep_other_runs(opt, state, saved):
    """--resume with --checkpoint-dir and --save-path of another run's (a typo, a copied
    command): the resumed run wrote its saves over that run's last.pth and went on in its
    losses.csv, without a word. Refused where the folder holds another run's stopped state,
    or another run's loss log (its rows up to the resumed step differ from the resumed run's
    own, where that is still there to compare: a copied run's log is its own). A rollback (an
    older copy resumed into the run's own folders) is refused likewise where a new run has
    since started there (another seed), whose log it would have gone on in, and so is a run
    whose save path a new run in another folder has since taken over (the default imgs/ of
    both: the new run's OWNER there, its seed another). A finished run's last.pth is written
    over as by a new run there, and said (the notes returned).
    ``saved``: the state's options."""
    last = Path(opt.checkpoint_dir) / "last.pth"
    notes = []
    other = _progress(last) if last.resolve() != Path(opt.resume).resolve() else None
    done, total, there = other or (None, None, None)
    rollback = last.resolve() == (Path(saved["checkpoint_dir"]) / "last.pth").resolve()
    # the same seed: a later state of this very run, or a copy of one (resumed, a run keeps
    # its seed); another seed: another run
    same_run = other is not None and there["options"].get("seed") == saved["seed"]
    if rollback and same_run:
        other = None
    if other:  # (a rollback too, where a new run has since started in the run's folders)
        if done < total:
            raise UserError(f"{last} holds another run, stopped {_stopped_at(there, total)}: "
                            f"resumed in {opt.checkpoint_dir}, {opt.resume} would write over "
                            f"it; pass another --checkpoint-dir (and --save-path)")
        notes.append(_over_a_finished_run(opt.checkpoint_dir, total))
    log, before = Path(opt.save_path) / "losses.csv", Path(saved["save_path"]) / "losses.csv"
    if other and not same_run and log.is_file() and \
            Path(saved_options(there)["save_path"]).resolve() == log.parent.resolve():
        # that run began its own log there: the rows up to the resumed step are its, and a
        # rollback's rows would follow them (the log of two runs in one)
        raise UserError(f"{log} is the loss log of another run, the one now in "
                        f"{opt.checkpoint_dir} (seed {there['options'].get('seed')}; "
                        f"{opt.resume} is of seed {saved['seed']}): resumed there, it would go "
                        f"on in that run's log and write its grids over that run's; pass "
                        f"another --checkpoint-dir and --save-path")
    if log.is_file() and before.is_file() and log.resolve() != before.resolve():
        try:
            same = read_rows(log, up_to=state["step"]) == read_rows(before, up_to=state["step"])
        except (OSError, ValueError, KeyError, TypeError):  # a damaged log: whose, unknown
            same = True
        if not same:
            raise UserError(f"{log} is another run's loss log ({opt.resume} keeps its own in "
                            f"{before}): resumed there, it would go on in that log and write "
                            f"its grids over that run's; pass another --save-path")
    other = _other_run_logging_in(opt) if log.is_file() else None
    if other is not None and other[3]["options"].get("seed") != saved["seed"]:
        # a new run in another folder has since started its own log in this save path (the
        # default imgs/ shared, the resumed run finished then): its rows, not the resumed
        # run's, are there now, and the resumed run would go on in them
        owner, seed = other[0], other[3]["options"].get("seed")
        raise UserError(f"{log} is now the loss log of another run, the one in {owner} "
                        f"(seed {seed}; {opt.resume} is of seed {saved['seed']}), which "
                        f"started its own log there since: resumed there, it would go on in "
                        f"that run's log and write its grids over that run's; pass another "
                        f"--save-path")
    return notes


OWNER = ".checkpoint-dir"  # in --save-path: the checkpoint folder of the run that logs there


def _owner(save_path):
    """The checkpoint folder of the run that logs in ``save_path``, as its OWNER names it, or
    None where no run says it is its own (or one of an older version logged there)."""
    try:
        # the folder's bytes as written, named as this locale names them (a run begun in a
        # UTF-8 terminal and resumed under LC_ALL=C: a UnicodeEncodeError traceback)
        return Path(os.fsdecode((Path(save_path) / OWNER).read_bytes().strip()))
    except (OSError, ValueError):
        return None


def _other_run_logging_in(opt):
    """The run that logs in --save-path, where it is not the run in --checkpoint-dir: (its
    checkpoint folder as the save path's OWNER names it, then ``_progress``'s epochs done,
    epochs planned and state), where its last.pth loads and it logs there still; else None.
    """
    owner = _owner(opt.save_path)
    if owner is None:
        return None
    if owner.resolve() == Path(opt.checkpoint_dir).resolve():
        return None  # the run in --checkpoint-dir: _keep_unfinished_run speaks for it
    found = _progress(owner / "last.pth")
    if found is None:  # gone, or nothing this version resumes
        return None
    if Path(saved_options(found[2])["save_path"]).resolve() != Path(opt.save_path).resolve():
        return None  # it has gone on logging elsewhere
    return (owner, *found)


def _another_runs_log(opt):
    """A new run starts its own losses.csv in --save-path and writes its grids there. Where
    that folder holds the log of a run whose checkpoints are in another folder (a new
    --checkpoint-dir with the default imgs/), that run's log and grids were wiped, and, were
    it stopped, its resume went on in the new run's log. Refused where that run is stopped
    (unless --fresh); said where it is finished (the note returned)."""
    if opt.fresh or not (Path(opt.save_path) / "losses.csv").is_file():
        return None
    other = _other_run_logging_in(opt)
    if other is None:
        return None
    owner, done, total, state = other
    if done < total:
        raise UserError(f"{opt.save_path} holds the loss log and grids of the run stopped in "
                        f"{owner} ({_stopped_at(state, total)}): a new run there would start "
                        f"its own log over that run's and write its grids over them; pass "
                        f"another --save-path, or --fresh to start over it")
    return (f"note: {opt.save_path} holds the loss log and grids of the finished run in "
            f"{owner}: this run starts its own losses.csv there and writes its grids over "
            f"that run's as it saves (another --save-path keeps both)")


def _saves_after(epoch, opt):
    """Whether the run saves its checkpoints after ``epoch`` (0-based): every save_every
    epochs, and after the last."""
    return (epoch + 1) % opt.save_every == 0 or epoch + 1 == opt.max_epoch


def _saves(name, opt):
    """Whether this run saves a file ``name`` (netg_4.pth, netg_ema_4.pth, 4.png): asked of
    each file found, not listed for every epoch (--max-epoch may be huge)."""
    stem, _, suffix = name.rpartition(".")
    kind, _, epoch = stem.rpartition("_")
    if not (epoch.isascii() and epoch.isdigit()):
        return False
    kinds = {"pth": ("netg", "netd") + (("netg_ema",) if opt.ema else ()), "png": ("",)}
    return kind in kinds.get(suffix, ()) and int(epoch) < opt.max_epoch and \
        _saves_after(int(epoch), opt)


def _checkpoint_files(opt):
    """The netg_N.pth, netd_N.pth, ... in --checkpoint-dir: (those this run writes over as it
    saves, those it leaves), each in the order of their epochs."""
    epochs = {p.name: p.stem.rpartition("_")[2]
              for p in Path(opt.checkpoint_dir).glob("net*_*.pth")}
    found = sorted((name for name, epoch in epochs.items() if epoch.isascii() and epoch.isdigit()),
                   key=lambda name: (int(epochs[name]), name))  # by epoch
    return ([name for name in found if _saves(name, opt)],
            [name for name in found if not _saves(name, opt)])


def _earlier_files(opt):
    """A new run in a folder of an earlier one replaces the files it saves under the same
    names and leaves the others (an earlier run's averages, later epochs): those are named
    once, as a netg_ema_4.pth of one run beside a netd_4.pth of another would pass for a
    pair. Files it replaces are named too where no last.pth tells of their run (the book's
    files, copied in): _keep_unfinished_run speaks for a run that has one. Returns the
    notes, to print once every check of the run has passed."""
    folder = Path(opt.checkpoint_dir)
    replaced, earlier = _checkpoint_files(opt)
    notes = []
    if replaced and not (folder / "last.pth").is_file():
        notes.append(f"note: {folder} holds {counted(len(replaced), 'checkpoint file')} of an "
                     f"earlier run that this run writes over when it saves the same epochs "
                     f"(e.g. {replaced[-1]}): to keep them, move them away first or pass "
                     f"another --checkpoint-dir")
    if earlier:
        notes.append(f"note: {folder} holds {counted(len(earlier), 'checkpoint file')} of an "
                     f"earlier run that this run will not replace (e.g. {earlier[-1]}); they "
                     f"stay beside its own (another --checkpoint-dir keeps runs apart)")
    return notes


def _fresh_leftovers(opt):
    """--fresh over the run in --checkpoint-dir (its last.pth there, finished, stopped or
    damaged): that run's numbered files, to delete once the new run has trained its first
    batch: its netg_N.pth, netd_N.pth and netg_ema_N.pth, and its N.png grids where
    --save-path is the folder it logged in. Left there, those of epochs the new run did not
    reach (make demo run again, stopped earlier by its 10 minutes) stood beside the new run's,
    and explore took the old run's netg_ema_4.pth for the newest G of the folder."""
    folder = Path(opt.checkpoint_dir)
    if not (opt.fresh and (folder / "last.pth").is_file()):
        return []
    replaced, earlier = _checkpoint_files(opt)
    files = [folder / name for name in replaced + earlier]
    owner = _owner(opt.save_path)
    if owner is not None and owner.resolve() == folder.resolve():
        numbered = (p for p in Path(opt.save_path).glob("*.png")
                    if p.stem.isascii() and p.stem.isdigit())
        files += sorted(numbered, key=lambda p: int(p.stem))
    return files


def _refuse_folders_in_the_way(opt):
    """A folder named as a file train writes (cz/last.pth/, imgs/0.png/) failed the first save,
    an epoch later, naming a temporary file; refused before any work instead."""
    writes = ((opt.checkpoint_dir, "--checkpoint-dir",
               ("last.pth", "options.json", "skipped_files.txt")),
              (opt.save_path, "--save-path", ("losses.csv", "losses.png")))
    for folder, flag, always in writes:
        if not Path(folder).is_dir():
            continue
        for path in sorted(Path(folder).iterdir()):
            grid = flag == "--save-path" and path.suffix == ".png"
            if path.is_dir() and (path.name in always or
                                  _saves(path.name, opt) and (grid or path.suffix == ".pth")):
                raise UserError(f"{path} is a folder, and train writes a file of that name "
                                f"there: move it away, or pass another {flag}")


def _train(opt):
    # device (and torchrun's world) -> seed (rank 0's, for every process) -> models (their
    # files checked first) -> data -> optimisers -> resume -> loop -> save
    state = checkpoint.load_state(opt.resume) if opt.resume else None
    if state and state["epoch"] >= opt.max_epoch:
        # under `make demo RESUME=1` no flag can be raised: the demo has simply finished
        made = os.environ.get("ANIMEGAN_CONTINUE", "").strip()
        advice = ("the run is finished (the same make command without RESUME=1 trains a new "
                  "one)" if made else "raise --max-epoch to go on")
        say(f"{opt.resume} has already trained {counted(state['epoch'], 'epoch')}: nothing to "
            f"do; {advice}")
        return None, None
    _refuse_folders_in_the_way(opt)
    notes = []  # the notes said once every check has passed
    stopped = deleted = None  # --fresh's stopped run, and the note said as it goes
    leftovers = []  # --fresh: the replaced run's numbered files, deleted with it
    saved = saved_options(state) if state else None  # the resumed run's own options
    if not state:
        leftovers = _fresh_leftovers(opt)
        stopped, note = _keep_unfinished_run(opt)
        if stopped:
            deleted, note = note, None
        notes = [n for n in (note, _another_runs_log(opt)) if n] + \
            ([] if leftovers else _earlier_files(opt))  # (not "they stay": they go)
    else:
        notes = _keep_other_runs(opt, state, saved)
    world, device = distributed.setup(opt.gpu)
    seed = opt.seed = run_seed(opt.seed, world)
    random.seed(seed)
    torch.manual_seed(seed)
    bf16 = use_bf16(opt.amp, device)
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=bf16)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    netg, netd = NetG(opt.nz, opt.ngf, opt.sle, opt.sle_gates), NetD(opt.ndf)
    netg.apply(weights_init)
    netd.apply(weights_init)
    if opt.netg_path and not state:
        netg = checkpoint.load_net(opt.netg_path, "netg",
                                   expect={"nz": opt.nz, "ngf": opt.ngf, "sle": opt.sle,
                                           "sle_gates": opt.sle_gates})[0]
    if opt.netd_path and not state:
        netd = checkpoint.load_net(opt.netd_path, "netd", expect={"ndf": opt.ndf})[0]
        without = batchnorm_is_identity(netd)  # trained with --d-bn=False
        if without == opt.d_bn:  # its scores would change: the new layers or none at all
            say(f"note: D starts from {opt.netd_path}, trained "
                f"{'without' if without else 'with'} BatchNorm, "
                f"{'with' if opt.d_bn else 'without'} it now, so it judges differently at "
                f"first; pass --d-bn={not opt.d_bn} to keep it as it was")
        if opt.d_low:  # a book-format D file has no judge; a last.pth's is not read either
            say(f"note: D starts from {opt.netd_path}, and the low-resolution judge of "
                f"--d-low={opt.d_low} starts afresh (--resume restores it)")
    for flag, net, rate in (("lr1", "G", opt.lr1), ("lr2", "D", opt.lr2)):
        if rate == 0:  # the book takes it, to study one net against a fixed other
            say(f"note: --{flag}=0: {net}'s weights stay as they start")
    if not opt.d_bn:
        remove_batchnorm(netd)
    if opt.sn:
        add_spectral_norm(netd)
    low = LowJudge(opt.d_low, opt.ndf) if opt.d_low else None
    if opt.cache:
        # rank 0 decodes the images once (for as long as that takes), the others then read
        # its cache; when it cannot (a folder of broken files), its error line is the one
        # said, and the others stop without a word (they waited, and had a traceback)
        if not world.main and not world.wait_for_main():
            raise UserError("process 0 could not decode the images")  # said by rank 0 only
        try:
            data = cached_batches(opt, device, progress=lambda it, total: tqdm(
                it, total=total, desc="decoding images once", unit="image",
                dynamic_ncols=True, disable=not world.main))
        except BaseException:
            if world.main:
                try:
                    world.wait_for_main(ok=False)
                except RuntimeError:  # a process already gone (its own stop, the OOM
                    pass  # killer): its broadcast failed, and replaced the stop's line
            raise
        if world.main:
            world.wait_for_main()
    else:
        data = folder_batches(opt)
        if state:  # files found as it goes: the list kept those the run found before it
            data.skipped.update(_skipped_before(opt, data.dataset.files))  # stopped
        if world.size > 1:  # a batch of broken files alone, dropped in one process only,
            # left the others waiting in its training step for ever
            data.every_process_has = lambda has: not world.any(not has, device)
    # each process lists the folder itself: one that changed meanwhile (an unpack still
    # running) gave them different counts, and training hung at the first epoch's end
    if not world.agree(data.count, device):
        raise UserError(f"{opt.data_path} changed while the processes read it: they found "
                        f"different numbers of images ({data.count:,} in process "
                        f"{world.rank}); run again once it no longer changes")
    per_epoch = data.count // world.size // opt.batch_size  # batches per epoch and process
    if per_epoch == 0:
        raise UserError(f"{data.count} images cannot give each of {world.size} processes a "
                        f"batch of {opt.batch_size}: "
                        + (f"lower --batch-size to {data.count // world.size} or less"
                           if data.count >= world.size else "start fewer processes"))
    order = torch.Generator().manual_seed(seed)  # the data order, apart from the model's RNG

    netg.to(device, memory_format=torch.channels_last).train()
    netd.to(device, memory_format=torch.channels_last).train()
    if low:
        low.to(device, memory_format=torch.channels_last).train()
    fused = device.type == "cuda"  # one kernel per step on the GPU; no gain on the CPU
    betas = (opt.beta1, opt.beta2)
    optimizer_g = torch.optim.Adam(netg.parameters(), lr=opt.lr1, betas=betas, fused=fused)
    optimizer_d = torch.optim.Adam([*netd.parameters(), *(low.parameters() if low else ())],
                                   lr=opt.lr2, betas=betas, fused=fused)
    g_forward, d_logits = distributed.wrap(netg, netd, world, device, opt.sync_bn)
    low_d = distributed.wrap_low(low, world, device) if low else None  # for D's step
    objective = Objective(opt.loss, 1.0 - opt.label_smooth)
    augment = DiffAugment(parse_augment(opt.diffaug))
    fixed_noise = torch.randn(GRID, opt.nz, 1, 1, device=device)
    meters = Meters(world)
    ema = EMA(netg, opt.ema) if opt.ema else None
    run = Run(opt, netg, netd, optimizer_g, optimizer_d, fixed_noise, meters, order, ema, low)
    run.images, run.processes = data.count, world.size
    if state:
        run.restore(state, device)
        sharded = state.get("processes", 1)  # states saved before it was kept: one process
        if run.batch and sharded != world.size:
            say(f"note: {opt.resume} stopped after batch {run.batch} of epoch {run.epoch + 1} "
                f"in {counted(sharded, 'process', 'processes')}, and this run has "
                f"{world.size}: the epoch's shards of images differ, so it starts again from "
                f"its first batch (none skipped; the batches done stay in the weights)")
            run.batch = 0
        say(f"resuming {opt.resume} in epoch {run.epoch + 1} after batch {run.batch}"
            if run.batch else f"resuming {opt.resume} at the start of epoch {run.epoch + 1}")
        for net, was, now in run.changed:
            notes.append(f"note: {net}'s Adam goes on with lr {now['lr']:g} and betas "
                         f"({now['betas'][0]:g}, {now['betas'][1]:g}) from step {run.step} (it "
                         f"had lr {was['lr']:g} and betas ({was['betas'][0]:g}, "
                         f"{was['betas'][1]:g}))")
        if "ema" in state and not ema:
            say(f"note: --ema=0: the moving average of G that {opt.resume} carries is left "
                f"behind; this run draws its grids with G itself and saves no netg_ema files")
        before = Path(saved["save_path"])
        if (before.resolve() != Path(opt.save_path).resolve()
                and (before / "losses.csv").is_file()
                and not (Path(opt.save_path) / "losses.csv").is_file()):
            say(f"note: the run kept its loss log and grids in {before}; from here they go to "
                f"{opt.save_path}, whose losses.csv begins after step {run.step} (the rows "
                f"before stay in {before / 'losses.csv'})")
        if saved["loss"] != opt.loss:
            say(f"note: the run trained with --loss={saved['loss']} until step {run.step}: the "
                f"loss log's rows up to there are {saved['loss']} losses, its plot's label "
                f"names {opt.loss}")
        # the step's other options a resumed run may change: said, as the rates and the loss
        # are (--ema=0 has its own line above)
        for name in ("d_every", "g_every", "label_smooth", "diffaug", "r1", "ema", "amp"):
            was, now = saved.get(name), getattr(opt, name)
            if name in saved and was != now and not (name == "ema" and not now):
                flag = f"--{name.replace('_', '-')}"
                before, after = (f"with {flag}={v}" if v != "" else f"without {flag}"
                                 for v in (was, now))  # --diffaug= : none
                say(f"note: the run trained {before} until step {run.step}; from here {after}"
                    + (" (its moving average of G starts here)" if name == "ema" and not was
                       else ""))
        if Path(saved["data_path"]).resolve() != Path(opt.data_path).resolve():
            say(f"note: the run trained on {saved['data_path']} until step {run.step}; from "
                f"here it trains on {opt.data_path}")
        elif saved["cache"] != opt.cache and state.get("images", data.count) != data.count \
                and abs(data.count - state["images"]) == len(data.skipped):
            # the counts differ by the unreadable files alone: the cache leaves them out
            say(f"note: the run trained with --cache={saved['cache']}, which counted "
                f"{state['images']} images in {opt.data_path}, and --cache={opt.cache} counts "
                f"{data.count} (the cache leaves out the unreadable files; without it they "
                f"count until read): it goes on, but not in the order it would have taken, and "
                f"this epoch may end early")
        elif state.get("images", data.count) != data.count:
            say(f"note: {opt.data_path} now has {data.count} images, and the run began with "
                f"{state['images']}: it goes on, but not in the order it would have taken, and "
                f"this epoch may end early")
    if world.size > 1:  # every process draws its own noise
        torch.manual_seed(seed + world.rank + 7919 * run.step)
    vis = None
    if opt.vis and world.main:
        from visualize import Visualizer
        vis = Visualizer(opt.env, opt.vis_server, opt.vis_port)
        if state:  # the curves go on from the run's loss log (a damaged one: from here)
            try:
                vis.earlier(read_rows(Path(opt.save_path) / "losses.csv", up_to=run.step))
            except (OSError, ValueError, KeyError, TypeError):
                pass
        options = opt.to_dict("train").items()
        vis.text("options", "<br>".join(f"{k} = {v}" for k, v in options), "options of this run")

    def start_records():
        """losses.csv (a fresh run starts it anew), options.json and skipped_files.txt:
        written once the first batch has trained, so a run that fails before that leaves an
        earlier run's as they were. --fresh's stopped run goes now too, not before: a run that
        found no readable image (--cache=False) took it with it."""
        if stopped:
            stopped.unlink(missing_ok=True)
            say(deleted)
        if leftovers:
            for path in leftovers:
                path.unlink(missing_ok=True)
            grids = sum(path.suffix == ".png" for path in leftovers)
            parts = [(len(leftovers) - grids, "checkpoint file", opt.checkpoint_dir),
                     (grids, "grid", opt.save_path)]
            what = " and ".join(counted(n, kind) for n, kind, _ in parts if n)
            where = " and ".join(dict.fromkeys(str(folder) for n, _, folder in parts if n))
            say(f"note: --fresh: deleted the {what} of the run it replaces, in {where}")
        Path(opt.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        Path(opt.save_path).mkdir(parents=True, exist_ok=True)
        checkpoint.save_text(json.dumps(opt.to_dict("train"), indent=2),
                             Path(opt.checkpoint_dir) / "options.json")
        checkpoint.save_text(f"{Path(opt.checkpoint_dir).resolve()}\n",
                             Path(opt.save_path) / OWNER)
        if data.skipped:  # those the cache found, reported before the first batch (without
            # it, a resumed run's also holds those its list named in the folder it reads)
            _write_skipped(data.skipped, opt)
        else:  # an earlier run's list, or this one's of the folder it left (resumed with
            # another --data-path), of files this run does not skip
            (Path(opt.checkpoint_dir) / "skipped_files.txt").unlink(missing_ok=True)
        return LossLog(opt.save_path, resume_step=resumed_step, loss=opt.loss)

    # every check has passed: the notes on the folder come now (above a refusal they read as
    # if the run had begun)
    for note in notes:
        say(note)
    log, resumed_step = None, run.step if state else None
    processes = f" in each of {world.size} processes" if world.size > 1 else ""
    say(f"training on {device.type}{' with bf16 autocast' if bf16 else ''}, seed {seed}: "
        f"{data.count:,} image{'s' if data.count != 1 else ''}, "
        f"{counted(per_epoch, 'batch', 'batches')} of "
        f"{opt.batch_size} per epoch{processes}")
    plot_every = min(opt.plot_every, per_epoch)  # the book counts batches within an epoch
    if plot_every < opt.plot_every:
        say(f"note: an epoch has {counted(per_epoch, 'batch', 'batches')}, fewer than "
            f"--plot-every={opt.plot_every}: the losses are logged and plotted every "
            f"{plot_every}")

    reported = _report_skipped(data.skipped, 0, opt, world, write=False)
    eta_said = None  # when the time left was last printed
    real = None  # the last real batch (visdom's window of them, at the end)
    global training
    training = run
    began = time.perf_counter()  # --max-minutes counts from here: this process's training
    budget = opt.max_minutes * 60
    time_up = False  # --max-minutes ran out within an epoch
    last_point = None  # the epoch of the newest save point (netg_N.pth, N.png) written here

    def out_of_time():
        """Whether --max-minutes has run out (under torchrun: in any process); never without
        a budget (0: the book's run, which never asks the other processes)."""
        return bool(budget) and world.any(time.perf_counter() - began >= budget, device)

    def save_within(epoch, bar):
        """A stop within an epoch (Ctrl-C, a scheduler's SIGTERM, --max-minutes): the bar
        closed, the losses and weights checked, the state saved to last.pth, then the loss
        curves drawn up to here (a stop is not a save point: a run stopped before its first
        had no losses.png at all) and visdom's env kept on its server's disk, as at an
        epoch's end (a restarted server lost the points since the last epoch's end, or the
        whole run within its first epoch). Returns its path and the command that goes on.
        The bar counts a batch as it hands out the next: brought to the batches trained, it
        closed one short of the line that names them."""
        bar.update(run.batch - bar.n)
        bar.close()
        _check_finite(meters.flush(), epoch, opt, run.saved)
        _check_weights(netg, netd, epoch, opt, run.saved)
        path = run.save() if world.main else Path(opt.checkpoint_dir) / "last.pth"
        if world.main:
            log.plot()
        if vis is not None:
            vis.keep()
        return path, _resume_command(f"--resume={quoted(path)}", world.size)

    with StopSignal(1 if world.size == 1 else plot_every) as stop:
        for epoch in range(run.epoch, opt.max_epoch):
            started = time.perf_counter()
            run.epoch, run.order_state = epoch, order.get_state()
            perm = world.shard(torch.randperm(data.count, generator=order))
            first, run.batch = run.batch, 0
            bar = tqdm(data.batches(perm, first), initial=first, total=per_epoch,
                       desc=f"epoch {epoch + 1}/{opt.max_epoch}", unit="batch",
                       dynamic_ncols=True, disable=not world.main)
            tic, seen = time.perf_counter(), 0
            for ii, real in enumerate(bar, start=first):
                real = real.to(device, non_blocking=True).contiguous(
                    memory_format=torch.channels_last)
                seen += real.size(0)
                if ii % opt.d_every == 0:
                    # lazy R1: every R1_EVERY-th of the run's D steps, counted (and kept in
                    # last.pth, so a resume keeps the rhythm); run.step // d_every missed
                    # one where an epoch's batches are no multiple of d_every, or came twice
                    r1_due = opt.r1 and run.d_steps % R1_EVERY == 0
                    loss_d, d_real, d_fake = d_step(netg, d_logits, optimizer_d, objective,
                                                    real, opt.nz, autocast, augment,
                                                    opt.r1 * R1_EVERY if r1_due else 0.0,
                                                    low_d)
                    run.d_steps += 1
                    meters.add("loss_d", loss_d)
                    meters.add("d_real", d_real)
                    meters.add("d_fake", d_fake)
                if ii % opt.g_every == 0:
                    meters.add("loss_g", g_step(g_forward, netd, optimizer_g, objective,
                                                real.size(0), opt.nz, device, autocast,
                                                augment, low))
                    if ema:
                        ema.update(netg)
                run.step, run.batch = run.step + 1, ii + 1
                if log is None and world.main:
                    log = start_records()
                if (ii + 1) % plot_every == 0:
                    _check_finite(meters.flush(), epoch, opt, run.saved)
                    means = meters.means()
                    speed = seen / (time.perf_counter() - tic)
                    bar.set_postfix(_format(means))
                    if log is not None:
                        log.append(run.step, epoch, means, speed * world.size)
                    if vis is not None:  # (its curves keep the points of an outage too)
                        vis.step(run.step, epoch, means, speed * world.size,
                                 lambda: fixed_samples(ema.sampler() if ema else netg,
                                                       fixed_noise), real)
                # every process stops at the same step; under torchrun asking the others is a
                # synchronisation, so only at the plot_every read-backs (alone it is free)
                due = world.size == 1 or (ii + 1) % plot_every == 0
                if due and world.any(stop.requested, device):
                    path, how = save_within(epoch, bar)
                    raise Interrupted(f"stopped in epoch {epoch + 1} after batch {ii + 1} (as "
                                      f"the progress bar counts): state saved "
                                      f"to {path}; continue with {how}", stop.signum)
                # --max-minutes: the step that ends the budget is the run's last, wherever it
                # falls (with an epoch's last, that epoch saves below, as a last epoch does):
                # decided per epoch, a CPU just too slow for one more lost up to an epoch of
                # the minutes given
                if due and ii + 1 < per_epoch and out_of_time():
                    path, how = save_within(epoch, bar)
                    say(f"--max-minutes={opt.max_minutes:g}: the time is up in epoch {epoch + 1} "
                        f"of {opt.max_epoch}, after batch {ii + 1} of {per_epoch}: the run's "
                        f"state is saved to {path}, which generate also draws from; continue "
                        f"it with {how}")
                    time_up = True
                    break
            if time_up:
                break
            _check_finite(meters.flush(), epoch, opt, run.saved)
            bar.set_postfix(_format(meters.means()))
            bar.close()
            if seen == 0 and first < per_epoch:  # no readable image all epoch (--cache=False)
                raise UserError(f"{opt.data_path}: none of its {data.count} image files could "
                                f"be read, so nothing was trained: put JPEG or PNG faces there")
            left, done = opt.max_epoch - epoch - 1, run.batch - first
            if not opt.cache:  # each process met the broken files of its own shard
                data.skipped = world.union(data.skipped)
            reported = _report_skipped(data.skipped, reported, opt, world)
            if vis is not None and vis.ready():
                vis.keep()  # the epoch's windows, on the server's disk
            run.epoch, run.batch = epoch + 1, 0
            last_in_time = bool(left) and out_of_time()  # with the epoch's last step
            if _saves_after(epoch, opt) or last_in_time:  # the last epoch in the budget saves
                _check_weights(netg, netd, epoch, opt, run.saved)
                meters.reset()
                if world.main:
                    log = log or start_records()  # a resumed epoch with no batch left
                    save_point(epoch, netg, netd, fixed_noise, opt, ema)
                    last_point = epoch
                    run.save()  # before the plot's second or so: a kill -9 in it lost the
                    log.plot()  # state of the epoch whose checkpoints it had just saved
            else:  # the state alone: a kill -9 or a power cut loses this epoch at most, not
                _check_weights(netg, netd, epoch, opt, run.saved)  # the ones since the save
                if world.main:  # point (--save-every=10 by default)
                    run.save()
            # ended while the epoch saved: stopped here, not after one more step
            last_in_time = last_in_time or bool(left) and out_of_time()
            if last_in_time:
                how = _resume_command(f"--resume={quoted(Path(opt.checkpoint_dir) / 'last.pth')}",
                                      world.size)
                say(f"--max-minutes={opt.max_minutes:g}: the time is up with the end of epoch "
                    f"{epoch + 1} of {opt.max_epoch}; continue the run with {how}")
                break
            # a stop that came while the epoch saved: its state is saved, so it stops here (it
            # trained a step of the next epoch first, and saved again); under torchrun, at the
            # read-backs, as the processes stop together
            if left and world.size == 1 and stop.requested:
                raise Interrupted(f"stopped after epoch {epoch + 1}: state saved to "
                                  f"{run.saved}; continue with {run.resume_command()}",
                                  stop.signum)
            # the whole run's remaining time, from this epoch's pace with its saves (the
            # batches' alone left them out: 76 MB of last.pth each epoch of the book's nets,
            # and with one batch an epoch it said 5 minutes for 11): after the first epoch,
            # then at most once a minute (epochs of a second would give a line each)
            if left and done > 0 and (eta_said is None or time.perf_counter() - eta_said >= 60):
                eta_said = time.perf_counter()
                minutes = left * (eta_said - started) / done * per_epoch / 60
                line = f"{counted(left, 'epoch')} left: " + \
                    (f"about {minutes:.0f} min" if minutes >= 1 else "under a minute")
                budget_left = (budget - (eta_said - began)) / 60
                if budget and budget_left < minutes:  # a budget that ends the run sooner
                    line += f"; --max-minutes={opt.max_minutes:g} ends the run " + \
                        (f"in about {budget_left:.0f} min" if budget_left >= 1 else
                         "within a minute")
                say(line)
        # all is saved: a stop from here on loses nothing, and main ends with this line and 0
        # (it said "nothing saved since its last save; continue from it with --resume", 143)
        run.last_line = _done_line(opt, last_point, time_up, run.epoch, ema)
    if vis is not None:
        vis.finish(lambda: fixed_samples(ema.sampler() if ema else netg, fixed_noise), real)
    with checkpoint.stops_put_off():  # said and marked said, or neither: said once
        say(run.last_line)
        run.last_line = ""
    world.close()
    return netg, netd


def _done_line(opt, last_point, time_up, epochs, ema):
    """The line a run ends with: the files to draw from, named (a netg_200.pth after 200
    epochs is not one of them); where --max-minutes stopped it within an epoch, or as an
    epoch that is no save point saved its state, the state there, newer than any save point.
    ``last_point``: the epoch of its newest save point, or None; ``epochs``: those trained.
    Under make demo (ANIMEGAN_CONTINUE, set by the Makefile): that make draws the faces next
    (from last.pth), where it named a generate command to type, which make then ran itself."""
    folder = Path(opt.checkpoint_dir)
    g = d = folder / "last.pth"
    if last_point is not None and not time_up and last_point == epochs - 1:
        g = folder / f"netg{'_ema' if ema else ''}_{last_point}.pth"
        d = folder / f"netd_{last_point}.pth"
    draw = pasted(f"generate --netg-path={quoted(g)} --netd-path={quoted(d)}")
    made = os.environ.get("ANIMEGAN_CONTINUE", "").strip()
    if last_point is None:  # stopped by --max-minutes before a save point (or not rank 0)
        return (f"done: no epoch reached a save point this time (--save-every="
                f"{opt.save_every}), so no netg_N.pth and no grid were written; " +
                ("make draws the demo's faces from the state where it stopped next" if made
                 else f"draw faces from the state where it stopped with {draw}"))
    return (f"done: weights in {opt.checkpoint_dir}, sample grids in {opt.save_path}; " +
            ("make draws the demo's faces from its last.pth next" if made else
             f"draw faces with {draw}"))


class Run:
    """Everything a resumed run needs to continue bit for bit: written as ``last.pth``."""

    FORMAT = 1

    def __init__(self, opt, netg, netd, optimizer_g, optimizer_d, fixed_noise, meters, order,
                 ema=None, low=None):
        self.opt, self.netg, self.netd, self.ema, self.low = opt, netg, netd, ema, low
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.fixed_noise, self.meters, self.order = fixed_noise, meters, order
        self.epoch = self.batch = self.step = 0
        self.d_steps = 0  # D's steps so far (lazy R1's count)
        self.last_line = None  # once all is saved: the done line yet to say, "" once said
        self.order_state = order.get_state()
        self.saved = None  # the last.pth of this run's last save (or the one it resumed)
        self.changed = []  # resumed: the nets whose rates or betas the flags changed
        self.images, self.processes = None, 1

    def save_size(self):
        """About how many bytes an epoch's save writes: a last.pth as large as the last one,
        and the epoch's weights (its grid is small)."""
        nets = [self.netg, self.netd] + ([self.ema.netg] if self.ema else [])
        try:
            state = Path(self.saved).stat().st_size
        except (OSError, TypeError):  # gone meanwhile, or none saved yet (None): the
            # weights and Adam's two averages of each
            state = 3 * sum(t.nbytes for net in nets[:2] for t in net.state_dict().values())
        return state + sum(t.nbytes for net in nets for t in net.state_dict().values())

    def resume_command(self):
        """The command that continues from this run's last save; None before its first."""
        return self.saved and _resume_command(f"--resume={quoted(self.saved)}", self.processes)

    def _load(self, net, weights, name):
        """load_state_dict, where weights that do not fit are a damaged file's fault."""
        try:
            net.load_state_dict(weights)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, KeyError, TypeError):  # missing, unexpected or misshapen keys
            raise UserError(f"{self.opt.resume} is damaged: its weights of {name} do not fit "
                            f"the nets its own options describe") from None

    def save(self):
        state = {
            "format": self.FORMAT, "epoch": self.epoch, "batch": self.batch, "step": self.step,
            "d_steps": self.d_steps,
            # netd in the book's format, so generate and Faces.load read last.pth; with --sn
            # or --d-bn=False D's own state too, for an exact resume
            "netg": self.netg.state_dict(), "netd": book_state_dict(self.netd),
            "optimizer_g": self.optimizer_g.state_dict(),
            "optimizer_d": self.optimizer_d.state_dict(),
            "fixed_noise": self.fixed_noise.cpu(),
            "meters": {name: {k: float(v) for k, v in vars(m).items()}
                       for name, m in self.meters.meters.items()},
            "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    "order": self.order_state if self.batch else self.order.get_state()},
            "options": self.opt.to_dict(),
            "cwd": os.getcwd(),  # where the options' relative folders lie
            "images": self.images,  # the folder's image count, whose order "rng" continues
            "processes": self.processes,  # how the epoch's order is split ("batch" counts one)
        }
        if self.ema:
            state["ema"] = self.ema.state_dict()
        if self.opt.sn or not self.opt.d_bn:
            state["netd_own"] = self.netd.state_dict()
        if self.low:
            state["netd_low"] = self.low.state_dict()
        path = Path(self.opt.checkpoint_dir) / "last.pth"
        checkpoint.save(state, path)
        self.saved = path
        return path

    def restore(self, state, device):
        self.saved = Path(self.opt.resume)
        self._load(self.netg, state["netg"], "G")
        self._load(self.netd, state.get("netd_own", state["netd"]), "D")
        if self.low:
            self._load(self.low, state.get("netd_low"), "the low-resolution judge")
        if self.ema and "ema" in state:
            self._load(self.ema, state["ema"], "the average of G")
        elif self.ema:  # --ema turned on at resume: the average starts from G as it is
            self._load(self.ema.netg, state["netg"], "G")
        self.changed = []  # (net, what it was, what it is now) of the rates and betas given
        for optimizer, key, net in ((self.optimizer_g, "optimizer_g", "G"),
                                    (self.optimizer_d, "optimizer_d", "D")):
            # the device we run on, not the one the state was saved on; the rates and betas of
            # this run's options (the state's own, or what --lr1/--lr2/--beta1/--beta2 give
            # now: the state's put them back, without a word, while options.json said these)
            wanted = {k: optimizer.param_groups[0][k] for k in ("fused", "lr", "betas")}
            optimizer.load_state_dict(state[key])
            group = optimizer.param_groups[0]
            was = {"lr": group["lr"], "betas": tuple(group["betas"])}
            for group in optimizer.param_groups:
                group.update(wanted)
            if was != {"lr": wanted["lr"], "betas": tuple(wanted["betas"])}:
                self.changed.append((net, was, wanted))
        self.fixed_noise.copy_(state["fixed_noise"].to(device))
        for name, values in state["meters"].items():
            vars(self.meters.meters[name]).update(values)
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
        # (a state saved before it was kept: the count that version's R1 went by)
        self.d_steps = state.get("d_steps", self.step // state["options"].get("d_every", 1))
        rng = state["rng"]
        random.setstate(_as_tuples(rng["python"]))
        torch.set_rng_state(rng["torch"].cpu())
        if (rng["cuda"] and torch.cuda.is_available()
                and len(rng["cuda"]) == torch.cuda.device_count()):
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        self.order.set_state(rng["order"].cpu())


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


CPU_LIMIT = [signal.SIGXCPU] if hasattr(signal, "SIGXCPU") else []


def _room_to_save():
    """A plain ``ulimit -t N`` sets the soft and the hard CPU time limit both to N, and the
    kernel then ends the run with SIGKILL when N is used up: unsaved and without a word, as
    SIGXCPU (which saves) only comes first where the soft one is lower. So the soft one is
    lowered, by what a stop needs: the step under way finishes (its CPU time counted over
    every thread: a step of the book's nets and batch took 10 s of it on 2 cores, more where
    more threads share it), then last.pth (76 MB) and the loss plot are written. A tenth of
    the limit, at least 30 s: longer limits run longer steps. Returns the limits to put back,
    or None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if soft != hard or hard == resource.RLIM_INFINITY:
        return None
    margin, used = max(30, hard // 10), time.process_time()
    if hard - margin <= used:
        say(f"note: the CPU time this shell allows (ulimit -t {hard}; {used:.0f} s used) is too "
            f"short to keep the {margin} s a save needs: a run that uses it up is ended at "
            f"once, unsaved; raise that limit")
        return None
    resource.setrlimit(resource.RLIMIT_CPU, (hard - margin, hard))
    return soft, hard


class StopSignal:
    """Ctrl-C, SIGTERM or a hang-up (the terminal closed, unless ``nohup``): finish the current
    step, save, exit. A second Ctrl-C stops at once. Under torchrun the processes stop
    together at the next of the batches where they ask each other (every ``together``-th of
    an epoch: plot_every's), and the line says so."""

    def __init__(self, together=1):
        self.together = together

    def __enter__(self):
        self.signum = None  # the first stop's signal, once one came
        self.previous, self.cpu_limits = {}, None
        # and the CPU time limit's warning (ulimit -St, below the hard limit): by default it
        # ended the run at once, with a core dump, unsaved and without a word
        for sig in stop_signals() + CPU_LIMIT:
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers, no graceful stop
                pass
        if set(CPU_LIMIT) & set(self.previous):
            self.cpu_limits = _room_to_save()
        return self

    @property
    def requested(self):
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.requested:  # a second SIGTERM (a scheduler's and a sweep's): asked for already
            return
        self.signum = signum
        stop_under_way(signum)  # and after the save, until the process ends
        again_interrupts()  # a second Ctrl-C stops at once
        if distributed.is_main_process():
            when = "after this step" if self.together == 1 else \
                f"at the epoch's next batch that is a multiple of {self.together}, where " \
                f"the processes stop together"
            # (nearly: where train lowered the soft limit, the rest is the save's)
            used = "nearly used up" if self.cpu_limits else "used up"
            why = (f" the CPU time this shell allows (ulimit -t) is {used}:"
                   if signum in CPU_LIMIT else "")
            print(f"\n{signal.Signals(signum).name}:{why} saving {when} (Ctrl-C again to stop "
                  f"at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.cpu_limits:  # the shell's own again (no SIGXCPU once the handler is gone)
            resource.setrlimit(resource.RLIMIT_CPU, self.cpu_limits)
        for sig, handler in self.previous.items():
            if sig in CPU_LIMIT and self.signum == sig:  # sent again every second from now
                handler = signal.SIG_IGN  # on: by default the next killed the run's last line
            signal.signal(sig, handler)
        return False


def _report_skipped(skipped, reported, opt, world, write=True):
    """One line about unreadable files when there are new ones; the full list on disk
    (``write=False``: once the run has trained a batch, by ``_write_skipped``)."""
    if len(skipped) > reported and world.main:
        listing = Path(opt.checkpoint_dir) / "skipped_files.txt"
        if write:
            _write_skipped(skipped, opt)
        else:
            listing = f"{listing} once training starts"
        names = ", ".join(shown(Path(p).name) for p in sorted(skipped)[:3])
        print(f"skipped {counted(len(skipped), 'unreadable image file')} (e.g. {names}); "
              f"full list in {listing}", flush=True)
    return len(skipped)


def _skipped_before(opt, files):
    """The files of ``files`` that the resumed run's skipped_files.txt lists: with --cache=False
    the unreadable ones are only found as the epochs reach them, and the list written at the
    first epoch's end held just those found since the resume."""
    listing = Path(opt.checkpoint_dir) / "skipped_files.txt"
    try:
        names = {os.fsdecode(line) for line in listing.read_bytes().splitlines()}
    except OSError:
        return set()
    return {str(p) for p in files if _listed(p) in names}


def _listed(path):
    """``path`` as skipped_files.txt lists it: one to a line (a name with a newline in it
    quoted, as the shell reads it back; it took two lines)."""
    return str(path) if "\n" not in str(path) and "\r" not in str(path) else quoted(path)


def _write_skipped(skipped, opt):
    checkpoint.save_text("".join(f"{_listed(p)}\n" for p in sorted(skipped)),
                         Path(opt.checkpoint_dir) / "skipped_files.txt")


def say(message):
    """Print on rank 0 only (every process would repeat it under torchrun)."""
    if distributed.is_main_process():
        print(message, flush=True)


def _check_weights(netg, netd, epoch, opt, saved):
    """Before a save: the losses were finite, but the step after them may not have left the
    weights so (a D step of the book's four without a G step), and a file of NaN weights is
    one no command loads, written over the last good last.pth."""
    nets = (("G's weights", netg), ("D's weights", netd))
    _check_finite([name for name, net in nets if not all(
        torch.isfinite(p).all() for p in net.parameters())], epoch, opt, saved)


def _check_finite(diverged, epoch, opt, saved):
    """``saved``: the save point to start again from (this run's last.pth, or the one it
    resumed; not a last.pth of another run in its folder), or None."""
    if diverged:
        names = listed(diverged)
        # with this run's --max-epoch: a resumed run that raised it diverged, and its state's
        # own (the lower one) made the resume advised "nothing to do"
        where = (f" from the last save: --resume={quoted(saved)} --max-epoch={opt.max_epoch} "
                 f"with the lower rates" if saved else " (this run saved no checkpoint)")
        raise UserError(f"{names} became NaN or infinite in epoch {epoch + 1}: training "
                        f"diverged; lower --lr1/--lr2 (or a weight you raised, such as --r1) "
                        f"and start again{where}")
