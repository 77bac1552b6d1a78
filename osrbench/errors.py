"""The two kinds of error the command line tells apart.

- :class:`UserError`: something the user can fix (an unknown name, missing data, a bad config value,
  a damaged or foreign file). The CLI prints its message as one line and exits with code 2.
  Every such error in osrbench derives from it.
- :class:`MethodFailed`: a method's own code raised or produced non-finite values. The CLI exits
  with code 1; the traceback is in the run folder's ``error.json``.

This module imports nothing, so any module may raise these.
"""

from __future__ import annotations

EXIT_USER = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix; the message is one line that says what to do."""


class UsageError(UserError):
    """A command-line argument that is not valid."""


class MethodFailed(Exception):
    """The method's own code raised; the traceback is in the run folder's ``error.json``."""

    #: Where in the run it failed (``error.json``'s ``stage``).
    stage = "run"


class NonFiniteLoss(MethodFailed):
    """A loss term or a score became NaN or infinite."""

    stage = "train_step"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept (the last checkpoint, or nothing).

    ``rerun``: the same command continues (it resumes every run: ``compare``, ``sweep``); the CLI
    prints that command after the message.
    """

    def __init__(self, message: str, rerun: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.rerun = rerun


def one_line(exc: BaseException) -> str:
    """An error's message as the CLI prints it: its first line (a KeyError's without the quotes it adds)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__
