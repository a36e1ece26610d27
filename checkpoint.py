"""Writing and reading checkpoints and images, atomically and safely.

- ``netg_{epoch}.pth`` / ``netd_{epoch}.pth`` are bare ``state_dict``s in the book's format
  (keys ``main.N.*``), so they load into the book's code and the book's files load here.
- Every file is written to a temporary file in the same folder, flushed to disk and renamed
  into place: a crash or a full disk never leaves a half-written file or destroys the previous
  good one.
- Every load uses ``weights_only=True``: a file that would run code when unpickled is refused.
- Wherever G or D is loaded, weights holding NaN or inf (saved by a run that diverged) are
  refused, and the ``module.``/``_orig_mod.`` before every key of a file saved from
  DataParallel, DistributedDataParallel or torch.compile is dropped.
"""
import contextlib
import errno
import functools
import glob
import io
import os
import pickle
import signal
import sys
import tempfile
import threading
import warnings
import zipfile
from pathlib import Path

import torch
from PIL import Image

from config import Config
from ema import measure_batchnorm
from errors import (DiskFull, UserError, counted, is_loop, link_fault, program, running,
                    special_kind, stop_signals, stop_wins)
from model import NetD, NetG


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's files are private (0600)


NAME_MAX = 255  # the most bytes a file name may have (Linux's file systems, macOS)
RANDOM_LETTERS = 8  # what mkstemp puts between its prefix and suffix


def _temporary_prefix(name):
    """``.NAME.``, how the temporary file of ``name`` begins. A name so long that the
    temporary one would pass NAME_MAX loses letters from its start: it keeps its end, the
    suffix (``.pth``, ``.png``) that train's globs for stale temporaries look for."""
    room = NAME_MAX - len("..") - RANDOM_LETTERS - len(".tmp")
    while len(os.fsencode(name)) > room:
        name = name[1:]
    return f".{name}."


def _defer_stops():
    """Put off Ctrl-C, SIGTERM and a hang-up: each that comes is noted, not acted on, until
    ``_resume_stops``. (Blocking them would not do: a process-directed signal then goes to
    another of the process's threads, torch's among them, and still interrupts this one.)
    Returns what ``_resume_stops`` needs; None outside the main thread, where no handler
    runs."""
    if threading.current_thread() is not threading.main_thread():
        return None
    came, kept = [], {}
    try:
        for sig in stop_signals():
            kept[sig] = signal.getsignal(sig)  # noted first: put back below whatever comes
            signal.signal(sig, lambda signum, frame: came.append(signum))
    except BaseException:  # a stop that came while they were swapped: all go back as they were
        _resume_stops((kept, []))
        raise
    return kept, came


def _resume_stops(deferred):
    """Put the handlers back and act on the stops that came meanwhile, in their order."""
    if deferred is None:
        return
    kept, came = deferred
    left = list(kept.items())
    try:
        while left:
            signal.signal(*left[0])
            left.pop(0)
    finally:  # a stop that acted on a handler already back: the others go back too
        for sig, handler in left:
            signal.signal(sig, handler)
    for sig in came:
        signal.raise_signal(sig)


@contextlib.contextmanager
def stops_put_off():
    """Ctrl-C, SIGTERM and a hang-up that come inside the ``with`` act at its end: a file
    written inside it and the note of it (a manifest's row) are both done, or neither."""
    deferred = _defer_stops()
    try:
        yield
    finally:
        _resume_stops(deferred)


def write_target(path):
    """The file that writing ``path`` replaces: the one a symbolic link leads to (the link
    stays; renaming onto it replaced the link with a file). A device, a named pipe or a
    socket there is refused: renaming onto it replaced it (``/dev/null`` became a PNG)."""
    path = Path(path)
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        # a link to a file to be made is fine where its folder is; one into a disk not
        # mounted made the folders and hid the file under them
        if not path.exists() and (is_loop(path) or not target.parent.is_dir()):
            raise UserError(f"{link_fault(path, repr(str(path)), unmounted=True)}: point it "
                            f"at a file, or name another path")
        path = target
    kind = special_kind(path)
    if kind:
        raise UserError(f"cannot write {str(path)!r}: it is {kind}, not a file: name a file")
    return path


def _atomic_write(path, write):
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` (or the file it
    links to). A stop (Ctrl-C, SIGTERM) while the temporary file is made waits until the
    clean-up below would remove it: between its creation and the ``try``, it was left
    behind."""
    path = write_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = held = None
    try:
        with stops_put_off():  # a stop that comes meanwhile acts here, where the file is removed
            fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path.name), suffix=".tmp",
                                       dir=path.parent)
            held = _hold(fd)  # (drop_stale: a write under way)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        try:
            os.replace(tmp, path)
        except OSError as e:  # it named the temporary file, which the user never asked for
            raise OSError(e.errno, e.strerror, str(path)) from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path) from None
        if tmp is None or e.filename in (None, tmp):  # a write to the open file names none
            # (a file size limit's "File too large" said no file at all); mkstemp's, a
            # temporary name never made (the folder made read-only or immutable meanwhile)
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    finally:
        if held is not None:
            os.close(held)  # and with it the lock
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _hold(fd):
    """Lock the open temporary file ``fd`` for as long as it stays open (returned): the
    process's own lock, gone with it however it ends (a kill -9 too). Closed, and None,
    where there are no such locks (Windows, some network disks)."""
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd
    except (ImportError, OSError):
        os.close(fd)
        return None


def drop_stale(path):
    """Remove the temporary files of earlier writes of ``path`` that a kill -9 or a power
    cut left beside it (a half-written grid, hidden, for good: no rerun removed it); one that
    a process writing it now holds locked stays."""
    try:
        path = write_target(path)  # (beside the file a link leads to, as they are written)
    except UserError:  # said by the write itself
        return
    pattern = glob.escape(_temporary_prefix(path.name)) + "?" * RANDOM_LETTERS + ".tmp"
    try:
        import fcntl
        found = list(path.parent.glob(pattern))
    except (ImportError, OSError):  # no locks to tell a write under way; a folder not there
        return
    for stale in found:
        try:
            fd = os.open(stale, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(stale)
        except OSError:  # being written now (BlockingIOError), or not ours to remove
            pass
        finally:
            os.close(fd)


HOLDER = ".held-by"  # in a folder held_folder holds: "PID COMMAND", the process holding it


@contextlib.contextmanager
def held_folder(folder, busy, doing):
    """Hold ``folder`` (made where it is not there) while a command checks it and writes
    there: a lock on the folder itself, which the system drops however the process ends.
    The holder names itself in the folder's HOLDER file, its pid and ``doing`` (its command),
    until it ends. Where another process holds it, ``busy(fd, holder)`` says what to do, with
    ``holder`` the pid and command of that process, or None where it has not named itself
    yet (it has just taken the lock; the note there is a killed run's): raise the command's
    refusal, return True once it has waited for the lock (a blocking flock on ``fd``), or
    False to try again. Unguarded where the folder cannot be read or locked. The folders made
    for it go again, still empty, where the work fails: a refusal leaves no trace."""
    import fcntl
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(folder, os.O_RDONLY)
        except FileNotFoundError:  # removed as it was opened (a run refused there): again
            continue
        except PermissionError:  # a folder one may write in but not read: unguarded
            fd = None
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                waited = busy(fd, _holder(folder))
            except BaseException:
                os.close(fd)
                raise
            if not waited:
                os.close(fd)
                continue
        except OSError:  # a file system that cannot lock it (ENOLCK, EBADF, ...): unguarded
            break
        try:  # the folder locked is the one named (not one removed meanwhile)
            if os.path.samestat(os.fstat(fd), os.stat(folder)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    note = _named(folder, doing) if fd is not None else None
    try:
        yield
    except BaseException:
        _unnamed(note)
        for path in made:  # those still empty (a file of this run's or another's keeps it)
            try:
                path.rmdir()
            except OSError:
                break
        raise
    finally:
        _unnamed(note)
        if fd is not None:
            os.close(fd)


def _named(folder, doing):
    """``folder``'s HOLDER written whole (renamed into place), naming this process and
    ``doing``: its path, or None where the folder takes no file (the command's own write
    there says why)."""
    path = folder / HOLDER
    tmp = folder / f"{HOLDER}.{os.getpid()}.tmp"
    try:
        tmp.write_text(f"{os.getpid()} {doing}\n")
        os.replace(tmp, path)
        return path
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return None


def _unnamed(note):
    if note is not None:
        with contextlib.suppress(OSError):
            note.unlink(missing_ok=True)


def _holder(folder):
    """The pid and command that ``folder``'s HOLDER names, where that process lives; else
    None (no note yet, or a killed run's)."""
    try:
        pid, _, doing = (folder / HOLDER).read_text().strip().partition(" ")
    except (OSError, UnicodeDecodeError):
        return None
    return (int(pid), doing) if pid.isdigit() and running(int(pid)) else None


def save(obj, path):
    """torch.save ``obj`` to ``path`` atomically. Serialised in memory first: given a path,
    torch names the records inside after the file (the temporary one here, a random name),
    so the same weights saved twice made two different files; and its own writer, cut short
    by a full disk or a file size limit, said only "unexpected pos" (a traceback)."""
    buf = io.BytesIO()
    try:
        with stop_wins():  # a Ctrl-C in torch's writer is the Ctrl-C, not its error
            torch.save(obj, buf)
    except RuntimeError as e:  # the buffer refused to grow (ulimit -v): torch's writer then
        if isinstance(e.__context__, MemoryError):  # said "unexpected pos", a traceback
            raise MemoryError from None
        raise
    save_bytes(buf.getbuffer(), path)


def to_uint8(faces):
    """Faces in [-1, 1] -> uint8 pixels 0..255, rounded (the same shape)."""
    return ((faces.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


ICONS = {"ICO", "ICNS"}  # saved at the icon sizes of their own: a 4-face grid came out 64x16


def image_format(path):
    """PIL's format for an image file named ``path`` (PNG when it has no suffix), or None
    when PIL cannot write an RGB picture under that suffix (some formats it knows cannot),
    or not at its own size (icons)."""
    suffix = Path(path).suffix.lower() or ".png"
    fmt = Image.registered_extensions().get(suffix)
    return fmt if fmt in Image.SAVE and fmt not in ICONS and _writes_rgb(fmt) else None


@functools.lru_cache(maxsize=None)
def _writes_rgb(fmt):
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=fmt)
        return True
    except Exception:  # noqa: BLE001 - any refusal means the format cannot take our grids
        return False


SIDE, GAP = 96, 2  # the faces' side in a grid unless told (the book's), the gaps between them


def grid_size(count, nrow=8, side=SIDE, gap=GAP):
    """(width, height) in pixels of ``tile``'s grid of ``count`` square faces of ``side``
    pixels, ``nrow`` a row: ``gap`` pixels around and between them, none for a single face."""
    if count == 1:
        return side, side
    across = min(nrow, count)
    return across * (side + gap) + gap, -(-count // across) * (side + gap) + gap


def grid_places(count, nrow=8, side=SIDE, gap=GAP):
    """(top, left) in pixels of each of the ``count`` faces in ``tile``'s bordered grid, in
    order (a lone face, which ``tile`` draws with no border, is the caller's to place)."""
    across = min(nrow, count)
    return [(gap + (k // across) * (side + gap), gap + (k % across) * (side + gap))
            for k in range(count)]


def tile(pixels, nrow=8, gap=GAP):
    """uint8 square faces (N, 3, S, S) laid out ``nrow`` to a row on black, with ``gap``
    pixels around and between them, as the article's save_image lays its grids (a single
    face alone, with no border). Returns (3, height, width)."""
    count, channels, side, _ = pixels.shape
    if count == 1:
        return pixels[0]
    width, height = grid_size(count, nrow, side, gap)
    grid = pixels.new_zeros(channels, height, width)
    for (top, left), face in zip(grid_places(count, nrow, side, gap), pixels):
        grid[:, top:top + side, left:left + side] = face
    return grid


def save_grid(images, path, nrow=8):
    """Save images in [-1, 1] as one grid image (2-pixel black gaps, as torchvision's
    save_image), atomically; the format follows the suffix. Rounded as each face's own PNG
    is, so a face in a grid has the very pixels of the same face saved alone."""
    fmt = image_format(path)
    # a thousand faces at a time: the rounding's float steps over all of them at once took
    # three times the memory of the faces themselves
    faces = images.detach().float().cpu()
    grid = tile(torch.cat([to_uint8(part) for part in faces.split(1024)]), nrow=nrow)
    picture = Image.fromarray(grid.permute(1, 2, 0).numpy(), "RGB")
    save_bytes(encoded(picture, fmt), path)


def encoded(picture, fmt, **options):
    """``picture`` as the bytes of an image file in ``fmt``. Written to a file by PIL, some
    encoders (JPEG, BMP, TIFF) wrote through the file descriptor and took no notice of a
    write the disk or a file size limit cut short: the short file passed as saved."""
    buf = io.BytesIO()
    picture.save(buf, format=fmt, **options)
    return buf.getvalue()


# how torch's files begin: a zip archive (torch.save since 1.6) or a bare pickle (older)
CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


def _what_is_there(path):
    """What the folder of a missing checkpoint holds instead, in a few words: the user can
    pick one (or see that the folder itself is not there)."""
    folder = Path(path).parent
    if not folder.is_dir():
        return f": there is no folder {folder}"
    try:
        found = sorted(p.name for p in folder.iterdir() if p.suffix == ".pth")
    except OSError:
        return ""
    if not found:
        return f": {folder} holds no .pth file"
    return f"; {folder} holds {', '.join(found[:4])}{', ...' if len(found) > 4 else ''}"


class Damaged(UserError):
    """A checkpoint file that is there but cannot be used (empty, cut short, another kind of
    file, NaN values). ``what`` says so without the way out, for a caller that knows a
    better one: --resume names the weights saved beside its last.pth."""

    def __init__(self, message, what=None):
        self.what = what or message
        super().__init__(message)


def load(path, device="cpu"):
    """torch.load with weights_only=True, mapping every failure to one clear UserError."""
    kind = special_kind(path)  # opening a named pipe waited for a writer for ever
    if kind:
        raise UserError(f"{path} is {kind}, not a checkpoint file: name a file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if not head:  # a save that never wrote a byte (a full disk, a copy cut short)
            what = f"{path} is empty (0 bytes), not a checkpoint"
            raise Damaged(f"{what}: use another file", what)
        if not head.startswith(CHECKPOINT_MAGIC):  # text, an image, ...
            raise Damaged(f"{path} is not a PyTorch checkpoint (it does not begin like one)")
        with warnings.catch_warnings():  # torch's notes on odd pickle protocols: ours below
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        if Path(path).is_symlink():  # (the folder "holds" the very link that leads nowhere)
            raise UserError(f"no checkpoint at {path}: {link_fault(path, unmounted=True)}") \
                from None
        raise UserError(f"no checkpoint at {path}{_what_is_there(path)}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a checkpoint file") from None
    except PermissionError:
        raise UserError(f"cannot read {path}: permission denied") from None
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # something to import and run, no tensor
            weights = Path(path).with_name(f"{Path(path).stem}_weights.pth")
            raise UserError(f"{path} was refused: it holds Python objects that would run code "
                            f"when loaded, not plain weights (a whole net saved with "
                            f"torch.save(net, ...)?); if you trust it, save its weights alone "
                            f"where its code imports: {program(sys.executable, 'python')} -c "
                            f"\"import torch; torch.save("
                            f"torch.load({str(path)!r}, weights_only=False).state_dict(), "
                            f"{str(weights)!r})\"") from None
        what = (f"{path} is damaged, not a PyTorch checkpoint, or saved with a pickle protocol "
                f"torch's safe loader cannot read")
        raise Damaged(f"{what} (re-save it with torch.save's defaults)", what) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, IndexError,
            OSError) as e:
        # a real I/O error, not a damaged file; but EINVAL is torch's reader seeking before
        # the file's start, where the end of a file cut short (5-50 KB of a 600 KB one) sends it
        if isinstance(e, OSError) and e.errno and e.errno != errno.EINVAL:
            raise
        what = f"{path} is truncated or not a PyTorch checkpoint"  # (it said no more)
        raise Damaged(f"{what}: use another file (copied again, or an earlier one saved "
                      f"beside it)", what) from None


G_KEYS = {"main.0.weight", "main.1.running_mean", "main.12.weight"}
D_KEYS = {"main.0.weight", "main.3.running_mean", "main.11.weight"}
# what DataParallel / DistributedDataParallel and torch.compile put before every key
WRAPPERS = ("module.", "_orig_mod.")


@functools.lru_cache(maxsize=None)
def _book_keys(kind):
    """Every key of the article's ``kind`` ('netg'/'netd'): the same at any width."""
    return frozenset((NetG(1, 1) if kind == "netg" else NetD(1)).state_dict())


@functools.lru_cache(maxsize=None)
def _sle_keys(gates=2):
    """The keys that ``--sle`` adds to G's: its excitation layers (``excite4.*``...); with
    ``gates=3``, those that ``--sle-gates=3`` adds to them (``excite4b.*``)."""
    two = frozenset(NetG(1, 1, sle=True).state_dict()) - _book_keys("netg")
    if gates == 2:
        return two
    return frozenset(NetG(1, 1, True, 3).state_dict()) - two - _book_keys("netg")


def _holds_sle(keys):
    """Whether a G state_dict with ``keys`` was trained with ``--sle`` (has any of its
    gates; _state_dict then asks for all of them)."""
    return not (_sle_keys() | _sle_keys(3)).isdisjoint(keys)


def _sle_gates(keys):
    """How many excitation gates a G state_dict with ``keys`` has: 3 where it has any of
    ``--sle-gates=3``'s third one (_state_dict then asks for all of them), else 2."""
    return 2 if _sle_keys(3).isdisjoint(keys) else 3


def _unwrapped(state):
    """``state`` without the prefix a wrapper put before every one of its keys."""
    while state:
        prefix = next((p for p in WRAPPERS
                       if all(isinstance(k, str) and k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _some(keys):
    """A few of ``keys`` in the book's order, then how many more: "main.3.weight and 4
    more"."""
    def order(key):
        return [(int(part), 0, "") if part.isdigit() else
                (-1, FIELDS.index(part) if part in FIELDS else len(FIELDS), part)
                for part in str(key).split(".")]
    keys = sorted(keys, key=order)
    few = ", ".join(map(str, keys[:3]))
    return f"{few} and {len(keys) - 3} more" if len(keys) > 3 else few


def _wrong_keys(path, kind, missing, unexpected):
    """The UserError for a file of the book's layout with keys missing or too many."""
    said = [f"lacks {counted(len(missing), 'key')} ({_some(missing)})"] if missing else []
    if unexpected:
        said.append(f"has {counted(len(unexpected), 'key')} the article's {kind} has not "
                    f"({_some(unexpected)})")
        them = "that key" if len(unexpected) == 1 else "those keys"
        fix = (f"it was saved from a changed network: delete {them} from it, or use a "
               f"checkpoint of the article's {kind}")
    else:
        fix = "it was saved incomplete or edited: use a checkpoint of the whole network"
    return UserError(f"{path} does not fit the article's {kind}: it {' and '.join(said)}; {fix}")


def _tensors(obj, name=""):
    """(name, tensor) of every tensor in ``obj`` and the dicts inside it."""
    if isinstance(obj, torch.Tensor):
        yield name, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{name}.{key}" if name else str(key))


def _refuse_non_finite(obj, path, fix="use an earlier checkpoint"):
    """A UserError when a floating-point tensor in ``obj`` holds NaN or inf: G would draw
    black squares and training would diverge at once, blamed on the learning rates."""
    floats = [(name, t) for name, t in _tensors(obj) if t.is_floating_point()]
    if floats and not torch.stack([torch.isfinite(t).all() for _, t in floats]).all():
        bad = [name for name, t in floats if not torch.isfinite(t).all()]
        what = (f"{path} holds NaN or infinite values ({_some(bad)}), as a run that diverged "
                f"saves them")
        raise Damaged(f"{what}: {fix}", what)


def _state_dict(obj, path, kind):
    """The state_dict of network ``kind`` ('netg'/'netd') from a bare or full checkpoint."""
    mine, theirs = (G_KEYS, D_KEYS) if kind == "netg" else (D_KEYS, G_KEYS)
    if isinstance(obj, dict) and kind in obj and isinstance(obj[kind], dict):
        obj = obj[kind]  # a full training state (last.pth)
    elif isinstance(obj, dict) and not _all_tensors(obj):
        # saved wrapped, as many scripts do: {"state_dict": weights, "epoch": 5}
        inside = [v for v in obj.values() if _all_tensors(v) and mine <= set(_unwrapped(v))]
        keys = ", ".join(map(str, list(obj)[:5])) + (", ..." if len(obj) > 5 else "")
        if len(inside) > 1:
            raise UserError(f"{path} holds {len(inside)} sets of {kind} weights (its keys: "
                            f"{keys}): save the one to use alone, {kind}.state_dict()")
        if not inside:
            raise UserError(f"{path} holds no {kind} weights (its keys: {keys}): save "
                            f"{kind}.state_dict() itself, as train does")
        obj = inside[0]
    if not _all_tensors(obj):
        raise UserError(f"{path} holds no {kind} weights (it holds a "
                        f"{type(obj).__name__}, not a state_dict): save {kind}.state_dict(), "
                        f"as train does")
    obj = _unwrapped(obj)
    keys = set(obj)
    other = "netd" if kind == "netg" else "netg"
    if not mine <= keys and theirs <= keys:
        role = "discriminator" if other == "netd" else "generator"
        raise UserError(f"{path} holds a {other} ({role}), not a {kind}: --{kind}-path takes "
                        f"a {kind} file such as {kind}_4.pth (were the two swapped?)")
    if not keys & _book_keys(kind):
        raise UserError(f"{path} holds no {kind} weights (its keys are not the book's "
                        f"main.N.* layout)")
    # files from before torch 0.4.1 lack BatchNorm's num_batches_tracked: load_state_dict
    # fills it in (and names it missing from newer files, see _build)
    expected = _book_keys(kind)
    if kind == "netg" and _holds_sle(keys):  # trained with --sle: its gates as well
        expected = expected | _sle_keys() | (_sle_keys(3) if _sle_gates(keys) == 3 else set())
    missing = {k for k in expected - keys if not k.endswith(".num_batches_tracked")}
    unexpected = keys - expected
    if missing or unexpected:
        raise _wrong_keys(path, kind, missing, unexpected)
    _refuse_non_finite(obj, path)
    return obj


def _all_tensors(obj):
    return isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values())


def widths(state, kind, path):
    """The widths a book-format state_dict was trained with: {'nz', 'ngf', 'sle',
    'sle_gates'} (whether it holds ``--sle``'s layers, and how many gates: 3 with
    ``--sle-gates=3``'s, else 2) or {'ndf'}."""
    w = state["main.0.weight"].shape
    if len(w) != 4:
        raise UserError(f"{path}: the {kind} weights' first layer has shape {tuple(w)}, not a "
                        f"convolution's four dimensions: not the article's {kind}; use a "
                        f"checkpoint train saved")
    if kind == "netg":  # ConvTranspose2d(nz, ngf*8, 4, 1, 0): weight (nz, ngf*8, 4, 4)
        return {"nz": w[0], "ngf": w[1] // 8, "sle": _holds_sle(state),
                "sle_gates": _sle_gates(state)}
    return {"ndf": w[0]}  # Conv2d(3, ndf, 5, 3, 1): weight (ndf, 3, 5, 5)


def load_net(path, kind, device="cpu", expect=None):
    """Build NetG/NetD from a checkpoint (bare or full) and load its weights.

    ``expect`` ({'nz', 'ngf', 'sle', 'sle_gates'} or {'ndf'}; a G option left out is off)
    is what the caller's flags say; a file of other widths raises a UserError when ``expect``
    is given, else the file's widths win.
    Returns (net, widths).
    """
    return _build(_state_dict(load(path, device), path, kind), path, kind, device, expect)


def load_drawing_netg(path, device="cpu"):
    """The G that draws faces from ``path``: (net, averaged). A full training state
    (``last.pth``) of a run with ``--ema`` gives its moving average of G, the copy that drew
    the run's sample grids, with BatchNorm statistics of its own weights (measured here when
    a stop saved it between two measurings); any other file gives G."""
    obj = load(path, device)
    average = obj.get("ema") if isinstance(obj, dict) and "format" in obj else None
    if not (isinstance(average, dict) and isinstance(average.get("netg"), dict)):
        return _build(_state_dict(obj, path, "netg"), path, "netg", device)[0], False
    net = _build(_state_dict(average["netg"], path, "netg"), path, "netg", device)[0]
    if not average.get("measured"):
        measure_batchnorm(net)
    return net, True


# G's options whose off values (train's defaults) a message leaves out
OFF = {name: getattr(Config, name) for name in ("sle", "sle_gates")}


def _build(state, path, kind, device, expect=None):
    found = widths(state, kind, path)
    if expect is not None:  # an option the caller leaves out: off
        expect = {**{k: v for k, v in OFF.items() if k in found}, **expect}
    if expect not in (None, found):
        # --sle named only where it is on in one of the two, --sle-gates where it is 3
        shown = [k for k in found if k not in OFF or found[k] != OFF[k] or expect[k] != OFF[k]]
        want = ", ".join(f"{k}={expect[k]}" for k in shown)
        have = ", ".join(f"{k}={found[k]}" for k in shown)
        flags = " ".join(f"--{k.replace('_', '-')}" if v is True else
                         f"--{k.replace('_', '-')}={v}" for k, v in found.items()
                         if expect[k] != v)
        raise UserError(f"{path} was trained with {have}, not {want}: pass {flags}")
    net = NetG(**found) if kind == "netg" else NetD(**found)
    try:
        missing = net.load_state_dict(state, strict=False).missing_keys
    except RuntimeError:
        raise UserError(f"{path} does not fit the article's {kind} (some layers have other "
                        f"shapes)") from None
    if missing:  # num_batches_tracked, in a file whose version says it has them
        raise _wrong_keys(path, kind, missing, [])
    return net.to(device), found


def save_text(text, path):
    """Write a small text file atomically, in UTF-8; a file name in another encoding (in
    skipped_files.txt, say) is written as the bytes it has on disk."""
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8",
                                                         errors="surrogateescape"))


def save_bytes(data, path):
    """Write bytes (an encoded image, say) atomically."""
    _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


STATE_FORMAT = 1
STATE_KEYS = {"format", "epoch", "batch", "step", "netg", "netd", "optimizer_g", "optimizer_d",
              "fixed_noise", "meters", "rng", "options"}
# the tensors of a training state that must be finite: the weights, and Adam's averages (a
# NaN there passed, was saved again at the first save, and the run "diverged" at once with
# any learning rate the message advised)
FINITE = ("netg", "netd", "netd_own", "netd_low", "ema", "optimizer_g", "optimizer_d",
          "fixed_noise")


def load_state(path, device="cpu"):
    """A full training state (``last.pth``) written by train, checked for completeness."""
    state = load(path, device)
    if not isinstance(state, dict) or "format" not in state:
        what = f"{path} is not a full training state (like checkpoints/last.pth)"
        raise Damaged(f"{what}; to start from book-format weights use --netg-path/--netd-path",
                      what)
    if state["format"] != STATE_FORMAT:
        raise Damaged(f"{path} has state format {state['format']}; this version reads format "
                      f"{STATE_FORMAT}")
    missing = STATE_KEYS - set(state)
    if missing:
        raise Damaged(f"{path} is an incomplete training state (no "
                      f"{', '.join(sorted(missing))})")
    wrong = [k for k in ("netg", "netd", "options") if not isinstance(state[k], dict)
             or not state[k]]
    if wrong:
        raise Damaged(f"{path} is a damaged training state (its {', '.join(wrong)} "
                      f"{'is' if len(wrong) == 1 else 'are'} not what train saved)")
    _refuse_non_finite({k: state[k] for k in FINITE if k in state}, path,
                       "it cannot be resumed; start again from an earlier netg_N.pth and "
                       "netd_N.pth with --netg-path and --netd-path")
    return state
