"""The one exception type for mistakes a person can fix (bad flag, missing data, wrong file).

``main.py`` prints its message as a single ``error:`` line and exits non-zero, with no
traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the input; the message says what is wrong and what to do."""


class Interrupted(Exception):
    """Training stopped on Ctrl-C or SIGTERM after saving; the message says how to resume."""
