"""Running the checks: :func:`run_check` (one, raising on failure) and :func:`check_method` (a report)."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping, Sequence

import torch

from osrbench import plugins
from osrbench.testing.check_engine import _check_engine
from osrbench.testing.check_graphs import _check_graphs
from osrbench.testing.check_runs import _check_determinism, _check_predict, _check_sign, _check_state, _check_train
from osrbench.testing.check_spec import _check_register, _check_spec
from osrbench.testing.check_stages import _check_features, _check_fit
from osrbench.testing.contracts import CHECKS, CheckResult, ConformanceError, ConformanceReport, _Skip
from osrbench.testing.runs import _CACHE, _Session, _suite_environment

_RUNNERS: dict[str, Callable[[_Session], str]] = {
    "register": _check_register,
    "spec": _check_spec,
    "train": _check_train,
    "predict": _check_predict,
    "sign": _check_sign,
    "determinism": _check_determinism,
    "state": _check_state,
    "features": _check_features,
    "fit": _check_fit,
    "graphs": _check_graphs,
    "engine": _check_engine,
}
assert tuple(_RUNNERS) == CHECKS


def _session(name: str, registry: plugins.Plugins | None, device: str | torch.device,
             overrides: Mapping[str, Any] | None) -> _Session:
    key = (name, id(registry) if registry is not None else None, str(torch.device(device)),
           json.dumps(dict(overrides or {}), sort_keys=True, default=repr))
    if key not in _CACHE:
        _CACHE[key] = _Session(name, registry, device, overrides)
    return _CACHE[key]


def _run(s: _Session, check: str) -> CheckResult:
    if check not in _RUNNERS:
        raise ValueError(f"unknown check {check!r} (valid: {', '.join(CHECKS)})")
    t0 = time.perf_counter()
    try:
        with _suite_environment(s.device):
            message = _RUNNERS[check](s)
        status = "passed"
    except ConformanceError as exc:
        status, message = "failed", str(exc)
    except _Skip as exc:
        status, message = "skipped", str(exc)
    return CheckResult(check, status, time.perf_counter() - t0, message)


def run_check(
    name: str,
    check: str,
    *,
    registry: plugins.Plugins | None = None,
    device: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> CheckResult:
    """Run one check of :data:`CHECKS` on method ``name``; raise :class:`ConformanceError` if it fails.

    A check whose prerequisite failed (``predict`` when ``train`` fails) raises too, naming the
    prerequisite. Trained methods are cached between calls (see :func:`clear_cache`).

    :param registry: the plugins to look the method up in (default: the installed ones).
    :param overrides: config overrides for the toy runs (``--set`` keys), e.g. to make a method that
        is slow on CPU smaller.
    """
    __tracebackhide__ = True
    result = _run(_session(name, registry, device, overrides), check)
    if result.status == "failed":
        raise ConformanceError(result.message)
    if result.status == "skipped":
        raise ConformanceError(f"{check}: {result.message}")
    return result


def check_method(
    name: str,
    *,
    registry: plugins.Plugins | None = None,
    device: str | torch.device = "cpu",
    checks: Sequence[str] = CHECKS,
    overrides: Mapping[str, Any] | None = None,
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Run the conformance checks on method ``name`` and return the report.

    With ``raise_on_failure`` (default) a failing check raises :class:`ConformanceError` listing
    every failed check after all of them ran; the report is the exception's ``report`` attribute.
    """
    __tracebackhide__ = True
    s = _session(name, registry, device, overrides)
    report = ConformanceReport(name, str(s.device), [_run(s, c) for c in checks])
    if raise_on_failure and not report.ok:
        failed = report.failures
        lines = [r.message for r in failed] or [f"{r.name}: {r.message}" for r in report.results if not r.ok]
        exc = ConformanceError(f"method {name!r} broke {len(lines)} contract(s):\n  " + "\n  ".join(lines))
        exc.report = report  # type: ignore[attr-defined]
        raise exc
    return report
