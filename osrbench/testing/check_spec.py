"""Checks ``register`` and ``spec``: the plugin registers a usable spec with stable, resolvable defaults."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Mapping

import yaml

from osrbench import config as configmod
from osrbench import session
from osrbench.method import Method
from osrbench.testing.runs import _calling, _fail, _Session
from osrbench.testing.toy import toy_dataset_spec

_STABLE_SCALARS = (bool, int, float, str, type(None))


def _unstable(value: Any, path: str) -> str | None:
    """Why ``value`` is not a stable config value (None when it is)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} = {value!r} is not finite (JSON records cannot hold it)"
    if isinstance(value, _STABLE_SCALARS):
        if type(value) not in _STABLE_SCALARS:  # subclasses: enums, numpy scalars registered as int ...
            base = next(t for t in type(value).__mro__ if t in _STABLE_SCALARS)
            return f"{path} has type {type(value).__name__}; use a plain {base.__name__}"
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            why = _unstable(v, f"{path}[{i}]")
            if why:
                return why
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{path} has a non-str key {k!r}"
            why = _unstable(v, f"{path}[{k!r}]")
            if why:
                return why
        return None
    hint = "; use a list" if isinstance(value, tuple) else ""
    return f"{path} = {value!r} has type {type(value).__name__}, which --set and the YAML/JSON records cannot round-trip{hint}"


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _check_register(s: _Session) -> str:
    spec = s.spec()
    if not callable(spec.factory):
        raise _fail("register", f"MethodSpec.factory of {s.name!r} is not callable")
    made = []
    for _ in range(2):
        with _calling("register", "factory()"):
            made.append(spec.factory())
    a, b = made
    if not isinstance(a, Method):
        raise _fail("register", f"factory() returned {type(a).__name__}, not an osrbench.Method subclass")
    if a is b:
        raise _fail("register", "factory() returned the same object twice; it must make a fresh method per call")
    phases = a.phases
    problem = session.phases_problem(phases)
    if problem:
        raise _fail("register", problem)
    info = s.reg.plugin_of("method", s.name)
    return f"plugin {info.name!r} ({info.distribution} {info.version}), phases {tuple(phases)}"


def _check_spec(s: _Session) -> str:
    spec = s.need("spec", "spec", s.spec)
    if not isinstance(spec.defaults, Mapping):
        raise _fail("spec", f"defaults is {type(spec.defaults).__name__}, expected a dict")
    for key, value in spec.defaults.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise _fail("spec", f"config key {key!r} must be an identifier-like str (usable as --set KEY=VALUE)")
        why = _unstable(value, f"defaults[{key!r}]")
        if why:
            raise _fail("spec", why)
        if yaml.safe_load(yaml.safe_dump(value)) != value:
            raise _fail("spec", f"defaults[{key!r}] = {value!r} does not survive a YAML round trip")
        if key in configmod.ENGINE_DEFAULTS:
            try:
                configmod._check_type(key, value, configmod.ENGINE_DEFAULTS[key])
            except configmod.ConfigError as exc:
                raise _fail("spec", f"engine key {key!r}: {exc}") from None
    if not isinstance(spec.options, Mapping):
        raise _fail("spec", f"options is {type(spec.options).__name__}, expected a dict of osrbench.method.Option")
    try:  # options name existing keys (not engine keys) and every default satisfies its option
        configmod.check_options(spec)
    except configmod.ConfigError as exc:
        raise _fail("spec", f"options: {exc}") from None
    if spec.default_recipe is not None and spec.default_recipe not in spec.recipes:
        raise _fail("spec", f"default_recipe {spec.default_recipe!r} is not one of the recipes {sorted(spec.recipes)}")
    toy = toy_dataset_spec()
    for recipe, scopes in spec.recipes.items():
        if not isinstance(scopes, Mapping):
            raise _fail("spec", f"recipe {recipe!r} must map '*' and dataset names to overrides")
        for scope, entries in scopes.items():
            for key, value in dict(entries).items():
                why = _unstable(value, f"recipes[{recipe!r}][{scope!r}][{key!r}]")
                if why:
                    raise _fail("spec", why)
            # a scope's dataset as the toy, file-backed where the registered one is (crop_pct: files only)
            ds = toy if scope == "*" else dataclasses.replace(toy, name=scope, files=_file_backed(scope))
            try:
                configmod.resolve(spec, ds, recipe, None, None)
            except configmod.ConfigError as exc:
                raise _fail("spec", f"recipe {recipe!r} for {scope!r} does not resolve: {exc}") from None
    cfg = s.need("spec", "config", s.config)
    try:
        json.dumps(cfg, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _fail("spec", f"the resolved configuration is not JSON-serialisable: {exc}") from None
    if "\n" in spec.description:
        raise _fail("spec", "description must be one line (osrbench list shows it in a table)")
    return f"{len(spec.defaults)} config keys ({len(spec.options)} with options), recipes {sorted(spec.recipes) or '-'}"


def _file_backed(name: str) -> bool:
    """Whether the registered dataset ``name`` is read from image files (``False`` where none is registered)."""
    from osrbench import plugins

    try:
        return bool(getattr(plugins.get().datasets.get(name), "files", False))
    except Exception:  # noqa: BLE001 - a registry that does not load: the toy stays in memory
        return False
