"""Does tuning a post-hoc scorer on held-out known classes beat its published defaults?

For every finished run of the chosen methods on one dataset, every registered scorer scores the
test set twice from the run's checkpoint: with its published default parameters, and with its
grid tuned on held-out known training classes (``osrbench.scoring.tune``, what ``osrbench score
--tune`` does). Per scorer, the test AUROCs are paired over methods x splits: mean of each, mean
difference (tuned - default), wins/ties/losses of tuning and the exact Wilcoxon signed-rank p
(two-sided). The last column is the default policy ``osrbench score`` has today
(``osrbench.scoring.TUNED_BY_DEFAULT``); tests/test_score_params.py checks that it equals the
README's tables.

    python benchmarks/tuning_check.py --runs runs/tuning-check                    # digits, 15 epochs
    python benchmarks/tuning_check.py --runs runs/tuning-fmnist --dataset fashion-mnist --epochs 2 --methods softmax arpl

Missing runs are trained first with ``osrbench compare`` (finished ones are reused; ``--no-train``
only scores what exists). Each run's AUROCs are cached in ``RUNS/tuning_check.json`` so that a
rerun scores only new runs; two checks may score other methods or splits of one folder at once
(one core each). Torch runs on one thread (the numbers do not depend on it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from osrbench import compare, evaluation, metrics, plugins, protocols, report, rescore, results, scoring  # noqa: E402

METHODS = ("softmax", "arpl", "arpl-cs", "dias", "cac")
#: Tuning earns its default where it wins on average and the Wilcoxon p is below this.
ALPHA = 0.05


def train(args: argparse.Namespace) -> None:
    cmd = [sys.executable, "-m", "osrbench.cli", "compare", *args.methods, "--dataset", args.dataset,
           "--splits", args.splits, "--epochs", str(args.epochs), "--out", str(args.runs), "--quiet"]
    if args.data_root:
        cmd += ["--data-root", str(args.data_root)]
    print("training (finished runs are reused):", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def score_one(rec, specs, data_root) -> dict[str, dict]:
    """scorer -> {"default": AUROC, "tuned": AUROC, "params": the tuned parameters} (or {"n/a": why})."""
    grid = [sp for sp in specs if sp.grid]
    with rescore.rebuilt(rec, "cpu", data_root) as (s, data, dev):
        again = evaluation.evaluate(s.method, data, dev, s.config["normalize"], s.ctx.num_classes, s.precision, s.call)
        rescore.check_reproduced(rec, again.scores, dev)
        run = (lambda sps, tune: scoring.score_run(sps, s.method, data, dev, s.config["normalize"], s.precision,
                                                   rec.seed, tune))
        # Tuned first; where tuning kept the defaults its test scores are the defaults' (the same fit and
        # apply with the same values), so only the scorers whose values changed are scored again untuned.
        tuned = run(specs, True)
        changed = [sp for sp in grid if not isinstance(tuned[sp.name], str)
                   and tuned[sp.name].info["params"] != dict(sp.params)]
        default = {**tuned, **run(changed, False)}
    out = {}
    for sp in specs:
        d = default[sp.name]
        if isinstance(d, str):
            out[sp.name] = {"n/a": d}
            continue
        t = tuned.get(sp.name, d)  # no grid: nothing to tune, the defaults are the tuned values
        if isinstance(t, str):
            out[sp.name] = {"n/a": t}
            continue
        out[sp.name] = {"default": metrics.auroc(d.known, d.unknown), "tuned": metrics.auroc(t.known, t.unknown),
                        "params": t.info["params"], "defaults": d.info["params"], "has_grid": bool(sp.grid)}
    return out


def save(cache_path: Path, key: str, entry: dict) -> None:
    """Add one run's entry to the cache file as it is now: two checks scoring other methods of the
    same runs folder at once (one process each, to use both cores) keep each other's entries."""
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    cache[key] = entry
    results.atomic_write(cache_path, lambda fh: fh.write(json.dumps(cache, indent=1, sort_keys=True).encode()))


def table(cache: dict, names: list[str], keys: list[str]) -> list[list[str]]:
    rows = []
    for name in names:
        pairs = [cache[k][name] for k in keys if name in cache[k] and "default" in cache[k][name]]
        if not pairs:
            rows.append([name, "0", "-", "-", "-", "-", "-", "-", "n/a to every run"])
            continue
        d = np.array([p["default"] for p in pairs])
        t = np.array([p["tuned"] for p in pairs])
        pr = compare.paired(dict(enumerate(t)), dict(enumerate(d)), "auroc")
        changed = sum(p["params"] != p["defaults"] for p in pairs)
        earns = pr.mean_diff > 0 and pr.p_wilcoxon < ALPHA
        rows.append([name, str(len(pairs)), f"{100 * d.mean():.2f}", f"{100 * t.mean():.2f}",
                     compare._signed(pr.mean_diff), f"{pr.wins}/{pr.ties}/{pr.losses}",
                     compare._p(pr.p_wilcoxon) if pairs[0]["has_grid"] else "-",
                     f"{changed}/{len(pairs)}" if pairs[0]["has_grid"] else "no grid",
                     ("on" if name in scoring.TUNED_BY_DEFAULT else "off")
                     + ("" if earns == (name in scoring.TUNED_BY_DEFAULT) else " (measured: " + ("on" if earns else "off") + ")")])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/tuning-check"))
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--splits", default="0-4", help="the splits trained and scored (default 0-4)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--data-root", type=Path)
    ap.add_argument("--no-train", action="store_true", help="only score the finished runs under --runs")
    ap.add_argument("--format", default="github")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.no_train:
        train(args)
    from tabulate import tabulate

    reg = plugins.get()
    specs = [reg.scorer(n) for n in reg.scorers]
    splits = set(protocols.parse_indices(args.splits, 10**6))
    recs = [r for r in report.select(report.read_runs(args.runs), args.dataset, None, args.methods)
            if r.config.get("epochs") == args.epochs and r.split in splits]
    recs.sort(key=lambda r: (r.method, r.split, r.seed))
    cache_path = args.runs / "tuning_check.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    keys = []
    for rec in recs:
        key = f"{rec.dir}@{rec.scores_sha256}"
        keys.append(key)
        # a scorer missing from the cache, or whose grid came or went since, is scored again
        stale = [sp for sp in specs if sp.name not in cache.get(key, {})
                 or cache[key][sp.name].get("has_grid", bool(sp.grid)) != bool(sp.grid)]
        if stale:
            t0 = time.perf_counter()
            cache[key] = {**cache.get(key, {}), **score_one(rec, stale, args.data_root)}
            save(cache_path, key, cache[key])
            print(f"scored {rec.method} split {rec.split} seed {rec.seed} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
    methods = sorted({r.method for r in recs})
    splits = sorted({r.split for r in recs})
    print(f"{args.dataset}, {args.epochs} epochs: {len(recs)} runs ({', '.join(methods)}; splits "
          f"{', '.join(map(str, splits))}); test AUROC %, default vs tuned on held-out known classes, paired over "
          f"methods x splits; tuning earns its default where tuned - default > 0 with Wilcoxon p < {ALPHA}")
    print(tabulate(table(cache, list(reg.scorers), keys),
                   ["scorer", "pairs", "default", "tuned", "tuned - default", "wins/ties/losses", "Wilcoxon p",
                    "tuning changed params", "tuned by default"], args.format, disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
