"""Head-to-head comparison of result records: aggregation, paired statistics and text tables.

Pure functions: no terminal, no plotting. The conventions every table and export follows:

- A record belongs to the *config group* ``(method, dataset, protocol, recipe, config_hash,
  plugin distribution, plugin version)``. Records of different groups are never averaged together
  (:func:`group_records`, :func:`check_single_config`): neither records of two configs nor those
  of two plugins that registered the same method name (an impostor) or of two versions of one
  plugin (an upgrade).
- Seeds are averaged within a split first; the mean and the sample standard deviation (ddof 1)
  are then taken over splits, as the papers report them.
- Paired comparisons use the per-split (seed-averaged) values of two methods on the splits both
  have; with one split and several seeds, the per-seed values instead (the same split and seed
  give every method identical batches, so the seeds are the natural pairs: :func:`pair_unit`).
  The difference ``A - B`` per pair, win / tie / loss counts (a win is "A better", which
  for a lower-is-better metric such as ``fpr95_known`` means lower), the exact two-sided Wilcoxon
  signed-rank test and the two-sided paired t-test, each also Holm-adjusted over every pair of the
  metric's table (:func:`holm_adjust`).
- The sample std of a single value is undefined: NaN, shown as ``-`` (JSON ``null``, CSV empty).
- ``--std ddof0`` (:data:`STD_CHOICES`) swaps the sample std for the population std; every table
  names the one it shows (:func:`std_label`).

Intervals, variance decomposition, per-class AUROC and rank tests are in :mod:`osrbench.analysis`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from osrbench import protocols
from osrbench.datasets import DatasetSpec
from osrbench.records import Record, folder_hash
from osrbench.results import json_number, mean_std
from osrbench.stats import average_ranks, holm, p_t_text

# Read from the one catalogue, osrbench.metrics.METRICS (kept under these names for their readers).
from osrbench.metrics import METRICS as CATALOGUE
from osrbench.errors import UserError

#: The default metric list: the catalogue's headline metrics, in catalogue order.
METRICS = tuple(name for name, m in CATALOGUE.items() if m.headline)
LABELS = {name: m.label for name, m in CATALOGUE.items()}
SHORT = {name: m.short for name, m in CATALOGUE.items()}
#: Metrics where a smaller value is better (a "win" in a paired comparison means lower).
LOWER_IS_BETTER = frozenset(name for name, m in CATALOGUE.items() if not m.higher_is_better)
#: Differences at most this large (in fraction units) are exact ties / zero differences.
EXACT_TIE = 1e-12
#: Above this many non-zero differences the Wilcoxon p uses the normal approximation.
WILCOXON_EXACT_MAX = 50


class MixedConfigs(UserError, ValueError):
    """Records of one method with different configs were about to be averaged together."""


class MixedPlugins(MixedConfigs):
    """Records of one method made by different plugin distributions or versions were about to be
    averaged together."""


# ------------------------------------------------------------------------------------ groups


@dataclass(frozen=True)
class GroupKey:
    """What must be equal for two records to be averaged together."""

    method: str
    dataset: str
    protocol: str
    recipe: str | None
    config_hash: str
    #: The plugin that registered the method when the record was made (``None``: not recorded).
    plugin_distribution: str | None = None
    plugin_version: str | None = None

    @property
    def short_hash(self) -> str:
        return self.config_hash[:8]

    @property
    def plugin(self) -> tuple[str | None, str | None]:
        return self.plugin_distribution, self.plugin_version

    @property
    def plugin_label(self) -> str:
        """``"osrbench-softmax 0.2.0"``; ``"unknown plugin"`` for a record that does not name it."""
        return plugin_label(self.plugin_distribution, self.plugin_version)


def plugin_label(distribution: str | None, version: str | None) -> str:
    if not distribution and not version:
        return "unknown plugin"
    return f"{distribution or '?'} {version or '?'}"


def group_key(rec: Record) -> GroupKey:
    return GroupKey(rec.method, rec.dataset, rec.protocol, rec.recipe, rec.config_hash, *rec.plugin_id)


def group_records(records: Iterable[Record]) -> dict[GroupKey, list[Record]]:
    """Records by config group, in order of first appearance."""
    out: dict[GroupKey, list[Record]] = {}
    for rec in records:
        out.setdefault(group_key(rec), []).append(rec)
    return out


def _runs_text(recs: Sequence[Record]) -> str:
    splits, seeds = {r.split for r in recs}, {r.seed for r in recs}
    return (f"split{'s' if len(splits) > 1 else ''} {split_list(sorted(splits))}, "
            f"seed{'s' if len(seeds) > 1 else ''} {split_list(sorted(seeds))}")


def mixed_plugins_message(method: str, recs: Sequence[Record],
                          installed: tuple[str | None, str | None] | None = None) -> str | None:
    """The one line saying that ``method``'s records come from several plugins (``None`` when they do not)."""
    by_plugin: dict[tuple[str | None, str | None], list[Record]] = {}
    for rec in recs:
        by_plugin.setdefault(rec.plugin_id, []).append(rec)
    if len(by_plugin) < 2:
        return None
    order = sorted(by_plugin, key=lambda p: (p[0] or "", p[1] or ""))
    dists = {d for d, _ in by_plugin}
    if len(dists) == 1 and None not in dists:
        what = f"{len(by_plugin)} versions of plugin {next(iter(dists))}"
        parts = [f"{v or '?'}: {_runs_text(by_plugin[(d, v)])}" for d, v in order]
    else:
        what = f"{len(by_plugin)} different plugins"
        parts = [f"{plugin_label(d, v)}: {_runs_text(by_plugin[(d, v)])}" for d, v in order]
    if installed is not None and installed in by_plugin:
        hint = (f"the installed plugin is {plugin_label(*installed)}: re-run the others with it "
                "(remove their run folders or `osrbench run ... --force`)")
    elif installed is not None:
        hint = (f"the installed plugin is {plugin_label(*installed)}, which made none of them: "
                "re-run them with it (remove their run folders or `osrbench run ... --force`)")
    else:
        hint = "re-run them all with the installed plugin"
    return (f"records of {method!r} come from {what} ({'; '.join(parts)}); they are never averaged together: "
            f"{hint}, or point --out at a folder holding one plugin's runs")


def check_single_config(records: Iterable[Record],
                        installed: Mapping[str, tuple[str | None, str | None]] | None = None) -> None:
    """Raise :class:`MixedConfigs` unless every method has exactly one config group.

    :class:`MixedPlugins` (a :class:`MixedConfigs`) when a method's records come from several
    plugin distributions or versions; ``installed`` (method -> ``(distribution, version)`` of the
    plugin installed now) lets its message say which records are the stale ones.
    """
    by_method: dict[str, set[GroupKey]] = defaultdict(set)
    recs_of: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        by_method[rec.method].add(group_key(rec))
        recs_of[rec.method].append(rec)
    for method, recs in recs_of.items():
        line = mixed_plugins_message(method, recs, (installed or {}).get(method))
        if line:
            raise MixedPlugins(line)
    for method, keys in by_method.items():
        if len(keys) > 1:
            desc = "; ".join(f"{k.dataset}/{k.protocol} recipe {k.recipe} config {k.short_hash}"
                             for k in sorted(keys, key=lambda k: k.config_hash))
            raise MixedConfigs(f"records of {method!r} come from {len(keys)} different configs ({desc}); "
                               "they are never averaged together")


def config_differences(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys whose values differ between configs (missing counts as a value), sorted."""
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if len({repr(c.get(k, "<unset>")) for c in configs}) > 1]


# ------------------------------------------------------------------------------- aggregation


def per_split(records: Iterable[Record], metric: str) -> dict[str, dict[int, float]]:
    """method -> split -> value averaged over seeds."""
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        value = rec.metrics.get(metric)
        if value is not None:
            acc[rec.method][rec.split].append(float(value))
    return {m: {s: sum(v) / len(v) for s, v in sorted(by.items())} for m, by in acc.items()}


def per_seed(records: Iterable[Record], metric: str) -> dict[str, dict[int, float]]:
    """method -> seed -> value, for records of one split (what :func:`pair_unit` ``"seed"`` pairs)."""
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for rec in sorted(records, key=lambda r: r.seed):
        value = rec.metrics.get(metric)
        if value is not None:
            out[rec.method][rec.seed] = float(value)
    return dict(out)


def pair_unit(records: Sequence[Record]) -> str:
    """What paired tests pair: ``"seed"`` for one split with several seeds, else ``"split"``."""
    one_split = len({r.split for r in records}) == 1
    return "seed" if one_split and len({r.seed for r in records}) > 1 else "split"


def seed_std(records: Iterable[Record], metric: str) -> dict[str, float]:
    """method -> mean over splits of the std over seeds within a split (splits with >= 2 seeds)."""
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        value = rec.metrics.get(metric)
        if value is not None:
            acc[rec.method][rec.split].append(float(value))
    out = {}
    for m, by in acc.items():
        stds = [mean_std(v)[1] for v in by.values() if len(v) > 1]
        if stds:
            out[m] = sum(stds) / len(stds)
    return out


@dataclass
class Summary:
    """One method's metric over splits: seed-averaged per-split values, mean and sample std."""

    per_split: dict[int, float]
    mean: float
    std: float
    ddof: int = 1  # of ``std``: 1 sample (the papers'), 0 population (OpenOOD's, the MLS code's)

    @property
    def n(self) -> int:
        return len(self.per_split)


def summarize(records: Iterable[Record], metric: str, ddof: int = 1) -> dict[str, Summary]:
    out = {}
    for method, values in per_split(records, metric).items():
        m, s = mean_std(values.values(), ddof)
        out[method] = Summary(values, m, s, ddof)
    return out


#: ``--std`` choices: the std's ddof and how the tables name it.
STD_CHOICES = {"ddof1": 1, "ddof0": 0}


def std_label(ddof: int) -> str:
    return ("sample std (ddof 1)" if ddof == 1
            else "population std (ddof 0, as OpenOOD and the MLS code report it; not comparable with ddof 1)")


# ------------------------------------------------------------------------- paired statistics


def wilcoxon_signed_rank(diffs: Sequence[float], zero_tol: float = EXACT_TIE) -> tuple[float, float, int]:
    """Two-sided Wilcoxon signed-rank test of paired differences: ``(statistic, p, n_used)``.

    Differences with ``|d| <= zero_tol`` are dropped (Wilcoxon's zero method); the rest are ranked
    by ``|d|`` with average ranks for ties. The statistic is ``min(W+, W-)`` (as scipy reports it).
    For up to :data:`WILCOXON_EXACT_MAX` differences the p-value is exact: the null distribution of
    ``W+`` is enumerated over all 2^n sign assignments of the observed ranks (with tied ranks this
    is the exact permutation distribution, as ``scipy.stats.wilcoxon`` computes it for n <= 13);
    above, the normal approximation with tie correction and no continuity correction.
    ``p = min(1, 2 * min(P(W+ <= w), P(W+ >= w)))``. With no non-zero difference p is 1.
    """
    d = np.asarray(list(diffs), dtype=np.float64)
    d = d[np.abs(d) > zero_tol]
    n = int(d.size)
    if n == 0:
        return 0.0, 1.0, 0
    ranks = average_ranks(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    total = n * (n + 1) / 2.0
    stat = min(w_plus, total - w_plus)
    if n <= WILCOXON_EXACT_MAX:
        twice = np.rint(2 * ranks).astype(np.int64)  # average ranks are multiples of 1/2
        size = int(twice.sum()) + 1
        prob = np.zeros(size)
        prob[0] = 1.0
        for r in twice:
            shifted = np.zeros(size)
            shifted[r:] = prob[:size - r]
            prob = 0.5 * (prob + shifted)
        w2 = int(round(2 * w_plus))
        lower = float(prob[:w2 + 1].sum())
        upper = float(prob[w2:].sum())
        return stat, min(1.0, 2.0 * min(lower, upper)), n
    _, counts = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float(np.sum(counts**3 - counts)) / 48.0
    z = (w_plus - total / 2.0) / math.sqrt(var)
    return stat, min(1.0, math.erfc(abs(z) / math.sqrt(2.0))), n


def paired_t(diffs: Sequence[float]) -> tuple[float, float]:
    """Two-sided paired t-test on differences: ``(t, p)``, df = n - 1.

    NaN for fewer than two differences or when every difference is zero; when all differences
    are equal and non-zero, t is infinite and p = 0 (as ``scipy.stats.ttest_rel``).
    """
    from scipy.special import stdtr

    d = np.asarray(list(diffs), dtype=np.float64)
    n = d.size
    if n < 2:
        return math.nan, math.nan
    m = float(d.mean())
    s = float(d.std(ddof=1))
    if s == 0.0:
        return (math.nan, math.nan) if m == 0.0 else (math.copysign(math.inf, m), 0.0)
    t = m / (s / math.sqrt(n))
    return t, float(2.0 * stdtr(n - 1, -abs(t)))


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided exact Wilcoxon p attainable with ``n`` non-zero differences."""
    return min(1.0, 2.0 ** (1 - n)) if n >= 1 else 1.0


@dataclass
class Paired:
    """Method ``a`` against method ``b`` on one metric, over the splits (or seeds) both have."""

    a: str
    b: str
    metric: str
    splits: list[int]  # the paired keys: split indices, or seeds when ``unit`` is "seed"
    diffs: list[float]  # a - b per key, in key order
    wins: int
    ties: int
    losses: int
    tie_tol: float
    wilcoxon_stat: float
    p_wilcoxon: float
    t: float
    p_t: float
    #: Holm-adjusted over every pair of the same metric's table (:func:`holm_adjust`).
    p_wilcoxon_holm: float = math.nan
    p_t_holm: float = math.nan
    unit: str = "split"  # what was paired (:func:`pair_unit`)

    @property
    def mean_diff(self) -> float:
        return mean_std(self.diffs)[0]

    @property
    def std_diff(self) -> float:
        return mean_std(self.diffs)[1]

    def as_dict(self) -> dict[str, Any]:
        num = json_number
        return {"a": self.a, "b": self.b, "metric": self.metric,
                "unit": self.unit, f"per_{self.unit}_diff": {str(k): v for k, v in zip(self.splits, self.diffs)},
                "mean_diff": num(self.mean_diff), "std_diff": num(self.std_diff),
                "wins": self.wins, "ties": self.ties, "losses": self.losses, "tie_tol": self.tie_tol,
                "lower_is_better": self.metric in LOWER_IS_BETTER,
                "wilcoxon_statistic": num(self.wilcoxon_stat), "p_wilcoxon": num(self.p_wilcoxon),
                "t": num(self.t), "p_paired_t": num(self.p_t),
                "p_wilcoxon_holm": num(self.p_wilcoxon_holm), "p_paired_t_holm": num(self.p_t_holm)}


def paired(a_values: Mapping[int, float], b_values: Mapping[int, float], metric: str,
           tie_tol: float = EXACT_TIE, a: str = "A", b: str = "B", unit: str = "split") -> Paired:
    """Pair two methods' values by key (split index, or seed for ``unit="seed"``) and test their differences."""
    splits = sorted(set(a_values) & set(b_values))
    diffs = [float(a_values[k]) - float(b_values[k]) for k in splits]
    tol = max(float(tie_tol), EXACT_TIE)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    wins = sum(1 for d in diffs if sign * d > tol)
    losses = sum(1 for d in diffs if sign * d < -tol)
    w, pw, _ = wilcoxon_signed_rank(diffs)
    t, pt = paired_t(diffs)
    return Paired(a, b, metric, splits, diffs, wins, len(diffs) - wins - losses, losses, tol, w, pw, t, pt,
                  unit=unit)


def holm_adjust(pairs: Sequence[Paired]) -> list[Paired]:
    """``pairs`` (one metric's table) with Holm-adjusted Wilcoxon and t p-values over all of them."""
    hw, ht = holm([p.p_wilcoxon for p in pairs]), holm([p.p_t for p in pairs])
    return [replace(p, p_wilcoxon_holm=w, p_t_holm=t) for p, w, t in zip(pairs, hw, ht)]


# ------------------------------------------------------------------------------------- splits


def unique_splits(dataset: DatasetSpec, protocol: str, splits: Sequence[int],
                  root: Path | None = None) -> tuple[list[int], dict[int, int]]:
    """Splits to keep (the first of each class set) and ``{duplicate: first split}`` (``root``: where
    a protocol of files finds them)."""
    seen: dict[Any, int] = {}
    keep, dropped = [], {}
    for i in splits:
        key = protocols.get_split(dataset, protocol, i, root=root).class_set_key
        if key in seen:
            dropped[i] = seen[key]
        else:
            seen[key] = i
            keep.append(i)
    return keep, dropped


def duplicate_split_warnings(dataset: DatasetSpec, protocol: str, splits: Sequence[int],
                             root: Path | None = None) -> list[str]:
    """One line per split whose class sets repeat an earlier split's (the osrci duplicates)."""
    _, dropped = unique_splits(dataset, protocol, splits, root)
    return [f"{dataset.name}/{protocol} split {i} has the same class sets as split {first}; "
            "its results are not independent (use --unique-splits to keep only the first)"
            for i, first in dropped.items()]


def split_list(splits: Sequence[int]) -> str:
    """``[0, 1, 2, 4]`` -> ``"0-2,4"``."""
    out, run = [], []
    for s in sorted(splits):
        if run and s == run[-1] + 1:
            run.append(s)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
        run = [s]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
    return ",".join(out)


# ---------------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    """Everything a compare table, plot or export shows, computed once."""

    dataset: str
    protocol: str
    methods: list[str]
    splits: list[int]
    seeds: list[int]
    metrics: list[str]
    summaries: dict[str, dict[str, Summary]]  # metric -> method -> summary
    pairs: dict[str, list[Paired]]  # metric -> pairs (i < j in method order)
    groups: dict[str, GroupKey]  # method -> its single config group
    records: dict[str, list[Record]]  # method -> records
    seed_std: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> method -> std
    tie_tol: float = EXACT_TIE
    ddof: int = 1  # of the std over splits
    #: The score every metric was computed with (``compare --score``); ``None``: each run's own.
    score: str | None = None
    #: What the paired tests pair (:func:`pair_unit`): "split", or "seed" for one split.
    unit: str = "split"


def build(records: Sequence[Record], methods: Sequence[str], metrics: Sequence[str] = METRICS,
          tie_tol: float = EXACT_TIE,
          installed: Mapping[str, tuple[str | None, str | None]] | None = None, ddof: int = 1,
          score: str | None = None) -> Comparison:
    """Aggregate records of one dataset and protocol; each method must have one config group
    (one config, made by one plugin distribution and version: see :func:`check_single_config`)."""
    if not records:
        raise ValueError("no records to compare")
    where = {(r.dataset, r.protocol) for r in records}
    if len(where) > 1:
        raise MixedConfigs(f"records from several datasets/protocols: {sorted(where)}")
    check_single_config(records, installed)
    methods = [m for m in methods if any(r.method == m for r in records)]
    by_method = {m: [r for r in records if r.method == m] for m in methods}
    summaries, pairs, spread = {}, {}, {}
    unit = pair_unit(records)
    for metric in metrics:
        summ = {m: s for m, s in summarize(records, metric, ddof).items() if m in by_method}
        if not summ:
            continue
        summaries[metric] = {m: summ[m] for m in methods if m in summ}
        spread[metric] = seed_std(records, metric)
        present = [m for m in methods if m in summ]
        values = per_seed(records, metric) if unit == "seed" else {m: summ[m].per_split for m in present}
        pairs[metric] = holm_adjust([paired(values[a], values[b], metric, tie_tol, a, b, unit)
                                     for i, a in enumerate(present) for b in present[i + 1:]])
    first = records[0]
    return Comparison(
        dataset=first.dataset, protocol=first.protocol, methods=list(methods),
        splits=sorted({r.split for r in records}), seeds=sorted({r.seed for r in records}),
        metrics=list(summaries), summaries=summaries, pairs=pairs,
        groups={m: group_key(rs[0]) for m, rs in by_method.items()}, records=by_method,
        seed_std=spread, tie_tol=max(tie_tol, EXACT_TIE), ddof=ddof, score=score, unit=unit,
    )


# ------------------------------------------------------------------------------------ render


def _pct(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def _signed(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:+.2f}"


def _p(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x < 0.0001:
        return "<0.0001"
    return f"{x:.3g}"


def _tol_text(tol: float) -> str:
    return f"|A - B| <= {tol:g}" if tol <= EXACT_TIE else f"|A - B| <= {100 * tol:g} points"


def render(records: Sequence[Record], methods: Sequence[str], fmt: str = "simple",
           metrics: Sequence[str] = METRICS, tie_tol: float = EXACT_TIE, notes: Sequence[str] = ()) -> str:
    """The compare table: per metric, mean +- std and per-split values, then paired differences."""
    return render_comparison(build(records, methods, metrics, tie_tol), fmt, notes)


def render_comparison(c: Comparison, fmt: str = "simple", notes: Sequence[str] = ()) -> str:
    from tabulate import tabulate

    def table(rows: list[list[Any]], headers: Sequence[str]) -> str:
        return tabulate(rows, headers=list(headers), tablefmt=fmt, disable_numparse=True)

    many_seeds = len(c.seeds) > 1
    markdown = fmt in ("github", "pipe")  # titles set apart so the tables render as tables
    # named splits (ssb): one column per difficulty, as the SSB papers report them; no mean over difficulties
    named = protocols.split_titles(c.dataset, c.protocol) is not None
    heads = {k: protocols.split_title(c.dataset, c.protocol, k) for k in c.splits}
    shown = ", ".join(heads.values()) if named else f"{split_list(c.splits)} ({len(c.splits)})"
    out = [f"{c.dataset}, protocol {c.protocol}, splits {shown}, seeds {split_list(c.seeds)}; values in %"
           + (", one column per split" if named else f": mean +- {std_label(c.ddof)} over splits")
           + ("; seeds averaged within a split first" if many_seeds else "")]
    out.extend(notes)
    rows = []
    for m in c.methods:
        g = c.groups[m]
        recs = c.records[m]
        cfg = recs[0].config
        recipe = (g.recipe or "-") + (" (external weights)" if recs[0].external_weights else "")
        rows.append([m, recipe, folder_hash(recs[0]), cfg.get("epochs", "-"),
                     f"{len({r.split for r in recs})} x {len({r.seed for r in recs})}"])
    out.append("")
    out.append(table(rows, ["method", "recipe", "run folder hash", "epochs", "splits x seeds"]))
    max_n = 0
    several = len(c.methods) > 2  # one pair: Holm changes nothing
    for metric in c.metrics:
        summ = c.summaries[metric]
        better = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        label = LABELS.get(metric, metric)
        title = label if "better" in label else f"{label}, {better}"
        out += ["", f"**{title}**", ""] if markdown else ["", title]
        rows = []
        for m, s in summ.items():
            row = [m] if named else [m, f"{_pct(s.mean)} +- {_pct(s.std)}"]
            if many_seeds:
                row.append(_pct(c.seed_std[metric].get(m, math.nan)))
            row.extend(_pct(s.per_split[k]) if k in s.per_split else "-" for k in c.splits)
            rows.append(row)
        headers = ["method", *([] if named else ["mean +- std"]), *(["seed std"] if many_seeds else []),
                   *(heads[k] for k in c.splits)]
        out.append(table(rows, headers))
        if c.pairs.get(metric):
            rows = []
            keys = c.seeds if c.unit == "seed" else c.splits
            for p in c.pairs[metric]:
                by = dict(zip(p.splits, p.diffs))
                max_n = max(max_n, len(p.splits))
                rows.append([f"{p.a} - {p.b}", f"{_signed(p.mean_diff)} +- {_pct(p.std_diff)}",
                             *(_signed(by[k]) if k in by else "-" for k in keys),
                             f"{p.wins}/{p.ties}/{p.losses}", _p(p.p_wilcoxon), p_t_text(p.p_t, len(p.diffs)),
                             *((_p(p.p_wilcoxon_holm), p_t_text(p.p_t_holm, len(p.diffs))) if several else ())])
            out.append("")
            out.append(table(rows, ["paired A - B", "mean diff +- std",
                                    *(heads[k] if c.unit == "split" else f"{c.unit} {k}" for k in keys),
                                    "W/T/L", "p Wilcoxon", "p paired-t",
                                    *(("p Wilcoxon (Holm)", "p paired-t (Holm)") if several else ())]))
    if max_n:
        lower = [m for m in c.metrics if m in LOWER_IS_BETTER]
        out.append("")
        unit = c.unit
        if unit == "seed":
            out.append(f"Paired by seed: one split ({split_list(c.splits)}), and the same split and seed give "
                       "every method identical batches, so each seed is one pair.")
        out.append(f"W/T/L: {unit}s where A is better / tied ({_tol_text(c.tie_tol)}) / worse than B"
                   + (f"; better = lower for {', '.join(lower)}" if lower else "") + ".")
        out.append(f"p Wilcoxon: two-sided exact Wilcoxon signed-rank test on the per-{unit} differences "
                   "(zero differences dropped);")
        out.append(f"  with {max_n} {unit}s the smallest attainable p is {min_wilcoxon_p(max_n):.4g}"
                   + (", so no comparison can reach p < 0.05." if min_wilcoxon_p(max_n) >= 0.05 else "."))
        out.append(f"p paired-t: two-sided paired t-test on the same differences (df = {unit}s - 1"
                   + (f"; not shown with 2 {unit}s: one degree of freedom). " if max_n == 2 else "). ")
                   + ("Holm: each adjusted by Holm's step-down method over the table's "
                      f"{len(c.methods) * (len(c.methods) - 1) // 2} pairs (one family per metric)."
                      if several else "One pair: no multiple-comparison correction needed."))
    return "\n".join(out)
