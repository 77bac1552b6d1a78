"""What compare and report show beyond mean +- std, computed from result records and score files.

- :func:`bootstrap` / :func:`intervals`: per split, a stratified bootstrap over the test samples
  (knowns and unknowns resampled separately, the same resamples for every method and seed of a
  split, so ``A - B`` is a paired bootstrap); over splits, a t-interval and a bootstrap of the
  mean, for each method and each pair.
- :func:`variance` / :func:`planner`: with several seeds per split, how much of the spread is the
  split and how much the seed, and how many seeds would resolve a difference.
- :func:`class_breakdown`: AUROC of the knowns against each unknown class, and of each known class
  against the unknowns.
- :func:`rank_tests`: Friedman test and Nemenyi critical difference over the (dataset, protocol)
  blocks of a report.

The math is :mod:`osrbench.stats`; the text is rendered here (tables via tabulate), the plots in
:mod:`osrbench.plots`. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from osrbench import compare, metrics, protocols, records, stats
from osrbench.compare import Comparison
from osrbench.errors import UserError
from osrbench.records import Record
from osrbench.results import json_number


# ----------------------------------------------------------------------------- test samples


@dataclass(frozen=True)
class Samples:
    """One run's test-set outputs under the compared score, per sample."""

    known: np.ndarray  # score of each known test image (higher = more likely known)
    unknown: np.ndarray
    known_pred: np.ndarray
    known_labels: np.ndarray  # 0..K-1
    unknown_pred: np.ndarray
    known_classes: np.ndarray  # the original class id of each known image
    unknown_classes: np.ndarray  # the original class id of each unknown image
    #: Macro-F1's inputs: the known and unknown values of the score its rule thresholds, and the
    #: threshold; ``None`` when the score has no rule (a post-hoc scorer).
    f1: tuple[np.ndarray, np.ndarray, float] | None = None

    def metrics(self, names: Sequence[str], ki: np.ndarray | None = None,
                ui: np.ndarray | None = None) -> dict[str, float]:
        """The catalogue metrics ``names`` on the knowns ``ki`` and unknowns ``ui`` (all when ``None``);
        macro-F1 is left out when the score has no threshold rule."""
        k = slice(None) if ki is None else ki
        u = slice(None) if ui is None else ui
        given = {"known_scores": self.known[k], "unknown_scores": self.unknown[u],
                 "known_labels": self.known_labels[k], "known_preds": self.known_pred[k]}
        given["known_correct"] = given["known_preds"] == given["known_labels"]
        out = {}
        for name in names:
            m = metrics.METRICS[name]
            if name == "macro_f1":
                if self.f1 is None:
                    continue
                fk, fu, threshold = self.f1
                out[name] = m.fn(given["known_labels"], given["known_preds"], fk[k], self.unknown_pred[u], fu[u],
                                 threshold)
            else:
                out[name] = m.fn(*(given[x] for x in m.inputs))
        return out


def samples(rec: Record, score: str | None = None) -> Samples:
    """The per-sample outputs of ``rec``'s run under ``score``: its own main score (``None``), a
    score it stored (macro-F1 keeps the run's rule), or a post-hoc scorer's stored scores."""
    if rec.dir is None or not (Path(rec.dir) / records.SCORES).exists():
        raise UserError(f"run {rec.dir} has no {records.SCORES}; per-sample statistics (--ci, --by-class, --plot) "
                        "need every run's test scores: run it again with --force")
    sc = records.read_scores(Path(rec.dir), rec)
    f1 = None
    if score is None or score in sc.known:
        known, unknown = sc.pick(score or "score")
        if rec.f1_rule:
            rule, threshold = rec.f1_rule
            f1 = (*sc.pick(rule), float(threshold))
    else:
        ph = records.read_posthoc(Path(rec.dir), rec)
        if score not in ph.known:
            raise UserError(f"run {rec.dir} has no stored score {score!r}; compute it with: "
                            f"osrbench score --scorer {score}")
        known, unknown = ph.known[score], ph.unknown[score]
    labels = np.asarray(sc.known_labels, dtype=np.int64)
    if rec.known_classes and labels.size and labels.max() < len(rec.known_classes):
        known_classes = np.asarray(rec.known_classes, dtype=np.int64)[labels]
    else:
        known_classes = labels
    return Samples(np.asarray(known, np.float64), np.asarray(unknown, np.float64), sc.known_pred, labels,
                   sc.unknown_pred, known_classes, np.asarray(sc.unknown_ids, dtype=np.int64), f1)


def _split_samples(c: Comparison) -> dict[int, dict[str, list[Samples]]]:
    """split -> method -> Samples of each seed; every run of a split must share one test set."""
    out: dict[int, dict[str, list[Samples]]] = {}
    first: dict[int, tuple[Record, Samples]] = {}
    for m in c.methods:
        for rec in sorted(c.records[m], key=lambda r: (r.split, r.seed)):
            s = samples(rec, c.score)
            ref = first.setdefault(rec.split, (rec, s))
            if not (np.array_equal(ref[1].known_classes, s.known_classes)
                    and np.array_equal(ref[1].unknown_classes, s.unknown_classes)):
                raise UserError(f"split {rec.split}: {rec.method} seed {rec.seed} ({rec.dir}) was tested on other "
                                f"images than {ref[0].method} seed {ref[0].seed} ({ref[0].dir}); a paired "
                                "bootstrap needs one test set per split")
            out.setdefault(rec.split, {}).setdefault(m, []).append(s)
    return out


# ------------------------------------------------------------------------------- intervals


@dataclass
class Bootstrap:
    """Resampled metric values: ``values[split][method][metric]`` is (resamples,), seed-averaged."""

    values: dict[int, dict[str, dict[str, np.ndarray]]]
    resamples: int
    seed: int


def bootstrap(c: Comparison, resamples: int = stats.RESAMPLES, seed: int = 0, progress: bool = False) -> Bootstrap:
    """The stratified test-sample bootstrap of every metric of ``c``, per split and method.

    Resample ``r`` of split ``k`` draws the knowns and the unknowns with replacement from the
    split's test set (seeded by ``(seed, k)``); each method's value is its seeds' mean on those
    same draws, so per-resample differences between methods are paired. ``progress``: a progress
    bar on stderr (a large ``--resamples`` takes minutes).
    """
    from tqdm.auto import tqdm

    stats.check_resamples(resamples)
    by_split = _split_samples(c)
    values: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    bar = tqdm(total=len(by_split) * resamples, disable=not progress, desc="bootstrap", unit="resample",
               leave=False, mininterval=1.0)
    for k, by_method in sorted(by_split.items()):
        ref = next(iter(by_method.values()))[0]
        acc = {m: {x: np.zeros(resamples) for x in c.metrics} for m in by_method}
        for r, (ki, ui) in enumerate(stats.stratified_resamples(ref.known.size, ref.unknown.size, resamples,
                                                                (seed, k))):
            for m, runs in by_method.items():
                for s in runs:
                    for name, v in s.metrics(c.metrics, ki, ui).items():
                        acc[m][name][r] += v / len(runs)
            bar.update()
        values[k] = {m: {x: a for x, a in d.items() if _has(by_method[m], x)} for m, d in acc.items()}
    bar.close()
    return Bootstrap(values, resamples, seed)


def _has(runs: Sequence[Samples], metric: str) -> bool:
    return metric != "macro_f1" or all(s.f1 is not None for s in runs)


@dataclass
class Intervals:
    """Every interval the compare ``--ci`` tables show (fractions)."""

    level: float
    resamples: int
    seed: int
    #: metric -> method -> split -> stratified test-sample bootstrap interval
    split: dict[str, dict[str, dict[int, stats.Interval]]] = field(default_factory=dict)
    #: metric -> method -> (t-interval, bootstrap interval) of the mean over splits
    mean: dict[str, dict[str, tuple[stats.Interval, stats.Interval]]] = field(default_factory=dict)
    #: metric -> (a, b) -> split -> paired bootstrap interval of A - B
    pair_split: dict[str, dict[tuple[str, str], dict[int, stats.Interval]]] = field(default_factory=dict)
    #: metric -> (a, b) -> (t-interval, bootstrap interval) of the mean A - B over splits
    pair_mean: dict[str, dict[tuple[str, str], tuple[stats.Interval, stats.Interval]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        def iv(i: stats.Interval) -> list[float | None]:
            return [json_number(i.low), json_number(i.high)]

        return {
            "level": self.level, "resamples": self.resamples, "seed": self.seed,
            "split_bootstrap": {x: {m: {str(k): iv(i) for k, i in by.items()} for m, by in d.items()}
                                for x, d in self.split.items()},
            "mean": {x: {m: {"t": iv(t), "bootstrap": iv(b)} for m, (t, b) in d.items()} for x, d in self.mean.items()},
            "paired_split_bootstrap": {x: {f"{a} - {b}": {str(k): iv(i) for k, i in by.items()}
                                           for (a, b), by in d.items()} for x, d in self.pair_split.items()},
            "paired_mean": {x: {f"{a} - {b}": {"t": iv(t), "bootstrap": iv(bb)} for (a, b), (t, bb) in d.items()}
                            for x, d in self.pair_mean.items()},
        }


def intervals(c: Comparison, resamples: int = stats.RESAMPLES, seed: int = 0, level: float = stats.LEVEL,
              boot: Bootstrap | None = None, progress: bool = False) -> Intervals:
    """Per split (test-sample bootstrap) and over splits (t and split bootstrap), for each method
    and each pair of ``c``; ``boot`` reuses a :func:`bootstrap` already drawn."""
    stats.check_level(level)
    boot = boot or bootstrap(c, resamples, seed, progress)
    out = Intervals(level, boot.resamples, boot.seed)
    for metric in c.metrics:
        summ = c.summaries[metric]
        out.split[metric] = {m: {k: stats.percentile_interval(boot.values[k][m][metric], level)
                                 for k in sorted(boot.values) if metric in boot.values[k].get(m, {})}
                             for m in summ}
        out.mean[metric] = {m: _over_splits(list(s.per_split.values()), resamples, seed, level)
                            for m, s in summ.items()}
        out.pair_split[metric], out.pair_mean[metric] = {}, {}
        for p in c.pairs.get(metric, []):
            out.pair_split[metric][p.a, p.b] = {
                k: stats.percentile_interval(boot.values[k][p.a][metric] - boot.values[k][p.b][metric], level)
                for k in _pair_splits(c, p) if metric in boot.values[k].get(p.a, {}) and metric in boot.values[k].get(p.b, {})}
            out.pair_mean[metric][p.a, p.b] = _over_splits(p.diffs, resamples, seed, level)
    return out


def _pair_splits(c: Comparison, p: compare.Paired) -> list[int]:
    """The splits a pair covers (a pair by seed covers the comparison's one split)."""
    return p.splits if p.unit == "split" else c.splits


def _over_splits(values: Sequence[float], resamples: int, seed: int, level: float) -> tuple[stats.Interval, stats.Interval]:
    return stats.t_interval(values, level), stats.bootstrap_mean(values, resamples, seed, level)


# ------------------------------------------------------------------------------- variance


def _by_split_seed(recs: Sequence[Record], metric: str) -> dict[tuple[int, int], float]:
    return {(r.split, r.seed): float(r.metrics[metric]) for r in recs if r.metrics.get(metric) is not None}


def _grouped(values: Mapping[tuple[int, int], float]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for (k, _), v in sorted(values.items()):
        out.setdefault(k, []).append(v)
    return out


def variance(c: Comparison, metric: str) -> dict[str, stats.Variance]:
    """method -> split / seed variance decomposition of its per-run values."""
    return {m: stats.variance_components(_grouped(_by_split_seed(c.records[m], metric))) for m in c.methods
            if m in c.summaries.get(metric, {})}


def pair_variance(c: Comparison, metric: str, a: str, b: str) -> stats.Variance:
    """The decomposition of ``A - B`` per (split, seed) run pair (same seed: same batches)."""
    va, vb = _by_split_seed(c.records[a], metric), _by_split_seed(c.records[b], metric)
    return stats.variance_components(_grouped({k: va[k] - vb[k] for k in va.keys() & vb.keys()}))


@dataclass(frozen=True)
class Plan:
    a: str
    b: str
    delta: float  # the difference to resolve
    var: stats.Variance
    n_splits: int
    seeds_now: int
    power_now: float
    seeds: int | None  # per split, at n_splits; None: no number of seeds is enough
    splits: int | None  # at seeds_now seeds each


def planner(c: Comparison, metric: str, resolve: float | None = None) -> list[Plan]:
    """For each pair of ``c``: seeds per split needed for the paired t-test over splits to detect
    ``resolve`` (default: the observed mean difference) with power :data:`stats.POWER` at
    :data:`stats.ALPHA`, at the observed split and seed variances of the difference."""
    out = []
    for p in c.pairs.get(metric, []):
        v = pair_variance(c, metric, p.a, p.b)
        delta = p.mean_diff if resolve is None else resolve
        splits = _pair_splits(c, p)
        n = len(splits)
        seeds_now = max(1, min(len([r for r in c.records[p.a] if r.split == k]) for k in splits))
        out.append(Plan(p.a, p.b, delta, v, n, seeds_now,
                        stats.power_paired_t(delta, v.split_var, v.seed_var, n, seeds_now),
                        stats.seeds_needed(delta, v.split_var, v.seed_var, n),
                        stats.splits_needed(delta, v.split_var, v.seed_var, seeds_now)))
    return out


def variance_doc(c: Comparison, resolve: float | None = None) -> dict[str, Any]:
    """The export section: per metric, each method's and each pair's variances and the plan."""
    def var(v: stats.Variance) -> dict[str, float | None]:
        return {"split_var": json_number(v.split_var), "seed_var": json_number(v.seed_var)}

    return {metric: {"methods": {m: var(v) for m, v in variance(c, metric).items()},
                     "pairs": {f"{p.a} - {p.b}": {**var(p.var), "delta": json_number(p.delta), "power_now": json_number(p.power_now),
                                                  "seeds_now": p.seeds_now, "seeds_needed": p.seeds,
                                                  "splits_needed": p.splits}
                               for p in planner(c, metric, resolve)},
                     "power": stats.POWER, "alpha": stats.ALPHA}
            for metric in c.metrics}


# ------------------------------------------------------------------------ per-class breakdown


@dataclass
class ClassBreakdown:
    """AUROC per class: ``unknown[method][class] = (mean over splits, splits)``; ``known`` alike.

    Seeds are averaged within a split first, then the splits in which the class has that role."""

    unknown: dict[str, dict[int, tuple[float, int]]]
    known: dict[str, dict[int, tuple[float, int]]]
    score: str | None = None

    def classes(self, role: str) -> list[int]:
        return sorted({k for by in getattr(self, role).values() for k in by})

    def as_dict(self) -> dict[str, Any]:
        return {role: {m: {str(k): {"auroc": v, "splits": n} for k, (v, n) in by.items()}
                       for m, by in getattr(self, role).items()} for role in ("unknown", "known")}


def class_breakdown(c: Comparison) -> ClassBreakdown:
    roles: dict[str, dict[str, dict[int, dict[int, list[float]]]]] = {"unknown": {}, "known": {}}
    for m in c.methods:
        for rec in c.records[m]:
            s = samples(rec, c.score)
            by_u, by_k = stats.class_aurocs(s.known, s.known_classes, s.unknown, s.unknown_classes, metrics.auroc)
            for role, by in (("unknown", by_u), ("known", by_k)):
                for cls, v in by.items():
                    roles[role].setdefault(m, {}).setdefault(cls, {}).setdefault(rec.split, []).append(v)

    def reduce(d: dict[int, dict[int, list[float]]]) -> dict[int, tuple[float, int]]:
        return {cls: (float(np.mean([np.mean(v) for v in per.values()])), len(per)) for cls, per in sorted(d.items())}

    return ClassBreakdown({m: reduce(d) for m, d in roles["unknown"].items()},
                          {m: reduce(d) for m, d in roles["known"].items()}, c.score)


# ------------------------------------------------------------------------------ rank tests


@dataclass
class Ranks:
    """The Friedman test of one metric over a report's blocks (protocol, dataset)."""

    metric: str
    blocks: list[tuple[str, str]]
    table: np.ndarray  # blocks x methods, fractions
    result: stats.Friedman
    posthoc: list[tuple[str, str, float, float, float]]
    left_out: list[str]  # rows not present in every block

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "blocks": [f"{d}/{p}" for p, d in self.blocks], **self.result.as_dict(),
                "posthoc": [{"a": a, "b": b, "z": z, "p": p, "p_holm": h} for a, b, z, p, h in self.posthoc],
                "left_out": self.left_out}


def rank_tests(cells: Sequence[Any], metric: str, alpha: float = stats.ALPHA) -> Ranks | None:
    """Friedman + Nemenyi over the (protocol, dataset) blocks of report ``cells`` (rows = the report's
    method rows present in every block); ``None`` with fewer than 2 rows or 2 blocks."""
    grid: dict[tuple[str, str], dict[str, float]] = {}
    rows: list[str] = []
    for cell in cells:
        s = cell.metrics.get(metric)
        if s is None:
            continue
        grid.setdefault((cell.key.protocol, cell.key.dataset), {})[cell.row] = s.mean
        if cell.row not in rows:
            rows.append(cell.row)
    blocks = sorted(grid)
    keep = [r for r in rows if all(r in grid[b] for b in blocks)]
    if len(keep) < 2 or len(blocks) < 2:
        return None
    table = np.array([[grid[b][r] for r in keep] for b in blocks])
    fr = stats.friedman(table, keep, metric not in compare.LOWER_IS_BETTER, alpha)
    return Ranks(metric, blocks, table, fr, stats.rank_posthoc(fr), [r for r in rows if r not in keep])


# -------------------------------------------------------------------------------- rendering


_pct = compare._pct  # one number format for every table


def _iv(i: stats.Interval | None, signed: bool = False) -> str:
    if i is None or not i.finite:
        return "-"
    f = "{:+.2f}" if signed else "{:.2f}"
    return f"[{f.format(100 * i.low)}, {f.format(100 * i.high)}]"


def _table(rows: list[list[Any]], headers: Sequence[str], fmt: str) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=list(headers), tablefmt=fmt, disable_numparse=True)


def _title(text: str, fmt: str) -> list[str]:
    return ["", f"**{text}**", ""] if fmt in ("github", "pipe") else ["", text]


def render_intervals(c: Comparison, iv: Intervals, fmt: str = "simple") -> str:
    lvl = f"{100 * iv.level:g}%"
    out = [f"Confidence intervals ({lvl}, in %): per split a stratified bootstrap over the test images "
           f"(knowns and unknowns resampled separately, {iv.resamples} resamples, seed {iv.seed}, percentile "
           "intervals; the same resamples for every method, so A - B is paired); over splits a t-interval "
           "(df = splits - 1) and a bootstrap of the mean over splits (too narrow with few splits: it never "
           "leaves the range of the observed values)."]
    for metric in c.metrics:
        out += _title(f"{compare.LABELS.get(metric, metric)}: {lvl} intervals", fmt)
        rows = []
        for m in c.summaries[metric]:
            t, b = iv.mean[metric][m]
            rows.append([m, _pct(c.summaries[metric][m].mean), _iv(t), _iv(b),
                         *(_iv(iv.split[metric][m].get(k)) for k in c.splits)])
        out.append(_table(rows, ["method", "mean", "t over splits", "bootstrap over splits",
                                 *(f"{protocols.split_title(c.dataset, c.protocol, k)} (test bootstrap)"
                                   for k in c.splits)], fmt))
        rows = []
        for p in c.pairs.get(metric, []):
            t, b = iv.pair_mean[metric][p.a, p.b]
            rows.append([f"{p.a} - {p.b}", f"{100 * p.mean_diff:+.2f}", _iv(t, True), _iv(b, True),
                         *(_iv(iv.pair_split[metric][p.a, p.b].get(k), True) for k in c.splits)])
        if rows:
            out.append("")
            out.append(_table(rows, ["paired A - B", "mean diff", "t over splits", "bootstrap over splits",
                                     *(f"{protocols.split_title(c.dataset, c.protocol, k)} (paired bootstrap)"
                                       for k in c.splits)], fmt))
    return "\n".join(out)


def render_variance(c: Comparison, fmt: str = "simple", resolve: float | None = None) -> str:
    """Split vs seed variance per method and per pair, and the seeds planner (several seeds only)."""
    out = ["Where the variance comes from (values in % points): one-way random-effects ANOVA of the "
           "per-run values grouped by split; split std = the spread of the split effect, seed std = the "
           "spread between seeds on one split. Planner: seeds per split for the paired t-test over the "
           f"{len(c.splits)} splits to detect the difference with {100 * stats.POWER:g}% power at alpha "
           f"{stats.ALPHA:g}, at the observed variances of A - B"
           + (f" (difference to resolve: {100 * resolve:g} points)" if resolve is not None else
              " (difference to resolve: the observed mean difference)") + "."]
    for metric in c.metrics:
        out += _title(f"{compare.LABELS.get(metric, metric)}: split vs seed variance", fmt)
        rows = []
        for m, v in variance(c, metric).items():
            rows.append([m, _pct(math.sqrt(v.split_var)),
                         _pct(math.sqrt(v.seed_var)),
                         "-" if not math.isfinite(v.split_share) else f"{100 * v.split_share:.0f}%"])
        out.append(_table(rows, ["method", "split std", "seed std", "split share of variance"], fmt))
        plans = planner(c, metric, resolve)
        if plans:
            rows = []
            for pl in plans:
                v = pl.var
                resolvable = pl.delta != 0 and all(math.isfinite(x) for x in (pl.delta, v.split_var, v.seed_var))
                rows.append([f"{pl.a} - {pl.b}", f"{100 * pl.delta:+.2f}",
                             _pct(math.sqrt(v.split_var)),
                             _pct(math.sqrt(v.seed_var)),
                             "-" if not math.isfinite(pl.power_now) else f"{100 * pl.power_now:.0f}% ({pl.seeds_now} seeds)",
                             *((_need(pl.seeds, "none: split variance alone too large"),
                                _need(pl.splits, "more than 1000")) if resolvable else ("-", "-"))])
            out.append("")
            out.append(_table(rows, ["paired A - B", "difference", "split std", "seed std", "power at seeds now",
                                     f"seeds needed ({len(c.splits)} splits)", "splits needed (seeds now)"], fmt))
    return "\n".join(out)


def _need(n: int | None, none: str) -> str:
    return none if n is None else str(n)


def render_classes(b: ClassBreakdown, fmt: str = "simple") -> str:
    out = ["AUROC per class (in %): for an unknown class, every known test image against the unknown images "
           "of that class; for a known class, the known images of that class against every unknown image. "
           "Seeds averaged within a split, then the splits in which the class has that role (count in "
           "brackets)." + (f" Score: {b.score}." if b.score else "")]
    for role in ("unknown", "known"):
        classes = b.classes(role)
        by = getattr(b, role)
        out += _title(f"AUROC per {role} class", fmt)
        rows = []
        for m, d in by.items():
            rows.append([m, *((f"{100 * d[k][0]:.1f} ({d[k][1]})" if k in d else "-") for k in classes)])
        hardest = [min(((d[k][0], k) for k in d), default=(math.nan, None)) for d in by.values()]
        out.append(_table(rows, ["method", *(f"class {k}" for k in classes)], fmt))
        out.append("hardest: " + "; ".join(f"{m} class {k} ({100 * v:.1f})" for m, (v, k) in zip(by, hardest)
                                            if k is not None))
    return "\n".join(out)


def render_ranks(ranks: Sequence[Ranks], fmt: str = "md") -> str:
    """The Friedman / Nemenyi section of a report, one block per metric."""
    if not ranks:
        return ""
    md = fmt == "md"
    out = ["", "**Ranks over datasets and protocols**" if md else "Ranks over datasets and protocols",
           "", "Per metric, each (dataset, protocol) mean is a block and methods are ranked within it "
           "(1 = best, ties averaged). Friedman test (chi-square, tie-corrected) and Iman-Davenport F; "
           f"Nemenyi critical difference at alpha {ranks[0].result.alpha:g} (Demsar 2006): two methods "
           "whose mean ranks differ by less than CD are not told apart. Pairwise p: the rank z-test, "
           "Holm-adjusted over all pairs."]
    for r in ranks:
        fr = r.result
        out += ["", f"{compare.SHORT.get(r.metric, r.metric)} over {fr.n} blocks "
                f"({', '.join(f'{d}/{p}' for p, d in r.blocks)}):", ""]
        order = sorted(range(fr.k), key=lambda i: fr.mean_ranks[i])
        rows = [[fr.methods[i], f"{fr.mean_ranks[i]:.2f}"] for i in order]
        out.append(_table(rows, ["method", "mean rank"], "github" if md else "simple"))
        out.append("")
        f_text = (f"{_fixed(fr.f)}, p = {_p(fr.p_f)}" if math.isfinite(fr.f) else
                  "n/a (undefined: every block ranks the methods alike, so chi2 is at its maximum)")
        out.append(f"Friedman chi2 = {_fixed(fr.chi2)} (df {fr.k - 1}), p = {_p(fr.p_chi2)}; "
                   f"Iman-Davenport F = {f_text}; Nemenyi CD = {fr.cd:.3f}.")
        groups = stats.cliques(fr.mean_ranks, fr.cd)
        if groups:
            out.append("Not told apart (mean ranks within CD): "
                       + "; ".join("{" + ", ".join(fr.methods[i] for i in g) + "}" for g in groups) + ".")
        sig = [f"{a} vs {b} (p Holm {compare._p(h)})" for a, b, _, _, h in r.posthoc if h <= fr.alpha]
        out.append("Pairs different at alpha after Holm: " + ("; ".join(sig) if sig else "none") + ".")
        if fr.n < 5:
            out.append(f"With {fr.n} blocks these tests have little power.")
        if r.left_out:
            out.append("Left out (not in every block): " + ", ".join(r.left_out) + ".")
    return "\n".join(out)


def _fixed(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3f}"


def _p(x: float) -> str:
    """A p-value; ``n/a`` where the test is undefined (never ``-`` or ``< 0.0001`` for it)."""
    return "n/a" if x is None or not math.isfinite(x) else compare._p(x)
