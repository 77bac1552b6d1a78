"""Split protocols: which classes are known and unknown in split ``i`` of a dataset.

Rows come verbatim from the official tables (``splits.yaml``); a known class keeps its position
in the row as its label. Any 10-class dataset uses the ``mnist`` rows. A protocol with named splits
(``ssb``, ``ssb_splits.yaml``) names its splits (``easy``, ``medium``, ``hard``); a record keeps the
split's index, its position in the table's names (:func:`split_names`).
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
    reg = reg or load()
    reader = reader_of(protocol, reg)
    if reader is not None:  # splits from the user's files (see below)
        return reader.num_splits(spec.name)
    if protocol in reg.named_splits:
        return len(_named_table(spec, protocol, reg).splits)
    return len(_rows(spec, protocol, reg)[0])


def _rows(spec: DatasetSpec, protocol: str, reg: Registry) -> tuple[list, list | None]:
    if protocol not in reg.splits:
        raise SplitError(f"unknown protocol {protocol!r} (valid: {', '.join(protocol_names(reg))})")
    tables = reg.splits[protocol]
    if spec.table not in tables:
        raise _no_table(spec, protocol, reg)
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
    if protocol in reg.named_splits:
        return _named_split(spec, protocol, index, reg)
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


# ------------------------------------------------------------------ named splits (protocol ssb)
# The Semantic Shift Benchmark fixes the known classes and names its splits by difficulty. A record
# keeps an integer split (its position in the table's ``splits``); the name is what users type and see.


def protocol_names(reg: Registry | None = None) -> list[str]:
    """Every protocol, in the registry's order (split tables, named splits, files)."""
    reg = reg or load()
    return [*reg.protocols, *(p for p in reg.splits if p not in reg.protocols)]


def _protocols_with(spec: DatasetSpec, reg: Registry) -> list[str]:
    """The protocols that have splits for ``spec`` (a protocol of files: its reader knows the dataset)."""
    out = []
    for p in protocol_names(reg):
        reader = reader_of(p, reg)
        if reader is not None:
            try:
                reader.num_splits(spec.name)
            except UserError:
                continue
            out.append(p)
        elif spec.table in reg.splits.get(p, {}) or spec.table in reg.named_splits.get(p, {}):
            out.append(p)
    return out


def _no_table(spec: DatasetSpec, protocol: str, reg: Registry) -> SplitError:
    has = _protocols_with(spec, reg)
    if has:
        return SplitError(f"{spec.name} has no splits under protocol {protocol!r}; use --protocol "
                          f"{' or '.join(has)}")
    return SplitError(f"protocol {protocol!r} has no table {spec.table!r} for dataset {spec.name!r}")


def default_protocol(spec: DatasetSpec, reg: Registry | None = None) -> str:
    """``auroc`` (the classic default), or the only protocol a dataset has splits under (``ssb`` for
    cub, aircraft, scars and imagenet-ssb, ``openood`` for cifar50)."""
    has = _protocols_with(spec, reg or load())
    return "auroc" if "auroc" in has or not has else has[0]


def _named_table(spec: DatasetSpec, protocol: str, reg: Registry):
    tables = reg.named_splits[protocol]
    if spec.table not in tables:
        raise _no_table(spec, protocol, reg)
    return tables[spec.table]


def split_names(spec: DatasetSpec, protocol: str, reg: Registry | None = None) -> tuple[str, ...] | None:
    """The split names in index order (``("easy", "medium", "hard")``); ``None`` for numbered splits."""
    reg = reg or load()
    if protocol not in reg.named_splits:
        return None
    return tuple(_named_table(spec, protocol, reg).splits)


def split_titles(dataset: str, protocol: str) -> tuple[str, ...] | None:
    """The table headings of the named splits of the dataset called ``dataset`` (``Easy``, ``Medium``,
    ``Hard``, as the SSB papers write them); ``None`` for numbered splits, or for a dataset or protocol
    this installation does not know."""
    from osrbench import plugins

    try:
        names = split_names(plugins.get().dataset(dataset), protocol)
    except (plugins.UnknownName, SplitError):
        return None
    return None if names is None else tuple(n.capitalize() for n in names)


def split_title(dataset: str, protocol: str, index: int) -> str:
    """A table heading for split ``index``: ``Easy`` for a named split, ``split 0`` for a numbered one."""
    titles = split_titles(dataset, protocol)
    return titles[index] if titles is not None and 0 <= index < len(titles) else f"split {index}"


def split_label(dataset: str, protocol: str, index: int) -> str:
    """A split in a message: ``2 (hard)`` for a named split, ``2`` for a numbered one."""
    titles = split_titles(dataset, protocol)
    return f"{index} ({titles[index].lower()})" if titles is not None and 0 <= index < len(titles) else str(index)


def parse_split(text: str | int, spec: DatasetSpec, protocol: str, reg: Registry | None = None) -> int:
    """The index of one split: a name (``easy``) of a protocol with named splits, or an index."""
    reg = reg or load()
    names = split_names(spec, protocol, reg)
    n = num_splits(spec, protocol, reg)
    word = str(text).strip().lower()
    if names is not None and word in names:
        return names.index(word)
    try:
        index = int(word)
    except ValueError:
        valid = f"{', '.join(names)} or 0-{n - 1}" if names else f"0-{n - 1}"
        raise SplitError(f"unknown split {str(text)[:40]!r} for {spec.name}/{protocol} (valid: {valid})") from None
    if not 0 <= index < n:
        shown = f" ({', '.join(f'{i}={m}' for i, m in enumerate(names))})" if names else ""
        raise SplitError(f"split {index} out of range for {spec.name}/{protocol} (valid: 0-{n - 1}{shown})")
    return index


def parse_splits(text: str | None, spec: DatasetSpec, protocol: str, reg: Registry | None = None) -> list[int]:
    """A split list: ``None`` for all splits, names (``easy,hard``) or indices (``0-4``, ``1,3``), sorted."""
    reg = reg or load()
    n = num_splits(spec, protocol, reg)
    if text is None:
        return list(range(n))
    names = split_names(spec, protocol, reg)
    if names is not None and isinstance(text, str) and len(text) <= MAX_INDEX_TEXT:
        parts = [p.strip() for p in text.split(",")]
        for p in parts:
            if p.lower() not in names and not p.replace("-", "").isdigit():
                raise SplitError(f"unknown split {p[:40]!r} for {spec.name}/{protocol} "
                                 f"(valid: {', '.join(names)} or indices 0-{n - 1}, e.g. {','.join(names)})")
        text = ",".join(str(names.index(p.lower())) if p.lower() in names else p for p in parts)
    return parse_indices(text, n)


def unknown_wnid_ids(table) -> dict[str, int]:
    """wnid -> class id of the unknown wnids of a named table (ImageNet-SSB): the number of known classes
    plus the wnid's position in the sorted union of every difficulty's wnids, so an id means the same
    class in every split."""
    wnids = sorted({w for ids in table.unknown.values() for w in ids if isinstance(w, str)})
    return {w: len(table.known) + i for i, w in enumerate(wnids)}


def _named_split(spec: DatasetSpec, protocol: str, index: int, reg: Registry) -> OpenSetSplit:
    table = _named_table(spec, protocol, reg)
    names = list(table.splits)
    if not 0 <= index < len(names):
        shown = ", ".join(f"{i}={m}" for i, m in enumerate(names))
        raise SplitError(f"split {index} out of range for {spec.name}/{protocol} (valid: 0-{len(names) - 1}: {shown})")
    known = table.known
    if len(set(known)) != len(known) or not all(0 <= c < spec.num_classes for c in known):
        raise SplitError(f"{protocol}.{spec.table}.known: ids must be distinct and in 0..{spec.num_classes - 1}")
    ids = unknown_wnid_ids(table)
    unknown = tuple(ids.get(c, c) for d in table.splits[names[index]] for c in table.unknown[d])  # type: ignore[misc]
    if len(set(unknown)) != len(unknown) or set(unknown) & set(known):
        raise SplitError(f"{protocol}.{spec.table}.{names[index]}: unknown ids repeat or overlap the known ones")
    return OpenSetSplit(spec.name, protocol, index, known, unknown)  # type: ignore[arg-type]
