"""Aggregate training throughput of N runs at once on one device: ``osrbench compare --jobs N`` as
N processes (``--pack no``) and as one pack (``--pack yes``, osrbench.pack) against ``--jobs 1`` on
the same runs (one method on digits at 32 px, several splits), each in a fresh results folder.
Small runs leave most of a GPU idle; running several at once is how a sweep fills it. With CUDA
MPS when its daemon is already running (this script never starts one).

Throughput = training images of all runs (train images x epochs) / wall-clock seconds of the whole
``compare`` (process start, data, evaluation included: what a user waits for).
Run: python benchmarks/concurrency_check.py [--device cuda] [--jobs 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate


def mps_running() -> bool:
    """Whether a CUDA MPS control daemon is running (its pipe directory exists and answers)."""
    if not shutil.which("nvidia-cuda-mps-control"):
        return False
    try:
        out = subprocess.run(["nvidia-cuda-mps-control"], input="get_server_list\n", capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def run_compare(args: argparse.Namespace, jobs: int, pack: str, out: Path) -> tuple[float, int]:
    """Wall seconds of one ``compare`` and the training images its runs consumed."""
    from osrbench import records

    cmd = [sys.executable, "-m", "osrbench.cli", "compare", args.method, "--dataset", "digits", "--splits", args.splits,
           "--epochs", str(args.epochs), "--set", "image_size=32", "--device", args.device, "--jobs", str(jobs), "--pack", pack,
           "--out", str(out), "--quiet", "--metrics", "auroc"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    recs = [records.read_record(p) for p in out.rglob(records.RESULT)]
    if not recs:
        raise SystemExit(f"compare --jobs {jobs} wrote no records under {out}")
    return wall, sum(r.counts["train"] * r.epochs for r in recs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--method", default="softmax")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--splits", default="0-4")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="osrbench-jobs-"))
    rows, first = [], None
    mps = mps_running()
    for jobs, pack in ((1, "no"), (args.jobs, "no"), (args.jobs, "yes")):
        wall, images = run_compare(args, jobs, pack, base / f"jobs{jobs}-{pack}")
        rate = images / wall
        first = first or rate
        how = "one process" if jobs == 1 else ("one pack" if pack == "yes" else f"{jobs} processes")
        rows.append([jobs, how, f"{wall:.1f}", f"{rate:,.0f}", f"{rate / first:.2f}x"])
    print(f"concurrent runs: {args.method} on digits at 32 px, splits {args.splits}, {args.epochs} epochs, "
          f"{args.device}, CUDA MPS {'on' if mps else 'off'} (CUDA_MPS_PIPE_DIRECTORY="
          f"{os.environ.get('CUDA_MPS_PIPE_DIRECTORY', '-')})")
    print(tabulate(rows, headers=["jobs", "how", "wall s", "train img/s (all runs)", "vs 1 job"], disable_numparse=True))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
