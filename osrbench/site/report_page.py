"""``osrbench report --format html``: one self-contained page of every result record's comparison.

Per (dataset, protocol) block of the report (:func:`osrbench.report.build_report`'s cells, one row
per config group): a table per metric with mean, std, each split's value and two 95% intervals of
the mean over splits (t and bootstrap, :mod:`osrbench.stats`), sortable, the best marked; the
paired statistics of :func:`osrbench.compare.build` between the rows; ROC curves and score
histograms (:mod:`osrbench.plots`, as SVG); AUROC per class where the records name their classes;
and every run's provenance. After the blocks, the ranks over them (``report --ranks``) with their
critical-difference diagrams.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import osrbench
from osrbench import compare, records, stats, verify
from osrbench.errors import UserError
from osrbench.records import Record
from osrbench.site import figures
from osrbench.site.html import Markup, Num, document, esc, join, pct, table, tag

if TYPE_CHECKING:
    from osrbench.report import Cell

LEVEL = stats.LEVEL


def render(cells: Sequence["Cell"], metrics: Sequence[str], source: str = "",
           log: Callable[[str], None] = lambda msg: None) -> str:
    """The page of report ``cells`` (see the module docstring)."""
    blocks: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        blocks.setdefault((cell.key.dataset, cell.key.protocol), []).append(cell)
    no_figures = figures.available()
    ddof = next((s.ddof for c in cells for s in c.metrics.values()), 1)
    parts: list[Any] = [
        tag("h1", "osrbench report" + (f" of {source}" if source else "")),
        tag("p", f"Values in %: mean and {compare.std_label(ddof)} over splits (seeds averaged within a split); "
                 f"{100 * LEVEL:g}% intervals of the mean over splits: a t-interval (df = splits - 1) and a "
                 f"bootstrap of the split means ({stats.RESAMPLES} resamples, seed 0). \u2605 = best in its "
                 "column. Click a column's header to sort by it.", class_="note"),
        tag("p", f"Written by osrbench {osrbench.__version__}." + (f" No figures: {no_figures}." if no_figures else ""),
            class_="note"),
        tag("nav", *(tag("a", f"{d} / {p}", href=f"#{_anchor(d, p)}") for d, p in blocks),
            tag("a", "ranks over datasets and protocols", href="#ranks")),
    ]
    for (dataset, protocol), block in blocks.items():
        parts.append(_block(dataset, protocol, block, metrics, ddof, no_figures, log))
    parts.append(_ranks_section(cells, metrics, no_figures))
    return document(f"osrbench report{' of ' + source if source else ''}", join(parts))


def _anchor(*names: str) -> str:
    return "b-" + "-".join("".join(ch if ch.isalnum() else "_" for ch in n) for n in names)


# ------------------------------------------------------------------------------------ ranks


def _ranks_section(cells: Sequence["Cell"], metrics: Sequence[str], no_figures: str | None) -> Markup:
    from osrbench import analysis, plots

    ranks = [r for r in (analysis.rank_tests(cells, m) for m in metrics) if r is not None]
    if not ranks:
        return join([tag("h2", "Ranks over datasets and protocols", id="ranks"),
                     tag("p", "No ranks: they need at least 2 method rows on at least 2 (dataset, protocol) blocks.",
                         class_="note")])
    out: list[Any] = [tag("h2", "Ranks over datasets and protocols", id="ranks"),
                      tag("p", "Per metric, methods are ranked within each (dataset, protocol) block by their mean "
                               "(1 = best). Friedman test and Iman-Davenport F; Nemenyi critical difference (Demsar "
                               "2006): methods joined by a bar are not told apart.", class_="note")]
    for r in ranks:
        fr, name = r.result, compare.SHORT.get(r.metric, r.metric)
        rows = [[fr.methods[i], Num(fr.mean_ranks[i], f"{fr.mean_ranks[i]:.2f}")] for i in range(fr.k)]
        out.append(tag("h3", f"{name} over {fr.n} blocks"))
        out.append(table(["method (recipe)", "mean rank"], rows, best={1: "min"}))
        out.append(tag("p", f"Friedman chi2 = {_fixed(fr.chi2)} (df {fr.k - 1}), p = {compare._p(fr.p_chi2)}; "
                            f"Iman-Davenport F = {_fixed(fr.f)}, p = {compare._p(fr.p_f)}; Nemenyi CD = "
                            f"{_fixed(fr.cd)} at alpha {fr.alpha:g}."
                            + (f" Left out (not in every block): {', '.join(r.left_out)}." if r.left_out else "")))
        if not no_figures:
            out.append(tag("figure", figures.svg(lambda p, r=r, name=name: plots.plot_cd(
                r, p, f"{name}: mean rank over {fr.n} datasets/protocols"))))
    return join(out)


def _fixed(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.3f}"


# ------------------------------------------------------------------------------------ blocks


def block_comparison(block: Sequence["Cell"], metrics: Sequence[str], ddof: int) -> compare.Comparison:
    """The comparison of a block's rows: each row (config group) is a "method" named by its row label,
    so two configs of one method are compared as two entries; ``records`` keeps the records as they
    were read (their scores files are checked against their own identity)."""
    relabeled = [r.replace(method=c.row) for c in block for r in c.records]
    c = compare.build(relabeled, [c.row for c in block], metrics, ddof=ddof)
    return dataclasses.replace(c, records={cell.row: list(cell.records) for cell in block})


def _block(dataset: str, protocol: str, block: Sequence["Cell"], metrics: Sequence[str], ddof: int,
           no_figures: str | None, log: Callable[[str], None]) -> Markup:
    c = block_comparison(block, metrics, ddof)
    out: list[Any] = [tag("h2", f"{dataset} / protocol {protocol}", id=_anchor(dataset, protocol)),
                      tag("p", f"Splits {compare.split_list(c.splits)}, seeds {compare.split_list(c.seeds)}.",
                          class_="note")]
    for metric in c.metrics:
        out.append(_metric_table(block, c, metric))
    out.append(_paired_section(c))
    out.append(_figures_section(c, no_figures, log))
    out.append(_classes_section(c, log))
    out.append(_provenance(block))
    return tag("section", join(out))


def _metric_table(block: Sequence["Cell"], c: compare.Comparison, metric: str) -> Markup:
    lower = metric in compare.LOWER_IS_BETTER
    heads = ["method (recipe)", "mean", "std", "splits", *(f"split {k}" for k in c.splits),
             f"{100 * LEVEL:g}% CI (t)", f"{100 * LEVEL:g}% CI (bootstrap)"]
    rows = []
    for cell in block:
        s = cell.metrics.get(metric)
        if s is None:
            continue
        values = list(s.per_split.values())
        t, b = stats.t_interval(values, LEVEL), stats.bootstrap_mean(values, stats.RESAMPLES, 0, LEVEL)
        rows.append([cell.row, pct(s.mean), pct(s.std), Num(s.n, str(s.n)),
                     *(pct(s.per_split.get(k)) for k in c.splits), _interval(t), _interval(b)])
    how = "min" if lower else "max"
    best = {1: how, **{4 + i: how for i in range(len(c.splits))}}
    caption = f"{compare.LABELS.get(metric, metric)} (%)" + (", lower is better" if lower else "")
    return table(heads, rows, best, caption)


def _interval(i: stats.Interval) -> Num:
    if not i.finite:
        return Num(None, "-")
    return Num(i.low, f"[{100 * i.low:.2f}, {100 * i.high:.2f}]")


def _paired_section(c: compare.Comparison) -> Markup:
    pairs = [p for metric in c.metrics for p in c.pairs.get(metric, [])]
    if not pairs:
        return Markup("")
    rows = [[compare.SHORT.get(p.metric, p.metric), p.a, p.b, Num(p.mean_diff, f"{100 * p.mean_diff:+.2f}"),
             f"{p.wins}/{p.ties}/{p.losses}", _p(p.p_wilcoxon), _p(p.p_wilcoxon_holm), _p(p.p_t), _p(p.p_t_holm)]
            for p in pairs]
    unit = c.unit
    note = (f"A - B per {unit} (in points), wins/ties/losses of A (a win is better, lower for a lower-is-better "
            f"metric); two-sided exact Wilcoxon signed-rank and paired t-test on the per-{unit} differences, each "
            "also Holm-adjusted over every pair of the metric.")
    return join([tag("h3", "Paired statistics"), tag("p", note, class_="note"),
                 table(["metric", "A", "B", "mean A - B", "W/T/L", "p Wilcoxon", "p Wilcoxon (Holm)", "p t-test",
                        "p t-test (Holm)"], rows)])


def _p(x: float) -> Num:
    return Num(x if math.isfinite(x) else None, compare._p(x))


# ----------------------------------------------------------------------------------- figures


def _figures_section(c: compare.Comparison, no_figures: str | None, log: Callable[[str], None]) -> Markup:
    """ROC curves per split and each row's score histogram on the first split (its lowest seed)."""
    if no_figures:
        return Markup("")
    from osrbench import plots

    tag_ = f"{c.dataset}/{c.protocol}"
    rocs, hists = [], []
    for k in c.splits:
        curves = []
        for row in c.methods:
            recs = sorted((r for r in c.records[row] if r.split == k), key=lambda r: r.seed)
            if not recs:
                continue
            try:
                sc = records.read_scores(Path(recs[0].dir), recs[0]) if recs[0].dir is not None else None
            except UserError as exc:
                log(f"warning: {exc}; {row} left out of the split {k} figures")
                continue
            if sc is None:
                continue
            known, unknown = sc.pick("score")
            label = f"{row} ({sc.main})" if sc.main != "score" else row
            curves.append((label, known, unknown))
            if k == c.splits[0]:  # one histogram per row: a figure costs about half a second
                title = f"{row}, split {k} (seed {recs[0].seed})"
                hists.append(tag("figure", figures.svg(
                    lambda p, known=known, unknown=unknown, title=title: plots.plot_hist(known, unknown, p, title))))
        if curves:
            rocs.append(tag("figure", figures.svg(lambda p, curves=curves, k=k: plots.plot_roc(
                curves, p, f"ROC, {tag_} split {k}"))))
    if not rocs:
        return Markup("")
    return join([tag("h3", "ROC curves and score histograms"),
                 tag("p", "Each row's lowest seed on the split, its main score; knowns are the positives. "
                          f"Histograms: split {c.splits[0]}.",
                     class_="note"),
                 tag("details", tag("summary", f"ROC curves ({len(rocs)})"), *rocs, open=True),
                 tag("details", tag("summary", f"score histograms ({len(hists)})"), *hists)])


# ------------------------------------------------------------------------------------ classes


def _classes_section(c: compare.Comparison, log: Callable[[str], None]) -> Markup:
    """AUROC of the knowns against each unknown class (:func:`osrbench.analysis.class_breakdown`),
    where every record names its classes and has its scores."""
    from osrbench import analysis

    recs = [r for rs in c.records.values() for r in rs]
    if not recs or not all(r.known_classes and r.unknown_classes for r in recs):
        return Markup("")
    try:
        b = analysis.class_breakdown(c)
    except UserError as exc:
        log(f"warning: no per-class results for {c.dataset}/{c.protocol}: {exc}")
        return Markup("")
    out: list[Any] = [tag("h3", "Per class")]
    for role, what in (("unknown", "AUROC of the knowns against each unknown class"),
                       ("known", "AUROC of each known class against the unknowns")):
        classes = b.classes(role)
        by = getattr(b, role)
        if not classes:
            continue
        rows = [[row, *(Num(by[row][k][0], f"{100 * by[row][k][0]:.2f}", f"{by[row][k][1]} split(s)")
                        if k in by.get(row, {}) else Num(None, "-") for k in classes)] for row in c.methods]
        out.append(table(["method (recipe)", *(f"class {k}" for k in classes)], rows,
                         {1 + i: "max" for i in range(len(classes))},
                         f"{what} (%; mean over the splits where it has that role)"))
    return join(out)


# --------------------------------------------------------------------------------- provenance


def verification(rec: Record) -> tuple[bool, str]:
    """Whether ``rec``'s metrics are the ones its own ``scores.npz`` gives (:func:`records.verify_metrics`)."""
    if rec.scores_sha256 is None or rec.dir is None:
        return False, "no: the record names no scores file (written before scores were hashed)"
    try:
        records.verify_metrics(rec)
    except UserError as exc:
        return False, f"no: {exc}"
    return True, "yes"


def _versions(rec: Record) -> str:
    v = {k: x for k, x in rec.versions.items() if k != "plugin"}
    return ", ".join(f"{k} {x}" for k, x in sorted(v.items())) or "-"


def _weights(rec: Record) -> Any:
    w = rec.external_weights
    if not w:
        return "none (trained here)"
    files = [f"{f.get('name', '?')} sha256 {str(f.get('sha256', '?'))[:12]}" for f in w.get("files", [])
             if isinstance(f, dict)]
    return f"{w.get('layout')}: " + "; ".join(files)


def _provenance(block: Sequence["Cell"]) -> Markup:
    rows, stamps = [], []
    for cell in block:
        plugin = dict(cell.records[0].plugin)
        stamps.append(tag("li", f"{cell.row}: verified from its checkpoint: {verify.stamp_count(cell.records)}"))
        for rec in sorted(cell.records, key=lambda r: (r.split, r.seed)):
            ok, why = verification(rec)
            rows.append([cell.row, rec.method, rec.recipe or "-", Num(rec.split, str(rec.split)),
                         Num(rec.seed, str(rec.seed)), tag("code", records.folder_hash(rec)), tag("code", rec.config_hash),
                         f"{plugin.get('name', '?')} ({compare.plugin_label(*rec.plugin_id)})",
                         _versions(rec), rec.device or "-", tag("span", why, class_="good" if ok else "bad"),
                         "yes" if verify.stamped(rec) else "no", _weights(rec), rec.created or "-"])
    return join([tag("h3", "Provenance"),
                 tag("p", "One line per run. Run folder hash: what the run folder's name ends in, the resume key "
                          "(the config hash without the epochs, so a longer run resumes in the same folder); "
                          "config hash: the record's hash of its whole config, as the other report formats show it. "
                          "Verified: the record's metrics are recomputed from its scores.npz, whose content hash the "
                          "record holds. Verified from its checkpoint: osrbench verify rebuilt the run from its "
                          "checkpoint and stamped its folder, and the record, scores and checkpoint are unchanged "
                          "since (a stamp is not a signature).", class_="note"),
                 tag("ul", join(stamps)),
                 table(["row", "method", "recipe", "split", "seed", "run folder hash", "config hash", "plugin",
                        "versions", "device", "verified against its scores", "verified from its checkpoint",
                        "external weights", "created"], rows)])
