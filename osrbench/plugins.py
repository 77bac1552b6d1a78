"""One plugin manager: entry-point loading with per-plugin error capture, allow and block lists.

``OSRBENCH_PLUGINS``: comma-separated entry-point names to load (set but empty = load none).
``OSRBENCH_DISABLE_PLUGINS``: comma-separated entry-point names never to load.
"""

from __future__ import annotations

import difflib
import functools
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from osrbench import builtin, hookspecs
from osrbench.datasets import DatasetSpec
from osrbench.method import MethodSpec
from osrbench.errors import UserError

GROUP = "osrbench"


class UnknownName(UserError, LookupError):
    """A method or dataset name that no loaded plugin provides."""


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    methods: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "traceback"}


def _names(var: str) -> set[str] | None:
    value = os.environ.get(var)
    return None if value is None else {n.strip() for n in value.split(",") if n.strip()}


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class Plugins:
    """The loaded plugins and what they registered (a typed facade over the hook namespace)."""

    def __init__(self, entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.methods: dict[str, MethodSpec] = {}
        self.datasets: dict[str, DatasetSpec] = {}
        self.origin: dict[str, str] = {}  # "method:NAME" / "dataset:NAME" -> plugin name
        self.conflicts: dict[str, list[str]] = {}  # name -> plugins that both registered it
        from osrbench import __version__

        self._add(builtin, PluginInfo("osrbench", "osrbench", __version__))
        if entry_points:
            self._load_entry_points()
        self._call("osrbench_register_datasets", DatasetSpec, self.datasets, "dataset")
        self._call("osrbench_register_methods", MethodSpec, self.methods, "method")

    def _add(self, plugin: object, info: PluginInfo) -> None:
        self.infos[info.name] = info
        self.pm.register(plugin, name=info.name)

    def _load_entry_points(self) -> None:
        allow, block = _names("OSRBENCH_PLUGINS"), _names("OSRBENCH_DISABLE_PLUGINS") or set()
        for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
            if ep.name in self.infos or ep.name in block or (allow is not None and ep.name not in allow):
                continue
            dist = ep.dist
            info = PluginInfo(ep.name, dist.metadata["Name"] if dist else "?", dist.version if dist else "?")
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except BaseException as exc:  # noqa: BLE001 - a broken plugin must never take the host down
                if isinstance(exc, KeyboardInterrupt):
                    raise
                info.error = f"failed to load: {_one_line(exc)}"
                info.traceback = traceback.format_exc()
            self.infos[ep.name] = info

    def _call(self, hook: str, kind: type, into: dict[str, Any], label: str) -> None:
        """Call each plugin's implementation alone, so one failure discards only its own specs.

        Each call goes through pluggy's hook caller (a subset caller holding that one plugin), so
        hook-call monitors and tracing on ``self.pm`` see every call with its arguments.
        """
        everyone = self.pm.get_plugins()
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            info = self.infos[impl.plugin_name]
            alone = self.pm.subset_hook_caller(hook, remove_plugins=[p for p in everyone if p is not impl.plugin])
            got: list[Any] = []

            def register(spec: Any, _got: list[Any] = got) -> None:
                if not isinstance(spec, kind):
                    raise TypeError(f"register() takes a {kind.__name__}, got {type(spec).__name__}")
                if not spec.name or not isinstance(spec.name, str):
                    raise ValueError(f"a {label} needs a non-empty name")
                _got.append(spec)

            try:
                alone(register=register)
            except Exception as exc:  # noqa: BLE001 - recorded and reported, never fatal
                info.error = f"{hook} failed: {_one_line(exc)}"
                info.traceback = traceback.format_exc()
                continue
            for spec in got:
                key = f"{label}:{spec.name}"
                if key in self.origin and self.origin[key] != info.name:
                    first = self.origin[key]
                    self.conflicts[key] = [first, info.name]
                    info.error = f"{label} {spec.name!r} is also registered by plugin {first!r}"
                    continue
                into[spec.name] = spec
                self.origin[key] = info.name
                getattr(info, label + "s").append(spec.name)

    def _lookup(self, label: str, name: str, table: dict[str, Any]) -> Any:
        key = f"{label}:{name}"
        if key in self.conflicts:
            a, b = self.conflicts[key]
            raise UnknownName(
                f"{label} {name!r} is registered by two plugins, {a!r} and {b!r}; "
                f"disable one with OSRBENCH_DISABLE_PLUGINS={b}"
            )
        if name not in table:
            close = difflib.get_close_matches(name, list(table), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownName(f"unknown {label} {name!r} (valid: {', '.join(sorted(table)) or 'none'}){hint}")
        return table[name]

    def method(self, name: str) -> MethodSpec:
        return self._lookup("method", name, self.methods)

    def dataset(self, name: str) -> DatasetSpec:
        return self._lookup("dataset", name, self.datasets)

    def plugin_of(self, label: str, name: str) -> PluginInfo:
        return self.infos[self.origin[f"{label}:{name}"]]


@functools.lru_cache(maxsize=1)
def get() -> Plugins:
    """The process-wide plugins (loaded once, at first use)."""
    return Plugins()


def reset() -> None:
    """Forget the loaded plugins (tests change the environment and reload)."""
    get.cache_clear()


