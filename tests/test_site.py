"""report --format html and osrbench leaderboard, read back with html.parser (no browser).

The numbers on the pages are compared with the records' and bundles' own values; text from
records and bundles must never become markup; no page loads anything from the network.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from osrbench import cli, compare, export, records, report, results
from osrbench.site import html as sitehtml
from osrbench.site import leaderboard

_spec = importlib.util.spec_from_file_location("_report_helpers", Path(__file__).with_name("test_report.py"))
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)
make_record = _helpers.make_record  # records as the engine writes them, with scores.npz

HOSTILE_METHOD = "<img src=x onerror=window.__pwned=1>"  # no "/": a method name is a folder name
HOSTILE_RECIPE = "<script>window.__pwned=1</script>"
HOSTILE_PLUGIN = {"name": "\"><svg onload=window.__pwned=1>", "distribution": "<b>dist</b>", "version": "1&2"}


# ------------------------------------------------------------------------------------ parsing


class Page(HTMLParser):
    """Tables (caption, headers, rows of (text, attributes) cells), every start tag, and the text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tables: list[dict] = []
        self.starts: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._stack: list[dict] = []
        self._cell: list | None = None
        self._in: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.starts.append((tag, a))
        if tag == "table":
            self._stack.append({"caption": "", "headers": [], "rows": [], "class": a.get("class")})
        elif tag == "caption":
            self._in = "caption"
        elif tag == "tr" and self._stack:
            self._stack[-1]["rows"].append([])
        elif tag in ("td", "th") and self._stack:
            self._cell = [tag, "", a]

    def handle_endtag(self, tag):
        if tag == "table" and self._stack:
            t = self._stack.pop()
            t["headers"] = [c[1].strip() for c in t["rows"][0]] if t["rows"] else []
            t["rows"] = [[(c[1].strip(), c[2]) for c in r] for r in t["rows"][1:]]
            self.tables.append(t)
        elif tag == "caption":
            self._in = None
        elif tag in ("td", "th") and self._cell is not None:
            self._stack[-1]["rows"][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell[1] += data
        elif self._in == "caption" and self._stack:
            self._stack[-1]["caption"] += data

    def table(self, caption: str, index: int = 0) -> dict:
        found = [t for t in self.tables if t["caption"].startswith(caption)]
        return found[index]

    def rows(self, caption: str, index: int = 0) -> dict[str, dict[str, tuple[str, dict]]]:
        """first cell's text -> header -> cell."""
        t = self.table(caption, index)
        return {r[0][0]: dict(zip(t["headers"], r)) for r in t["rows"]}


def value(cell) -> float:
    return float(cell[1]["data-value"])


def assert_offline(text: str) -> None:
    """No script, style, image or frame from anywhere but the page itself."""
    page = Page(text)
    for tag, a in page.starts:
        assert tag not in ("link", "iframe", "object", "embed", "base"), tag
        for attr in ("src", "href", "xlink:href", "data", "action", "srcset"):
            v = (a.get(attr) or "").strip().lower()
            assert not v.startswith(("http:", "https:", "//", "ftp:")), (tag, attr, v)
        if tag == "script":
            assert "src" not in a
    assert "@import" not in text and "url(http" not in text
    csp = [a["content"] for tag, a in page.starts if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]


def assert_inert(text: str) -> None:
    """The page's one script is its own; no element carries an event handler or a javascript: URL."""
    page = Page(text)
    scripts = [a for tag, a in page.starts if tag == "script"]
    assert len(scripts) == 1
    assert text.count(sitehtml.SCRIPT) == 1
    for tag, a in page.starts:
        assert not any(k.startswith("on") for k in a), (tag, a)
        assert not any("javascript:" in (v or "").lower() for v in a.values()), (tag, a)


# ------------------------------------------------------------------------------------ escaping


def test_esc_is_the_one_place_and_tag_escapes_children_and_attributes():
    assert sitehtml.esc("<a href=\"x\">&'</a>") == "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;&lt;/a&gt;"
    cell = sitehtml.tag("td", "<script>x</script>", title="\"><script>", data_value="1")
    assert cell == ('<td title="&quot;&gt;&lt;script&gt;" data-value="1">&lt;script&gt;x&lt;/script&gt;</td>')
    assert sitehtml.tag("p", sitehtml.tag("b", "<i>")) == "<p><b>&lt;i&gt;</b></p>"  # Markup is not escaped twice


# ------------------------------------------------------------------------------------ report page


@pytest.fixture(scope="module")
def report_runs(tmp_path_factory):
    """Two methods on three splits of two datasets, with scores; fashion-mnist records name their classes;
    one method, recipe and plugin with hostile names."""
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    recs = []
    for dataset in ("digits", "fashion-mnist"):
        for method, recipe, plugin in (("softmax", "arpl-release", None),
                                       (HOSTILE_METHOD, HOSTILE_RECIPE, HOSTILE_PLUGIN)):
            for k in range(3):
                rec = make_record(method, k, 0, {}, dataset=dataset, recipe=recipe, root=root, scores_rng=rng,
                                  plugin=plugin)
                if dataset == "fashion-mnist":
                    rec = records.write_record(rec.dir, rec.replace(known_classes=(0, 1, 2, 3, 4, 5),
                                                                    unknown_classes=(7,), device="<b>cpu</b>"))
                recs.append(rec)
    page = root / "report.html"
    assert cli.main(["report", "--runs", str(root), "--format", "html", "--output", str(page),
                     "--metrics", "auroc,oscr,acc"]) == 0  # fewer figures: each costs about half a second
    return root, recs, page.read_text(encoding="utf-8")


def test_report_page_numbers_are_the_records(report_runs):
    _, recs, text = report_runs
    page = Page(text)
    for dataset, index in (("digits", 0), ("fashion-mnist", 1)):
        rows = page.rows("AUROC (%)", index)
        for method in ("softmax", HOSTILE_METHOD):
            mine = {r.split: r.metrics["auroc"] for r in recs if r.method == method and r.dataset == dataset}
            label = next(label for label in rows if label.startswith(method + " ("))
            row = rows[label]
            values = [mine[k] for k in sorted(mine)]
            mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
            assert value(row["mean"]) == pytest.approx(mean, abs=1e-15)
            assert row["mean"][0].startswith(f"{100 * mean:.2f}")
            assert value(row["std"]) == pytest.approx(std, abs=1e-15) and row["std"][0] == f"{100 * std:.2f}"
            for k in range(3):
                assert value(row[f"split {k}"]) == mine[k]
            half = sps.t.ppf(0.975, 2) * std / math.sqrt(3)
            assert row["95% CI (t)"][0] == f"[{100 * (mean - half):.2f}, {100 * (mean + half):.2f}]"
        # the best mean is marked, and only it
        means = {label: value(r["mean"]) for label, r in rows.items()}
        best = max(means, key=means.get)
        assert [label for label, r in rows.items() if "best" in r["mean"][1]["class"]] == [best]
        assert "\u2605" in rows[best]["mean"][0]


def test_report_page_provenance_paired_statistics_classes_and_figures(report_runs):
    root, recs, text = report_runs
    page = Page(text)
    prov = page.table("", [i for i, t in enumerate(page.tables) if "verified against its scores" in t["headers"]][0])
    heads = prov["headers"]
    assert len(prov["rows"]) == 6  # one line per run of the block
    for cells in prov["rows"]:
        row = dict(zip(heads, (c[0] for c in cells)))
        rec = next(r for r in recs if r.dataset == "digits" and r.method == row["method"]
                   and r.split == int(row["split"]))
        assert row["run folder hash"] == Path(rec.dir).name.rsplit("-", 1)[1]
        assert row["config hash"] == rec.config_hash
        assert row["verified against its scores"] == "yes"
        assert row["external weights"] == "none (trained here)"
        assert "torch x" in row["versions"] and "python z" in row["versions"]
    # paired statistics: compare.build's numbers between the two rows
    c = compare.build([r for r in recs if r.dataset == "digits"], ["softmax", HOSTILE_METHOD], ["auroc"])
    p = c.pairs["auroc"][0]
    paired = page.table("", [i for i, t in enumerate(page.tables) if "p Wilcoxon" in t["headers"]][0])
    first = dict(zip(paired["headers"], paired["rows"][0]))
    assert value(first["mean A - B"]) == pytest.approx(p.mean_diff if first["A"][0].startswith("softmax")
                                                       else -p.mean_diff, abs=1e-15)
    # per class: fashion-mnist's records name their classes, digits' do not
    assert len([t for t in page.tables if t["caption"].startswith("AUROC of the knowns against each unknown")]) == 1
    # figures: a ROC per split and block, a histogram per row and block, a CD diagram per metric, all inline SVG
    assert text.count("<svg") == 2 * 3 + 2 * 2 + 3
    assert_offline(text)


def test_report_page_shows_hostile_names_as_text(report_runs):
    _, _, text = report_runs
    assert_inert(text)
    page_text = "".join(Page(text).text)
    for hostile in (HOSTILE_METHOD, HOSTILE_RECIPE, HOSTILE_PLUGIN["name"], "<b>cpu</b>"):
        assert hostile in page_text  # shown, as text
    assert "<b>cpu</b>" not in text and HOSTILE_RECIPE not in text


def test_report_formats_other_than_html_are_unchanged(report_runs, capsys):
    root, _, _ = report_runs
    assert cli.main(["report", "--runs", str(root), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith(",".join(report.CSV_FIELDS))


# ------------------------------------------------------------------------------------ leaderboard


def _bundle(path: Path, methods, *, dataset="digits", protocol="auroc", splits=3, hash_of=None, seed=0) -> dict:
    """An export bundle of in-memory records (export needs no files)."""
    rng = np.random.default_rng(seed)
    recs = []
    for method in methods:
        for k in range(splits):
            values = {"auroc": float(rng.uniform(0.6, 0.95)), "oscr": float(rng.uniform(0.5, 0.9))}
            rec = make_record(method, k, 0, values, dataset=dataset, protocol=protocol)
            if hash_of:
                rec = rec.replace(split_hash=hash_of(k))
            recs.append(rec.replace(device="cuda (lab machine)"))
    c = compare.build(recs, list(methods), ["auroc", "oscr"])
    return export.write_export(path, export.export_doc(c))


def test_leaderboard_pages_hold_the_bundles_numbers_and_provenance(tmp_path):
    a = _bundle(tmp_path / "lab-a.json", ["softmax", "arpl"])
    b = _bundle(tmp_path / "lab-b.json", ["dias", "<script>window.__pwned=1</script>"], seed=1)
    _bundle(tmp_path / "lab-c.json", ["softmax"], dataset="fashion-mnist", seed=2)
    out = tmp_path / "site"
    assert cli.main(["leaderboard", *(str(tmp_path / f"lab-{x}.json") for x in "abc"), "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 3 and "index.html" in files
    index = Page((out / "index.html").read_text())
    links = [a["href"] for tag, a in index.starts if tag == "a"]
    assert sorted(links) == sorted(f for f in files if f != "index.html")
    digits = next(f for f in files if f.startswith("digits-auroc-"))
    text = (out / digits).read_text()
    assert_offline(text)
    assert_inert(text)
    page = Page(text)
    rows = page.table("Leaderboard")["rows"]
    heads = page.table("Leaderboard")["headers"]
    seen = set()
    for cells in rows:
        row = dict(zip(heads, cells))
        doc = {"lab-a.json": a, "lab-b.json": b}[row["bundle"][0]]
        m = doc["methods"][row["method"][0]]
        assert value(row["AUROC mean"]) == m["metrics"]["auroc"]["mean"]
        assert value(row["OSCR std"]) == m["metrics"]["oscr"]["std"]
        seen.add(row["method"][0])
    assert seen == {"softmax", "arpl", "dias", "<script>window.__pwned=1</script>"}
    aurocs = [value(dict(zip(heads, r))["AUROC mean"]) for r in rows]
    assert aurocs == sorted(aurocs, reverse=True)  # best first
    prov = {(r[0][0], r[1][0]): dict(zip(page.table("", len(page.tables) - 1)["headers"], (c[0] for c in r)))
            for r in page.tables[-1]["rows"]}
    assert prov["arpl", "lab-a.json"]["bundle sha256"] == a["sha256"][:16]
    assert prov["arpl", "lab-a.json"]["devices"] == "cuda (lab machine)"
    assert prov["dias", "lab-b.json"]["config hash"] == b["methods"]["dias"]["config_hash"]


def test_leaderboard_refuses_a_tampered_bundle_and_writes_nothing(tmp_path, capsys):
    _bundle(tmp_path / "a.json", ["softmax", "arpl"])
    doc = json.loads((tmp_path / "a.json").read_text())
    doc["methods"]["arpl"]["metrics"]["auroc"]["mean"] += 0.01
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    out = tmp_path / "site"
    assert cli.main(["leaderboard", str(tmp_path / "a.json"), str(tmp_path / "bad.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "bad.json") in err and "content hash" in err
    assert not out.exists()


def test_leaderboard_refuses_one_benchmark_name_with_two_split_definitions(tmp_path, capsys):
    _bundle(tmp_path / "v15.json", ["softmax"])
    _bundle(tmp_path / "v10.json", ["arpl"], hash_of=lambda k: f"older-split-{k}")
    _bundle(tmp_path / "short.json", ["dias"], splits=2)
    out = tmp_path / "site"
    assert cli.main(["leaderboard", str(tmp_path / "v15.json"), str(tmp_path / "v10.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "v10.json" in err and "v15.json" in err
    assert "split hashes of splits 0,1,2 (split 0: older-split-0 against hash-of-split-0)" in err
    assert cli.main(["leaderboard", str(tmp_path / "v15.json"), str(tmp_path / "short.json"), "--out", str(out)]) == 2
    assert "splits 0,1 against 0-2" in capsys.readouterr().err
    assert not out.exists()
    # another protocol of the same dataset is another benchmark: its own page, never the same table
    _bundle(tmp_path / "osrci.json", ["softmax"], protocol="osrci")
    pages = leaderboard.build([tmp_path / "v15.json", tmp_path / "osrci.json"])
    assert sorted(pages)[0].startswith("digits-auroc-") and sorted(pages)[1].startswith("digits-osrci-")


def test_leaderboard_writes_each_page_atomically(tmp_path, monkeypatch):
    _bundle(tmp_path / "a.json", ["softmax", "arpl"])
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("the old index")
    renames = []
    real_replace, real_fsync = os.replace, os.fsync
    calls = {"n": 0}

    def replace(src, dst):
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    def fsync(fd):  # the disk fills up while the second page is written
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    assert cli.main(["leaderboard", str(tmp_path / "a.json"), "--out", str(out)]) == 2
    assert (out / "index.html").read_text() == "the old index"  # not half-written
    assert not list(out.glob(".*tmp"))  # no temporary file left behind
    assert len(renames) == 1 and renames[0][0].parent == out and renames[0][0].name.startswith(".")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert cli.main(["leaderboard", str(tmp_path / "a.json"), "--out", str(out)]) == 0
    assert "osrbench leaderboard" in (out / "index.html").read_text()


def test_report_page_without_matplotlib_says_so_and_keeps_its_tables(report_runs, tmp_path, monkeypatch, capsys):
    from osrbench import plots

    def missing():
        raise plots.PlotsUnavailable("--plot needs matplotlib, which cannot be imported (matplotlib): "
                                     "pip install 'osrbench[plot]'")

    monkeypatch.setattr(plots, "require_matplotlib", missing)
    root, _, _ = report_runs
    out = tmp_path / "page.html"
    assert cli.main(["report", "--runs", str(root), "--format", "html", "-o", str(out)]) == 0
    text = out.read_text()
    assert "<svg" not in text and "No figures: figures need matplotlib" in text
    assert len(Page(text).rows("AUROC (%)", 1)) == 2
    # html's default metrics: every one compare shows, a table each per block
    captions = [t["caption"] for t in Page(text).tables]
    for metric in compare.METRICS:
        assert sum(c.startswith(f"{compare.LABELS[metric]} (%)") for c in captions) == 2, metric


def test_a_rehashed_bundle_with_odd_but_valid_fields_still_makes_a_page(tmp_path):
    """Validation reads numbers with float() and leaves the exporter, versions and runs free: the page
    must take what it accepts (numbers as strings, an exporter that is a string) without a traceback."""
    doc = _bundle(tmp_path / "a.json", ["softmax", "arpl"])
    odd = json.loads(json.dumps(doc))
    m = odd["methods"]["arpl"]
    m["metrics"]["auroc"] = {k: (str(v) if k == "mean" else v) for k, v in m["metrics"]["auroc"].items()}
    m["metrics"]["auroc"]["per_split"] = {k: str(v) for k, v in m["metrics"]["auroc"]["per_split"].items()}
    m["recipe"] = {"<i>": 1}
    m["runs"], m["versions"] = "many", ["<b>"]
    odd["exporter"] = "<script>"
    odd["sha256"] = results.canonical_hash({k: v for k, v in odd.items() if k != "sha256"}, 64)
    export.validate_export(odd)
    (tmp_path / "a.json").write_text(json.dumps(odd))
    pages = leaderboard.build([tmp_path / "a.json"])
    text = pages[next(p for p in pages if p != "index.html")]
    assert_inert(text)
    rows = Page(text).rows("Leaderboard")
    assert value(rows["arpl"]["AUROC mean"]) == doc["methods"]["arpl"]["metrics"]["auroc"]["mean"]


@pytest.mark.parametrize("content, message", [
    (None, "cannot read an export bundle (FileNotFoundError)"),
    ("{not json", "cannot read an export bundle (JSONDecodeError)"),
    ("[1, 2]", "invalid export: not an osrbench export"),
    ('{"osrbench_export": 2}', "invalid export: "),
])
def test_leaderboard_refuses_what_export_validate_refuses_in_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    assert cli.main(["leaderboard", str(path), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"osrbench: error: {path}: {message}")
    assert not (tmp_path / "site").exists()
