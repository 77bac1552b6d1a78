"""Resolving a run's configuration: engine defaults, method defaults, recipe, overrides.

Order (later wins): engine defaults < method defaults < recipe ``"*"`` < recipe[dataset] <
the dataset's own epoch count (registry) < ``--epochs`` < ``--set key=value``. A ``--set`` key
must exist in the merged defaults, and its YAML value must match the default's type.
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping, Sequence

import yaml

from osrbench.datasets import DatasetSpec
from osrbench.method import MethodSpec
from osrbench.results import canonical_hash

#: Keys the engine itself reads; every method has them.
ENGINE_DEFAULTS: dict[str, Any] = {
    "epochs": 100,
    "batch_size": 64,
    "image_size": 0,  # 0 = the dataset's reference size
    "augment": "dataset",  # dataset | none | crop_flip
    "normalize": "none",  # none | cifar (MLS-paper recipe)
    "randaugment": 0,  # RandAugment magnitude M of the MLS recipe; 0 = off
    "precision": "fp32",  # fp32 (reference) | bf16 (autocast + channels-last; opt-in for speed)
    "cuda_graphs": False,  # replay full-batch steps from CUDA graphs (graph_safe methods; opt-in)
}

#: Keys that may differ between a checkpoint and a resumed run (resume can extend a run).
RESUMABLE_CHANGES = ("epochs",)


class ConfigError(ValueError):
    """A recipe name, config key or value that is not valid; the message says what is."""


def _suggest(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["lr=0.01", "milestones=[10, 20]"]`` -> ``{"lr": 0.01, "milestones": [10, 20]}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value {text!r}") from None
    return out


def _check_type(key: str, value: Any, default: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"config key {key!r} expects {type(default).__name__}, got {value!r}")
    return value


def recipe_names(spec: MethodSpec) -> list[str]:
    return list(spec.recipes)


def resolve(
    spec: MethodSpec,
    dataset: DatasetSpec,
    recipe: str | None = None,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[str | None, dict[str, Any]]:
    """The recipe name used and the resolved config of a run."""
    defaults = {**ENGINE_DEFAULTS, **spec.defaults}
    recipe = recipe or spec.default_recipe
    cfg = dict(defaults)
    if recipe is not None:
        if recipe not in spec.recipes:
            valid = recipe_names(spec)
            raise ConfigError(
                f"unknown recipe {recipe!r} for method {spec.name!r} (valid: {', '.join(valid) or 'none'})"
                + _suggest(recipe, valid)
            )
        for scope in ("*", dataset.name):
            for key, value in spec.recipes[recipe].get(scope, {}).items():
                if key not in defaults:
                    raise ConfigError(f"recipe {recipe!r} sets unknown key {key!r} (plugin bug)")
                cfg[key] = _check_type(key, value, defaults[key])
    if dataset.epochs is not None:
        cfg["epochs"] = dataset.epochs
    if epochs is not None:
        cfg["epochs"] = epochs
    for key, value in (overrides or {}).items():
        if key not in defaults:
            raise ConfigError(
                f"unknown config key {key!r} for method {spec.name!r} (valid: {', '.join(sorted(defaults))})"
                + _suggest(key, sorted(defaults))
            )
        cfg[key] = _check_type(key, value, defaults[key])
    if cfg["image_size"] == 0:
        cfg["image_size"] = dataset.image_size
    if cfg["augment"] == "dataset":
        cfg["augment"] = dataset.augment
    if cfg["augment"] not in ("none", "crop_flip"):
        raise ConfigError(f"augment must be dataset, none or crop_flip, got {cfg['augment']!r}")
    if cfg["precision"] not in ("fp32", "bf16"):
        raise ConfigError(f"precision must be fp32 or bf16, got {cfg['precision']!r}")
    if cfg["normalize"] not in ("none", "cifar"):
        raise ConfigError(f"normalize must be none or cifar, got {cfg['normalize']!r}")
    for key in ("epochs", "batch_size", "image_size"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key} must be a positive integer, got {cfg[key]!r}")
    return recipe, cfg


def config_hash(method: str, cfg: Mapping[str, Any]) -> str:
    return canonical_hash({"method": method, "config": dict(cfg)})


def resume_key(method: str, cfg: Mapping[str, Any]) -> str:
    """What must match between a checkpoint and a resumed run."""
    return config_hash(method, {k: v for k, v in cfg.items() if k not in RESUMABLE_CHANGES})
