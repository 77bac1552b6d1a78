"""The checkpoint file: one writer, one reader, verified by a content hash, loaded safely.

A file is ``torch.save`` bytes, then ``OSRBENCH-SHA256:`` and the 64 hex digits of their sha256.
The payload carries the run's identity (:class:`osrbench.records.RunIdentity`), which the engine
checks before resuming. Writing is atomic, under a lock of the run folder (several processes may
share one), keeps the checkpoint it replaces as ``checkpoint.prev.pt``, and first proves that safe
loading can read the state back, so a method whose state cannot be resumed fails when it saves,
not when it resumes. Loading uses ``weights_only``: a crafted file cannot run code.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import random
from collections import Counter, OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from osrbench.errors import MethodFailed, UserError
from osrbench.results import OutputError, atomic_write, os_problem

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


class UnloadableState(MethodFailed):
    """The method's ``state_dict()`` holds something safe loading refuses (it could never resume)."""

    stage = "state_dict"


#: What a method's ``state_dict()`` may hold, in words (the rule :func:`state_problem` checks).
STATE_TYPES = ("tensors, bool, int, float, str, None, and lists, tuples and dicts (str or int keys: module, "
               "optimiser and scheduler state_dicts) of those")
_STATE_SCALARS = (bool, int, float, str, type(None))


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def state_problem(value: Any, path: str = "state_dict()") -> str | None:
    """Where ``value`` holds something outside :data:`STATE_TYPES`, as ``state_dict()['extra'] is a
    numpy.ndarray``; None when it holds none.

    Exact types: numpy scalars subclass float and int but safe loading refuses them, and other
    types it reads back (sets, bytes) do not come back as what a resume compares.
    """
    if torch.is_tensor(value) or type(value) in _STATE_SCALARS:
        return None
    if type(value) in (list, tuple, torch.Size):
        return next((why for i, v in enumerate(value) if (why := state_problem(v, f"{path}[{i}]"))), None)
    if type(value) in (dict, OrderedDict, Counter):  # torch's MultiStepLR keeps its milestones in a Counter
        for key, v in value.items():
            if type(key) not in (str, int):
                return f"{path} has the key {key!r} of type {_type_name(key)} (keys must be str or int)"
            why = state_problem(v, f"{path}[{key!r}]")
            if why:
                return why
        return None
    return f"{path} is a {_type_name(value)}"


def save(folder: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically; the one it replaces becomes ``checkpoint.prev.pt``.

    A method state outside :data:`STATE_TYPES` is refused before anything is written, so the
    checkpoint already there stays the run's last good one.
    """
    why = state_problem(payload.get("state"))
    if why:
        raise UnloadableState(f"the method's state_dict() cannot be read back by safe loading (torch.load "
                              f"weights_only=True) as it was saved, so the run could never resume: {why}; keep to "
                              f"{STATE_TYPES} (numpy: torch.from_numpy(a), a.item())")
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    blob = buf.getvalue()
    try:
        torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever safe loading refuses
        raise UnloadableState(f"the method's state_dict() cannot be read back by safe loading "
                              f"(torch.load weights_only=True), so the run could never resume: "
                              f"{str(exc).splitlines()[0][:200]} (keep to tensors, numbers, str, lists and dicts)") from None
    blob += _TRAILER + hashlib.sha256(blob).hexdigest().encode()
    folder = Path(folder)
    current = folder / CHECKPOINT
    with _folder_lock(folder):
        check_folder(folder)
        try:
            os.replace(current, folder / PREVIOUS)
        except FileNotFoundError:  # the first checkpoint
            pass
        except OSError as exc:  # the folder turned read-only, a full disk, ...: one line, not a traceback
            raise os_problem(folder / PREVIOUS, exc) from None
        atomic_write(current, lambda fh: fh.write(blob))


def check_folder(folder: Path) -> None:
    """Refuse (:class:`~osrbench.results.OutputError`) a run folder whose checkpoint names hold
    something other than a file (a folder, a device): no checkpoint could ever be saved there.

    :func:`load_latest` checks it, so a resume stops before training instead of at its first save;
    a run that starts over (``--force``) should call it before training too.
    """
    for name in (CHECKPOINT, PREVIOUS):
        path = Path(folder) / name
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise OutputError(f"{path} is not a file (a folder or a device?), so no checkpoint can be saved "
                              "there; move it away, then run again")


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock of a run folder (processes sharing it rotate checkpoints one at a time)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fh = open(folder / ".lock", "a")
    except OSError as exc:
        raise os_problem(folder / ".lock", exc) from None
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


#: What to do about a damaged checkpoint (the engine tries checkpoint.prev.pt by itself).
_WHAT_TO_DO = f"--resume continues from {PREVIOUS} when that one is intact; else start over with --force"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def payload_problem(ckpt: Any) -> str | None:
    """What a checkpoint that passed its content hash lacks to be resumed from (``None``: nothing).

    The hash proves the bytes are the ones written, not that osrbench wrote them: a file made by
    hand with a valid trailer could hold a bare tensor or a string epoch, which would otherwise end
    in a traceback deep inside a resume.
    """
    if not isinstance(ckpt, dict):
        return f"a {type(ckpt).__name__}, not a checkpoint's mapping"
    if not _is_int(ckpt.get("format")) or ckpt["format"] > FORMAT:
        return f"format {ckpt.get('format')!r}, not one this osrbench reads ({FORMAT})"
    if not _is_int(ckpt.get("epoch")) or ckpt["epoch"] < 0:
        return f"epoch {ckpt.get('epoch')!r} is not a count of epochs"
    checks = {
        "identity": isinstance(ckpt.get("identity"), dict),
        "state": isinstance(ckpt.get("state"), dict),
        "history": isinstance(ckpt.get("history"), list) and all(isinstance(r, dict) for r in ckpt["history"]),
        "elapsed": isinstance(ckpt.get("elapsed"), (int, float)) and not isinstance(ckpt.get("elapsed"), bool)
        and ckpt["elapsed"] >= 0,
        "fitted": isinstance(ckpt.get("fitted", False), bool),
        "rng": isinstance(ckpt.get("rng"), dict) and torch.is_tensor(ckpt["rng"].get("torch"))
        and torch.is_tensor(ckpt["rng"].get("generator")) and isinstance(ckpt["rng"].get("python"), tuple)
        and isinstance(ckpt["rng"].get("numpy"), list) and isinstance(ckpt["rng"].get("cuda"), list),
    }
    bad = next((key for key, ok in checks.items() if not ok), None)
    return None if bad is None else f"its {bad!r} is missing or of the wrong type"


def read(path: Path) -> dict[str, Any]:
    """Load and verify one checkpoint file."""
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise CorruptCheckpoint(f"{path}: cannot read checkpoint ({exc.strerror}); {_WHAT_TO_DO}") from None
    body, sep, digest = blob.rpartition(_TRAILER)
    if not sep or hashlib.sha256(body).hexdigest().encode() != digest:
        raise CorruptCheckpoint(f"{path}: checkpoint is truncated or damaged (content hash mismatch); {_WHAT_TO_DO}")
    try:
        ckpt = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal means an unusable file
        raise CorruptCheckpoint(f"{path}: checkpoint refused by safe loading ({type(exc).__name__}); "
                                f"{_WHAT_TO_DO}") from None
    problem = payload_problem(ckpt)
    if problem:
        raise CorruptCheckpoint(f"{path}: not a checkpoint osrbench wrote ({problem}); {_WHAT_TO_DO}")
    return ckpt


def load_latest(folder: Path, accept: Callable[[dict[str, Any], str], None] | None = None
                ) -> tuple[dict[str, Any] | None, list[str]]:
    """The newest intact checkpoint of a run folder that ``accept(ckpt, path)`` does not refuse
    (by raising a UserError: a foreign file), falling back to the previous one; and one line per
    file that was damaged or refused."""
    check_folder(folder)
    problems: list[str] = []
    for name in (CHECKPOINT, PREVIOUS):
        path = Path(folder) / name
        if not path.exists():
            continue
        try:
            ckpt = read(path)
            if accept is not None:
                accept(ckpt, str(path))
        except UserError as exc:
            problems.append(str(exc))
            continue
        return ckpt, problems
    return None, problems
