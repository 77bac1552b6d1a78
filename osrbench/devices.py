"""Where a run computes: the device, the precision policy, and what the record says of the machine."""

from __future__ import annotations

import platform
import re
import resource
from contextlib import contextmanager
from typing import Iterator

import torch

from osrbench.errors import UserError


#: The device names a run accepts: the host's kernels, checkpoints and precision policy are
#: written for the CPU and CUDA only (meta, mps, xla ... are refused before anything is built).
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:[0-9]{1,3})?)$")
VALID_DEVICES = "auto, cpu, cuda, cuda:N"


def check_device_name(name: str | None) -> None:
    """A :class:`UserError` unless ``name`` is one of ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (no torch call)."""
    if name in (None, ""):
        return
    if not isinstance(name, str) or not DEVICE_RE.match(name):
        shown = repr(name) if len(repr(name)) <= 40 else repr(name)[:37] + "..."
        raise UserError(f"unknown device {shown} (valid: {VALID_DEVICES})")


def pick_device(name: str | None) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``; a user error when unusable."""
    check_device_name(name)
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UserError(f"device {name!r} does not exist: this machine has {count} CUDA device(s) "
                            f"(valid: cuda:0-cuda:{count - 1})")
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
