"""Pinned float64 training steps: one epoch of a method whose numbers a test can pin.

The method is set up by :mod:`osrbench.session` on the first 48 training images of digits split 0
(3 batches of 16, seed 0, one thread) with float64 networks and trained one epoch, every phase.
A test pins every loss term of every step and a sum or digests of the state after it; any change
in them means the math changed. The host pins the built-in methods so
(``tests/test_pinned_steps.py``); a plugin pins its own the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from osrbench import config as configmod
from osrbench import plugins, protocols, session
from osrbench.datasets import OpenSetData


@dataclass
class PinnedEpoch:
    """Per step ``{"phase/term": value}``, and the method's ``state_dict()`` after the epoch."""

    losses: list[dict[str, float]]
    state: dict[str, Any]


def pinned_epoch(name: str, registry: plugins.Plugins | None = None) -> PinnedEpoch:
    """One float64 epoch of method ``name`` on 48 digits images (see the module doc)."""
    reg = registry or plugins.get()
    spec, ds = reg.method(name), reg.dataset("digits")
    split = protocols.get_split(ds, "auroc", 0)
    _, cfg = configmod.resolve(spec, ds, None, 2, {"batch_size": 16})
    full = ds.load(None, split, cfg["image_size"])
    data = OpenSetData(full.train_x[:48], full.train_y[:48], full.known_x, full.known_y, full.unknown_x,
                       full.unknown_ids)
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    try:
        s = session.open_session(spec, cfg, data, num_classes=split.num_known, dataset="digits",
                                 device=torch.device("cpu"), seed=0)
        s.step = lambda phase, x, y: s.method.train_step(phase, x.double(), y)
        losses: list[dict[str, float]] = []
        s.run_epoch(0, lambda phase, i, out: losses.append({f"{phase}/{k}": float(v) for k, v in out.items()}))
        return PinnedEpoch(losses, s.method.state_dict())
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)


def state_abs_sum(obj: Any) -> float:
    """The sum of |x| over every float tensor in ``obj`` (nested dicts, lists and tuples), in float64."""
    if torch.is_tensor(obj):
        return float(obj.double().abs().sum()) if obj.is_floating_point() else 0.0
    if isinstance(obj, dict):
        return sum(state_abs_sum(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_abs_sum(v) for v in obj)
    return 0.0


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if torch.is_tensor(obj):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}.{i}")


def state_digests(state: Any) -> dict[str, Any]:
    """Per tensor of a state dict: [sum, sum |x|, sum x * ramp] in float64 for a float tensor (the
    ramp runs from -1 to 1 over its elements, so a permutation changes it), the first 16 hex
    digits of the sha256 of its bytes for an integer one."""
    out: dict[str, Any] = {}
    for name, t in _tensors(state):
        if not t.is_floating_point():
            out[name] = hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]
            continue
        d = t.detach().double().reshape(-1)
        ramp = torch.linspace(-1, 1, d.numel(), dtype=torch.float64)
        out[name] = [float(d.sum()), float(d.abs().sum()), float((d * ramp).sum())]
    return out
