"""The one exception type for mistakes a person can fix (bad flag, missing data, wrong file),
how the commands stop on Ctrl-C, SIGTERM and a hang-up and outlive a terminal or pipe that is
gone, ``counted``, ``listed`` and ``link_fault`` for the words messages use,
``OneLineParser`` for the scripts beside main.py, ``pasted`` for a command a line gives to
paste, and ``no_package`` for a Python without the project's packages.

``main.py`` prints a UserError's message as a single ``error:`` line and exits non-zero, with
no traceback. Everything else is a bug and keeps its traceback.
"""
import argparse
import difflib
import errno
import os
import resource
import shlex
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path


class OneLineParser(argparse.ArgumentParser):
    """argparse for bench.py, visualize.py and experiments/settings.py: a mistake in the flags
    is one line, as every command's (argparse printed its usage above its own line); a flag
    may be spelt with underscores (--batch_size), as main.py takes it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._switches = []  # add_switch's names: --NAME with --noNAME is refused

    def error(self, message):
        self.exit(2, f"error: {message}; see --help\n")

    def parse_args(self, args=None, namespace=None):
        args = [_dashed(a) for a in (sys.argv[1:] if args is None else list(args))]
        # --gpu with --nogpu: main.py refuses the pair, where argparse took the last given
        for name in self._switches:
            yes = any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)
            no = [a.partition("=")[0] for a in args
                  if a.partition("=")[0] in (f"--no{name}", f"--no-{name}")]
            if yes and no:  # named as typed: --no-gpu was shown as --nogpu
                self.exit(2, f"error: --{name} and {no[0]} were both given: pass one of "
                             f"them\n")
        known, extra = self.parse_known_args(args, namespace)
        flags = [a for a in extra if a.startswith("--")]
        if flags:  # the closest spelling, as main.py offers it (argparse listed them bare)
            name = flags[0][2:].partition("=")[0].replace("-", "_")
            valid = [o[2:].replace("-", "_") for o, action in self._option_string_actions.items()
                     if o.startswith("--") and action.help is not argparse.SUPPRESS]
            close = did_you_mean(name, valid)
            if close:
                self.exit(2, f"error: unknown option {flags[0].partition('=')[0]}; did you "
                             f"mean {' or '.join(close)}?\n")
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return known

    def add_switch(self, name, default, help):
        """--NAME, --NAME=true/false and --noNAME, as main.py takes a yes-or-no flag."""
        self._switches.append(name)
        self.add_argument(f"--{name}", nargs="?", const=True, default=default,
                          type=gpu_or_not if name == "gpu" else true_or_false,
                          metavar="{True,False}", help=help)
        self.add_argument(f"--no{name}", f"--no-{name}", dest=name, action=_Negation,
                          nargs="?", const=True, default=default,
                          type=gpu_or_not if name == "gpu" else true_or_false,
                          metavar="{True,False}",
                          help=f"the same as --{name}=false (default: not given)")


class _Negation(argparse.Action):
    """--noNAME and --noNAME=true: NAME false; --noNAME=false takes the flag back, NAME's
    default, as main.py reads them (argparse said "ignored explicit argument 'False'")."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, False if value else self.default)


# words users type for a yes-or-no flag of another name (and their no- forms): --cpu was
# offered --gpu, the very opposite
MEANT = {"cpu": "nogpu", "nocpu": "gpu", "cuda": "gpu", "nocuda": "nogpu",
         "device": ("gpu", "nogpu")}  # torch's word: --device=cpu was offered --d-every


def did_you_mean(name, valid, also=()):
    """The flags (``--x-y`` texts) of ``valid`` (names, ``_`` for ``-``) closest to the unknown
    ``name``: the same name in other capitals, or the flag a word like ``cpu`` means, among
    ``valid`` and ``also`` (names only taken exactly); else all that are equally close (--lr
    named only --lr2, D's rate, for a user after G's); else none."""
    typed = name.lower()
    meant = MEANT.get(typed, typed)
    found = [m for m in ((meant,) if isinstance(meant, str) else meant)
             if m in valid or m in also]
    if found:
        return [f"--{m.replace('_', '-')}" for m in found]
    close = difflib.get_close_matches(typed, list(valid), n=3, cutoff=0.6)
    ratio = [difflib.SequenceMatcher(None, typed, c).ratio() for c in close]
    return sorted(f"--{c.replace('_', '-')}" for c, r in zip(close, ratio) if r == ratio[0])


def _dashed(arg):
    """``--batch_size=4`` as ``--batch-size=4``; anything else as it is."""
    if not arg.startswith("--"):
        return arg
    name, equals, value = arg.partition("=")
    return name.replace("_", "-") + equals + value


def no_space_at_an_end(path, flag):
    """Refuse a path with a space (or a tab, a line break) before or after it, from a paste
    or a quote around too much: "ck " made a folder named with a space, beside the ck/ the
    user meant. One that exists as named is taken, and a space inside ("my faces") is fine."""
    start, end = path[:len(path) - len(path.lstrip())], path[len(path.rstrip()):]
    if not (start or end) or os.path.lexists(os.path.expanduser(path)):
        return
    what = "a space" if (start + end).strip(" ") == "" else "whitespace"
    where = "at both ends" if start and end else "at its start" if start else "at its end"
    raise UserError(f"{flag}: {path!r} has {what} {where}, which would name another path "
                    f"than {path.strip()!r}: remove it")


def yes_or_no(text):
    """A yes-or-no flag's value as written (true, False, yes, 0, ...): True, False, or None
    for anything else (a typo must be an error, not a silent no)."""
    text = str(text).strip().lower()
    return True if text in ("true", "yes", "1") else False if text in ("false", "no", "0") \
        else None


def not_a_device(value):
    """Why --gpu=VALUE is refused, or None: the book's --gpu is yes or no, and --gpu=0 read as
    "no" trained on the CPU for a user after GPU 0."""
    if str(value).strip().isdigit():
        return (f"takes True or False, not a device number ({value}): pass --gpu for CUDA "
                f"(CUDA_VISIBLE_DEVICES=N picks the device), or --nogpu for the CPU")
    return None


def gpu_or_not(text):
    """argparse's type for --gpu: true_or_false, a device number refused."""
    if not_a_device(text):
        raise argparse.ArgumentTypeError(not_a_device(text))
    return true_or_false(text)


def true_or_false(text):
    """argparse's type for a yes-or-no flag."""
    answer = yes_or_no(text)
    if answer is None:
        raise argparse.ArgumentTypeError(f"takes true or false, not {text!r}")
    return answer


def counted(n, noun, plural=None):
    """``n`` and its noun, in the plural unless ``n`` is 1: "1 epoch", "3 batches"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


UNITS = {1e9: "GB", 1e6: "MB", 1e3: "KB"}


def sized(nbytes, apart=None, digits=1):
    """A file's size as a line says it: in GB from 1 GB up, in MB below ("1.8 MB"), in KB
    below 0.1 MB (a disk with 32 KB free "has 0.0 MB free"); with ``apart``, another size
    the line compares it with, in as many digits as tell the two apart (a batch of 221,184
    bytes over a limit of 204,800 was "0.2 MB" over "0.2 MB")."""
    def said(n):
        unit = 1e9 if n >= 1e9 else 1e6 if float(f"{n / 1e3:.{digits}f}") >= 100 else 1e3
        if float(f"{n / unit:.{digits}f}") >= 1000 and unit < 1e9:  # 999.96 MB: "1.0 GB",
            unit *= 1e3  # not "1000.0 MB" beside a "1.0 GB" it was told apart from
        return f"{n / unit:,.{digits}f} {UNITS[unit]}"
    if apart is not None and apart != nbytes and digits < 9 and said(nbytes) == said(apart):
        return sized(nbytes, apart, digits + 1)
    return said(nbytes)


def quoted(path):
    """``path`` as a shell reads it back: a printed command to paste works with spaces too,
    and with bytes that are not UTF-8 or a newline (bash's $'...' with \\xNN: the name as
    Python holds it, with surrogates, named no file; a newline split the line)."""
    text = str(path)
    if not _plain(text):
        return "$'" + "".join(chr(b) if 32 <= b < 127 and chr(b) not in "'\\" else f"\\x{b:02x}"
                              for b in os.fsencode(text)) + "'"
    return shlex.quote(text)


def shown(path):
    """``path`` as a line shows it: as it is, or quoted as the shell reads it back where it
    holds a newline or bytes that are not UTF-8."""
    return str(path) if _plain(str(path)) else quoted(path)


def _plain(text):
    """Whether ``text`` prints as itself on one line: UTF-8, no control characters."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return text.isprintable()


def from_here(path):
    """``path`` from the folder this process was started in (main.py, ../main.py), quoted as
    the shell reads it back, or whole where that climbs more than two folders."""
    try:
        relative = os.path.relpath(path)
    except (OSError, ValueError):  # the folder is gone, or on another drive (Windows)
        return quoted(path)
    return quoted(relative if relative.count("..") <= 2 else os.path.abspath(path))


def pasted(args):
    """`python main.py ARGS` as the user can paste it where the command was started."""
    return f"`{command_line(args)}`"


def command_line(args):
    """python main.py ARGS, named as ``pasted`` names it, without its backticks."""
    python, main = python_and_main()
    return f"{python} {main} {args}"


def python_and_main():
    """This process's Python and main.py, as named from the folder it was started in."""
    return (program(sys.executable, "python"),
            from_here(Path(__file__).resolve().parent / "main.py"))


def running(pid):
    """Whether process ``pid`` is alive (another user's too): a run at work there now."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # (a number no process has)
        return False
    except OSError:  # another user's process (PermissionError), or no way to ask
        return True
    return True


def program(path, name):
    """``name`` where the shell finds this very program by it (a venv activated), else its
    path from here (.venv/bin/python). Paths compared as they are, links not followed: a
    venv's python is a link to the system's, which lacks the venv's packages."""
    found = shutil.which(name)
    if found and os.path.abspath(found) == os.path.abspath(path):
        return name
    return from_here(path)


def no_package(name, script):
    """The line for a package ``name`` that ``script`` (main.py, bench.py, ...) needs and this
    Python lacks: the article's `python main.py ...`, typed with a Python other than the
    venv's, was a ModuleNotFoundError traceback."""
    venv = Path(__file__).resolve().parent / ".venv"
    if Path(sys.prefix).resolve() == venv.resolve():  # the venv itself, half installed
        # as the Makefile installs them (visdom builds only with its setuptools and flags)
        return (f"error: the project's venv ({venv}) has no {name}: install its packages "
                f"again with `rm -f {quoted(venv / '.installed-stamp')} && make venv` in "
                f"{quoted(venv.parent)}")
    named = Path(script).name
    script = from_here(Path(script).resolve())  # named as train's last line names them
    command = f"{from_here(venv / 'bin' / 'python')} {script} ..."
    how = (f"run it with the project's venv: `{command}`" if venv.is_dir() else
           f"make the project's venv with `make venv` in {venv.parent}, then run `{command}`")
    return (f"error: this Python ({sys.executable}) has no {name}, which {named} needs; "
            f"{how} (or `source {from_here(venv / 'bin' / 'activate')}` once, then `python "
            f"{script} ...`" + (" as in the article)" if named == "main.py" else ")"))


def require(script, *names):
    """Stop with ``no_package``'s line and status 2 where this Python cannot import one of
    the packages ``names``: for the scripts that import them only once at work."""
    import importlib.util
    for name in names:
        if importlib.util.find_spec(name) is None:
            print(no_package(name, script), file=sys.stderr)
            sys.exit(2)


def listed(words):
    """Words as a sentence lists them: "a", "a and b", "a, b and c"."""
    words = list(words)
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def is_loop(link):
    """Whether ``link`` is a loop of symbolic links (one that leads back to itself)."""
    try:
        os.stat(link)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def link_fault(link, name=None, unmounted=False):
    """What is wrong with ``link``, a symbolic link that leads nowhere, as words that call it
    ``name`` (default: its path): a loop of links, or a link to a path that does not exist
    (with ``unmounted``, asking whether that is a disk not mounted)."""
    name = link if name is None else name
    if is_loop(link):
        return f"{name} is a loop of symbolic links"
    return (f"{name} is a link to {os.readlink(link)}, which does not exist"
            + (" (a disk not mounted?)" if unmounted else ""))


def special_kind(path):
    """What ``path`` is when it exists but is neither a regular file nor a folder ("a device",
    "a named pipe", "a socket"), as words; None otherwise (a link is followed)."""
    import stat
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


class UserError(Exception):
    """A mistake in the input; the message says what is wrong and what to do."""


class DiskFull(UserError):
    """A file could not be written for lack of space; ``path`` names it. The files before it
    are intact (every save is atomic)."""

    def __init__(self, path):
        self.path = path
        super().__init__(f"disk full while writing {path}: free some space, then run the "
                         f"command again (the files written before it are intact)")


class Interrupted(Exception):
    """Training stopped on Ctrl-C, SIGTERM or a hang-up (``signum``; None: another process of
    a torchrun run got it) after saving; the message says how to resume."""

    def __init__(self, message, signum=None):
        super().__init__(message)
        self.signum = signum


class Terminated(BaseException):
    """SIGTERM where training's own handler is not in charge (a cache being built, a grid
    being drawn): raised wherever the process is, as Ctrl-C's KeyboardInterrupt is, so a file
    being written is removed on the way out."""


_seen = []  # the signals the handlers below raised an exception for, in order
_under_way = []  # stops being acted on: training's save, or main's last line
_held = []  # the held_stops() spans open now


def stop_under_way(signum):
    """A stop by ``signum`` is being acted on (training saves first; main says its line): a
    SIGTERM from now on changes nothing (a scheduler's and a sweep's reach train both)."""
    _under_way.append(signum)


def _raise_terminated(signum, frame):
    # one while a stop's exception unwinds (a first SIGTERM's, a Ctrl-C's), or once a stop is
    # under way, would break into its clean-up; a first whose exception was lost (see
    # raise_if_stopped) is neither, so a second kill still stops the process
    if _under_way or isinstance(sys.exc_info()[1], (Terminated, KeyboardInterrupt)):
        return
    _seen.append(signum)
    if not _held:
        raise Terminated


def _raise_interrupt(signum, frame):
    _seen.append(signum)
    if not _held:
        raise KeyboardInterrupt


@contextmanager
def held_stops(raise_after=True):
    """Ctrl-C, SIGTERM and a hang-up are noted inside, not raised, and raised on the way out
    (unless ``raise_after`` is False, or an exception is already on its way). For code that
    holds locks a worker pool's threads share: an exception raised between a lock's taking
    and the ``with`` that gives it back left it taken, and the pool's thread waiting for it
    for ever (1 Ctrl-C in 30 sent to toyfaces as it began hung it)."""
    _held.append(True)
    try:
        yield
    finally:
        _held.pop()
    if raise_after and not _held:
        raise_if_stopped()


@contextmanager
def progress_bar(make, *args, **kwargs):
    """``make(*args, **kwargs)`` (a progress bar, tqdm's say), made whole and closed however
    the block ends; None with no ``make``. A bar a stop left half made, or caught before its
    own clean-up, was closed only as Python freed it: after main.py's last line, under which
    it then drew itself again (1 Ctrl-C in 150 sent to toyfaces just as its bar first
    showed)."""
    bar = None
    try:
        with held_stops():
            if make:
                bar = make(*args, **kwargs)
        yield bar
    finally:
        getattr(bar, "close", lambda: None)()


def _hung_up(signum, frame):
    _raise_terminated(signal.SIGTERM, frame)  # as a SIGTERM, raise_if_stopped included


def hangup_stops():
    """Whether a hang-up (the terminal closed, an SSH connection lost) is to stop the work as
    SIGTERM does: not where it is ignored (``nohup``, a shell's ``trap '' HUP``), which asks
    for the work to go on without its terminal."""
    return hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) != signal.SIG_IGN


def stop_signals(ctrl_c=True):
    """The signals a process that stops cleanly takes in hand: Ctrl-C (unless ``ctrl_c`` is
    False), SIGTERM, and a hang-up unless it is ignored (see ``hangup_stops``)."""
    return (([signal.SIGINT] if ctrl_c else []) + [signal.SIGTERM]
            + ([signal.SIGHUP] if hangup_stops() else []))


def stop_on_signals():
    """The main process: SIGTERM raises Terminated (by default it ends the process at once,
    leaving temporary files and skipping the clean-up registered for the exit), not again while
    the first is acted on; so does a hang-up, unless it is ignored; Ctrl-C raises
    KeyboardInterrupt as by default. All are remembered for ``raise_if_stopped``."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, _raise_interrupt)
    if hangup_stops():
        signal.signal(signal.SIGHUP, _hung_up)


class _Outliving:
    """sys.stdout or sys.stderr for a process that may outlive its reader: once the terminal
    has hung up (every write then fails with EIO) or the pipe's reader is gone (``| tee`` killed:
    EPIPE), what is written goes to /dev/null and the work goes on. Without it a training left
    running in the background (``&``, then ``exit``) died at its next line, losing
    what it had not saved."""

    GONE = {errno.EIO, errno.EPIPE}

    def __init__(self, stream):
        self._stream = stream

    def _quietly(self, method, *args):
        try:
            return method(*args)
        except OSError as e:
            if e.errno not in self.GONE:
                raise
            try:  # also for what the buffer still holds
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):  # no file descriptor: this line is dropped alone
                pass
            return None

    def write(self, text):
        written = self._quietly(self._stream.write, text)
        return len(text) if written is None else written

    def flush(self):
        self._quietly(self._stream.flush)

    def __getattr__(self, name):  # encoding, fileno, isatty, ...
        return getattr(self._stream, name)


def outlive_reader():
    """The main process: its lines stop, not its work, when no one can read them any more."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _Outliving):
            setattr(sys, name, _Outliving(stream))


def again_interrupts():
    """Ctrl-C from now on raises KeyboardInterrupt at once, remembered as the others are (for
    ``stop_wins``): a second Ctrl-C while training's first is acted on."""
    signal.signal(signal.SIGINT, _raise_interrupt)


@contextmanager
def stop_wins():
    """A Ctrl-C or SIGTERM that C code inside turned into an error of its own is raised as
    the stop it was: torch's writer makes it "RuntimeError: unexpected pos", matplotlib's
    renderer "ValueError: Invalid bounding box" (a second Ctrl-C in a save, 1 in 6, ended in
    that traceback and status 1, where a stop's line and 130 were due)."""
    before = len(_seen)
    try:
        yield
    except Exception as e:
        if isinstance(e.__context__, (KeyboardInterrupt, Terminated)):
            raise e.__context__ from None
        if len(_seen) > before:  # the renderer kept no trace of it but our handler's note
            raise _last_stop() from None
        raise


def _last_stop():
    """The exception of the last stop the handlers noted: Terminated for a SIGTERM (a hang-up
    is noted as one), KeyboardInterrupt for a Ctrl-C."""
    return Terminated() if _seen[-1] == signal.SIGTERM else KeyboardInterrupt()


def raise_if_stopped():
    """Raise again a Ctrl-C or SIGTERM whose exception was lost. CPython drops an exception
    raised inside a finaliser, or inside Python code called from C code that clears its errors
    (a C-level hasattr, say): a Ctrl-C landing there was forgotten and the work went on to its
    end (3 of 60 Ctrl-Cs sent in toyfaces' first 3 seconds). Called where the work can stop
    cleanly: after the imports, and in long loops."""
    if _seen:
        raise _last_stop()


# what the system answers when a place cannot take a file, as opposed to a bug
REFUSALS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
            errno.ENOTDIR, errno.EISDIR, errno.EEXIST}
PATH_FAULTS = {errno.ELOOP: "it is a loop of symbolic links: point it at a real file or folder",
               errno.ENAMETOOLONG: "a name in it is too long for the file system: choose a "
                                   "shorter one"}


def refusal(error):
    """What to tell the user (after "error: ") of an OSError where the system refused a file
    (no space, no permission, read-only, a path no file can have); None for anything else,
    a bug that keeps its traceback."""
    if error.errno in PATH_FAULTS:  # found wherever the path was first used
        return f"cannot use {error.filename or 'a path'}: {PATH_FAULTS[error.errno]}"
    if error.errno in (errno.EMFILE, errno.ENFILE):  # a shared machine's low ulimit -n: a
        # DataLoader's workers or a grid's save met it, and it was a traceback (resource is
        # imported above: with no file left to open, importing it here failed too)
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return (f"too many open files: this shell lets a program open {limit} (ulimit -n); "
                f"raise it (ulimit -n 1024)")
    if error.errno not in REFUSALS:
        return None
    where = f" {error.filename}" if error.filename else ""
    fix = ("it is over the largest file this shell lets a program write (ulimit -f) or its "
           "file system takes: raise that limit or choose another folder"
           if error.errno == errno.EFBIG else "check the path, its permissions and the free "
           "space")
    return f"cannot write or read{where}: {error.strerror}; {fix}"
