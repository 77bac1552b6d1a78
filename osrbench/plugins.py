"""One plugin manager: entry-point loading with per-plugin error capture, allow and block lists.

``OSRBENCH_PLUGINS``: comma-separated entry-point names to load (set but empty = load none).
``OSRBENCH_DISABLE_PLUGINS``: comma-separated entry-point names never to load.

Built-in plugins are those of the distributions shipped with osrbench
(:data:`BUILTIN_DISTRIBUTIONS`). A method or dataset name, or an entry-point name, that a built-in
plugin and another plugin both claim stays the built-in one's; the other plugin's claim is
refused and reported (``osrbench plugins``, its status). Where no built-in plugin is among the
claimants, the name is unusable and the message names every claimant.

A plugin that fails to import, whose hook raises, or that names a hook wrongly (an
``osrbench_*`` function that is no hook, or a hook function without ``@osrbench.hookimpl``) is
reported in its status, and an unknown method, dataset or scorer name says which plugins had
such a problem: the name may be the one they failed to register.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import re
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from osrbench import builtin, hookspecs
from osrbench.datasets import DatasetSpec
from osrbench.loggers.base import LoggerSpec
from osrbench.method import MethodSpec
from osrbench.scoring import ScoreSpec
from osrbench.errors import UserError

GROUP = "osrbench"

#: The distributions shipped in the osrbench repository: the host (its datasets) and the built-in
#: method plugins. Names one of them registers are never taken over by another plugin.
BUILTIN_DISTRIBUTIONS = frozenset({"osrbench", "osrbench-softmax", "osrbench-arpl", "osrbench-dias", "osrbench-cac",
                                   "osrbench-medaf"})


def normalise_distribution(name: str) -> str:
    """A distribution name as packaging compares them (PEP 503: lowercase, runs of ``-_.`` as ``-``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


class UnknownName(UserError, LookupError):
    """A method or dataset name that no loaded plugin provides."""


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    methods: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    scorers: list[str] = field(default_factory=list)
    loggers: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = field(default=None, repr=False)

    @property
    def builtin(self) -> bool:
        """Shipped with osrbench (:data:`BUILTIN_DISTRIBUTIONS`)."""
        return normalise_distribution(self.distribution) in BUILTIN_DISTRIBUTIONS

    def add_error(self, message: str) -> None:
        self.error = message if not self.error else f"{self.error}; {message}"

    def as_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items() if k != "traceback"}, "builtin": self.builtin}


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
        self.scorers: dict[str, ScoreSpec] = {}
        self.loggers: dict[str, LoggerSpec] = {}
        self.origin: dict[str, str] = {}  # "method:NAME" / "dataset:NAME" -> plugin name
        self.conflicts: dict[str, list[str]] = {}  # "method:NAME" -> plugins that all registered it, none built in
        self.refused: dict[str, list[str]] = {}  # "method:NAME" -> plugins refused it (a built-in one has it)
        # (label or None for any, problem): what may have kept a plugin from registering a name (_lookup says it)
        self.broken: list[tuple[str | None, str]] = []
        self.hooks = sorted(n for n, c in vars(self.pm.hook).items() if not n.startswith("_") and c.has_spec())
        from osrbench import __version__

        self._add(builtin, PluginInfo("osrbench", "osrbench", __version__))
        if entry_points:
            self._load_entry_points()
        self._call("osrbench_register_datasets", DatasetSpec, self.datasets, "dataset")
        self._call("osrbench_register_methods", MethodSpec, self.methods, "method")
        self._call("osrbench_register_scores", ScoreSpec, self.scorers, "scorer")
        self._call("osrbench_register_loggers", LoggerSpec, self.loggers, "logger")

    def _add(self, plugin: object, info: PluginInfo) -> None:
        self.infos[info.name] = info
        self.pm.register(plugin, name=info.name)
        self._check_hook_names(plugin, info)

    def _broken(self, info: PluginInfo, message: str, label: str | None = None) -> None:
        """Record a problem that may have kept ``info``'s plugin from registering what it means to
        (a ``label``: only names of that kind, e.g. ``method``)."""
        info.add_error(message)
        same = normalise_distribution(info.name) == normalise_distribution(info.distribution)
        self.broken.append((label, f"plugin {info.name!r}{'' if same else f' ({info.distribution})'} {message}"))

    def _check_hook_names(self, plugin: object, info: PluginInfo) -> None:
        """Report the hook functions pluggy would silently never call.

        ``@hookimpl`` functions whose name is no hook are what ``pm.check_pending()`` rejects (it
        raises for the first only; this names each, per plugin, optional ones too: no plugin adds
        hook specifications here). Unmarked ``osrbench_*`` functions pluggy does not even see.
        """
        hooks = self.hooks

        def hint(name: str) -> str:
            close = difflib.get_close_matches(name, hooks, n=1, cutoff=0.7)  # 0.6 takes osrbench_helper for one
            return f" (did you mean {close[0]}?)" if close else f" (the hooks are {', '.join(hooks)})"

        implemented = False
        for caller in self.pm.get_hookcallers(plugin) or []:
            if caller.has_spec():
                implemented = True
            else:
                self._broken(info, f"implements {caller.name}, which is not a hook{hint(caller.name)}")
        for name in dir(plugin):
            if not name.startswith(GROUP + "_") or self.pm.parse_hookimpl_opts(plugin, name) is not None:
                continue
            try:
                attr = inspect.getattr_static(plugin, name)
            except AttributeError:
                continue
            if not (inspect.isfunction(attr) or isinstance(attr, (staticmethod, classmethod))):
                continue  # e.g. an imported module osrbench_x
            if name in hooks:
                self._broken(info, f"defines {name} without @osrbench.hookimpl, so it is never called")
            else:
                self._broken(info, f"defines {name}, which is not a hook{hint(name)}; "
                                   "rename it with a leading underscore if it is a helper")
        if not implemented and not info.error:
            self._broken(info, f"implements no osrbench hook (one of {', '.join(hooks)}); does its entry point "
                               "name the module that defines them?")

    def _load_entry_points(self) -> None:
        allow, block = _names("OSRBENCH_PLUGINS"), _names("OSRBENCH_DISABLE_PLUGINS") or set()
        chosen: list[tuple[metadata.EntryPoint, PluginInfo]] = []
        by_name: dict[str, list[tuple[metadata.EntryPoint, PluginInfo]]] = {}
        for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
            if ep.name in block or (allow is not None and ep.name not in allow):
                continue
            dist = ep.dist
            info = PluginInfo(ep.name, dist.metadata["Name"] if dist else "?", dist.version if dist else "?")
            by_name.setdefault(ep.name, []).append((ep, info))
        for name, claims in by_name.items():
            taken = self.infos.get(name)  # the host's own name
            if taken is not None:
                winner = None
            else:
                builtins = [c for c in claims if c[1].builtin]
                winner = builtins[0] if len(builtins) == 1 else (claims[0] if len(claims) == 1 else None)
            if winner is not None:
                chosen.append(winner)
            elif taken is None:  # no built-in among several claimants: none is loaded
                dists = ", ".join(repr(i.distribution) for _, i in claims)
                for _, info in claims:
                    info.error = (f"entry point name {name!r} is declared by several distributions ({dists}); "
                                  "none of them is loaded (uninstall the ones you do not want)")
            for ep, info in claims:
                if winner is not None and info is winner[1]:
                    continue
                if info.error is None:
                    owner = taken or winner[1]  # type: ignore[index]
                    info.error = (f"refused: entry point name {name!r} belongs to the built-in plugin "
                                  f"{owner.name!r} ({owner.distribution}); rename this plugin's entry point")
                self.infos[f"{name} ({info.distribution})"] = info
        for ep, info in chosen:
            self.infos[ep.name] = info
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except BaseException as exc:  # noqa: BLE001 - a broken plugin must never take the host down
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._broken(info, f"failed to load: {_one_line(exc)}")
                info.traceback = traceback.format_exc()
                continue
            self._check_hook_names(plugin, info)

    def _call(self, hook: str, kind: type, into: dict[str, Any], label: str) -> None:
        """Call each plugin's implementation alone, so one failure discards only its own specs.

        Each call goes through pluggy's hook caller (a subset caller holding that one plugin), so
        hook-call monitors and tracing on ``self.pm`` see every call with its arguments. Names are
        assigned once every plugin has registered, so the outcome of a clash does not depend on the
        order plugins load in: see :meth:`_assign`.
        """
        everyone = self.pm.get_plugins()
        claims: dict[str, list[tuple[PluginInfo, Any]]] = {}
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
                self._broken(info, f"failed in {hook}: {_one_line(exc)}", label)
                info.traceback = traceback.format_exc()
                continue
            for spec in got:
                mine = claims.setdefault(spec.name, [])
                if any(other is info for other, _ in mine):  # registered twice by one plugin: the last wins
                    mine[:] = [(o, s) for o, s in mine if o is not info]
                mine.append((info, spec))
        for name, mine in claims.items():
            self._assign(label, name, mine, into)

    def _assign(self, label: str, name: str, claims: list[tuple[PluginInfo, Any]], into: dict[str, Any]) -> None:
        """Give ``name`` to its one claimant; of several, to the one built-in claimant (the others are
        refused, with a status saying so); with no or several built-in claimants the name is unusable
        (the first keeps its listing, :meth:`_lookup` refuses it naming every claimant)."""
        key = f"{label}:{name}"
        builtins = [c for c in claims if c[0].builtin]
        if len(claims) > 1 and len(builtins) == 1:
            winner = builtins[0]
            for info, _ in claims:
                if info is not winner[0]:
                    info.add_error(f"{label} {name!r} refused: the built-in plugin {winner[0].name!r} "
                                   f"({winner[0].distribution}) provides it; rename it in this plugin")
                    self.refused.setdefault(key, []).append(info.name)
            claims = [winner]
        elif len(claims) > 1:
            self.conflicts[key] = [info.name for info, _ in claims]
            first = claims[0][0].name
            for info, _ in claims[1:]:
                info.add_error(f"{label} {name!r} is also registered by plugin {first!r}")
            claims = claims[:1]
        info, spec = claims[0]
        into[name] = spec
        self.origin[key] = info.name
        getattr(info, label + "s").append(name)

    def _lookup(self, label: str, name: str, table: dict[str, Any]) -> Any:
        key = f"{label}:{name}"
        if key in self.conflicts:
            names = self.conflicts[key]
            listed = ", ".join(repr(n) for n in names[:-1]) + f" and {names[-1]!r}"
            raise UnknownName(
                f"{label} {name!r} is registered by {len(names)} plugins, {listed}, none of them built in; "
                f"keep the one you mean: uninstall the others or disable them with OSRBENCH_DISABLE_PLUGINS"
            )
        if name not in table:
            close = difflib.get_close_matches(name, list(table), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            # the name may be one these plugins failed to register
            why = "".join(f"; {problem}" for kind, problem in self.broken if kind in (None, label))
            raise UnknownName(f"unknown {label} {name!r} (valid: {', '.join(sorted(table)) or 'none'}){hint}{why}")
        return table[name]

    def method(self, name: str) -> MethodSpec:
        return self._lookup("method", name, self.methods)

    def dataset(self, name: str) -> DatasetSpec:
        return self._lookup("dataset", name, self.datasets)

    def scorer(self, name: str) -> ScoreSpec:
        return self._lookup("scorer", name, self.scorers)

    def plugin_of(self, label: str, name: str) -> PluginInfo:
        return self.infos[self.origin[f"{label}:{name}"]]


@functools.lru_cache(maxsize=1)
def get() -> Plugins:
    """The process-wide plugins (loaded once, at first use)."""
    return Plugins()


def reset() -> None:
    """Forget the loaded plugins (tests change the environment and reload)."""
    get.cache_clear()


