"""Shared set-up of the speed benchmarks and the side-by-side ratio table printed at the end.

Environment: OSRBENCH_BENCH_DEVICE (default cuda when present, else cpu), OSRBENCH_BENCH_IMAGES
(training images per epoch; default 30,000 on CUDA = one CIFAR-10 split, 128 on CPU),
OSRBENCH_BENCH_WORKERS (DataLoader workers of the PIL baseline; default 4 on CUDA, 0 on CPU),
OSRBENCH_BENCH_PRECISION (fp32 or bf16), OSRBENCH_BENCH_METHODS (default "softmax arpl-cs dias").
"""

from __future__ import annotations

import os

import torch

DEVICE = torch.device(os.environ.get("OSRBENCH_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
IMAGES = int(os.environ.get("OSRBENCH_BENCH_IMAGES") or (30000 if DEVICE.type == "cuda" else 128))
WORKERS = int(os.environ.get("OSRBENCH_BENCH_WORKERS") or (4 if DEVICE.type == "cuda" else 0))
PRECISION = os.environ.get("OSRBENCH_BENCH_PRECISION", "fp32")
METHODS = os.environ.get("OSRBENCH_BENCH_METHODS", "softmax arpl-cs dias").split()

#: method -> feed ("stream" | "pil") -> images per second, filled by the benchmarks.
THROUGHPUT: dict[str, dict[str, float]] = {}


def pytest_terminal_summary(terminalreporter):
    if not THROUGHPUT:
        return
    from tabulate import tabulate

    rows = []
    for method, feeds in THROUGHPUT.items():
        s, p = feeds.get("stream"), feeds.get("pil")
        rows.append([method, f"{s:,.0f}" if s else "-", f"{p:,.0f}" if p else "-",
                     f"{s / p:.2f}x" if s and p else "-", f"{IMAGES / s:.2f}" if s else "-"])
    terminalreporter.write_line("")
    terminalreporter.write_line(
        f"one epoch of {IMAGES} 3x32x32 images, batch 64, {DEVICE} ({_device_name()}), precision {PRECISION}, "
        f"PIL DataLoader workers {WORKERS}")
    terminalreporter.write_line(tabulate(rows, headers=["method", "stream img/s", "PIL loader img/s",
                                                        "stream / PIL", "stream s/epoch"]))


def _device_name() -> str:
    return torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else f"{torch.get_num_threads()} threads"
