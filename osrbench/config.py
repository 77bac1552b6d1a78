"""Resolving a run's configuration: engine defaults, method defaults, recipe, overrides.

Order (later wins): engine defaults < method defaults < recipe ``"*"`` < recipe[dataset] <
the dataset's own epoch count (registry) < ``--epochs`` < ``--set key=value``. A ``--set`` key
must exist in the merged defaults, and its YAML value must match the default's type (a float key
also takes text ``float()`` reads, such as ``1e-3``; numbers must be finite; an empty value or
null only where the default is None). ``--set`` text is bounded before it is parsed
(:func:`safe_yaml`: :data:`MAX_SET_CHARS`, no anchors or aliases, :data:`MAX_YAML_DEPTH`), and
``image_size`` by :data:`MAX_IMAGE_SIZE` (:data:`MAX_FILE_IMAGE_SIZE` for a file-backed dataset).
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Mapping, Sequence

import yaml

from osrbench.datasets import DatasetSpec
from osrbench.method import MethodSpec, Option
from osrbench.results import canonical_hash
from osrbench.errors import UserError

#: Keys the engine itself reads; every method has them.
ENGINE_DEFAULTS: dict[str, Any] = {
    "epochs": 100,
    "batch_size": 64,
    "image_size": 0,  # 0 = the dataset's reference size
    "augment": "dataset",  # dataset | none | crop_flip
    "normalize": "none",  # none | cifar (MLS-paper recipe)
    "randaugment": 0,  # RandAugment magnitude M of the MLS recipe; 0 = off
    "randaugment_n": 1,  # RandAugment N: ops per image, drawn with replacement (MLS release: 1; SSB: 2)
    "precision": "fp32",  # fp32 (reference) | bf16 (autocast + channels-last; opt-in for speed)
    # replay full-batch steps from CUDA graphs: auto = on for graph_safe methods on a CUDA device
    # (the record's cuda_graphs says what a run used); true insists, false is eager
    "cuda_graphs": "auto",
    "compile": False,  # torch.compile the method's networks (not the step; opt-in)
    # torch's CPU threads during the run: a seeded CPU run's numbers depend on it (the reduction
    # order of its kernels), so it is part of the config and has one default for run, compare
    # and sweep alike. 1: the 2-core machines run several processes at once (--jobs, sweeps).
    "threads": 1,
    # float64 (default) or float32: the dtype the built-in methods compute MSP in; the releases use
    # float32, where easy images saturate at 1.0 and tie (set float32 to reproduce their tables).
    "score_dtype": "float64",
}

#: The allowed values of the engine's keys (``resolve`` checks them like a method's own options).
ENGINE_OPTIONS: dict[str, Option] = {
    "epochs": Option(minimum=1, help="training epochs"),
    "batch_size": Option(minimum=1, help="training batch size"),
    "image_size": Option(minimum=0, help="images are resized to this square size; 0 = the dataset's reference "
                                         "size; at most 512 where the dataset is held in memory (MAX_IMAGE_SIZE), "
                                         "4096 for a file-backed one (decoded per batch)"),
    "augment": Option(choices=("dataset", "none", "crop_flip"),
                      help="training augmentation; dataset = the dataset's reference augmentation"),
    "normalize": Option(choices=("none", "cifar"), help="input normalisation (cifar: the MLS-paper recipe)"),
    "randaugment": Option(minimum=0, maximum=30, help="RandAugment(N, M) magnitude M of the MLS recipe; 0 = off"),
    "randaugment_n": Option(minimum=1, maximum=16, help="RandAugment(N, M) ops per image N, drawn with replacement "
                                                        "and applied in draw order (the MLS release: 1; its SSB runs: 2)"),
    "precision": Option(choices=("fp32", "bf16"),
                        help="fp32 (reference) or bf16 autocast with channels-last (opt-in for speed)"),
    "cuda_graphs": Option(choices=("auto", True, False),
                          help="replay full-batch training steps from CUDA graphs; auto: on for graph_safe methods "
                               "on a CUDA device, off elsewhere (the record's cuda_graphs says which)"),
    "compile": Option(help="torch.compile the method's networks (not the step); equal to eager up to rounding "
                           "(opt-in; the first steps pay the compile time)"),
    "score_dtype": Option(choices=("float64", "float32"),
                          help="dtype of the built-in methods' softmax scores; float32 = the releases' (saturates at 1.0)"),
    "threads": Option(minimum=1, maximum=1024, help="torch CPU threads of the run (part of the config hash: "
                                                    "CPU results depend on it)"),
}

#: The largest ``image_size``: a whole dataset is held in memory at that size (digits at 4096 px
#: would take 30 GB), so larger sizes are refused before any image is resized.
MAX_IMAGE_SIZE = 512
#: The largest ``image_size`` of a file-backed dataset (``DatasetSpec.files``: decoded per batch, so
#: only a batch is held at that size): a bound on one batch's memory, 4096 px = 48 MiB per image.
MAX_FILE_IMAGE_SIZE = 4096

#: Keys that may differ between a checkpoint and a resumed run (resume can extend a run).
RESUMABLE_CHANGES = ("epochs",)


class ConfigError(UserError, ValueError):
    """A recipe name, config key or value that is not valid; the message says what is."""


def _suggest(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


#: The longest ``--set`` value (characters): a config value is a number, a name or a short list.
MAX_SET_CHARS = 4096
#: The deepest nesting of lists and mappings a YAML text may have (``--set`` values, grid files).
MAX_YAML_DEPTH = 32


def safe_yaml(text: str, what: str, max_chars: int = MAX_SET_CHARS, error: type[Exception] = ConfigError) -> Any:
    """``yaml.safe_load(text)`` within bounds checked before anything is built: at most ``max_chars``
    characters, no anchors or aliases (``&a`` / ``*a``: a few lines of them expand to gigabytes),
    at most :data:`MAX_YAML_DEPTH` levels of nesting. Anything else raises ``error`` naming ``what``."""
    if len(text) > max_chars:
        raise error(f"{what}: {len(text):,} characters of YAML; at most {max_chars:,} are allowed")
    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):  # events only: nothing is expanded
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise error(f"{what}: YAML anchors and aliases (&name, *name) are not allowed; write the values out")
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise error(f"{what}: YAML nested deeper than {MAX_YAML_DEPTH} levels")
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
        return yaml.safe_load(text)
    except UserError:
        raise
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise error(f"{what}: not valid YAML{at} ({type(exc).__name__})") from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        # ValueError/OverflowError: a timestamp or number YAML recognises but Python cannot build
        raise error(f"{what}: cannot read the YAML ({type(exc).__name__})") from None


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["lr=0.01", "milestones=[10, 20]"]`` -> ``{"lr": 0.01, "milestones": [10, 20]}``.

    Each value is YAML read by :func:`safe_yaml` (bounded size, no aliases); ``key=`` gives None,
    which only a key whose default is None accepts (checked by :func:`resolve`).
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair[:80]!r}")
        out[key.strip()] = safe_yaml(text, f"--set {key.strip()[:80]}")
    return out


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (a message stays one short line whatever the value)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _finite(value: Any) -> bool:
    items = value if isinstance(value, (list, tuple)) else [value]
    return all(math.isfinite(v) for v in items if isinstance(v, float))


def _check_type(key: str, value: Any, default: Any, option: Option | None = None) -> Any:
    if default is None or value is None:  # None for a key that needs a value: resolve() says so
        return value
    if option is not None and option.choices and len({type(c) for c in option.choices}) > 1:
        # a key whose choices mix types (cuda_graphs: auto, true, false) takes exactly those
        if any(type(value) is type(c) and value == c for c in option.choices):
            return value
        raise ConfigError(f"config key {key!r}: {_shown(value)} is not allowed (valid: {option.allowed()})")
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text: take what float() reads
            try:
                value = float(value.strip())
            except ValueError:
                pass
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
        raise ConfigError(f"config key {key!r} expects {type(default).__name__}, got {_shown(value)}")
    if not _finite(value):
        raise ConfigError(f"config key {key!r} must be a finite number, got {_shown(value)}")
    return value


def recipe_names(spec: MethodSpec) -> list[str]:
    return list(spec.recipes)


def options_of(spec: MethodSpec) -> dict[str, Option]:
    """The options that apply to a method's config: the engine's, then the method's own."""
    return {**ENGINE_OPTIONS, **spec.options}


def check_options(spec: MethodSpec) -> None:
    """Raise ConfigError if the method's options are broken (a plugin bug, not the user's).

    Broken: an option that is not an :class:`Option`, names a key that is not in ``defaults``
    or redeclares an engine key, or a default that breaks its own option.
    """
    defaults = {**ENGINE_DEFAULTS, **spec.defaults}
    for key, option in spec.options.items():
        if not isinstance(option, Option):
            raise ConfigError(f"method {spec.name!r}: options[{key!r}] is {type(option).__name__}, "
                              "expected osrbench.method.Option (plugin bug)")
        if key in ENGINE_OPTIONS:
            raise ConfigError(f"method {spec.name!r} declares an option for the engine key {key!r}, "
                              "which has the engine's own (plugin bug)")
        if key not in defaults:
            raise ConfigError(f"method {spec.name!r} declares an option for {key!r}, which is not one of its "
                              "config keys (plugin bug)" + _suggest(key, sorted(defaults)))
    for key, option in options_of(spec).items():
        if key in defaults:
            _check_value(spec, key, defaults[key], option, defaults[key], "the default")


def _check_value(spec: MethodSpec, key: str, value: Any, option: Option, default: Any, source: str = "") -> None:
    """Raise ConfigError if ``value`` breaks ``option``; ``source`` (``"the default"``, ``"recipe 'r'"``)
    marks a value the plugin chose, so the message calls it a plugin bug."""
    if value is None and default is None:  # a key whose default is None may stay unset
        return
    why = option.violation(value)
    if why is None:
        return
    head = f"plugin bug: {source} of " if source else ""
    what = f"{head}method {spec.name!r}, config key {key!r}: {_shown(value)}"
    if why == "choices":
        bad = [v for v in (value if isinstance(value, (list, tuple)) else [value]) if v not in option.choices]
        hint = _suggest(bad[0], [str(c) for c in option.choices]) if isinstance(bad[0], str) else ""
        raise ConfigError(f"{what} is not allowed (valid: {option.allowed()})" + hint)
    each = "each element " if isinstance(value, (list, tuple)) else ""
    raise ConfigError(f"{what} is out of range ({each}must be {option.allowed()})")


def validate(spec: MethodSpec, cfg: Mapping[str, Any], sources: Mapping[str, str] | None = None) -> None:
    """Check every value of ``cfg`` against the options (engine and method); raise ConfigError.

    ``sources`` names the keys whose value the plugin chose (``"recipe 'mls-paper'"``): the message
    then calls it a plugin bug.
    """
    defaults = {**ENGINE_DEFAULTS, **spec.defaults}
    for key, option in options_of(spec).items():
        if key in cfg:
            _check_value(spec, key, cfg[key], option, defaults.get(key), (sources or {}).get(key, ""))


def resolve(
    spec: MethodSpec,
    dataset: DatasetSpec,
    recipe: str | None = None,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[str | None, dict[str, Any]]:
    """The recipe name used and the resolved config of a run."""
    check_options(spec)
    defaults = {**ENGINE_DEFAULTS, **spec.defaults}
    options = options_of(spec)
    recipe = recipe or spec.default_recipe
    cfg = dict(defaults)
    sources: dict[str, str] = {}
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
                cfg[key] = _check_type(key, value, defaults[key], options.get(key))
                sources[key] = f"recipe {recipe!r}"
    if dataset.epochs is not None:
        cfg["epochs"] = dataset.epochs
        sources["epochs"] = f"the epoch count of dataset {dataset.name!r}"
    if epochs is not None:
        cfg["epochs"] = epochs
        sources.pop("epochs", None)
    for key, value in (overrides or {}).items():
        if key not in defaults:
            raise ConfigError(
                f"unknown config key {key!r} for method {spec.name!r} (valid: {', '.join(sorted(defaults))})"
                + _suggest(key, sorted(defaults))
            )
        cfg[key] = _check_type(key, value, defaults[key], options.get(key))
        sources.pop(key, None)
    validate(spec, cfg, sources)
    for key, value in (overrides or {}).items():  # what no option caught: --set key= / key=null
        if value is None and defaults[key] is not None:
            raise ConfigError(f"method {spec.name!r}, config key {key!r}: None (an empty value or null) is not "
                              f"allowed; it needs a {type(defaults[key]).__name__} (default {defaults[key]!r})")
    # The dataset's own values replace the placeholders 0 and "dataset".
    if cfg["image_size"] == 0:
        cfg["image_size"] = dataset.image_size
    if cfg["augment"] == "dataset":
        cfg["augment"] = dataset.augment
    if getattr(dataset, "files", False):
        if isinstance(cfg["image_size"], int) and cfg["image_size"] > MAX_FILE_IMAGE_SIZE:
            raise ConfigError(f"method {spec.name!r}, config key 'image_size': {cfg['image_size']} is out of range "
                              f"(at most {MAX_FILE_IMAGE_SIZE} for dataset {dataset.name!r}, decoded per batch)")
    elif isinstance(cfg["image_size"], int) and cfg["image_size"] > MAX_IMAGE_SIZE:
        raise ConfigError(f"method {spec.name!r}, config key 'image_size': {cfg['image_size']} is out of range "
                          f"(at most {MAX_IMAGE_SIZE}: every image of the dataset is held in memory at that size)")
    if cfg["augment"] not in ("none", "crop_flip") or not isinstance(cfg["image_size"], int) or cfg["image_size"] < 1:
        raise ConfigError(f"dataset {dataset.name!r} declares augment {dataset.augment!r} and image size "
                          f"{dataset.image_size!r}; expected none or crop_flip and a positive integer (plugin bug)")
    return recipe, cfg


def config_hash(method: str, cfg: Mapping[str, Any]) -> str:
    return canonical_hash({"method": method, "config": dict(cfg)})


def resume_key(method: str, cfg: Mapping[str, Any]) -> str:
    """What must match between a checkpoint and a resumed run."""
    return config_hash(method, {k: v for k, v in cfg.items() if k not in RESUMABLE_CHANGES})
