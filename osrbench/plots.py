"""PNG figures of a comparison: ROC curves per split, score histograms, per-split metric bars;
and of the statistics in :mod:`osrbench.analysis`: a critical-difference diagram of a rank test
(:func:`plot_cd`) and a heatmap of AUROC per unknown and per known class (:func:`plot_class_heatmap`).

matplotlib is imported only when a figure is drawn, and only through its object-oriented API
(``matplotlib.figure.Figure`` rendered by the Agg canvas): no pyplot state, no GUI backend, so
plotting works on a headless machine and does not change the backend of a caller's session.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from osrbench import compare, protocols, records, results, stats
from osrbench.errors import UserError
from osrbench.records import Record

if TYPE_CHECKING:
    from osrbench import analysis

SCORES_FILE = records.SCORES
DPI = 100
#: The figure formats (``--plot-format``); the file's suffix picks the format.
PLOT_FORMATS = ("png", "pdf", "svg")
#: savefig's options per suffix: no dates in SVG and PDF, so the same figure gives the same file.
_SAVE = {".png": {"format": "png"}, ".svg": {"format": "svg", "metadata": {"Date": None}},
         ".pdf": {"format": "pdf", "metadata": {"CreationDate": None, "ModDate": None}}}


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
    """Write ``fig`` to ``path`` in the format its suffix names (:data:`PLOT_FORMATS`; PNG for any other)."""
    path = Path(path)
    kw = _SAVE.get(path.suffix, _SAVE[".png"])
    results.atomic_write(path, lambda fh: fig.savefig(fh, dpi=DPI, **kw))  # OSError -> one line
    return path


def _save_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    """The data a figure draws, as CSV beside it (``path``): numbers in full precision (repr)."""
    lines = [",".join(header)] + [",".join(v if isinstance(v, str) else repr(float(v)) for v in row) for row in rows]
    data = ("\n".join(lines) + "\n").encode()
    results.atomic_write(Path(path), lambda fh: fh.write(data))
    return Path(path)


def plot_roc(curves: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """One ROC curve per ``(label, known scores, unknown scores)``; the legend gives each AUROC.
    The curves' points are written beside the figure (``roc_split0.csv``: curve, fpr, tpr)."""
    from osrbench.metrics import auroc

    fig = _figure()
    ax = fig.add_subplot()
    points = []
    for label, known, unknown in curves:
        fpr, tpr = roc_curve(known, unknown)
        points += [(label, x, y) for x, y in zip(fpr, tpr)]
        ax.plot(fpr, tpr, lw=1.6, label=f"{label} (AUROC {100 * auroc(known, unknown):.1f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="unknowns accepted (FPR)", ylabel="knowns accepted (TPR)",
           title=title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    _save_csv(Path(path).with_suffix(".csv"), ("curve", "fpr", "tpr"), points)
    return _save(fig, path)


def plot_hist(known: np.ndarray, unknown: np.ndarray, path: Path, title: str, xlabel: str = "open-set score") -> Path:
    """Overlaid histograms of the known and unknown test scores on shared bins (each sums to 1); the
    bins are written beside the figure (``.csv``: bin_low, bin_high, known_fraction, unknown_fraction)."""
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
    k_frac = np.histogram(known, bins=bins)[0] / known.size
    u_frac = np.histogram(unknown, bins=bins)[0] / unknown.size
    _save_csv(Path(path).with_suffix(".csv"), ("bin_low", "bin_high", "known_fraction", "unknown_fraction"),
              list(zip(bins[:-1], bins[1:], k_frac, u_frac)))
    return _save(fig, path)


def plot_bars(summaries: Mapping[str, compare.Summary], splits: Sequence[int], path: Path, title: str,
              lower_is_better: bool = False, labels: Sequence[str] | None = None) -> Path:
    """Grouped bars: one group per split plus a "mean" group with +- std error bars (values in %);
    ``labels``: the splits' headings (default ``split K``; ``Easy`` for a named split)."""
    methods = list(summaries)
    groups = [*(labels or [f"split {k}" for k in splits]), "mean ± std"]
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(methods))
    fig = _figure(max(5.0, 1.0 + 0.9 * len(groups)), 3.6)
    ax = fig.add_subplot()
    for i, m in enumerate(methods):
        s = summaries[m]
        pos = x + (i - (len(methods) - 1) / 2) * width
        color = f"C{i}"
        ax.bar(pos[:-1], [100 * s.per_split.get(k, math.nan) for k in splits], width, color=color, label=m)
        err = s.std if math.isfinite(s.std) else 0.0  # one split: no std, so no error bar
        ax.bar(pos[-1:], [100 * s.mean], width, yerr=[100 * err], capsize=3, color=color)
        ax.annotate(f"{100 * s.mean:.1f}", (pos[-1], 100 * (s.mean + err)), xytext=(0, 2),
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


def comparison_plots(c: compare.Comparison, out_dir: Path, log=None, fmt: str = "png") -> list[Path]:
    """Write ``roc_split<k>.<fmt>``, ``hist_<method>_split<k>.<fmt>`` and ``bars_<metric>.<fmt>``
    (``fmt``: one of :data:`PLOT_FORMATS`), with the ROC and histogram data as ``.csv`` beside them.

    Curves and histograms use each method's lowest seed on the split (its stored ``scores.npz``);
    a record without a score file is skipped with a message through ``log``.
    """
    require_matplotlib()
    out_dir = results.ensure_dir(Path(out_dir), "--plot folder")
    written: list[Path] = []
    tag = f"{c.dataset}/{c.protocol}"
    titles = {k: protocols.split_title(c.dataset, c.protocol, k) for k in c.splits}
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
            written.append(plot_hist(known, unknown, out_dir / f"hist_{safe}_split{k}.{fmt}",
                                     f"{m} on {tag} {titles[k]} (seed {recs[0].seed})",
                                     "open-set score" + (f" ({name})" if name != "score" else "")))
        if curves:
            written.append(plot_roc(curves, out_dir / f"roc_split{k}.{fmt}", f"ROC, {tag} {titles[k]}"))
    for metric in c.metrics:
        written.append(plot_bars(c.summaries[metric], c.splits, out_dir / f"bars_{metric}.{fmt}",
                                 f"{compare.SHORT.get(metric, metric)} per split, {tag}",
                                 metric in compare.LOWER_IS_BETTER, [titles[k] for k in c.splits]))
    return written


# ------------------------------------------------------------------------- rank and class figures


@dataclass(frozen=True)
class CDLayout:
    """Where a critical-difference diagram puts things (method indices into the mean ranks)."""

    left: list[int]  # labelled on the left, top to bottom: the best half, best first
    right: list[int]  # labelled on the right, top to bottom: the rest, worst first
    bars: list[tuple[list[int], int]]  # (a clique of :func:`stats.cliques`, the bar's row below the axis)


def _cd_layout(mean_ranks: Sequence[float], cd: float) -> CDLayout:
    order = sorted(range(len(mean_ranks)), key=lambda i: mean_ranks[i])
    half = math.ceil(len(order) / 2)
    groups = stats.cliques(mean_ranks, cd) if math.isfinite(cd) else []
    bars: list[tuple[list[int], int]] = []
    ends: list[float] = []  # per row, the right end of its last bar: cliques that do not overlap share a row
    for g in groups:
        lo, hi = mean_ranks[g[0]], mean_ranks[g[-1]]
        row = next((r for r, end in enumerate(ends) if end + 0.1 < lo), len(ends))
        ends[row:row + 1] = [hi]
        bars.append((g, row))
    return CDLayout(order[:half], order[half:][::-1], bars)


def plot_cd(ranks: analysis.Ranks, path: Path, title: str) -> Path:
    """Demsar's (2006) critical-difference diagram of a Friedman test: the mean rank of each method
    on an axis 1..k (1 = best, left), thick bars joining methods whose mean ranks differ by less
    than the Nemenyi CD (:func:`stats.cliques`), and a bar of length CD; no bars when CD is NaN."""
    fr = ranks.result
    r, names, k, cd = list(fr.mean_ranks), list(fr.methods), len(fr.mean_ranks), fr.cd
    lay = _cd_layout(r, cd)
    labels = {i: f"{names[i]} ({r[i]:.2f})" for i in range(k)}
    span = max(3.0, 0.6 * (k - 1))  # inches of rank axis
    room = 0.3 + 0.075 * max((len(s) for s in labels.values()), default=1)  # inches of label each side
    upi = max(k - 1, 1) / span  # rank units per inch
    hi_x = max(k, 1 + cd) if math.isfinite(cd) else k  # a CD longer than the axis is drawn at its length
    rows = 1 + max((row for _, row in lay.bars), default=-1)
    base = 0.45 + 0.22 * rows  # depth of the first label, below the clique bars
    depth = base + 0.4 * max(len(lay.left), len(lay.right), 1) + 0.1
    top = -1.3 if math.isfinite(cd) else -0.7
    fig = _figure(span * (hi_x - 1) / max(k - 1, 1) + 2 * room, 0.5 * (depth - top) + 0.4)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_xlim(1 - room * upi, hi_x + room * upi)
    ax.set_ylim(depth, top)  # y grows downwards
    ax.plot([1, k], [0, 0], c="k", lw=1)
    for t in range(1, k + 1):
        ax.plot([t, t], [0, -0.15], c="k", lw=1)
        ax.text(t, -0.2, str(t), ha="center", va="bottom", fontsize=9)
    for t in np.arange(1.5, k, 1.0):  # half-rank minor ticks
        ax.plot([t, t], [0, -0.08], c="k", lw=0.7)
    if math.isfinite(cd):
        ax.plot([1, 1 + cd], [-0.95, -0.95], c="k", lw=1.5)
        for x in (1, 1 + cd):
            ax.plot([x, x], [-1.02, -0.88], c="k", lw=1.5)
        ax.text(1 + cd / 2, -1.05, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    end = 0.1 * upi
    for side, order in ((-1, lay.left), (1, lay.right)):
        x_end = 1 - end if side < 0 else k + end
        for n, i in enumerate(order):
            y = base + 0.4 * n
            ax.plot([r[i], r[i], x_end], [0, y, y], c="0.3", lw=0.9)
            ax.text(x_end + side * 0.4 * end, y, labels[i], ha="right" if side < 0 else "left", va="center",
                    fontsize=9)
    ax.plot(r, [0] * k, "o", c="k", ms=4)
    for g, row in lay.bars:
        y = 0.3 + 0.22 * row
        ax.plot([r[g[0]] - 0.05, r[g[-1]] + 0.05], [y, y], c="k", lw=4, solid_capstyle="round")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _class_matrix(by: Mapping[str, Mapping[int, tuple[float, int]]], classes: Sequence[int]) -> np.ndarray:
    """methods x classes AUROC in %, NaN where a method has no value for a class."""
    return np.array([[100 * d[c][0] if c in d else math.nan for c in classes] for d in by.values()],
                    dtype=np.float64).reshape(len(by), len(classes))


def plot_class_heatmap(b: analysis.ClassBreakdown, path: Path, title: str, annotate_max: int = 30) -> Path:
    """AUROC (%) per unknown class and per known class, methods x class ids, on one colour scale
    (vmin the lowest value, vmax 100); missing cells grey; values written in the cells unless a panel
    has more than ``annotate_max`` classes."""
    require_matplotlib()
    import matplotlib

    panels = [(role, list(getattr(b, role)), b.classes(role)) for role in ("unknown", "known")]
    mats = [_class_matrix(getattr(b, role), classes) for role, _, classes in panels]
    finite = np.concatenate([m[np.isfinite(m)] for m in mats])
    vmin = min(float(finite.min()), 99.0) if finite.size else 50.0
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    cell = [0.42 if len(c) <= annotate_max else 0.07 for _, _, c in panels]
    names = max((len(m) for _, ms, _ in panels for m in ms), default=4)
    n_rows = max(len(ms) for _, ms, _ in panels) or 1
    widths = [len(c) * w if c else 1.5 for (_, _, c), w in zip(panels, cell)]
    same = panels[0][1] == panels[1][1]  # one set of method names on the left is enough
    fig = _figure(sum(widths) + (1 if same else 2) * (0.3 + 0.07 * names) + 1.2, 0.32 * n_rows + 1.6)
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": widths})
    im = named = None
    for ax, (role, methods, classes), m in zip(axes, panels, mats):
        ax.set_title(f"per {role} class", fontsize=9)
        if not classes:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=vmin, vmax=100.0, aspect="auto",
                       interpolation="nearest")
        step = max(1, math.ceil(len(classes) / 60))
        ax.set_xticks(range(0, len(classes), step), [str(c) for c in classes[::step]],
                      fontsize=7 if len(classes) <= annotate_max else 6, rotation=0 if len(classes) <= 15 else 90)
        ax.set_xlabel("class id", fontsize=8)
        ax.set_yticks(range(len(methods)), methods if not (same and named) else [""] * len(methods), fontsize=8)
        named = True
        if len(classes) <= annotate_max:
            for (y, x), v in np.ndenumerate(m):
                if math.isfinite(v):  # light text on viridis' dark lower half
                    dark = (v - vmin) / max(100.0 - vmin, 1e-9) < 0.6
                    ax.text(x, y, f"{v:.1f}", ha="center", va="center", fontsize=6.5, c="w" if dark else "k")
    if im is not None:
        fig.colorbar(im, ax=list(axes), label="AUROC (%)", shrink=0.9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
