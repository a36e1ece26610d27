"""The one exception type for mistakes a person can fix (bad flag, missing data, wrong file),
how the commands stop on Ctrl-C and SIGTERM, and ``counted`` for the counts messages name.

``main.py`` prints a UserError's message as a single ``error:`` line and exits non-zero, with
no traceback. Everything else is a bug and keeps its traceback.
"""
import signal


def counted(n, noun, plural=None):
    """``n`` and its noun, in the plural unless ``n`` is 1: "1 epoch", "3 batches"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


class UserError(Exception):
    """A mistake in the input; the message says what is wrong and what to do."""


class Interrupted(Exception):
    """Training stopped on Ctrl-C or SIGTERM after saving; the message says how to resume."""


class Terminated(BaseException):
    """SIGTERM where training's own handler is not in charge (a cache being built, a grid
    being drawn): raised wherever the process is, as Ctrl-C's KeyboardInterrupt is, so a file
    being written is removed on the way out."""


def _raise_terminated(signum, frame):
    raise Terminated


def stop_on_sigterm():
    """The main process: SIGTERM raises Terminated (by default it ends the process at once,
    leaving temporary files and skipping the clean-up registered for the exit)."""
    signal.signal(signal.SIGTERM, _raise_terminated)
