"""Split protocols: which classes are known and unknown in split ``i`` of a dataset.

Rows come verbatim from the official tables (``splits.yaml``); a known class keeps its position
in the row as its label. Any 10-class dataset uses the ``mnist`` rows.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from osrbench.registry import Registry, load
from osrbench.errors import UserError

if TYPE_CHECKING:
    from osrbench.datasets import DatasetSpec


class SplitError(UserError, ValueError):
    """A protocol, split index or class id that does not exist."""


@dataclass(frozen=True)
class OpenSetSplit:
    dataset: str
    protocol: str
    index: int
    known: tuple[int, ...]  # original class ids; known[i] is label i
    unknown: tuple[int, ...]  # original class ids of the unknown test classes

    @property
    def num_known(self) -> int:
        return len(self.known)

    @property
    def hash(self) -> str:
        """Content hash: equal for two splits with the same classes in the same order."""
        doc = {"known": list(self.known), "unknown": list(self.unknown), "dataset": self.dataset}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def class_set_key(self) -> tuple[frozenset[int], frozenset[int]]:
        """Known and unknown classes as sets (rows that differ only in order share it)."""
        return frozenset(self.known), frozenset(self.unknown)


def num_splits(spec: DatasetSpec, protocol: str, reg: Registry | None = None) -> int:
    reader = reader_of(protocol, reg)
    if reader is not None:  # splits from the user's files (see below)
        return reader.num_splits(spec.name)
    return len(_rows(spec, protocol, reg or load())[0])


def _rows(spec: DatasetSpec, protocol: str, reg: Registry) -> tuple[list, list | None]:
    if protocol not in reg.splits:
        raise SplitError(f"unknown protocol {protocol!r} (valid: {', '.join(reg.splits)})")
    tables = reg.splits[protocol]
    if spec.table not in tables:
        raise SplitError(f"protocol {protocol!r} has no table {spec.table!r} for dataset {spec.name!r}")
    unknown_rows = None
    if spec.unknown_table is not None:
        if spec.unknown_table not in tables:
            raise SplitError(f"protocol {protocol!r} has no table {spec.unknown_table!r}")
        unknown_rows = tables[spec.unknown_table]
    return tables[spec.table], unknown_rows


def get_split(spec: DatasetSpec, protocol: str, index: int, reg: Registry | None = None,
              root: Path | None = None) -> OpenSetSplit:
    """Split ``index``; ``root`` (default: the data root) is read only by a protocol of files."""
    reg = reg or load()
    if reader_of(protocol, reg) is not None:  # splits from the user's files (see below)
        return file_split(spec, protocol, index, reg, root)
    rows, unknown_rows = _rows(spec, protocol, reg)
    if not 0 <= index < len(rows):
        raise SplitError(f"split {index} out of range for {spec.name}/{protocol} (valid: 0-{len(rows) - 1})")
    known = tuple(rows[index])
    if len(set(known)) != len(known) or not all(0 <= c < spec.num_classes for c in known):
        raise SplitError(f"{protocol}.{spec.table}[{index}]: known ids {known} must be distinct and in 0..{spec.num_classes - 1}")
    if unknown_rows is not None:
        unknown = tuple(unknown_rows[index])
        if len(set(unknown)) != len(unknown):
            raise SplitError(f"{protocol}.{spec.unknown_table}[{index}]: repeated unknown ids")
    else:
        unknown = tuple(c for c in range(spec.num_classes) if c not in known)
    return OpenSetSplit(spec.name, protocol, index, known, unknown)


# ------------------------------------------------------------------- splits from the user's files


@dataclass(frozen=True)
class FileSplit(OpenSetSplit):
    """A split defined by files the user downloaded (OpenOOD's image lists): its hash covers the
    files' contents too, so two versions of the files never share a record."""

    sources: tuple[tuple[str, str], ...] = ()  # (file, sha256) of each file that defines the split

    @property
    def hash(self) -> str:
        doc = {"known": list(self.known), "unknown": list(self.unknown), "dataset": self.dataset,
               "sources": [list(s) for s in self.sources]}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def reader_of(protocol: str, reg: Registry | None = None) -> ModuleType | None:
    """The module named by the protocol's registry entry ``reader`` (e.g. ``osrbench.data.openood``),
    which reads its splits and images from the user's files; None for a protocol of split tables.

    A reader has ``num_splits(dataset)``, ``read_split(dataset, index, root) -> (known, unknown,
    sources)`` and ``load(root, split, image_size) -> OpenSetData``.
    """
    ref = (reg or load()).protocols.get(protocol, {}).get("reader")
    return importlib.import_module(ref) if ref else None


def file_split(spec: DatasetSpec, protocol: str, index: int, reg: Registry, root: Path | None) -> FileSplit:
    try:
        known, unknown, sources = reader_of(protocol, reg).read_split(spec.name, index, root)
    except UserError as exc:  # missing or malformed files: callers catch SplitError
        raise SplitError(str(exc)) from None
    return FileSplit(spec.name, protocol, index, tuple(known), tuple(unknown), tuple(sources))


#: Seeds run from 0 to this (the range every generator the host seeds accepts).
MAX_SEED = 2**31 - 1
#: The most indices one list (``--splits``, ``--seeds``) may name: each one is at least a run.
MAX_INDICES = 10_000
#: The longest index list text.
MAX_INDEX_TEXT = 10_000


class SeedError(UserError, ValueError):
    """A seed outside 0 .. :data:`MAX_SEED`."""


def check_seed(seed: object) -> int:
    """``seed`` if it is an int in 0 .. :data:`MAX_SEED`; a :class:`SeedError` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        shown = repr(seed) if len(repr(seed)) <= 40 else repr(seed)[:37] + "..."
        raise SeedError(f"seed {shown} out of range (valid: 0-{MAX_SEED})")
    return seed


def parse_indices(text: str, upper: int, what: str = "split", limit: int = MAX_INDICES) -> list[int]:
    """Parse ``0-4``, ``1,3`` or ``2`` into sorted distinct indices below ``upper`` (``what``: ``split``
    or ``seed``, for the messages).

    Every bound is checked before a list is built: each index in ``0 .. upper - 1``, ranges that
    run forwards, both ends of a range given (``1-`` is an error), at most ``limit`` indices.
    """
    shown = repr(text) if len(repr(text)) <= 60 else repr(text)[:57] + "..."
    form = "use forms like 0-4, 1,3 or 2"
    if not isinstance(text, str) or len(text) > MAX_INDEX_TEXT:
        raise SplitError(f"cannot read {what} list {shown} ({form})")
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        lo_text, sep, hi_text = part.strip().partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if sep else lo
        except ValueError:
            raise SplitError(f"cannot read {what} list {shown} ({form})") from None
        if hi < lo:
            raise SplitError(f"{what} range {part.strip()!r} runs backwards (write {hi}-{lo})")
        for i in (lo, hi):
            if not 0 <= i < upper:
                raise SplitError(f"{what} {i} out of range (valid: 0-{upper - 1})")
        ranges.append((lo, hi))
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    count = sum(hi - lo + 1 for lo, hi in merged)
    if count > limit:
        raise SplitError(f"{what} list {shown} names {count:,} {what}s; at most {limit:,} are allowed")
    return [i for lo, hi in merged for i in range(lo, hi + 1)]
