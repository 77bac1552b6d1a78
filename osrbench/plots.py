"""PNG figures of a comparison: ROC curves per split, score histograms, per-split metric bars.

matplotlib is imported only when a figure is drawn, and only through its object-oriented API
(``matplotlib.figure.Figure`` rendered by the Agg canvas): no pyplot state, no GUI backend, so
plotting works on a headless machine and does not change the backend of a caller's session.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from osrbench import compare, records, results
from osrbench.errors import UserError
from osrbench.records import Record

SCORES_FILE = records.SCORES
DPI = 100


def roc_curve(known_scores: Sequence[float], unknown_scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) with knowns positive, accepting as known when score >= threshold.

    One point per distinct score, from (0, 0) to (1, 1); the trapezoidal area under it equals
    :func:`osrbench.metrics.auroc` (ties count 1/2).
    """
    s = np.sort(np.asarray(known_scores, dtype=np.float64))
    u = np.sort(np.asarray(unknown_scores, dtype=np.float64))
    thresholds = np.unique(np.concatenate([s, u]))[::-1]
    tpr = (s.size - np.searchsorted(s, thresholds, side="left")) / s.size
    fpr = (u.size - np.searchsorted(u, thresholds, side="left")) / u.size
    return np.r_[0.0, fpr], np.r_[0.0, tpr]


class PlotsUnavailable(UserError):
    """``--plot`` without matplotlib installed."""


def require_matplotlib() -> None:
    """A one-line :class:`PlotsUnavailable` saying how to install matplotlib when it cannot be imported."""
    try:
        import matplotlib.figure  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401
    except ImportError as exc:
        raise PlotsUnavailable(f"--plot needs matplotlib, which cannot be imported ({exc.name or 'matplotlib'}): "
                               "pip install 'osrbench[plot]'") from None


def check_plot_dir(out_dir: Path) -> Path:
    """Before any run (nothing is created): matplotlib is importable and ``out_dir`` is, or can be
    made, a folder files can be written in; a one-line :class:`~osrbench.errors.UserError` otherwise."""
    require_matplotlib()
    return results.check_writable_dir(Path(out_dir), "--plot folder")


def _figure(width: float = 5.0, height: float = 4.0):
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: Path) -> Path:
    path = Path(path)
    results.atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI))  # OSError -> one line
    return path


def plot_roc(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """One ROC curve per ``(label, known scores, unknown scores)``; the legend gives each AUROC."""
    from osrbench.metrics import auroc

    fig = _figure()
    ax = fig.add_subplot()
    for label, known, unknown in curves:
        fpr, tpr = roc_curve(known, unknown)
        ax.plot(fpr, tpr, lw=1.6, label=f"{label} (AUROC {100 * auroc(known, unknown):.1f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="unknowns accepted (FPR)", ylabel="knowns accepted (TPR)",
           title=title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_hist(known: np.ndarray, unknown: np.ndarray, path: Path, title: str, xlabel: str = "open-set score") -> Path:
    """Overlaid histograms of the known and unknown test scores on shared bins (each sums to 1)."""
    known = np.asarray(known, dtype=np.float64)
    unknown = np.asarray(unknown, dtype=np.float64)
    lo = float(min(known.min(), unknown.min()))
    hi = float(max(known.max(), unknown.max()))
    if hi <= lo:
        hi = lo + 1.0
    bins = np.linspace(lo, hi, 41)
    fig = _figure(5.0, 3.4)
    ax = fig.add_subplot()
    ax.hist(known, bins=bins, weights=np.full(known.size, 1.0 / known.size), alpha=0.55,
            label=f"known (n={known.size})", color="tab:blue")
    ax.hist(unknown, bins=bins, weights=np.full(unknown.size, 1.0 / unknown.size), alpha=0.55,
            label=f"unknown (n={unknown.size})", color="tab:red")
    ax.set(xlabel=xlabel, ylabel="fraction of the set", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_bars(summaries: Mapping[str, compare.Summary], splits: Sequence[int], path: Path, title: str,
              lower_is_better: bool = False) -> Path:
    """Grouped bars: one group per split plus a "mean" group with +- std error bars (values in %)."""
    methods = list(summaries)
    groups = [*(f"split {k}" for k in splits), "mean ± std"]
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(methods))
    fig = _figure(max(5.0, 1.0 + 0.9 * len(groups)), 3.6)
    ax = fig.add_subplot()
    for i, m in enumerate(methods):
        s = summaries[m]
        pos = x + (i - (len(methods) - 1) / 2) * width
        color = f"C{i}"
        ax.bar(pos[:-1], [100 * s.per_split.get(k, math.nan) for k in splits], width, color=color, label=m)
        ax.bar(pos[-1:], [100 * s.mean], width, yerr=[100 * s.std], capsize=3, color=color)
        ax.annotate(f"{100 * s.mean:.1f}", (pos[-1], 100 * (s.mean + s.std)), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, groups)
    ax.set_ylabel("%" + (" (lower is better)" if lower_is_better else ""))
    ax.set_ylim(0, 112)  # bars start at 0: lengths compare honestly
    ax.set_title(title)
    ax.legend(fontsize=8, ncols=min(4, len(methods)), loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _load_scores(rec: Record) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The run's main known and unknown scores and the name of that score (``score`` if unnamed)."""
    if rec.dir is None or not (Path(rec.dir) / SCORES_FILE).exists():
        return None
    scores = records.read_scores(rec.dir, rec)
    known, unknown = scores.pick("score")
    return known, unknown, scores.main


def comparison_plots(c: compare.Comparison, out_dir: Path, log=None) -> list[Path]:
    """Write ``roc_split<k>.png``, ``hist_<method>_split<k>.png`` and ``bars_<metric>.png``.

    Curves and histograms use each method's lowest seed on the split (its stored ``scores.npz``);
    a record without a score file is skipped with a message through ``log``.
    """
    require_matplotlib()
    out_dir = results.ensure_dir(Path(out_dir), "--plot folder")
    written: list[Path] = []
    tag = f"{c.dataset}/{c.protocol}"
    for k in c.splits:
        curves = []
        for m in c.methods:
            recs = sorted((r for r in c.records[m] if r.split == k), key=lambda r: r.seed)
            if not recs:
                continue
            scores = _load_scores(recs[0])
            if scores is None:
                if log:
                    log(f"no {SCORES_FILE} in {recs[0].dir}; {m} left out of the split {k} plots")
                continue
            known, unknown, name = scores
            curves.append((f"{m} ({name})" if name != "score" else m, known, unknown))
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in m)
            written.append(plot_hist(known, unknown, out_dir / f"hist_{safe}_split{k}.png",
                                     f"{m} on {tag} split {k} (seed {recs[0].seed})",
                                     "open-set score" + (f" ({name})" if name != "score" else "")))
        if curves:
            written.append(plot_roc(curves, out_dir / f"roc_split{k}.png", f"ROC, {tag} split {k}"))
    for metric in c.metrics:
        written.append(plot_bars(c.summaries[metric], c.splits, out_dir / f"bars_{metric}.png",
                                 f"{compare.SHORT.get(metric, metric)} per split, {tag}",
                                 metric in compare.LOWER_IS_BETTER))
    return written
