"""The checkpoint file: one writer, one reader, verified by a content hash, loaded safely.

A file is ``torch.save`` bytes, then ``OSRBENCH-SHA256:`` and the 64 hex digits of their sha256.
Writing is atomic and keeps the checkpoint it replaces as ``checkpoint.prev.pt``, so a kill or a
damaged file costs at most one checkpoint interval. Loading uses ``weights_only``: a crafted file
cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from osrbench.errors import UserError
from osrbench.results import atomic_write

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
FORMAT = 1
_TRAILER = b"OSRBENCH-SHA256:"


class CorruptCheckpoint(UserError):
    """A checkpoint that is truncated, damaged or refused by safe loading."""


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run draws from: Python, numpy, torch (CPU and CUDA), the run's generator."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["generator"])


def save(folder: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically; the one it replaces becomes ``checkpoint.prev.pt``."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    blob = buf.getvalue()
    blob += _TRAILER + hashlib.sha256(blob).hexdigest().encode()
    current = Path(folder) / CHECKPOINT
    if current.exists():
        os.replace(current, Path(folder) / PREVIOUS)
    atomic_write(current, lambda fh: fh.write(blob))


def read(path: Path) -> dict[str, Any]:
    """Load and verify one checkpoint file."""
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise CorruptCheckpoint(f"{path}: cannot read checkpoint ({exc.strerror})") from None
    body, sep, digest = blob.rpartition(_TRAILER)
    if not sep or hashlib.sha256(body).hexdigest().encode() != digest:
        raise CorruptCheckpoint(f"{path}: checkpoint is truncated or damaged (content hash mismatch)")
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal means an unusable file
        raise CorruptCheckpoint(f"{path}: checkpoint refused by safe loading ({type(exc).__name__})") from None


def load_latest(folder: Path, warn: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest intact checkpoint of a run folder, falling back to the previous one."""
    problems = []
    for name in (CHECKPOINT, PREVIOUS):
        path = Path(folder) / name
        if not path.exists():
            continue
        try:
            ckpt = read(path)
        except CorruptCheckpoint as exc:
            problems.append(str(exc))
            continue
        for p in problems:
            warn(f"{p}; using {name} (epoch {ckpt['epoch']})")
        return ckpt
    if problems:
        raise CorruptCheckpoint(problems[0] + "; no intact earlier checkpoint (use --force to start over)")
    return None
