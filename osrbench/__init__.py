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

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("osrbench")

from osrbench.method import Context, Method, MethodSpec, Prediction  # noqa: E402
from osrbench.datasets import DatasetSpec, OpenSetData  # noqa: E402

__all__ = [
    "Context",
    "DatasetSpec",
    "Method",
    "MethodSpec",
    "OpenSetData",
    "Prediction",
    "__version__",
    "hookimpl",
]
