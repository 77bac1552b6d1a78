"""Head-to-head tables of result records: per-metric mean +- std over splits, per-split values.

Seeds are averaged within a split first; the mean and the sample standard deviation (ddof 1)
are then taken over splits, as the papers report them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

from osrbench import protocols
from osrbench.datasets import DatasetSpec
from osrbench.results import mean_std

METRICS = ("auroc", "oscr", "acc", "macro_f1", "fpr95_known", "aupr_in", "aupr_out")
LABELS = {"auroc": "AUROC", "oscr": "OSCR", "acc": "closed-set accuracy", "macro_f1": "macro-F1 (K+1)",
          "fpr95_known": "FPR at 95% TPR (known positive; lower is better)", "aupr_in": "AUPR-in",
          "aupr_out": "AUPR-out"}


def per_split(records: Iterable[Mapping[str, Any]], metric: str) -> dict[str, dict[int, float]]:
    """method -> split -> value averaged over seeds."""
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        if metric in rec["metrics"]:
            acc[rec["method"]][rec["split"]].append(rec["metrics"][metric])
    return {m: {s: sum(v) / len(v) for s, v in sorted(by.items())} for m, by in acc.items()}


def render(records: Sequence[Mapping[str, Any]], methods: Sequence[str], fmt: str = "simple") -> str:
    from tabulate import tabulate

    first = records[0]
    splits = sorted({r["split"] for r in records})
    seeds = sorted({r["seed"] for r in records})
    out = [f"{first['dataset']}, protocol {first['protocol']}, splits {','.join(map(str, splits))}, "
           f"seeds {','.join(map(str, seeds))}; values in %, mean +- std over splits"]
    for metric in METRICS:
        table = per_split(records, metric)
        if not table:
            continue
        rows = []
        for method in methods:
            values = table.get(method)
            if not values:
                continue
            m, s = mean_std(values.values())
            rows.append([method, f"{100 * m:.2f} +- {100 * s:.2f}",
                         *(f"{100 * values[k]:.2f}" if k in values else "-" for k in splits)])
        out.append("")
        out.append(LABELS.get(metric, metric))
        out.append(tabulate(rows, headers=["method", "mean +- std", *(f"split {k}" for k in splits)],
                            tablefmt=fmt, disable_numparse=True))
    return "\n".join(out)


def duplicate_split_warnings(dataset: DatasetSpec, protocol: str, splits: Sequence[int]) -> list[str]:
    """One line per split whose class sets repeat an earlier split's (the osrci duplicates)."""
    seen: dict[Any, int] = {}
    lines = []
    for i in splits:
        key = protocols.get_split(dataset, protocol, i).class_set_key
        if key in seen:
            lines.append(f"{dataset.name}/{protocol} split {i} has the same class sets as split {seen[key]}; "
                         "its results are not independent")
        else:
            seen[key] = i
    return lines
