"""Finding, decoding and batching the training images.

The layout is the book's: ``data/faces/*.jpg`` read as an ImageFolder with one class; a
folder that holds the images directly works too. Every image goes through the article's
transform: Resize(96), CenterCrop(96), ToTensor, Normalize(0.5, 0.5) -> [-1, 1].

Crawled folders hold broken files: anything that cannot be decoded is skipped and reported,
and images of any mode (grayscale, palette, RGBA, CMYK, 16-bit, float) become RGB.
"""
import atexit
import collections
import errno
import glob
import hashlib
import itertools
import json
import os
import re
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as NotYet
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, nullcontext
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from config import toy_hint
from distributed import is_main_process
from errors import (UserError, counted, held_stops, link_fault, listed, progress_bar,
                    raise_if_stopped, shown, sized, special_kind)

# image files ImageFolder passes over (.jfif and .jpe: JPEGs under the names some browsers save)
UNREAD_KINDS = {".gif", ".avif", ".heic", ".jxl", ".jfif", ".jpe"}
EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}


def is_image_name(name):
    """Whether train reads a file of this name: ImageFolder's kinds, hidden files left out."""
    return Path(name).suffix.lower() in EXTENSIONS and not str(name).startswith(".")


def list_images(root):
    """Image files under ``root``, sorted by path; hidden files and folders are skipped.
    Linked folders are followed, as ImageFolder follows them (``data/faces`` is often a link
    to a disk with room), but each real folder is read once (ImageFolder reads a folder
    reached two ways twice, and loops on a link back up the tree)."""
    root = Path(root)
    files, seen, gone, unread, other = [], set(), [], [], []
    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=unread.append):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree, or a second link to one folder
            subfolders[:] = []
            continue
        seen.add(real)
        # real folders before links to them, each in name order: which way into a folder is
        # kept (and with it the file names, the cache key and the data order) never depends
        # on the order the file system lists them in
        subfolders[:] = sorted((d for d in subfolders if not d.startswith(".")),
                               key=lambda d: (os.path.islink(os.path.join(folder, d)), d))
        files += [Path(folder) / name for name in names  # (a folder named x.jpg is not here)
                  if is_image_name(name)]
        other += [Path(folder) / name for name in names
                  if Path(name).suffix.lower() in UNREAD_KINDS]
        # a link to nothing without an image's name: most likely a folder on a disk that is
        # not mounted (a linked image file is counted, and skipped as unreadable)
        gone += [Path(folder) / name for name in names
                 if not is_image_name(name) and not name.startswith(".")
                 and os.path.islink(Path(folder) / name)
                 and not os.path.exists(Path(folder) / name)]
    files.sort()
    links = "; ".join(link_fault(p) for p in sorted(gone)[:2]) + (
        f" (and {len(gone) - 2} more)" if len(gone) > 2 else "")
    if not files:
        at_root = [e for e in unread if Path(e.filename) == root]
        if at_root:
            raise UserError(f"cannot read {root} ({at_root[0].strerror}): check its "
                            f"permissions, or pass another --data-path")
        if gone:
            raise UserError(f"no images in {root}: {links} (a disk not mounted?)")
        if other:  # the note below would never be printed
            raise UserError(f"no images in {root} that the book's ImageFolder reads: "
                            f"{_unread_kinds(other, root)}")
        raise UserError(f"no images in {root}: put the faces in {root / 'faces'}/ (jpg or png), "
                        f"or {toy_hint()}")
    if not is_main_process():
        return files
    if gone:
        print(f"note: {links}: what it held is not used", flush=True)
    unread = [e for e in unread if Path(e.filename) != root]  # root itself: the error above
    if unread:
        print(f"note: cannot read {counted(len(unread), 'folder')} under {root} (e.g. "
              f"{unread[0].filename}: {unread[0].strerror}): their images are not used",
              flush=True)
    if other:
        print(f"note: {_unread_kinds(other, root)}", flush=True)
    from toyfaces import UNFINISHED
    for folder in (root, root.parent):  # --data-path=data-toy, or data-toy/faces
        try:
            finish = (folder / UNFINISHED).read_text().strip()
        except (OSError, UnicodeDecodeError):
            continue
        print(f"note: {folder} holds a toy set whose drawing was stopped, {len(files):,} "
              f"faces so far: `{finish}` draws it whole", flush=True)
        break
    return files


def _unread_kinds(paths, root):
    """What to do about the image files of the kinds in UNREAD_KINDS under ``root``, as words,
    naming the first two (the user had to search the folder for them)."""
    count = len(paths)
    names = ", ".join(shown(p.relative_to(root)) for p in sorted(paths)[:2]) + (
        ", ..." if count > 2 else "")
    return (f"{counted(count, 'image file')} of a kind the book's ImageFolder does not read "
            f"({', '.join(sorted(UNREAD_KINDS))}; here {names}) "
            f"{'is' if count == 1 else 'are'} not used: "
            f"convert them to png to use them (.jfif and .jpe are JPEGs: renaming them .jpg "
            f"is enough)")


def say_folders(root, files):
    """One line, from rank 0, when the images under ``root`` lie in more than one folder:
    every one is used (``data/`` holding ``faces/`` and a toy set, say, mixes the two)."""
    counts = {}  # by the first folder below root, ImageFolder's class: data/faces/000/...
    for path in files:
        parts = path.relative_to(root).parts
        folder = parts[0] if len(parts) > 1 else "."
        counts[folder] = counts.get(folder, 0) + 1
    if len(counts) < 2 or not is_main_process():
        return
    listed = ", ".join(f"{folder}/ ({n:,})" for folder, n in sorted(counts.items())[:4])
    more = f" and {len(counts) - 4} more" if len(counts) > 4 else ""
    print(f"note: {root} holds images in {len(counts)} folders, all used: {listed}{more}; "
          f"--data-path naming one of them uses just that one", flush=True)


def crop(img, image_size):
    """The article's geometry, pixel for pixel what its torchvision Resize(image_size) then
    CenterCrop(image_size) make of a PIL image: the shorter side scaled to image_size
    (bilinear; the longer one to the whole pixels below its share), then the centre square,
    its offsets rounded. Our own few lines: importing torchvision for them cost generate,
    evaluate and every refusal about 2.5 s of start-up on 2 cores (it loads torch's
    compiler, which train's Adam loads anyway)."""
    w, h = img.size
    size = ((image_size, int(image_size * h / w)) if w <= h
            else (int(image_size * w / h), image_size))
    if size != (w, h):
        img = img.resize(size, Image.Resampling.BILINEAR)
        w, h = size
    top, left = int(round((h - image_size) / 2.0)), int(round((w - image_size) / 2.0))
    return img.crop((left, top, left + image_size, top + image_size))


def to_unit_range(img):
    """An RGB PIL image as a float tensor (3, H, W) in [-1, 1], by the article's ToTensor
    and Normalize(0.5, 0.5) arithmetic: x / 255, then (x - 0.5) / 0.5."""
    pixels = torch.from_numpy(np.array(img, np.uint8, copy=True)).permute(2, 0, 1)
    return normalise(pixels.contiguous())


def open_rgb(path):
    """Decode any image file to an upright RGB PIL image; raises on unreadable files."""
    kind = special_kind(path)
    if kind:  # a named pipe called x.jpg: opening it waited for a writer, for ever
        raise OSError(f"{path} is {kind}, not an image file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's palette/EXIF chatter
        with Image.open(path) as img:
            # 16 bits a pixel in the file: an older Pillow opens such a PNG as 32-bit "I"
            # (its raw mode, "I;16B", still says so)
            sixteen = img.mode.startswith("I;16") or any("16" in str(t[3]) for t in img.tile)
            img = ImageOps.exif_transpose(img)
            if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit or float grey: scale
                arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0,
                                    neginf=0.0)  # to 8 bits, not clip
                # a 16-bit file is out of 65535 even when dark; 32-bit "I" says no range, and
                # a float one is most often out of 1 (it became black)
                if sixteen or arr.max() > 255:
                    top = 65535.0
                else:
                    top = 1.0 if img.mode == "F" and arr.max() <= 1 else 255.0
                img = Image.fromarray(np.clip(arr * 255.0 / top, 0, 255).astype(np.uint8), "L")
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, img)
            return img.convert("RGB")


class FaceFolder(Dataset):
    """The article's pipeline: decode, Resize, CenterCrop and normalise on every access.

    Items are ``(image or None, path)``; None marks a file that could not be decoded.
    """

    def __init__(self, root, image_size=96):
        self.files = list_images(root)
        say_folders(root, self.files)
        self.image_size = image_size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        path = self.files[index]
        try:
            return to_unit_range(crop(open_rgb(path), self.image_size)), str(path)
        except MemoryError:  # a sound image over an address-space limit (ulimit -v): the
            raise  # out-of-memory line, as the cache's build says, not "unreadable"
        except OSError as e:  # no file left to open (ulimit -n): the limit's line, as the
            if e.errno in (errno.EMFILE, errno.ENFILE):  # cache's build says, not a skipped
                raise NoFileLeft() from e  # image
            return None, str(path)
        except Exception:  # noqa: BLE001 - any decoder failure means a broken file
            return None, str(path)


class NoFileLeft(OSError):
    """EMFILE met by a loader worker: torch raises a worker's exception again in the main
    process as its type called with the worker's traceback as text, which made an OSError
    with no errno (a traceback, not the limit's line); this one keeps its errno."""

    def __init__(self, *_):
        super().__init__(errno.EMFILE, os.strerror(errno.EMFILE))


def collate(items):
    """Stack the good images; return the paths of the broken ones beside them."""
    good = [image for image, _ in items if image is not None]
    bad = [path for image, path in items if image is None]
    batch = torch.stack(good) if good else torch.empty(0, 3, 96, 96)
    return batch, bad


class FolderBatches:
    """The book's pipeline: a DataLoader whose workers decode the JPEGs of every batch.

    ``batches(perm, start)`` yields the image batches of the permutation ``perm`` from batch
    ``start`` on, dropping the last partial batch; the files that could not be decoded
    gather in ``skipped``.
    """

    def __init__(self, opt):
        self.dataset = FaceFolder(opt.data_path, opt.image_size)
        files = self.dataset.files
        if len(files) < opt.batch_size:  # fewer than a batch: read them now (as the cache
            # does), not send the user to lower --batch-size for files that are all broken
            readable = sum(_decode((p, opt.image_size)) is not None for p in files)
            if files and not readable:
                raise _none_readable(files, opt.data_path)
            _enough(readable, opt, "usable images")
        self.batch_size, self.num_workers = opt.batch_size, opt.num_workers
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            os.cpu_count() or 1
        cpus = max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # torchrun: shared
        if self.num_workers > cpus:  # more only take turns (and torch warns at every epoch)
            self.num_workers = cpus
            if is_main_process():
                print(f"note: --num-workers={opt.num_workers} on {counted(cpus, 'CPU')}: "
                      f"decoding with {cpus}", flush=True)
        # a worker hands each batch over in a shared-memory file: one over the limit was a
        # traceback from the worker, and the run waited for that batch for ever
        batch = opt.batch_size * 3 * opt.image_size ** 2 * 4
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if self.num_workers and limit != resource.RLIM_INFINITY and limit < batch:
            raise UserError(f"a batch of decoded images ({sized(batch, limit)}) is over the "
                            f"largest file this shell lets a program write (ulimit -f), "
                            f"{sized(limit, batch)}, "
                            f"and the --num-workers processes hand each batch over in such a "
                            f"file: raise that limit, or pass --num-workers=0")
        self.count, self.skipped = len(self.dataset), set()
        # under torchrun: given whether this process's batch holds an image, whether every
        # process's does (a batch is dropped in all of them or none)
        self.every_process_has = lambda has: has

    def __len__(self):
        return self.count // self.batch_size

    def batches(self, perm, start=0):
        order = perm[start * self.batch_size:len(perm) // self.batch_size * self.batch_size]
        order = order.tolist()
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=order,
                            num_workers=self.num_workers, collate_fn=collate,
                            worker_init_fn=loader_worker_signals)
        with workers_starting():
            try:
                batches = iter(loader)  # the workers are forked here
            except OSError as e:  # too few open files for them (ulimit -n), say
                _half_started(e)
                raise
        for images, bad in batches:
            self.skipped.update(bad)
            if self.every_process_has(len(images) > 0):
                yield images


def _half_started(error):
    """A DataLoader whose workers could not all start (no file left for a pipe) ends those
    that did, here: torch's iterator, broken off before it counted them, printed an
    AttributeError traceback below the run's error line when it was collected, and when that
    was only at the exit, left them to a SIGTERM that a worker still starting drops (see
    ``_own_process_group``): on a busy machine the run hung after its error line."""
    tb = error.__traceback__
    while tb is not None:
        it = tb.tb_frame.f_locals.get("self")
        if hasattr(it, "_workers") and not hasattr(it, "_workers_status"):
            _end_now(it._workers)
            it._shutdown = True  # nothing left for torch to stop
        tb = tb.tb_next


def _end_now(workers):
    """Kill and reap ``workers``, started where the others could not be: they hold nothing
    to keep."""
    for worker in workers:
        worker.kill()
        worker.join()


STOPS = {signal.SIGINT, signal.SIGTERM} | ({signal.SIGHUP} if hasattr(signal, "SIGHUP") else set())


@contextmanager
def workers_starting():
    """Hold back Ctrl-C, SIGTERM and a hang-up while worker processes are forked: the workers
    start with them blocked, so one sent to the whole group in that moment cannot reach them
    before ``_own_process_group`` runs; this process gets its own as soon as they are forked."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _own_process_group(drop_term=True):
    """A worker process (a Pool's, a DataLoader's) leaves its parent's process group, so the
    Ctrl-C of a terminal and a SIGTERM sent to the whole group (a job scheduler, `kill -- -PID`)
    reach the main process alone, which stops its workers itself: killed under the pool's
    feet, a worker can leave the pool waiting for ever, and torch's handler would end a
    decoding worker at once and training with it, unsaved. A Ctrl-C that reached the worker
    while it was forked (``workers_starting`` held it back) was meant for the main process:
    dropped, and so is a hang-up (the terminal's is the main process's to act on); so is a
    SIGTERM with ``drop_term``, unless the parent sent it: that is the main process ending its
    workers (multiprocessing's at its exit), and the worker ends, as torch's handler has it
    do once it has started. Dropped, the worker waited for tasks and the parent for it."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (drops a pending one too)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if drop_term and signal.SIGTERM in signal.sigpending():
        if not hasattr(signal, "sigwaitinfo"):  # macOS: no sender to tell
            signal.sigwait({signal.SIGTERM})  # taken off without running a handler
        elif signal.sigwaitinfo({signal.SIGTERM}).si_pid == os.getppid():  # another's: dropped
            os._exit(0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)


def _pool_worker_signals(parent):
    """``start_pool``'s ``initializer``: see ``_own_process_group``. SIGTERM stays as it is by
    default, and one that came while the worker was forked ends it here: one sent to the
    whole group is stopping the main process as well (a worker that dropped it waited for
    tasks, and the main process for it, for ever). A worker that a SIGTERM ends is noticed by
    the pool, which stops with a line, or with the main process's own stop."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the Terminated the parent raises
    _own_process_group(drop_term=False)
    _end_with_parent(parent)


def _end_with_parent(parent):
    """On Linux, the system kills this worker when ``parent``, the process that forked it,
    ends: a run killed outright (kill -9, the OOM killer) left its decoding workers waiting
    for jobs for ever, in process groups of their own."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PDEATHSIG
    except (OSError, AttributeError):
        return  # no prctl here (another libc): the worker waits as before
    if os.getppid() != parent:  # the parent died before that
        os._exit(1)


def start_pool(workers):
    """Worker processes that leave Ctrl-C and SIGTERM to this process, which stops them; use
    it as ``with start_pool(n) as pool: pool.imap(fn, jobs, chunksize)``."""
    return _Workers(workers)


class _Workers:
    """``start_pool``'s processes: a ProcessPoolExecutor, which notices a worker killed under
    it (a SIGTERM sent to every process of the job, the OOM killer). multiprocessing's Pool
    waited for ever for the dead worker's results, or its terminate() for a lock the worker
    died holding: 1 SIGTERM of 6 sent to a job building the cache hung it. Everything that
    touches the executor runs under ``held_stops``: its threads share locks with this one."""

    def __init__(self, workers):
        self.workers = workers
        self.executor = None

    def __enter__(self):
        try:
            with held_stops():
                self.executor = ProcessPoolExecutor(self.workers, mp_context=get_context("fork"),
                                                    initializer=_pool_worker_signals,
                                                    initargs=(os.getpid(),))
                # forked now, as the pool begins (a first job forks them all), before a
                # progress bar's thread exists: forked later, that thread took a Ctrl-C meant
                # for this process, whose handler then ran inside the fork ("Exception
                # ignored" tracebacks)
                with workers_starting():
                    self.executor.submit(int)
        except BaseException:
            self._half_started()
            self.__exit__(True)
            raise
        return self

    def _half_started(self):
        """Kill the workers that did start where the others could not (no file left for a
        pipe, ulimit -n): the pool forks them all before its thread that would stop them
        begins, so they waited for tasks for ever, and the run for them after its error line."""
        if self.executor is not None and self.executor._executor_manager_thread is None:
            _end_now(list((self.executor._processes or {}).values()))

    def __exit__(self, *exc):
        if self.executor is not None:
            with held_stops(raise_after=not exc or exc[0] is None):
                self.executor.shutdown(wait=True, cancel_futures=True)
        return False

    def imap(self, fn, jobs, chunksize=1):
        """``fn`` of each job, in order, as the results come; a stop is raised within a
        fifth of a second, between two waits."""
        jobs = iter(jobs)
        try:
            with held_stops():
                chunks = iter(lambda: list(itertools.islice(jobs, chunksize)), [])
                pending = collections.deque(self.executor.submit(_each, fn, chunk)
                                            for chunk in chunks)
            while pending:
                yield from _result(pending.popleft())
        except BrokenProcessPool:
            time.sleep(0.5)  # a stop sent to every process: this one's own acts here
            raise_if_stopped()
            raise UserError("one of the worker processes ended without a word (killed, or "
                            "out of memory?): run the command again") from None


def _each(fn, chunk):
    """A worker's part of ``_Workers.imap``: ``fn`` of each job of ``chunk``."""
    return [fn(job) for job in chunk]


def _result(future):
    """``future``'s result, waited for in spans of a fifth of a second with stops held: one
    that came is raised between two spans."""
    while True:
        with held_stops():
            try:
                return future.result(timeout=0.2)
            except NotYet:
                pass


def loader_worker_signals(_):
    """A DataLoader's ``worker_init_fn``: see ``_own_process_group``; torch's SIGTERM handler
    stays, so that the loader can still end its workers. It ends with its parent as a pool's
    worker does: torch's watchdog takes the parent to watch only after this function, so a
    worker still starting when the run was killed outright (kill -9 on a busy machine) took
    the system's adopting process for it, and waited for tasks for ever."""
    _own_process_group()
    _end_with_parent(get_context().parent_process().pid)


def folder_batches(opt):
    return FolderBatches(opt)


# ---------------------------------------------------------------------------------------------
# The fast path: decode every image once into a uint8 array cached beside the data.

CACHE_VERSION = 2  # 2: the key holds each file's change time; 16-bit grey read out of 65535


def _decode(job):
    path, image_size = job
    try:
        img = crop(open_rgb(path), image_size)
        return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy()
    except OSError as e:  # no file left to open (ulimit -n) is not the image's fault: every
        if e.errno in (errno.EMFILE, errno.ENFILE):  # image was "not a real image", and
            raise  # a cache built so kept them out for good
        return None
    except MemoryError:  # a large image over an address-space limit (ulimit -v) is a sound
        raise  # image too: kept out of the cache as unreadable, later runs skipped it still
    except Exception:  # noqa: BLE001 - any decoder failure means a broken file
        return None


def _decode_into(job):
    """One image of a cache build: its pixels written into the cache file at byte ``at``;
    returns whether it could be read. Only that word goes back to the main process: a
    worker killed while it sent a whole chunk of pixels left part of them in the pipe, and
    the pool waiting for the rest for ever."""
    path, image_size, cache, at = job
    arr = _decode((path, image_size))
    if arr is None:
        return False
    fd = os.open(cache, os.O_WRONLY)
    try:
        os.pwrite(fd, arr.tobytes(), at)
    finally:
        os.close(fd)
    return True


def decode_in_order(files, image_size, order, count, progress=None):
    """Decode ``files[i]`` for the indices ``i`` of ``order`` until ``count`` are readable, in
    memory, writing nothing. Returns (a list of uint8 arrays (3, S, S), their indices).
    ``progress(total)`` makes a bar (e.g. tqdm) that is advanced by each readable image."""
    rows, picked = [], []
    with progress_bar(progress, count) as bar:
        for i in order:
            arr = _decode((files[i], image_size))
            if arr is not None:
                rows.append(arr)
                picked.append(int(i))
                if bar is not None:
                    bar.update(1)
                if len(rows) == count:
                    break
    return rows, picked


def cache_location(root, image_size):
    """The folder that holds the cache of ``root`` and the name prefix of its files."""
    root = Path(root).resolve()
    return root.parent, f".{root.name}.faces{image_size}-"


CACHE_NAME = re.compile(r"\.(.+)\.faces\d+-[0-9a-f]{16}\.(npy|json)")  # a finished one


def drop_caches_of_gone_folders(folder):
    """Remove the decoded caches in ``folder`` whose data folder is no longer beside them
    (renamed, moved or deleted): nothing would read them again, and each holds its whole set
    uncompressed (1.4 GB for the article's 50,000 faces), hidden. A link of that name to
    nowhere keeps its cache: what it points to may come back. Says what it removed."""
    gone, freed = set(), 0
    for path in folder.glob(".*.faces*-*"):
        match = CACHE_NAME.fullmatch(path.name)
        if not match or os.path.lexists(folder / match[1]):
            continue
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError:  # another user's, or removed meanwhile: stays, or is gone anyway
            continue
        gone.add(folder / match[1])
        freed += size
    if gone:
        print(f"note: removed the decoded-image cache{'s' if len(gone) > 1 else ''} of "
              f"{listed(map(str, sorted(gone)))} ({freed / 1e6:,.1f} MB): "
              f"{'that folder is' if len(gone) == 1 else 'those folders are'} gone", flush=True)


def cache_places(root, image_size):
    """Where the cache of ``root`` may be, in the order tried: beside the folder, then, where
    its parent takes no files (a shared, read-only data set), the user's cache folder
    (~/.cache/animegan/faces/), under a name made of the folder's full path, so that later
    runs find it there and a rebuild replaces it."""
    resolved = Path(root).resolve()
    places = [cache_location(root, image_size)]
    base = cache_home()
    if base is None:  # no such place
        return places
    tag = hashlib.sha1(os.fsencode(resolved)).hexdigest()[:8]
    return places + [(base / "faces", f"{resolved.name}-{tag}.faces{image_size}-")]


def cache_home():
    """The project's folder in the user's cache: $XDG_CACHE_HOME/animegan, or
    ~/.cache/animegan where it is unset or relative (XDG says to ignore a relative one: it
    named a new folder wherever a command ran); None where the user has no home folder (no
    HOME and no passwd entry: a bare container)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        try:
            base = Path.home() / ".cache"
        except RuntimeError:
            return None
    return Path(base) / "animegan"


def cache_key(root, files, image_size):
    """A digest of the file list, sizes, modification and change times: any change gives
    another key. (A file replaced by one of the same size with its old modification time
    kept, as cp -p, rsync -t or an unzip do, changes only the change time: the old
    pixels were reused without a word.)"""
    h = hashlib.sha1(f"v{CACHE_VERSION} {image_size}".encode())
    for p in files:
        try:
            st = p.stat()
            mark = f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
        except OSError:  # a link to nothing: skipped as unreadable, like a broken image
            mark = "missing"
        # a name in another encoding (a Shift-JIS zip unpacked here) as its bytes: encoding it
        # as UTF-8 was a UnicodeEncodeError traceback before any training
        h.update(os.fsencode(p.relative_to(root)) + f"\0{mark}\n".encode())
    return h.hexdigest()[:16]


def build_cache(root, image_size=96, progress=None, workers=None, files=None):
    """Decode, Resize and CenterCrop every image under ``root`` once, into a .npy file.

    Returns (uint8 array (N, 3, S, S) memory-mapped from that file, list of unreadable
    paths). The file is hidden beside the folder (``data-toy`` -> ``.data-toy.faces96-KEY.npy``),
    not in it: the book's ImageFolder would take a subfolder for a class. Images are written
    one by one as they are decoded, so building needs no more memory for a million images
    than for a hundred. Where the folder's parent takes no files, it goes to the user's cache
    folder (``cache_places``), and where that takes none either, to a temporary folder
    removed when the process ends.
    """
    root = Path(root)
    files = files or list_images(root)
    key = cache_key(root, files, image_size)
    for cache_dir, prefix in cache_places(root, image_size):
        stem = f"{prefix}{key}"
        array_path, meta_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
        if array_path.is_file() and meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                found = np.load(array_path, mmap_mode="r")[:meta["count"]], meta["skipped"]
            except (ValueError, OSError, KeyError, TypeError):  # TypeError: a list or null
                found = None  # where the JSON's dict was; a damaged cache is rebuilt below
            if found is not None:
                _drop(p for p in cache_dir.glob(f"{glob.escape(prefix)}*.tmp")
                      if not _in_progress(p))
                return found

    drop_caches_of_gone_folders(cache_location(root, image_size)[0])  # room for this one
    for cache_dir, prefix in cache_places(root, image_size):  # and builds killed outright
        _drop(p for p in cache_dir.glob(f"{glob.escape(prefix)}*.tmp") if not _in_progress(p))
    shape = (len(files), 3, image_size, image_size)
    row = 3 * image_size * image_size
    size = sized(len(files) * row)  # a hidden file of up to 1.4 GB: where the disk space went
    refused, limited, lasting = None, False, "later runs reuse it"
    for cache_dir, prefix in cache_places(root, image_size):
        stem = f"{prefix}{key}"
        array_path, meta_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
        # this process's own file: another process building the same cache writes its own
        tmp = array_path.with_name(f"{array_path.name}.{_builder()}.tmp")
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            offset = _create_npy(tmp, shape)
            break
        except OSError as e:
            refused, limited = refused or e, limited or e.errno == errno.EFBIG
    else:  # nowhere that lasts: a folder of its own, removed when this process ends
        if limited:  # a file size limit at any place: no folder takes it
            raise UserError(f"the decoded-image cache {array_path} ({size}) is over the "
                            f"largest file this shell lets a program write (ulimit -f) or its "
                            f"file system takes: raise that limit, or pass --cache=False "
                            f"(decodes the images as it goes)")
        cache_dir, lasting = Path(tempfile.mkdtemp(prefix="facecache-")), "for this run only"
        atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)
        array_path, meta_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
        tmp = array_path.with_name(f"{array_path.name}.{_builder()}.tmp")
        offset = _create_npy(tmp, shape)
    if refused:
        print(f"note: cannot write the decoded-image cache beside {root} ({refused.strerror}); "
              f"using {cache_dir} ({lasting}, {size})", flush=True)
    else:
        print(f"decoding {counted(len(files), 'image')} once into {array_path} ({size}), "
              f"which later runs reuse", flush=True)
    count, skipped = 0, []
    # each image written at its own row by whoever decodes it; a row after a broken file
    # moves up here, in order, to where it belongs (the rows before it are done)
    jobs = [(p, image_size, str(tmp), offset + i * row) for i, p in enumerate(files)]
    workers = workers or os.cpu_count() or 1
    meta_tmp = meta_path.with_name(f"{meta_path.name}.{_builder()}.tmp")
    try:
        start = start_pool(workers) if workers > 1 and len(jobs) > 256 else nullcontext()
        with open(tmp, "r+b") as out, start as pool:
            decoded = pool.imap(_decode_into, jobs, chunksize=64) if pool else \
                map(_decode_into, jobs)
            with progress_bar(progress, decoded, total=len(jobs)) as bar:
                decoded = decoded if bar is None else bar
                for i, (readable, path) in enumerate(zip(decoded, files)):  # decoded first:
                    if not readable:  # its bar reaches the end
                        skipped.append(str(path))
                        continue
                    if count < i:
                        os.pwrite(out.fileno(), os.pread(out.fileno(), row, offset + i * row),
                                  offset + count * row)
                    count += 1
            out.flush()
            os.fsync(out.fileno())
        if count == 0:
            raise _none_readable(files, root)
        # in here: a disk the pixels filled fails at this small file (the pixels stayed)
        meta_tmp.write_text(json.dumps({"count": count, "skipped": skipped}))
    except BaseException as e:  # Ctrl-C, a full disk, ...: no half-built cache stays behind
        tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)
        # named, with the way out; a disk quota's too (it said "cannot write or read: Disk
        # quota exceeded", naming neither the cache nor --cache=False)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            full = "no space left on the disk" if e.errno == errno.ENOSPC else \
                "no room left within the disk quota"
            raise UserError(f"{full} for the decoded-image cache "
                            f"{array_path} ({size} for {counted(len(files), 'image')}): "
                            f"free some there, or pass --cache=False (decodes the "
                            f"images as it goes)") from None
        raise
    os.replace(tmp, array_path)
    os.replace(meta_tmp, meta_path)
    built = np.load(array_path, mmap_mode="r")[:count]  # readers open it by this name
    # one cache per folder and size; another process's copy of this one, or a build still
    # under way, stays
    # (escaped: the cache of faces[12] took .faces1.faces96-... for its own, and removed it)
    _drop(p for p in cache_dir.glob(f"{glob.escape(prefix)}*")
          if (not p.name.startswith(f"{stem}.") or p.name.endswith(".tmp"))
          and not _in_progress(p))
    return built, skipped


def _builder():
    """This build's part of a temporary file's name: host, process and a random part, so
    builds in other processes, containers (the same pid) or hosts never share a file."""
    return f"{_host()}-{os.getpid()}-{os.urandom(4).hex()}"


def _host():
    """This host's name as it stands in a temporary file's name (no dots: they split it)."""
    return socket.gethostname().replace(".", "_")


def _drop(paths):
    """Remove what can be removed: a file another user owns stays, and costs nothing."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _in_progress(path):
    """Whether ``path`` is a temporary file of a build still under way: a living process of
    this host, or, from another host (whose processes cannot be asked), less than a day old.
    Anything else was left by an interrupted build."""
    parts = path.name.split(".")
    if len(parts) < 3 or parts[-1] != "tmp":
        return False
    fields = parts[-2].rsplit("-", 2)  # HOST-PID-RANDOM
    if len(fields) != 3 or not fields[1].isdigit():
        return False  # not one of ours (or the older NAME.tmp): left over
    host, pid = fields[0], fields[1]
    if host != _host():
        try:
            return time.time() - path.stat().st_mtime < 86400
        except OSError:
            return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _create_npy(path, shape):
    """An empty (sparse) uint8 .npy file of ``shape``; returns where its data starts."""
    try:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    except OSError as e:  # numpy's write of the last byte names no file
        # its header was written before the size was refused (ulimit -f): the next build
        # there sweeps it, but --cache=False, the way out the line gives, builds none
        Path(path).unlink(missing_ok=True)
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from None
    offset = array.offset
    del array
    return offset


def normalise(batch_uint8):
    """uint8 (N, 3, S, S) -> float in [-1, 1], the same arithmetic as ToTensor + Normalize."""
    return batch_uint8.float().div(255).sub_(0.5).div_(0.5)


class _FileRows:
    """Rows of a memory-mapped .npy file, read with pread.

    Reading through the mapping would make every page touched part of this process's
    resident memory; pread leaves them in the kernel's page cache, which gives them back
    under pressure. So a cache larger than RAM trains with a bounded footprint.
    """

    def __init__(self, memmap):
        self.fd = os.open(memmap.filename, os.O_RDONLY)
        self.offset, self.shape = memmap.offset, memmap.shape[1:]
        self.row = int(np.prod(self.shape))

    def __getitem__(self, indices):
        out = np.empty((len(indices),) + self.shape, dtype=np.uint8)
        for j, i in enumerate(indices):
            out[j] = np.frombuffer(os.pread(self.fd, self.row, self.offset + int(i) * self.row),
                                   np.uint8).reshape(self.shape)
        return out

    def __del__(self):
        os.close(self.fd)


class CachedBatches:
    """Batches sliced from the decoded cache, normalised on the device.

    The same interface as FolderBatches. On CUDA the whole array moves to the GPU when it
    fits in half of the free memory; otherwise rows are read from the file per batch.
    """

    def __init__(self, array, batch_size, device, skipped=()):
        self.batch_size, self.device = batch_size, torch.device(device)
        self.count, self.skipped = len(array), set(skipped)
        file_backed = isinstance(array, np.memmap) and array.filename
        self.rows = _FileRows(array) if file_backed else array
        self.on_device = None
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if array.nbytes < free * 0.5:
                self.on_device = torch.empty(array.shape, dtype=torch.uint8, device=self.device)
                for i in range(0, len(array), 4096):  # in chunks: never all of it in host RAM
                    chunk = np.ascontiguousarray(array[i:i + 4096])
                    self.on_device[i:i + len(chunk)] = torch.from_numpy(chunk).to(self.device)

    def __len__(self):
        return self.count // self.batch_size

    def batches(self, perm, start=0):
        for i in range(start, len(perm) // self.batch_size):
            idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
            if self.on_device is not None:
                batch = self.on_device[idx.to(self.device)]
            else:
                batch = torch.from_numpy(self.rows[idx.numpy()]).to(self.device, non_blocking=True)
            yield normalise(batch)


def _none_readable(files, root):
    return UserError(f"none of the {len(files)} image files in {root} could be read: check "
                     f"that they are real images (e.g. {files[0].name})")


def _enough(count, opt, what="image files"):
    if count < opt.batch_size:
        raise UserError(f"{opt.data_path} has {count} {what}, fewer than one batch: "
                        f"lower --batch-size (now {opt.batch_size}) to {count} or less")


def cached_batches(opt, device, progress=None):
    files = list_images(opt.data_path)
    say_folders(opt.data_path, files)
    # counted once decoded, not before: three broken files at batch 16 were sent to lower
    # --batch-size, only to learn then that none could be read
    array, skipped = build_cache(opt.data_path, opt.image_size, progress, files=files)
    _enough(len(array), opt, "usable images")
    return CachedBatches(array, opt.batch_size, device, skipped)
