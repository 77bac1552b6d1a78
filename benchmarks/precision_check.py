"""Do the speed policies move AUROC beyond run-to-run noise? (issue 8)

Trains each method under every policy for several seeds on digits resized to 32 px (the only
dataset every machine has): fp32 eager (the reference), bf16 autocast with channels-last, and on
CUDA both again with steps replayed from CUDA graphs. Prints AUROC mean +- std per policy, its
difference to the reference's mean (compare it with the seed-to-seed std) and seconds per epoch.
Run: python benchmarks/precision_check.py [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from tabulate import tabulate

from osrbench import devices, engine

#: policy name -> engine overrides
POLICIES = {
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "fp32+graphs": {"precision": "fp32", "cuda_graphs": True},
    "bf16+graphs": {"precision": "bf16", "cuda_graphs": True},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--methods", nargs="+", default=["softmax", "dias"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="osrbench-precision-")))
    args = ap.parse_args()
    on_cuda = devices.pick_device(args.device).type == "cuda"
    policies = [p for p in POLICIES if on_cuda or "graphs" not in p]
    rows = []
    for method in args.methods:
        auroc: dict[str, list[float]] = {}
        seconds: dict[str, list[float]] = {}
        for policy in policies:
            for seed in range(args.seeds):
                rec = engine.run(engine.RunRequest(
                    method=method, dataset="digits", seed=seed, epochs=args.epochs, device=args.device,
                    out=args.out, progress=False, overrides={"image_size": 32, **POLICIES[policy]})).record
                auroc.setdefault(policy, []).append(100 * rec.metrics["auroc"])
                seconds.setdefault(policy, []).append(rec.wall_time_s["train"] / args.epochs)
        ref = statistics.mean(auroc["fp32"])
        for policy in policies:
            values = auroc[policy]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            rows.append([method, policy, f"{statistics.mean(values):.2f} +- {std:.2f}",
                         f"{statistics.mean(values) - ref:+.2f}", f"{statistics.mean(seconds[policy]):.3f}"])
    where = torch.cuda.get_device_name() if on_cuda else "cpu"
    print(f"policy check: digits at 32 px, auroc split 0, {args.epochs} epochs, seeds 0-{args.seeds - 1}, {where}")
    print(tabulate(rows, headers=["method", "policy", "AUROC", "vs fp32", "s/epoch"], disable_numparse=True))


if __name__ == "__main__":
    main()
