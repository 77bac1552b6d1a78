"""``osrbench leaderboard``: a static site from export bundles of different machines or labs.

Every bundle is read and checked as ``osrbench export --validate`` checks it
(:func:`osrbench.export.read_bundle`). A *benchmark* is a dataset and protocol with its split
definitions: the split indices a bundle covers and each split's hash (the class lists it was
built from), and the std it reports (ddof). Bundles that name the same dataset and protocol but
define them otherwise (OpenOOD's v1.0 and v1.5 splits under one name, five splits against three)
are refused in one line that says what differs: their rows are never in one table. Each
benchmark gets its own page; ``index.html`` lists them. Nothing is written unless every bundle
is valid and every benchmark is consistent, and each file is written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import osrbench
from osrbench import compare, export, results
from osrbench.errors import UserError
from osrbench.site.html import Num, document, join, pct, table, tag


class MixedDefinitions(UserError):
    """Bundles of one dataset and protocol with different split definitions."""


@dataclass(frozen=True)
class Bundle:
    """A verified export bundle and the file it was read from."""

    path: Path
    doc: Mapping[str, Any]

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def split_hashes(self) -> dict[str, str]:
        """split index -> split hash, over every method (validation made them agree)."""
        out: dict[str, str] = {}
        for m in self.doc["methods"].values():
            out.update({str(k): str(v) for k, v in m["split_hashes"].items()})
        return dict(sorted(out.items(), key=lambda kv: int(kv[0])))

    @property
    def ddof(self) -> int:
        return int(self.doc.get("std_ddof", 1))


@dataclass
class Benchmark:
    """One dataset, protocol and split definition, and the bundles that report on it."""

    dataset: str
    protocol: str
    splits: list[int]
    split_hashes: dict[str, str]
    ddof: int
    bundles: list[Bundle] = field(default_factory=list)

    @property
    def definition_hash(self) -> str:
        return results.canonical_hash({"dataset": self.dataset, "protocol": self.protocol, "splits": self.splits,
                                       "split_hashes": self.split_hashes, "std_ddof": self.ddof}, 12)

    @property
    def page(self) -> str:
        """The page's file name: safe characters of the names, then the definition's hash."""
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{self.dataset}-{self.protocol}")[:60]
        return f"{safe}-{self.definition_hash}.html"

    @property
    def metrics(self) -> list[str]:
        """Every metric some entry reports, in the catalogue's order."""
        have = {k for b in self.bundles for m in b.doc["methods"].values() for k in m["metrics"]}
        return [m for m in compare.LABELS if m in have] + sorted(have - set(compare.LABELS))


def read_bundles(paths: Sequence[Path]) -> list[Bundle]:
    """Every bundle, verified (:func:`osrbench.export.read_bundle`); a bundle given twice is refused."""
    bundles = []
    seen: dict[str, Path] = {}
    for path in paths:
        doc = export.read_bundle(Path(path))
        if doc["sha256"] in seen:
            raise UserError(f"{path}: the same bundle as {seen[doc['sha256']]} (sha256 {doc['sha256'][:12]}); "
                            "give each bundle once")
        seen[doc["sha256"]] = Path(path)
        bundles.append(Bundle(Path(path), doc))
    return bundles


def _differences(a: Bundle, b: Bundle) -> list[str]:
    """What ``b`` defines otherwise than ``a`` (same dataset and protocol)."""
    out = []
    if sorted(a.doc["splits"]) != sorted(b.doc["splits"]):
        out.append(f"splits {compare.split_list(b.doc['splits'])} against {compare.split_list(a.doc['splits'])}")
    ha, hb = a.split_hashes, b.split_hashes
    diff = [k for k in sorted(set(ha) & set(hb), key=int) if ha[k] != hb[k]]
    if diff:
        k = diff[0]
        out.append(f"split hashes of split{'s' if len(diff) > 1 else ''} {','.join(diff)} (split {k}: {hb[k]} "
                   f"against {ha[k]})")
    if a.ddof != b.ddof:
        out.append(f"std ddof {b.ddof} against {a.ddof}")
    return out


def benchmarks(bundles: Iterable[Bundle]) -> list[Benchmark]:
    """The bundles by benchmark; :class:`MixedDefinitions` when two bundles name one dataset and
    protocol but differ in splits, split hashes or std."""
    out: dict[tuple[str, str], Benchmark] = {}
    for b in bundles:
        key = (b.doc["dataset"], b.doc["protocol"])
        bench = out.get(key)
        if bench is None:
            out[key] = Benchmark(*key, sorted(b.doc["splits"]), b.split_hashes, b.ddof, [b])
            continue
        first = bench.bundles[0]
        diff = _differences(first, b)
        if diff:
            raise MixedDefinitions(
                f"{b.path} and {first.path} both report {key[0]}/{key[1]} but define it differently: "
                f"{'; '.join(diff)}; rows of different protocol or split definitions never share a table "
                "(build a leaderboard of each definition)")
        bench.bundles.append(b)
    return list(out.values())


# ------------------------------------------------------------------------------------ pages


def _entries(bench: Benchmark) -> list[tuple[str, Bundle, Mapping[str, Any]]]:
    return [(name, b, m) for b in bench.bundles for name, m in b.doc["methods"].items()]


def _plugin(m: Mapping[str, Any]) -> str:
    p = m.get("plugin") if isinstance(m.get("plugin"), dict) else {}
    return compare.plugin_label(p.get("distribution"), p.get("version"))


def _versions(m: Mapping[str, Any]) -> str:
    v = m.get("versions") if isinstance(m.get("versions"), dict) else {}
    text = ", ".join(f"{k} {x}" for k, x in sorted(v.items()) if k != "plugin") or "-"
    return text + ("" if m.get("versions_consistent", True) else " (not the same for every run)")


def _runs(m: Mapping[str, Any]) -> list[Any]:
    return m["runs"] if isinstance(m.get("runs"), list) else []


def _unverified(m: Mapping[str, Any]) -> str:
    """The mark of an entry with runs exported by ``--allow-unverified`` (no scores hash: unchecked)."""
    n = sum(1 for r in _runs(m) if isinstance(r, dict) and r.get("unverified"))
    return f" (UNVERIFIED: {n} of {len(_runs(m))} runs)" if n else ""


def _stamps(m: Mapping[str, Any]) -> str:
    """``k of n runs`` verified from their checkpoints (``osrbench verify``'s stamp, as the bundle
    states it); "not recorded" for a bundle exported before stamps."""
    runs = [r for r in _runs(m) if isinstance(r, dict)]
    if not any("verified_from_checkpoint" in r for r in runs):
        return "not recorded"
    return f"{sum(r.get('verified_from_checkpoint') is True for r in runs)} of {len(runs)} runs"


def _value(v: Any) -> Num:
    """A bundle's number (validation checked that it reads as one, not that it is a JSON number)."""
    try:
        return pct(None if v is None else float(v))
    except (TypeError, ValueError):
        return Num(None, "-")


def _exporter(doc: Mapping[str, Any]) -> str:
    e = doc.get("exporter")
    return str(e.get("osrbench", "?")) if isinstance(e, dict) else "?"


def _devices(m: Mapping[str, Any]) -> str:
    runs = _runs(m)
    return "; ".join(sorted({str(r.get("device") or "?") for r in runs if isinstance(r, dict)})) or "-"


def benchmark_page(bench: Benchmark) -> str:
    entries = _entries(bench)
    metrics = bench.metrics
    lower = {i: "min" if x in compare.LOWER_IS_BETTER else "max" for i, x in enumerate(metrics)}
    rows = []
    for name, b, m in entries:
        cells: list[Any] = [name + _unverified(m), m.get("recipe") or "-", b.label]
        for x in metrics:
            v = m["metrics"].get(x)
            cells += [_value(v["mean"]) if v else Num(None, "-"), _value(v["std"]) if v else Num(None, "-")]
        rows.append(cells)
    first = metrics[0] if metrics else None
    if first:  # best first by the first metric; a click on a header sorts by another
        sign = 1 if lower[0] == "min" else -1
        rows.sort(key=lambda r: (not r[3].finite, sign * (r[3].value or 0.0)))
    heads = ["method", "recipe", "bundle"]
    for x in metrics:
        heads += [f"{compare.SHORT.get(x, x)} mean", f"{compare.SHORT.get(x, x)} std"]
    best = {3 + 2 * i: how for i, how in lower.items()}
    title = f"{bench.dataset} / protocol {bench.protocol}"
    parts: list[Any] = [
        tag("nav", tag("a", "\u2190 all benchmarks", href="index.html")),
        tag("h1", title),
        tag("p", f"Splits {compare.split_list(bench.splits)}; split hashes: ",
            join((tag("code", f"{k}: {h}") for k, h in bench.split_hashes.items()), ", "),
            f". Values in %: mean and {compare.std_label(bench.ddof)} over splits, as each bundle states them "
            "(every bundle verified: content hash and means that follow from its per-split values). "
            "\u2605 = best in its column; click a header to sort.", class_="note"),
        table(heads, rows, best, "Leaderboard"),
    ]
    for x in metrics:
        per = []
        for name, b, m in entries:
            v = m["metrics"].get(x)
            if v:
                per.append([name, b.label, *(_value(v["per_split"].get(str(k))) for k in bench.splits)])
        parts.append(tag("details", tag("summary", f"{compare.LABELS.get(x, x)}: per split"),
                         table(["method", "bundle", *(f"split {k}" for k in bench.splits)], per,
                               {2 + i: lower[metrics.index(x)] for i in range(len(bench.splits))})))
    prov = [[name, b.label, tag("code", b.doc["sha256"][:16]), _exporter(b.doc), b.doc["created"],
             tag("code", m["config_hash"]), _plugin(m), _versions(m), _devices(m),
             Num(len(_runs(m)), str(len(_runs(m)))), _stamps(m), str(b.doc.get("score") or "its own")]
            for name, b, m in entries]
    parts += [tag("h2", "Provenance"),
              tag("p", "Where each entry comes from: its bundle (file and content hash), the osrbench that exported "
                       "it and when, the method's config hash and plugin, the versions and devices of its runs, "
                       "and how many of its runs osrbench verify rebuilt from their checkpoints (a stamp in the run "
                       "folder whose record, scores and checkpoint were unchanged at export; not a signature).",
                  class_="note"),
              table(["method", "bundle", "bundle sha256", "exported by osrbench", "created", "config hash", "plugin",
                     "versions", "devices", "runs", "verified from its checkpoint", "score"], prov)]
    return document(f"osrbench leaderboard: {title}", join(parts))


def index_page(benches: Sequence[Benchmark]) -> str:
    rows = [[tag("a", f"{b.dataset} / {b.protocol}", href=b.page), b.dataset, b.protocol,
             compare.split_list(b.splits), tag("code", b.definition_hash), Num(len(_entries(b)), str(len(_entries(b)))),
             ", ".join(x.label for x in b.bundles)] for b in benches]
    parts = [tag("h1", "osrbench leaderboard"),
             tag("p", f"Built by osrbench {osrbench.__version__} from {sum(len(b.bundles) for b in benches)} verified "
                      "export bundle(s). One page per benchmark: a dataset, a protocol and its split definitions "
                      "(the definition hash covers the split indices, their hashes and the std).", class_="note"),
             table(["benchmark", "dataset", "protocol", "splits", "definition", "entries", "bundles"], rows,
                   caption="Benchmarks")]
    return document("osrbench leaderboard", join(parts))


def build(paths: Sequence[Path]) -> dict[str, str]:
    """The site of bundles ``paths``: file name -> page text (nothing written)."""
    benches = benchmarks(read_bundles(paths))
    pages = {b.page: benchmark_page(b) for b in benches}
    pages["index.html"] = index_page(benches)
    return pages


def write_site(out: Path, pages: Mapping[str, str]) -> list[Path]:
    """Write every page into ``out``, each atomically (a temporary file renamed into place)."""
    folder = results.ensure_dir(Path(out), "--out folder")
    written = []
    for name, text in pages.items():
        data = text.encode("utf-8")
        results.atomic_write(folder / name, lambda fh, data=data: fh.write(data))
        written.append(folder / name)
    return written

