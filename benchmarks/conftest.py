"""Shared set-up of the speed benchmarks and the side-by-side ratio table printed at the end.

Environment: OSRBENCH_BENCH_DEVICE (default cuda when present, else cpu), OSRBENCH_BENCH_IMAGES
(training images per epoch; default 30,000 on CUDA = one CIFAR-10 split, 128 on CPU),
OSRBENCH_BENCH_WORKERS (DataLoader workers of the PIL baseline; default 4 on CUDA, 0 on CPU),
OSRBENCH_BENCH_PRECISION (fp32 or bf16), OSRBENCH_BENCH_ROUNDS (epochs timed per feed, median
reported; default 3 on CUDA, 1 on CPU), OSRBENCH_BENCH_METHODS (default "softmax arpl-cs dias"),
OSRBENCH_BENCH_THREADS (torch CPU threads; default 1: on the 2-core machines two threads per
process under load can make one small op 100x slower).
"""

from __future__ import annotations

import os

import torch

DEVICE = torch.device(os.environ.get("OSRBENCH_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
IMAGES = int(os.environ.get("OSRBENCH_BENCH_IMAGES") or (30000 if DEVICE.type == "cuda" else 128))
WORKERS = int(os.environ.get("OSRBENCH_BENCH_WORKERS") or (4 if DEVICE.type == "cuda" else 0))
PRECISION = os.environ.get("OSRBENCH_BENCH_PRECISION", "fp32")
#: Epochs each throughput benchmark times; the table shows their median.
ROUNDS = int(os.environ.get("OSRBENCH_BENCH_ROUNDS") or (3 if DEVICE.type == "cuda" else 1))
METHODS = os.environ.get("OSRBENCH_BENCH_METHODS", "softmax arpl-cs dias").split()
torch.set_num_threads(int(os.environ.get("OSRBENCH_BENCH_THREADS") or 1))

#: method -> feed ("stream" | "graphs" | "pil") -> images per second, filled by the benchmarks.
THROUGHPUT: dict[str, dict[str, float]] = {}
#: method (or "stream") -> kernels per training batch, its budget, per-phase step counts (test_kernels).
KERNELS: dict[str, dict[str, float]] = {}

#: Issue 8's targets: seconds per epoch of one CIFAR-10 split (30,000 images) on one H100.
TARGET_S_PER_30K = {"dias": 3.9, "arpl-cs": 2.8, "softmax": 1.0}


def pytest_terminal_summary(terminalreporter):
    from tabulate import tabulate

    if KERNELS:
        terminalreporter.write_line("")
        terminalreporter.write_line(f"kernels per training batch (all phases, the stream included), batch 64, 32 px, "
                                    f"counted on {DEVICE}")
        rows = [[name, f"{v['per batch']:.2f}", v["budget"],
                 ", ".join(f"{k[5:]} {int(n)}" for k, n in v.items() if k.startswith("step "))]
                for name, v in KERNELS.items()]
        terminalreporter.write_line(tabulate(rows, headers=["", "kernels/batch", "budget", "steps by phase"],
                                             disable_numparse=True))
    if not THROUGHPUT:
        return

    def rate(v):
        return f"{v:,.0f}" if v else "-"

    compiled = any("compiled graphs" in feeds for feeds in THROUGHPUT.values())
    rows = []
    for method, feeds in THROUGHPUT.items():
        s, g, p, c = feeds.get("stream"), feeds.get("graphs"), feeds.get("pil"), feeds.get("compiled graphs")
        best = max(v for v in (s, g, c) if v) if s or g or c else None
        target = TARGET_S_PER_30K.get(method) if DEVICE.type == "cuda" else None  # H100 targets
        target = target * IMAGES / 30000 if target else None
        steps = feeds.get("graph steps")
        steps = "/".join(str(steps.get(k, 0)) for k in ("eager", "captured", "replayed")) if steps else "-"
        rows.append([method, rate(s), rate(g), *([rate(c)] if compiled else []), steps, rate(p),
                     f"{best / p:.2f}x" if best and p else "-", f"{IMAGES / best:.2f}" if best else "-",
                     f"{target:.2f}" if target else "-"])
    terminalreporter.write_line("")
    terminalreporter.write_line(
        f"one epoch of {IMAGES} 3x32x32 images, batch 64, {DEVICE} ({_device_name()}), precision {PRECISION}, "
        f"median of {ROUNDS} epoch(s) per feed; osrbench's step under its stream and under a PIL DataLoader "
        f"(workers {WORKERS}) like the releases', not the releases' own code; target (CUDA): issue 8's H100 "
        f"epoch time scaled to {IMAGES} images")
    headers = ["method", "stream img/s", "graphs img/s", *(["compiled graphs img/s"] if compiled else []),
               "graph steps e/c/r", "PIL loader img/s", "best / PIL", "best s/epoch", "target s/epoch"]
    terminalreporter.write_line(tabulate(rows, headers=headers, disable_numparse=True))


def _device_name() -> str:
    return torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else f"{torch.get_num_threads()} threads"
