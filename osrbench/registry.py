"""The benchmark registry (``registry.yaml``): protocols, built-in datasets, standard recipes.

The file is read with ``yaml.safe_load`` and checked against a small schema; a wrong shape is a
:class:`RegistryError` naming the key path (``datasets.svhn.image_size: expected int``).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from osrbench.datasets import DatasetSpec
from osrbench.errors import UserError

REGISTRY_PATH = Path(__file__).with_name("registry.yaml")


class RegistryError(UserError):
    """The registry or a split table has the wrong shape."""


@dataclass(frozen=True)
class Registry:
    splits: Mapping[str, Mapping[str, list[list[int]]]]  # protocol -> table -> rows
    protocols: Mapping[str, Mapping[str, Any]]
    datasets: Mapping[str, Mapping[str, Any]]
    standard_recipes: Mapping[str, str]
    #: protocol -> table -> its named splits, for a protocol whose entry names a ``tables`` file (``ssb``)
    named_splits: Mapping[str, Mapping[str, "NamedSplitTable"]] = field(default_factory=dict)


#: ``known`` values that stand for a whole class range instead of a list: ImageNet-1K's 1000 classes
#: (label = position in sorted wnid order, as torchvision's ImageFolder gives).
KNOWN_RANGES = {"imagenet-1k": 1000}


@dataclass(frozen=True)
class NamedSplitTable:
    """One dataset's table of a protocol with named splits (the Semantic Shift Benchmark): the same
    known classes in every split, the unknown classes of a split the union of its difficulty lists.

    ``unknown`` keeps each difficulty's list verbatim (class ids, or wnids for ImageNet-21K-P);
    ``splits`` maps each split name, in index order, to the difficulties it joins.
    """

    known: tuple[int, ...]
    unknown: Mapping[str, tuple[int | str, ...]]
    splits: Mapping[str, tuple[str, ...]]


def _named_tables(path: Path, where: str) -> dict[str, NamedSplitTable]:
    """Read and check a named-split file (``ssb_splits.yaml``)."""
    doc = _expect(_read_yaml(path), dict, where)
    out = {}
    for table, entry in _expect(doc.get("tables"), dict, f"{where}.tables").items():
        at = f"{where}.tables.{table}"
        _expect(entry, dict, at)
        for key in ("known", "unknown", "splits"):
            if key not in entry:
                raise RegistryError(f"{at}.{key}: missing")
        known = entry["known"]
        if isinstance(known, str):
            if known not in KNOWN_RANGES:
                raise RegistryError(f"{at}.known: expected a list of ids or one of {', '.join(KNOWN_RANGES)}")
            known = list(range(KNOWN_RANGES[known]))
        for j, cid in enumerate(_expect(known, list, f"{at}.known")):
            _expect(cid, int, f"{at}.known[{j}]")
        unknown = {}
        for diff, ids in _expect(entry["unknown"], dict, f"{at}.unknown").items():
            ids = _expect(ids, list, f"{at}.unknown.{diff}")
            kinds = {type(i) for i in ids}
            if not ids or not (kinds == {int} or kinds == {str}):
                raise RegistryError(f"{at}.unknown.{diff}: expected a non-empty list of class ids or of wnids")
            unknown[diff] = tuple(ids)
        splits = {}
        for name, diffs in _expect(entry["splits"], dict, f"{at}.splits").items():
            for d in _expect(diffs, list, f"{at}.splits.{name}"):
                if d not in unknown:
                    raise RegistryError(f"{at}.splits.{name}: no difficulty {d!r} (valid: {', '.join(unknown)})")
            splits[str(name)] = tuple(diffs)
        out[table] = NamedSplitTable(tuple(known), unknown, splits)
    return out


_DATASET_SCHEMA: dict[str, tuple[type, bool]] = {  # key -> (type, required)
    "description": (str, False),
    "cite": (str, False),  # the paper to cite for the data (osrbench list --cite)
    "loader": (str, True),
    "check": (str, False),
    "download": (str, False),
    "table": (str, True),
    "unknown_table": (str, False),
    "num_classes": (int, True),
    "image_size": (int, True),
    "augment": (str, True),
    "epochs": (int, False),
    "source": (str, False),
    "licence": (str, False),
    "files": (bool, False),  # the loader returns OpenSetFiles (decoded per batch by the file feed)
    # Images per class id in the official files (a list, or one int for every class): what
    # osrbench.verify checks a record's scores against. Unknown: for an ``unknown_table`` source.
    "test_images_per_class": ((list, int), False),
    "train_images_per_class": ((list, int), False),
    "unknown_test_images_per_class": ((list, int), False),
}

#: The keys above that count images per class.
IMAGE_COUNT_KEYS = ("test_images_per_class", "train_images_per_class", "unknown_test_images_per_class")


def _expect(value: Any, kind: type | tuple[type, ...], path: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (int in kinds and isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in kinds)
        raise RegistryError(f"{path}: expected {names}, got {type(value).__name__} {value!r}")
    return value


def images_per_class(entry: Mapping[str, Any], key: str) -> tuple[int, ...] | None:
    """A dataset entry's ``key`` (:data:`IMAGE_COUNT_KEYS`) as one count per class id; ``None``: not given.
    One int stands for every class (``num_classes`` of them, or CIFAR-100's 100 for the unknowns)."""
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, int):
        return (value,) * (100 if key.startswith("unknown") else int(entry["num_classes"]))
    return tuple(value)


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML ({exc})") from None


def parse(doc: Any, base: Path) -> Registry:
    """Validate a registry document; split tables are read from ``doc['splits']`` beside it."""
    _expect(doc, dict, "registry")
    for key in ("splits", "protocols", "datasets"):
        if key not in doc:
            raise RegistryError(f"registry.{key}: missing")
    splits_doc = _read_yaml(base / _expect(doc["splits"], str, "splits"))
    tables = _expect(_expect(splits_doc, dict, "splits").get("protocols"), dict, "splits.protocols")
    for proto, by_table in tables.items():
        for table, rows in _expect(by_table, dict, f"splits.protocols.{proto}").items():
            for i, row in enumerate(_expect(rows, list, f"splits.protocols.{proto}.{table}")):
                for j, cid in enumerate(_expect(row, list, f"splits.protocols.{proto}.{table}[{i}]")):
                    _expect(cid, int, f"splits.protocols.{proto}.{table}[{i}][{j}]")
    protocols = _expect(doc["protocols"], dict, "protocols")
    named: dict[str, dict[str, NamedSplitTable]] = {}
    for name, entry in protocols.items():
        _expect(entry, dict, f"protocols.{name}")
        if "tables" in entry:  # named splits in a file of their own
            named[name] = _named_tables(base / _expect(entry["tables"], str, f"protocols.{name}.tables"),
                                        f"protocols.{name}.tables")
        elif "reader" in entry:  # its splits come from the user's files, read by that module
            _expect(entry["reader"], str, f"protocols.{name}.reader")
        elif name not in tables:
            raise RegistryError(f"protocols.{name}: no split table of that name in {doc['splits']}")
    datasets = _expect(doc["datasets"], dict, "datasets")
    for name, entry in datasets.items():
        _expect(entry, dict, f"datasets.{name}")
        for key, value in entry.items():
            if key not in _DATASET_SCHEMA:
                raise RegistryError(f"datasets.{name}.{key}: unknown key (valid: {', '.join(_DATASET_SCHEMA)})")
            _expect(value, _DATASET_SCHEMA[key][0], f"datasets.{name}.{key}")
        for key, (_, required) in _DATASET_SCHEMA.items():
            if required and key not in entry:
                raise RegistryError(f"datasets.{name}.{key}: missing")
        for key in IMAGE_COUNT_KEYS:
            counts = entry.get(key)
            for i, n in enumerate(counts if isinstance(counts, list) else [counts] if counts is not None else []):
                if _expect(n, int, f"datasets.{name}.{key}[{i}]") < 1:
                    raise RegistryError(f"datasets.{name}.{key}[{i}]: expected a count of at least 1, got {n}")
            if isinstance(counts, list) and key != "unknown_test_images_per_class" and len(counts) != entry["num_classes"]:
                raise RegistryError(f"datasets.{name}.{key}: {len(counts)} counts for {entry['num_classes']} classes")
        if entry["augment"] not in ("none", "crop_flip"):
            raise RegistryError(f"datasets.{name}.augment: must be none or crop_flip, got {entry['augment']!r}")
    recipes = _expect(doc.get("standard_recipes", {}), dict, "standard_recipes")
    for method, recipe in recipes.items():
        _expect(recipe, str, f"standard_recipes.{method}")
    return Registry(splits=tables, protocols=protocols, datasets=datasets, standard_recipes=recipes,
                    named_splits=named)


@functools.lru_cache(maxsize=None)
def load(path: Path = REGISTRY_PATH) -> Registry:
    return parse(_read_yaml(path), path.parent)


def _lazy(ref: str) -> Callable[..., Any]:
    """A callable that imports ``module:function`` on first use (keeps the CLI start fast)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__qualname__ = ref
    return call


def builtin_datasets(reg: Registry | None = None) -> list[DatasetSpec]:
    """The datasets ``registry.yaml`` describes, as specs."""
    reg = reg or load()
    specs = []
    for name, e in reg.datasets.items():
        specs.append(
            DatasetSpec(
                name=name,
                load=_lazy(e["loader"]),
                check=_lazy(e["check"]) if "check" in e else (lambda root: []),
                download=_lazy(e["download"]) if "download" in e else None,
                table=e["table"],
                unknown_table=e.get("unknown_table"),
                num_classes=e["num_classes"],
                image_size=e["image_size"],
                augment=e["augment"],
                epochs=e.get("epochs"),
                description=e.get("description", ""),
                source=e.get("source", ""),
                licence=e.get("licence", ""),
                files=e.get("files", False),
            )
        )
    return specs
