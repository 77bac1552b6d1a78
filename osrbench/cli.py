"""The ``osrbench`` command line: the root parser, :func:`main` and the map from errors to exit codes.

Each command is a module of :mod:`osrbench.commands` that registers its own sub-parser(s).
Errors a user can cause (a path the OS refuses included) end with one line ``osrbench: error: ...``
and exit code 2; a method that
raises ends its run with exit code 1 (its traceback is in the run folder's ``error.json``); an
interrupt ends with 130; a reader that closes stdout early (``osrbench list | head -1``) ends the
command quietly with 141, as a tool killed by SIGPIPE does. Building the parser imports no torch
(``osrbench --help`` is quick).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Callable, Sequence

from osrbench.commands import (compare, completion, evaluate, export, info, leaderboard, new_plugin, report, rescore,
                               run, score, sweep, verify)
from osrbench.commands._options import CommandParser
from osrbench.verify import ALLOW_ENV, allow
from osrbench.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USER, MethodFailed, UserError, one_line

#: The command modules, in the order ``osrbench --help`` lists their commands.
COMMANDS = (run, evaluate, compare, info, report, rescore, verify, score, export, leaderboard, sweep, new_plugin,
            completion)

#: The exit code when stdout is closed before the output is written: 128 + SIGPIPE, what a shell
#: reports for a tool the signal ended (Python ignores SIGPIPE, so it sees BrokenPipeError instead).
EXIT_BROKEN_PIPE = 141


def version_text() -> str:
    """``osrbench --version``: the host's version, then each plugin's distribution and version (a
    plugin that failed to load says so)."""
    import platform

    import osrbench
    from osrbench import plugins

    lines = [f"osrbench {osrbench.__version__} (Python {platform.python_version()})"]
    for info in sorted(plugins.get().infos.values(), key=lambda i: (i.distribution, i.name)):
        error = f" (error: {info.error})" if info.error else ""
        lines.append(f"  {info.name}: {info.distribution} {info.version}{error}")
    return "\n".join(lines)


class _Version(argparse.Action):
    """``--version``, whose text is built only when asked for (it loads the plugins)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kw) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version of osrbench and of each installed plugin, then exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="osrbench", description="Open-set recognition benchmark host.",
        epilog="example: osrbench run --method softmax --dataset digits; osrbench run --method arpl --dataset digits; "
               "osrbench compare softmax arpl (every dataset both ran on). Each command's --help has an example.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def empty_argument(argv: Sequence[str]) -> str | None:
    """The first argument that is empty or blank (``--out ''``, ``--device=``), named; ``None`` when none is.

    Every argument is a name, a number, a path or a list of them; an empty one is always a slip
    (an unset shell variable): taken as given, ``--out ''`` would be the current folder, ``--device ''``
    auto and ``--scorer ''`` every scorer.
    """
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if arg.startswith("--") and eq and not value.strip():
            return f"{flag} is empty"
        if not arg.strip():
            before = argv[i - 1] if i else ""
            return f"{before} is empty" if before.startswith("-") else f"argument {i + 1} is empty"
    return None


def shadow_warning(folder: Path | None = None) -> str | None:
    """The line saying that ``python`` started in ``folder`` (default: here) would import
    ``./osrbench`` instead of this installed osrbench; ``None`` when it would not.

    This command is not affected (a console script does not search its working folder), but
    ``python -m osrbench.testing``, pytest and plugin code started here are: a folder without
    ``__init__.py`` (say, the folder of a clone) becomes an empty namespace package, and every use
    of it fails with errors such as ``module 'osrbench' has no attribute 'View'``.
    """
    import importlib.machinery

    import osrbench

    here = Path.cwd() if folder is None else Path(folder)
    spec = importlib.machinery.PathFinder.find_spec("osrbench", [str(here)])
    if spec is None:
        return None
    if spec.origin is not None and Path(spec.origin).resolve() == Path(osrbench.__file__).resolve():
        return None  # the installed osrbench itself (an editable install run from its clone)
    what = "a folder without __init__.py" if spec.origin is None else "another osrbench package"
    return (f"osrbench: warning: {here / 'osrbench'} is {what}: python, pytest and plugins started in "
            f"{here} import it instead of the installed osrbench (module 'osrbench' has no attribute ...); "
            "run them from another folder")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    shadow = shadow_warning()
    if shadow:
        print(shadow, file=sys.stderr)
    empty = empty_argument(argv)
    if empty:
        print(f"osrbench: error: {empty}; give a value or leave the option out", file=sys.stderr)
        return EXIT_USER
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    before = os.environ.get(ALLOW_ENV)
    if getattr(args, "allow_unverified", False):  # an environment variable: a sweep's workers see it too
        allow()
    try:
        code = func(args)
        sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe would print a traceback
        return code
    except BrokenPipeError:
        # Point stdout at /dev/null so the flush at exit writes nowhere instead of failing again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # a stdout with no file descriptor (captured): nothing to flush at exit
            pass
        return EXIT_BROKEN_PIPE
    except UserError as exc:
        print(f"osrbench: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER
    except OSError as exc:  # a path the OS refuses (a name too long, ...) that no check before caught
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"osrbench: error: {where}{exc.strerror or one_line(exc)}", file=sys.stderr)
        return EXIT_USER
    except MethodFailed as exc:
        print(f"osrbench: run failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:  # a run says what it kept (errors.Interrupted), and what continues it
        again = f"; continue with: {shlex.join(['osrbench', *argv])}" if getattr(exc, "rerun", False) else ""
        print(f"osrbench: {getattr(exc, 'message', 'interrupted')}{again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if before is None:  # this call's flag ends with it (tests call main() many times in one process)
            os.environ.pop(ALLOW_ENV, None)
        else:
            os.environ[ALLOW_ENV] = before


if __name__ == "__main__":
    sys.exit(main())
