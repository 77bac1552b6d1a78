"""Does the bf16 precision policy move AUROC beyond run-to-run noise? (issue 8)

Trains each method under fp32 and bf16 for several seeds on digits resized to 32 px (the only
dataset every machine has) and prints AUROC mean +- std per policy, the difference of the means,
and the seed-to-seed std for scale. Run: python benchmarks/precision_check.py [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tabulate import tabulate

from osrbench import engine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--methods", nargs="+", default=["softmax", "dias"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="osrbench-precision-")))
    args = ap.parse_args()
    rows = []
    for method in args.methods:
        auroc: dict[str, list[float]] = {}
        seconds: dict[str, list[float]] = {}
        for precision in ("fp32", "bf16"):
            for seed in range(args.seeds):
                rec = engine.run(engine.RunRequest(
                    method=method, dataset="digits", seed=seed, epochs=args.epochs, device=args.device,
                    out=args.out, progress=False, overrides={"image_size": 32, "precision": precision}))
                auroc.setdefault(precision, []).append(100 * rec["metrics"]["auroc"])
                seconds.setdefault(precision, []).append(rec["wall_time_s"]["train"] / args.epochs)
        m = {k: statistics.mean(v) for k, v in auroc.items()}
        s = {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in auroc.items()}
        rows.append([method, f"{m['fp32']:.2f} +- {s['fp32']:.2f}", f"{m['bf16']:.2f} +- {s['bf16']:.2f}",
                     f"{m['bf16'] - m['fp32']:+.2f}", f"{statistics.mean(seconds['fp32']):.2f}",
                     f"{statistics.mean(seconds['bf16']):.2f}"])
    print(f"precision check: digits at 32 px, auroc split 0, {args.epochs} epochs, seeds 0-{args.seeds - 1}")
    print(tabulate(rows, headers=["method", "AUROC fp32", "AUROC bf16", "bf16 - fp32", "s/epoch fp32",
                                  "s/epoch bf16"], disable_numparse=True))


if __name__ == "__main__":
    main()
