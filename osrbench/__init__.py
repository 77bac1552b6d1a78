"""osrbench: an open-set recognition benchmark host.

Methods are plugins; a plugin module marks its hook implementations with
:data:`hookimpl` and is advertised through the ``osrbench`` entry-point group::

    [project.entry-points.osrbench]
    mymethod = "my_package.plugin"

    # my_package/plugin.py
    import osrbench

    @osrbench.hookimpl
    def osrbench_register_methods(register):
        register(osrbench.MethodSpec(name="mine", factory=Mine, defaults={...}))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("osrbench")

# The public types are imported on first use (PEP 562), so that ``import osrbench.metrics`` or
# ``osrbench.protocols`` (and ``osrbench --help``) never pulls in torch.
_LAZY = {
    "Context": "osrbench.method",
    "Method": "osrbench.method",
    "MethodSpec": "osrbench.method",
    "Prediction": "osrbench.method",
    "Features": "osrbench.method",
    "NotApplicable": "osrbench.scoring",
    "ScoreSpec": "osrbench.scoring",
    "View": "osrbench.scoring",
    "DatasetSpec": "osrbench.datasets",
    "OpenSetData": "osrbench.datasets",
    "read_runs": "osrbench.runs",
    "runs_frame": "osrbench.runs",
}

if TYPE_CHECKING:
    from osrbench.datasets import DatasetSpec, OpenSetData
    from osrbench.method import Context, Features, Method, MethodSpec, Prediction
    from osrbench.runs import read_runs, runs_frame
    from osrbench.scoring import NotApplicable, ScoreSpec, View

__all__ = [
    "Context",
    "DatasetSpec",
    "Features",
    "Method",
    "MethodSpec",
    "NotApplicable",
    "OpenSetData",
    "Prediction",
    "ScoreSpec",
    "View",
    "__version__",
    "hookimpl",
    "read_runs",
    "runs_frame",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
