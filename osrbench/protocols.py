"""Split protocols: which classes are known and unknown in split ``i`` of a dataset.

Rows come verbatim from the official tables (``splits.yaml``); a known class keeps its position
in the row as its label. Any 10-class dataset uses the ``mnist`` rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
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


def get_split(spec: DatasetSpec, protocol: str, index: int, reg: Registry | None = None) -> OpenSetSplit:
    reg = reg or load()
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


def parse_indices(text: str, upper: int) -> list[int]:
    """Parse ``0-4``, ``1,3`` or ``2`` into split indices below ``upper``."""
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise SplitError(f"cannot read split list {text!r} (use forms like 0-4, 1,3 or 2)") from None
    bad = [i for i in out if not 0 <= i < upper]
    if bad or not out:
        raise SplitError(f"split {bad[0] if bad else text} out of range (valid: 0-{upper - 1})")
    return sorted(dict.fromkeys(out))
