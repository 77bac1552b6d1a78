"""One base class for every error a user can cause (exit 2), another for a method's failure (exit 1)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import osrbench
from osrbench import cli
from osrbench.errors import EXIT_FAILED, EXIT_USER, MethodFailed, UserError, one_line

#: Exceptions that are neither: the conformance suite's findings are pytest assertions; an
#: interrupt (exit 130) is a KeyboardInterrupt that says what it kept.
NOT_CLI_ERRORS = {"osrbench.testing.contracts.ConformanceError", "osrbench.testing.contracts._Skip", "osrbench.errors.Interrupted"}


def _exception_classes():
    for info in pkgutil.walk_packages(osrbench.__path__, "osrbench."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                yield f"{info.name}.{name}", obj


def test_every_osrbench_exception_is_a_user_error_or_a_method_failure():
    classes = dict(_exception_classes())
    assert len(classes) >= 15  # the walk really found the package's exceptions
    stray = [n for n, c in classes.items()
             if n not in NOT_CLI_ERRORS and not issubclass(c, (UserError, MethodFailed))]
    assert stray == []
    both = [n for n, c in classes.items() if issubclass(c, UserError) and issubclass(c, MethodFailed)]
    assert both == []


@pytest.mark.parametrize(("exc", "code"), [(UserError("bad 'x'"), EXIT_USER), (MethodFailed("boom"), EXIT_FAILED)])
def test_main_maps_the_two_kinds_to_their_exit_codes(monkeypatch, capsys, exc, code):
    def fail(args):
        raise exc

    monkeypatch.setattr(cli, "build_parser", lambda: _parser(fail))
    assert cli.main(["x"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("error: bad 'x'" in err if code == EXIT_USER else "run failed: boom" in err)


def _parser(func):
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.set_defaults(func=func)
    return p


def test_one_line_keeps_the_first_line_without_keyerror_quotes():
    assert one_line(KeyError("unknown method 'x'")) == "unknown method 'x'"
    assert one_line(UserError("first\nsecond")) == "first"
    assert one_line(UserError("")) == "UserError"
