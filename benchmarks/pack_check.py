"""Aggregate training throughput of N runs packed in one process (osrbench.pack) against one run alone.

For each method and each N: N sessions on the same synthetic CIFAR-shaped split (30,000 images
of 6 classes, batch 64, crop and flip, CIFAR-10's config; run k has seed k), each set up as the
engine sets it up (cuda_graphs auto: replayed from CUDA graphs on a GPU) on its own lane of a
pack (its CUDA stream and random states), stepped round robin as ``osrbench.pack`` steps runs,
the loss terms summed as the engine sums them. Timed per phase of the method (a DIAS batch is a
GAN step and a Copycat step): ``--steps`` full batches per run after ``--warm`` (the eager
warm-up and the capture), one synchronisation at each end; a batch's time is the sum over its
phases, and the ratio is the aggregate images/s against N = 1 measured in the same process.
Then a short profiled window (``--profile`` batches per run): the GPU-busy fraction (the union
of the kernels' intervals over the window) and the kernels the device ran per training batch. On a CPU it only checks that the script runs.
Run: python benchmarks/pack_check.py [--device cuda] [--methods dias arpl-cs] [--runs 1 2 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import kernels  # noqa: E402
from osrbench import graphs, pack, session  # noqa: E402


def open_pack(name: str, n: int, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    """N sessions of ``name`` on lanes of one pack."""
    lanes = pack.Lanes()
    backend = None if device.type == "cuda" else graphs.ReplayBackend  # the CPU: a smoke run of the script
    runs = []
    for seed in range(n):
        s, lane = lanes.open(device, lambda seed=seed: kernels.bench_session(name, x, y, device, seed=seed,
                                                                             graph_backend=backend))
        runs.append((s, lane))
    return lanes, runs


def phase_iterators(runs, index: int, device: torch.device):
    """Each run's steps of phase ``index`` of epoch 0, its loss terms summed as the engine sums them."""
    out = []
    for s, lane in runs:
        sums = session.LossSums(device)
        out.append((s, lane, s.phase_steps(0, index, lambda phase, i, losses, sums=sums: sums.add(phase, losses))))
    return out


def rounds(lanes: pack.Lanes, steps, count: int) -> None:
    """``count`` steps of every run, round robin (as a pack steps its runs)."""
    for _ in range(count):
        for _, lane, it in steps:
            with lanes.on(lane):
                next(it)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def busy_and_kernels(lanes: pack.Lanes, runs, count: int, device: torch.device) -> tuple[str, str]:
    """GPU-busy fraction and device kernels per batch over ``count`` rounds (``-`` where unmeasured)."""
    if device.type != "cuda":
        return "-", "-"
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    try:
        sync(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            rounds(lanes, runs, count)
            sync(device)
        spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                       if e.device_type == DeviceType.CUDA and e.time_range.end > e.time_range.start)
    except Exception as exc:  # noqa: BLE001 - the profiler is a diagnostic: report, do not fail the row
        return f"({type(exc).__name__})", "-"
    if not spans:
        return "-", "0"
    busy, (lo, hi) = 0.0, spans[0]
    for start, end in spans[1:]:
        if start > hi:
            busy += hi - lo
            lo, hi = start, end
        else:
            hi = max(hi, end)
    busy += hi - lo
    window = spans[-1][1] - spans[0][0]
    batches = count * len(runs)
    return f"{100 * busy / window:.0f} %", f"{len(spans) / batches:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--methods", nargs="+", default=["dias", "arpl-cs"])
    ap.add_argument("--runs", nargs="+", type=int, default=[1, 2, 5])
    ap.add_argument("--images", type=int, default=30000, help="training images per run (one CIFAR-10 split)")
    ap.add_argument("--warm", type=int, default=12, help="untimed full batches per run first (warm-up, capture)")
    ap.add_argument("--steps", type=int, default=150, help="timed full batches per run")
    ap.add_argument("--profile", type=int, default=10, help="profiled batches per run (CUDA)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    x, y = kernels.synthetic_images(args.images)
    rows = []
    for name in args.methods:
        alone = None
        for n in args.runs:
            lanes, runs = open_pack(name, n, x, y, device)
            per_batch_s, busy, phase_kernels = 0.0, [], []
            try:
                for index in range(len(runs[0][0].phases)):
                    steps = phase_iterators(runs, index, device)
                    rounds(lanes, steps, args.warm)
                    sync(device)
                    t0 = time.perf_counter()
                    rounds(lanes, steps, args.steps)
                    sync(device)
                    per_batch_s += (time.perf_counter() - t0) / args.steps
                    b, k = busy_and_kernels(lanes, steps, args.profile, device)
                    busy.append(b)
                    phase_kernels.append(k)
                graphed = runs[0][0].cuda_graphs
            finally:
                lanes.close()
            rate = n * kernels.BATCH / per_batch_s
            alone = rate if n == 1 else alone
            rows.append([name, n, f"{rate:,.0f}", f"{rate / alone:.2f}x" if alone else "-", " / ".join(busy),
                         str(sum(map(int, phase_kernels))) if all(k.isdigit() for k in phase_kernels) else "-",
                         "yes" if graphed else "no"])
            del runs
            if device.type == "cuda":
                torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"packed runs ({name}, torch {torch.__version__}, {args.images} CIFAR-shaped images per run, batch "
          f"{kernels.BATCH}, fp32; {args.steps} timed batches per run after {args.warm}; x = aggregate img/s over "
          "one run alone, same process)")
    print(tabulate(rows, headers=["method", "runs", "img/s aggregate", "x one run", "GPU busy by phase",
                                  "kernels/batch", "CUDA graphs"], disable_numparse=True))


if __name__ == "__main__":
    main()
