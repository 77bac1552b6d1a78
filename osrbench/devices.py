"""Where a run computes: the device, the precision policy, and what the record says of the machine."""

from __future__ import annotations

import platform
import resource
from contextlib import contextmanager
from typing import Iterator

import torch

from osrbench.errors import UserError


def pick_device(name: str | None) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; a user error when unusable."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (valid: auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
    return dev


class Precision:
    """The run's precision policy: fp32 (reference) or bf16 autocast with channels-last inputs.

    ``cuda_graphs``: steps are recorded as CUDA graphs, where autocast's weight cache must be off.
    """

    def __init__(self, name: str, device: torch.device, cuda_graphs: bool = False) -> None:
        self.bf16 = name == "bf16"
        self.device_type = device.type
        self.cache = not cuda_graphs

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=self.cache)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.bf16 else x


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """torch's CPU thread count set to ``n`` (config key ``threads``) for a run, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    out = {"host_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device.type == "cuda":
        out["device"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
