"""Files on disk: atomic writes, hashed JSON documents, run folders, and mean +- std.

A run lives in ``OUT/<dataset>/<protocol>/<method>/split<i>-seed<s>-<config hash>/`` and holds
``result.json`` and ``scores.npz`` (:mod:`osrbench.records`) and ``checkpoint.pt``
(:mod:`osrbench.checkpoints`). Every file is written to a unique temporary name in the same folder
and renamed into place, so a reader never sees half a file and two processes never write the same
temporary file. Torch-free.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from osrbench.errors import UserError


def canonical_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON form of ``obj`` (sorted keys), shortened."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write a file through ``write(fh)`` into a temporary file, fsync, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    """Write a record atomically with a content hash of everything else in it (``sha256``)."""
    body = {k: v for k, v in doc.items() if k != "sha256"}
    body["sha256"] = canonical_hash(body, 64)
    data = json.dumps(body, indent=2, sort_keys=True, default=str).encode()
    atomic_write(path, lambda fh: fh.write(data))


class CorruptJSON(UserError, ValueError):
    """A hashed JSON document that is truncated, not JSON, or whose content hash does not match."""


def read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptJSON(f"{path}: unreadable result record ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or "sha256" not in doc:
        raise CorruptJSON(f"{path}: not an osrbench record (no content hash)")
    body = {k: v for k, v in doc.items() if k != "sha256"}
    if canonical_hash(body, 64) != doc["sha256"]:
        raise CorruptJSON(f"{path}: content hash mismatch (file was modified or damaged)")
    return doc


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))


def run_dir(out: Path, method: str, dataset: str, protocol: str, split: int, seed: int, config_hash: str) -> Path:
    return Path(out) / dataset / protocol / method / f"split{split}-seed{seed}-{config_hash[:10]}"


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    v = [float(x) for x in values]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    if len(v) == 1:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
