"""Reading result records into tables: the library of the ``report`` command.

The paper table from every result record under a folder: methods as rows, datasets as columns,
one table per protocol and metric, mean +- std over splits; Markdown, CSV, LaTeX (booktabs) or
JSON. Records of different configs, or made by different plugin distributions or versions, are
never averaged together: a method with several config groups gets one row per group, labelled with
its recipe and the config keys (and the plugin, when that differs) that tell the groups apart (the
full hashes are listed below the tables).

Rescoring stored runs with another score is in :mod:`osrbench.rescore`, the export bundle in
:mod:`osrbench.export`. The commands themselves (their flags and what they print) are in
:mod:`osrbench.commands`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from osrbench import compare, records
from osrbench.compare import GroupKey, Summary
from osrbench.results import mean_std
from osrbench.errors import MethodFailed, UserError
from osrbench.records import Record, folder_hash
from osrbench.results import json_number

if TYPE_CHECKING:  # the engine imports torch; reading records does not need it
    from osrbench import engine

REPORT_METRICS = ("auroc", "oscr", "macro_f1", "acc")
FORMATS = ("md", "csv", "latex", "json")


def parse_metrics(text: str | None, default: Sequence[str]) -> list[str]:
    if not text:
        return list(default)
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in compare.LABELS]
    if bad or not names:
        raise UserError(f"unknown metric {bad[0] if bad else text!r} (valid: {', '.join(compare.LABELS)})")
    return names


# ------------------------------------------------------------------------------------ collect


def collect(methods: Sequence[str], splits: Sequence[int], seeds: Sequence[int],
            make_request: Callable[[str, int, int], engine.RunRequest], run: bool,
            log: Callable[[str], None] = lambda msg: None, jobs: int = 1,
            pack: str = "auto") -> tuple[list[Record], list[str]]:
    """The records of every (method, split, seed): trained when missing (``run``) or only read.

    ``jobs > 1`` trains the missing runs that many at once (the sweep's local executor: one pack
    in this process or worker processes, by ``pack``) and logs their aggregate throughput.
    Returns the records and one line per run that failed or is missing.
    """
    if run and jobs > 1:
        from osrbench import sweep

        reqs = [make_request(m, k, s) for m in methods for k in splits for s in seeds]
        summary: list[sweep.Stats] = []

        def on_event(ev: sweep.Event) -> None:
            if ev.kind == "summary":
                summary.append(ev.info["stats"])

        done, failed = sweep.execute(reqs, jobs=jobs, on_event=on_event, pack=pack)
        if summary and summary[0].images:
            st = summary[0]
            how = f"as one pack, {jobs} at once" if st.packed else f"in {jobs} processes at once"
            log(f"osrbench: {st.completed} run(s) trained {how}: {st.images_per_s:,.0f} "
                f"training images/s aggregate ({st.images:,} images in {st.wall_s:.1f} s)")
        return list(done), [str(f) for f in failed]
    from osrbench import engine

    found: list[Record] = []
    failures: list[str] = []
    for name in methods:
        for split in splits:
            for seed in seeds:
                req = make_request(name, split, seed)
                if not run:
                    p = engine.plan(req)
                    why: list[str] = []  # why a stored record is not used (damaged, edited)
                    rec = p.existing_result(why.append)
                    if rec is None:
                        failures.append(f"{name} split {_label(req, split)} seed {seed}: " + (
                            why[-1].removeprefix("warning: ") if why else
                            f"no result in {p.dir} (run without --no-run)"))
                    else:
                        found.append(rec)
                    continue
                try:
                    found.append(engine.run(req, log=log).record)
                except MethodFailed as exc:
                    log(f"osrbench: run failed: {exc}")
                    failures.append(f"{name} split {_label(req, split)} seed {seed}: {exc}")
                except KeyboardInterrupt:  # compare has no --resume: a plain rerun continues the run
                    raise engine.interrupted([engine.plan(req)]) from None
    return found, failures


def _label(req: Any, split: int) -> str:
    from osrbench import protocols

    return protocols.split_label(req.dataset, req.protocol, split)


# ------------------------------------------------------------------------------------- report


@dataclass
class Cell:
    """One config group's aggregate: a table cell of the report."""

    key: GroupKey
    records: list[Record]
    metrics: dict[str, Summary]
    variant: str = ""
    expected_splits: int | None = None
    dropped: dict[int, int] = field(default_factory=dict)  # duplicate split -> first (--unique-splits)
    duplicates: dict[int, int] = field(default_factory=dict)  # duplicate split -> first, kept
    #: Under a protocol with named splits (ssb) a cell holds one split, shown as its own column.
    split: int | None = None

    @property
    def column(self) -> str:
        """The table column: the dataset, or ``cub Easy`` for one named split."""
        if self.split is None:
            return self.key.dataset
        from osrbench import protocols

        return f"{self.key.dataset} {protocols.split_title(self.key.dataset, self.key.protocol, self.split)}"

    @property
    def splits(self) -> list[int]:
        return sorted({r.split for r in self.records})

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.records})

    @property
    def row(self) -> str:
        inner = self.key.recipe or "no recipe"
        return f"{self.key.method} ({inner}{'; ' + self.variant if self.variant else ''})"

    @property
    def config(self) -> Mapping[str, Any]:
        return self.records[0].config


def _registry_info(dataset: str, protocol: str, splits: Sequence[int],
                   unique: bool) -> tuple[int | None, dict[int, int]]:
    """The protocol's split count (of distinct class sets when ``unique``) and the duplicates among
    ``splits``; ``(None, {})`` for a dataset or protocol this installation does not know."""
    from osrbench import plugins, protocols

    try:
        spec = plugins.get().dataset(dataset)
        n = protocols.num_splits(spec, protocol)
        if unique:
            n = len(compare.unique_splits(spec, protocol, range(n))[0])
        return n, compare.unique_splits(spec, protocol, splits)[1]
    except (plugins.UnknownName, protocols.SplitError):
        return None, {}


def build_report(records: Iterable[Record], metrics: Sequence[str] = REPORT_METRICS,
                 unique_splits: bool = False, ddof: int = 1) -> list[Cell]:
    """One cell per config group; groups of a method that differ only in config get variant labels."""
    cells = []
    for key, recs in compare.group_records(records).items():
        expected, dups = _registry_info(key.dataset, key.protocol, sorted({r.split for r in recs}), unique_splits)
        dropped = {}
        if unique_splits and dups:
            dropped = dups
            recs = [r for r in recs if r.split not in dups]
            dups = {}
        summ = {m: compare.summarize(recs, m, ddof).get(key.method) for m in metrics}
        cells.append(Cell(key, recs, {m: s for m, s in summ.items() if s is not None}, "", expected, dropped, dups))
    # Variant labels: keys that differ between groups of one method/recipe/protocol on one dataset,
    # and the plugin (distribution and version) when the family's records come from several.
    families: dict[tuple, list[Cell]] = {}
    for cell in cells:
        families.setdefault((cell.key.protocol, cell.key.method, cell.key.recipe), []).append(cell)
    for family in families.values():
        keys: set[str] = set()
        by_dataset: dict[str, list[Cell]] = {}
        for cell in family:
            by_dataset.setdefault(cell.key.dataset, []).append(cell)
        for same in by_dataset.values():
            if len(same) > 1:
                keys.update(compare.config_differences([c.config for c in same]))
        show_plugin = len({c.key.plugin for c in family}) > 1
        for cell in family:
            cell.variant = ", ".join(f"{k}={_short(cell.config.get(k, '<unset>'))}" for k in sorted(keys))
            if show_plugin:
                cell.variant = (cell.variant + "; " if cell.variant else "") + cell.key.plugin_label
        for same in by_dataset.values():  # identical labels (hashes differ for another reason)
            labels = [c.variant for c in same]
            for c in same:
                if labels.count(c.variant) > 1:
                    c.variant = (c.variant + ", " if c.variant else "") + f"config {c.key.short_hash}"
    cells = [part for cell in cells for part in _per_named_split(cell, metrics, ddof)]
    cells.sort(key=lambda c: (c.key.protocol, c.key.method, c.key.recipe or "", c.variant, c.key.dataset,
                              -1 if c.split is None else c.split))
    return cells


def _per_named_split(cell: Cell, metrics: Sequence[str], ddof: int) -> list[Cell]:
    """A cell of a protocol with named splits as one cell per split (the SSB papers' Easy and Hard
    columns: a mean over difficulties is no benchmark number); other cells as they are."""
    from osrbench import protocols

    if protocols.split_titles(cell.key.dataset, cell.key.protocol) is None:
        return [cell]
    out = []
    for k in cell.splits:
        recs = [r for r in cell.records if r.split == k]
        summ = {m: compare.summarize(recs, m, ddof).get(cell.key.method) for m in metrics}
        out.append(Cell(cell.key, recs, {m: s for m, s in summ.items() if s is not None}, cell.variant, 1, split=k))
    return out


def plugin_warnings(cells: Sequence[Cell]) -> list[str]:
    """One line per method and protocol whose records come from several plugin distributions or versions."""
    plugins: dict[tuple[str, str], set[str]] = {}
    for c in cells:
        plugins.setdefault((c.key.protocol, c.key.method), set()).add(c.key.plugin_label)
    return [f"records of {method!r} (protocol {protocol}) come from {len(labels)} different plugins "
            f"({', '.join(sorted(labels))}); each has its own rows, never averaged together"
            for (protocol, method), labels in plugins.items() if len(labels) > 1]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _pm(s: Summary | None, sep: str) -> str:
    if s is None:
        return ""
    return f"{compare._pct(s.mean)}{sep}{compare._pct(s.std)}"  # an undefined std (one split) shows as -


def _cell_note(cell: Cell) -> str:
    notes = []
    if cell.expected_splits is not None and len(cell.splits) != cell.expected_splits:
        notes.append(f"{len(cell.splits)} of {cell.expected_splits} splits")
    if cell.duplicates:
        notes.append("; ".join(f"split {d} = split {f} (same classes)" for d, f in cell.duplicates.items()))
    if cell.dropped:
        notes.append("dropped duplicate " + ", ".join(f"split {d} (= {f})" for d, f in cell.dropped.items()))
    return "; ".join(notes)


def _layout(cells: Sequence[Cell]) -> dict[str, tuple[list[str], list[str], dict[tuple[str, str], Cell]]]:
    """protocol -> (row labels, datasets, {(row, dataset): cell})."""
    out: dict[str, tuple[list[str], list[str], dict[tuple[str, str], Cell]]] = {}
    order: dict[str, tuple[str, int]] = {}
    for cell in cells:
        rows, datasets, grid = out.setdefault(cell.key.protocol, ([], [], {}))
        if cell.row not in rows:
            rows.append(cell.row)
        if cell.column not in datasets:
            datasets.append(cell.column)
            order[cell.column] = (cell.key.dataset, -1 if cell.split is None else cell.split)
        grid[(cell.row, cell.column)] = cell
    for _, datasets, _ in out.values():
        datasets.sort(key=order.__getitem__)  # a dataset's named splits in index order: Easy, Medium, Hard
    return out


def _flag(cell: Cell) -> str:
    return " *" if (cell.expected_splits is not None and len(cell.splits) != cell.expected_splits) or cell.duplicates else ""


def _one_split(c: Cell, metric: str, sep: str) -> str:
    """A named split's cell: its value, over several seeds their mean ± std."""
    values = [r.metrics[metric] for r in c.records if r.metrics.get(metric) is not None]
    if len(values) < 2:
        return compare._pct(c.metrics[metric].mean)
    return f"{compare._pct(c.metrics[metric].mean)}{sep}{compare._pct(mean_std(values, c.metrics[metric].ddof)[1])}"


def _md_value(c: Cell | None, metric: str) -> str:
    if c and metric in c.metrics and c.split is not None:
        return _one_split(c, metric, " ± ")
    return _pm(c.metrics.get(metric), " ± ") + _flag(c) if c and metric in c.metrics else "–"


def _ddof(cells: Sequence[Cell]) -> int:
    return next((s.ddof for c in cells for s in c.metrics.values()), 1)


def format_md(cells: Sequence[Cell], metrics: Sequence[str], source: str = "", layout: str = "metric") -> str:
    out = [f"osrbench report{' of ' + source if source else ''}: values in %, mean ± "
           f"{compare.std_label(_ddof(cells))} over splits "
           "(seeds averaged within a split); * = incomplete or repeated splits (see the config table)."
           + (" Named splits (ssb: Easy, Medium, Hard) are columns of their own: the value, or over several seeds "
              "mean ± std over the seeds." if any(c.split is not None for c in cells) else "")]
    for protocol, (rows, datasets, grid) in _layout(cells).items():
        if layout == "wide":
            present = [m for m in metrics if any(m in c.metrics for c in grid.values())]
            heads = [f"{d} {compare.SHORT.get(m, m)}" for d in datasets for m in present]
            out += ["", f"**Protocol `{protocol}`**", "", "| method (recipe) | " + " | ".join(heads) + " |",
                    "|---|" + "---:|" * len(heads)]
            for row in rows:
                out.append(f"| {row} | " + " | ".join(_md_value(grid.get((row, d)), m)
                                                     for d in datasets for m in present) + " |")
        for metric in metrics if layout != "wide" else ():
            if not any(metric in c.metrics for c in grid.values()):
                continue
            better = " (lower is better)" if metric in compare.LOWER_IS_BETTER else ""
            out += ["", f"**{compare.SHORT.get(metric, metric)}{better}, protocol `{protocol}`**", "",
                    "| method (recipe) | " + " | ".join(datasets) + " |",
                    "|---|" + "---:|" * len(datasets)]
            for row in rows:
                out.append(f"| {row} | " + " | ".join(_md_value(grid.get((row, d)), metric) for d in datasets) + " |")
        out += ["", f"Configs, protocol `{protocol}`:", "",
                "| method (recipe) | dataset | config hash | run folder hash | epochs | splits | seeds | note |",
                "|---|---|---|---|---:|---|---|---|"]
        for row in rows:
            for d in datasets:
                c = grid.get((row, d))
                if c:
                    out.append(f"| {row} | {d} | `{c.key.config_hash}` | `{folder_hash(c.records[0])}` | "
                               f"{c.config.get('epochs', '')} | "
                               f"{compare.split_list(c.splits)} | {compare.split_list(c.seeds)} | {_cell_note(c)} |")
    return "\n".join(out)


_LATEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPE.get(ch, ch) for ch in str(text))


def _tex_value(c: Cell | None, metric: str) -> str:
    if c and metric in c.metrics and c.split is not None:
        return _one_split(c, metric, " $\\pm$ ")
    if c and metric in c.metrics:
        return _pm(c.metrics[metric], " $\\pm$ ") + ("$^*$" if _flag(c) else "")
    return "--"


def format_latex(cells: Sequence[Cell], metrics: Sequence[str], source: str = "", layout: str = "metric") -> str:
    out = [f"% osrbench report{' of ' + source if source else ''}; values in %, mean $\\pm$ "
           f"{compare.std_label(_ddof(cells))} over splits",
           "% requires \\usepackage{booktabs}; $^*$ = incomplete or repeated splits"]
    for protocol, (rows, datasets, grid) in _layout(cells).items():
        if layout == "wide":
            present = [m for m in metrics if any(m in c.metrics for c in grid.values())]
            k = len(present)
            out += ["", f"% protocol {protocol}", "\\begin{tabular}{l" + ("c" * k) * len(datasets) + "}", "\\toprule",
                    " & " + " & ".join(f"\\multicolumn{{{k}}}{{c}}{{{latex_escape(d)}}}" for d in datasets) + " \\\\",
                    " ".join(f"\\cmidrule(lr){{{2 + i * k}-{1 + (i + 1) * k}}}" for i in range(len(datasets))),
                    "Method & " + " & ".join(latex_escape(compare.SHORT.get(m, m)) for _ in datasets for m in present)
                    + " \\\\", "\\midrule"]
            for row in rows:
                out.append(latex_escape(row) + " & " + " & ".join(
                    _tex_value(grid.get((row, d)), m) for d in datasets for m in present) + " \\\\")
            out += ["\\bottomrule", "\\end{tabular}"]
        for metric in metrics if layout != "wide" else ():
            if not any(metric in c.metrics for c in grid.values()):
                continue
            out += ["", f"% {compare.LABELS.get(metric, metric)}, protocol {protocol}",
                    "\\begin{tabular}{l" + "c" * len(datasets) + "}", "\\toprule",
                    f"\\multicolumn{{{len(datasets) + 1}}}{{c}}{{{latex_escape(compare.SHORT.get(metric, metric))}"
                    f" (\\%), protocol \\texttt{{{latex_escape(protocol)}}}}} \\\\",
                    "\\midrule",
                    "Method & " + " & ".join(latex_escape(d) for d in datasets) + " \\\\", "\\midrule"]
            for row in rows:
                out.append(latex_escape(row) + " & " + " & ".join(_tex_value(grid.get((row, d)), metric)
                                                                   for d in datasets) + " \\\\")
            out += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(out)


CSV_FIELDS = ("protocol", "dataset", "method", "recipe", "variant", "config_hash", "metric", "mean", "std",
              "std_ddof", "n_splits", "splits", "seeds", "per_split", "note", "plugin")


def format_csv(cells: Sequence[Cell], metrics: Sequence[str]) -> str:
    """One row per (config group, metric); values are fractions written with full precision."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for c in cells:
        for metric in metrics:
            s = c.metrics.get(metric)
            if s is None:
                continue
            w.writerow({"protocol": c.key.protocol, "dataset": c.key.dataset, "method": c.key.method,
                        "recipe": c.key.recipe or "", "variant": c.variant, "config_hash": c.key.config_hash,
                        "metric": metric, "mean": repr(s.mean), "std": "" if math.isnan(s.std) else repr(s.std),
                        "std_ddof": s.ddof, "n_splits": s.n,
                        "splits": " ".join(map(str, sorted(s.per_split))),
                        "seeds": " ".join(map(str, c.seeds)),
                        "per_split": " ".join(f"{k}:{v!r}" for k, v in sorted(s.per_split.items())),
                        "note": _cell_note(c), "plugin": c.key.plugin_label})
    return buf.getvalue()


def report_doc(cells: Sequence[Cell], metrics: Sequence[str], source: str = "") -> dict[str, Any]:
    groups = []
    for c in cells:
        groups.append({
            "protocol": c.key.protocol, "dataset": c.key.dataset, "method": c.key.method,
            "recipe": c.key.recipe, "variant": c.variant, "config_hash": c.key.config_hash,
            "plugin": {"distribution": c.key.plugin_distribution, "version": c.key.plugin_version},
            "config": dict(c.config), "splits": c.splits, "seeds": c.seeds, "n_runs": len(c.records),
            "expected_splits": c.expected_splits, "note": _cell_note(c),
            "metrics": {m: {"mean": s.mean, "std": json_number(s.std), "n": s.n,
                            "per_split": {str(k): v for k, v in sorted(s.per_split.items())}}
                        for m, s in c.metrics.items() if m in metrics},
        })
    return {"osrbench_report": 1, "source": source, "scale": "fraction",
            "aggregation": f"seeds averaged within a split; mean and {compare.std_label(_ddof(cells))} over splits",
            "std_ddof": _ddof(cells),
            "metrics": list(metrics), "groups": groups}


def render_report(cells: Sequence[Cell], metrics: Sequence[str], fmt: str, source: str = "",
                  layout: str = "metric") -> str:
    if fmt == "md":
        return format_md(cells, metrics, source, layout)
    if fmt == "latex":
        return format_latex(cells, metrics, source, layout)
    if fmt == "csv":
        return format_csv(cells, metrics)
    if fmt == "json":
        return json.dumps(report_doc(cells, metrics, source), indent=2)
    raise UserError(f"unknown report format {fmt!r} (valid: {', '.join(FORMATS)})")


def select(recs: Iterable[Record], dataset: str | None = None, protocol: str | None = None,
           methods: Sequence[str] | None = None) -> list[Record]:
    """The records of ``dataset``, ``protocol`` and one of ``methods`` (``None``/empty: any)."""
    return [rec for rec in recs if (not dataset or rec.dataset == dataset)
            and (not protocol or rec.protocol == protocol) and (not methods or rec.method in methods)]


def read_runs(runs: Path, log: Callable[[str], None] = lambda msg: None, verify: bool = True) -> list[Record]:
    """Every result record under ``runs``; a damaged one (``verify``: or one whose metrics its scores
    do not give) is skipped with a warning through ``log``."""
    if not Path(runs).is_dir():
        raise UserError(f"no results folder {runs} (pass --runs DIR, the --out of your runs)")
    return list(records.iter_records(runs, on_error=lambda msg: log(f"warning: skipped {msg}"), verify=verify))


def tie_tol_from(points: float | None) -> float:
    """``--tie-tol`` is in percentage points; 0 means exact ties only."""
    if points is None or points <= 0:
        return compare.EXACT_TIE
    return points / 100.0


def resolve_splits(dataset: str, protocol: str, split_text: str | None, seed_text: str,
                   unique: bool) -> tuple[list[int], list[int], dict[int, int]]:
    """Split and seed indices of a comparison; with ``unique`` the repeated class sets are dropped."""
    from osrbench import plugins, protocols

    spec = plugins.get().dataset(dataset)
    splits = protocols.parse_splits(split_text, spec, protocol)
    seeds = protocols.parse_indices(seed_text, protocols.MAX_SEED + 1, "seed")
    dropped: dict[int, int] = {}
    if unique:
        splits, dropped = compare.unique_splits(spec, protocol, splits)
    return splits, seeds, dropped
