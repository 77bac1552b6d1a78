"""The command line as a researcher first types it (issue 35, part 3): ``python -m osrbench``,
``--version``, shell completion, one vocabulary of formats, help and an example everywhere,
compare without ``--dataset``, tables folded to the terminal, figures in png/pdf/svg with their data
as CSV, LICENSE and CITATION.cff, ``list --cite`` and the Python API for notebooks (docs/NOTEBOOK.md)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

import osrbench
from osrbench import cli, formats, metrics, plugins, records, registry

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("softmax", "arpl")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Finished one-epoch runs of softmax and arpl on digits, auroc splits 0 and 1."""
    out = tmp_path_factory.mktemp("conventions") / "runs"
    assert cli.main(["compare", *METHODS, "--dataset", "digits", "--splits", "0-1", "--epochs", "1",
                     "--device", "cpu", "--quiet", "--out", str(out), "--metrics", "auroc"]) == 0
    return out


def _records(out: Path) -> list[records.Record]:
    return list(records.iter_records(out))


# ------------------------------------------------------------------------ python -m, --version


def test_python_m_osrbench_prints_the_host_and_every_plugin_version(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "osrbench", "--version"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"osrbench {osrbench.__version__} (Python ")
    for info in plugins.get().infos.values():
        assert f"  {info.name}: {info.distribution} {info.version}" in lines


def test_version_in_process_exits_zero(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"osrbench {osrbench.__version__}")


# ------------------------------------------------------------------------------ help everywhere


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = sub
                out.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return out


def test_every_argument_of_every_command_has_help():
    parser = cli.build_parser()
    parsers = {"osrbench": parser, **_subparsers(parser)}
    missing = [f"{name}: {a.option_strings or a.dest}" for name, p in parsers.items()
               for a in p._actions if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert not missing, missing


def test_every_command_shows_an_example():
    subs = _subparsers(cli.build_parser())
    assert {"run", "compare", "report", "export", "completion", "evaluate"} <= set(subs)
    for name, p in subs.items():
        assert p.epilog and re.search(r"\bexamples?: .*osrbench " + re.escape(name.split()[0]), p.epilog), name


def test_evaluate_help_lists_every_layout_the_methods_declare(capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    out = capsys.readouterr().out
    tail = out.split("Layouts the installed methods read:\n", 1)[1]
    listed = {line.split()[0]: line.split(None, 1)[1] for line in tail.splitlines() if line.strip()}
    declared: dict[str, set[str]] = {}
    for name, spec in plugins.get().methods.items():
        cls = spec.factory if isinstance(spec.factory, type) else type(spec.factory())
        for layout in getattr(cls, "external_layouts", ()):
            declared.setdefault(layout, set()).add(name)
    assert {"arpl-release", "dias-release", "cac-release", "medaf-release"} <= set(declared)
    assert set(listed) == set(declared) | {"osrbench"}
    for layout, names in declared.items():
        assert set(listed[layout].split(", ")) == names, layout


# ----------------------------------------------------------------------------------- completion


def test_completion_scripts_are_generated_from_the_parser(capsys):
    scripts = {}
    for shell in ("bash", "zsh", "fish"):
        assert cli.main(["completion", shell]) == 0
        scripts[shell] = capsys.readouterr().out
    commands = set(_subparsers(cli.build_parser()))
    assert scripts["zsh"].startswith("#compdef osrbench") and "bashcompinit" in scripts["zsh"]
    for command in commands:
        assert f" -a {command} -d " in scripts["fish"], command
    assert "-l plot-format -x -a 'png pdf svg'" in scripts["fish"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_the_bash_script_is_valid_and_completes_commands_methods_and_formats(tmp_path, capsys):
    assert cli.main(["completion", "bash"]) == 0
    script = tmp_path / "osrbench.bash"
    script.write_text(capsys.readouterr().out)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        proc = subprocess.run(["bash", "-c", f'source "{script}"; COMP_WORDS=(osrbench {line}); '
                               f'COMP_CWORD={len(words)}; _osrbench; printf "%s\\n" "${{COMPREPLY[@]}}"'],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert complete("comp") == ["compare", "completion"]
    assert complete("run", "--method", "di") == ["dias"]
    assert complete("compare", "ar") == ["arpl", "arpl-cs"]
    assert complete("report", "--format", "") == ["md", "csv", "latex", "json", "html"]
    assert complete("run", "--dataset", "cifar1") == ["cifar10"]
    assert "--plot-format" in complete("compare", "--plot-")


# --------------------------------------------------------------------------------- format names


def test_one_vocabulary_with_the_old_names_as_aliases():
    assert formats.parse_format("github", ("md", "csv")) == formats.Format("md", "github")
    assert formats.parse_format("simple", ("text", "md")) == formats.Format("text", "simple")
    assert formats.parse_format("grid", ("text",)) == formats.Format("text", "grid")  # another tabulate style
    with pytest.raises(osrbench.errors.UsageError, match=r"unknown --format 'grid' \(valid: md, csv; also "
                                                         r"github = md, pipe = md, markdown = md\)"):
        formats.parse_format("grid", ("md", "csv"))


def test_report_takes_github_as_md_and_compare_takes_json_and_csv(runs, capsys):
    assert cli.main(["report", "--runs", str(runs), "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert cli.main(["report", "--runs", str(runs), "--format", "github"]) == 0
    assert capsys.readouterr().out == md
    base = ["compare", *METHODS, "--dataset", "digits", "--splits", "0-1", "--epochs", "1", "--no-run",
            "--out", str(runs), "--metrics", "auroc"]
    assert cli.main([*base, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    recs = {(r.method, r.split): r.metrics["auroc"] for r in _records(runs)}
    for m in METHODS:
        assert doc["methods"][m]["metrics"]["auroc"]["per_split"] == {str(k): recs[m, k] for k in (0, 1)}
    assert cli.main([*base, "--format", "github"]) == 0
    assert "| method " in capsys.readouterr().out


# ------------------------------------------------------------------------- compare, no --dataset


def test_compare_without_dataset_compares_where_finished_runs_are(runs, capsys):
    assert cli.main(["compare", *METHODS, "--epochs", "1", "--out", str(runs), "--format", "csv",
                     "--metrics", "auroc"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    recs = {(r.method, r.split): r.metrics["auroc"] for r in _records(runs)}
    assert [(r["dataset"], r["protocol"], r["metric"], r["method"], r["split"]) for r in rows] == [
        ("digits", "auroc", "auroc", m, k) for m in METHODS for k in ("0", "1")]
    for r in rows:
        assert float(r["value"]) == recs[r["method"], int(r["split"])]
        assert float(r["mean"]) == pytest.approx(np.mean([recs[r["method"], 0], recs[r["method"], 1]]), abs=1e-15)
        assert float(r["std"]) == pytest.approx(np.std([recs[r["method"], 0], recs[r["method"], 1]], ddof=1),
                                                abs=1e-15)


def test_compare_without_dataset_runs_one_comparison_per_dataset_and_protocol(runs, tmp_path, capsys):
    out = tmp_path / "runs"
    shutil.copytree(runs, out)
    train = ["--dataset", "digits", "--splits", "0", "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(out)]
    assert cli.main(["compare", *METHODS, "--protocol", "f1", *train]) == 0
    # a protocol where only one of the methods ran: no comparison there
    assert cli.main(["run", "--method", "softmax", "--protocol", "osrci", *train[:2], *train[4:]]) == 0
    capsys.readouterr()
    assert cli.main(["compare", *METHODS, "--epochs", "1", "--out", str(out), "--format", "json"]) == 0
    docs = json.loads(capsys.readouterr().out)  # one document: the list of comparisons
    assert [(d["dataset"], d["protocol"], sorted(d["methods"])) for d in docs] == [
        ("digits", "auroc", sorted(METHODS)), ("digits", "f1", sorted(METHODS))]
    assert cli.main(["compare", *METHODS, "--epochs", "1", "--out", str(out), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("dataset,") and sum(line.startswith("dataset,") for line in lines) == 1
    assert sorted({tuple(line.split(",")[1:2]) for line in lines[1:]}) == [("auroc",), ("f1",)]


@pytest.mark.parametrize("extra", [[], ["--epochs", "1", "--protocol", "f1"]], ids=["other config", "other protocol"])
def test_compare_without_dataset_and_no_runs_names_dataset(runs, capsys, extra):
    assert cli.main(["compare", *METHODS, "--out", str(runs), *extra]) == 2  # recipe's epochs: no such runs
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("osrbench: error: no finished runs of softmax and arpl")
    assert "--dataset" in err[0]


def test_compare_without_dataset_needs_every_method(runs, capsys):
    assert cli.main(["compare", "softmax", "dias", "--epochs", "1", "--out", str(runs)]) == 2
    assert "--dataset" in capsys.readouterr().err


# --------------------------------------------------------------------------- terminal width


def test_fit_width_folds_a_table_by_columns():
    table = textwrap.dedent("""\
        paired     mean    split 0  split 1
        ---------  ------  -------  -------
        a - b      +1.00   +0.50    -0.25
        c - d      -2.00   +1.50""")
    assert formats.fit_width("title\n" + table + "\n\nnote", 30) == textwrap.dedent("""\
        title
        paired     mean    split 0
        ---------  ------  -------
        a - b      +1.00   +0.50
        c - d      -2.00   +1.50

        paired     split 1
        ---------  -------
        a - b      -0.25
        c - d

        note""")
    assert formats.fit_width(table, 60) == table


def _compare_text(runs, capsys, monkeypatch, tty: bool, columns: int = 60) -> str:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: tty)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *a, **k: __import__("os").terminal_size((columns, 24)))
    assert cli.main(["compare", *METHODS, "--dataset", "digits", "--splits", "0-1", "--epochs", "1", "--no-run",
                     "--out", str(runs)]) == 0
    return capsys.readouterr().out


def test_compare_tables_fit_a_narrow_terminal_and_keep_full_width_in_a_pipe(runs, capsys, monkeypatch):
    wide = _compare_text(runs, capsys, monkeypatch, tty=False)
    assert max(map(len, wide.splitlines())) > 60
    narrow = _compare_text(runs, capsys, monkeypatch, tty=True)
    assert max(map(len, narrow.splitlines())) <= 60
    # every per-split value of the wide paired table is still there, under its method pair
    pair = next(line for line in wide.splitlines() if line.startswith("softmax - arpl"))
    for cell in re.split(r"\s{2,}", pair.strip())[1:]:
        assert any(line.startswith("softmax - arpl") and cell in line for line in narrow.splitlines()), cell
    assert _compare_text(runs, capsys, monkeypatch, tty=True, columns=400) == wide


# -------------------------------------------------------------------------------------- figures

MAGIC = {"png": lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"), "pdf": lambda b: b.startswith(b"%PDF-"),
         "svg": lambda b: b"<svg" in b[:2000]}


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_figures_in_each_format_with_the_curve_data_as_csv(runs, tmp_path, fmt):
    pytest.importorskip("matplotlib")
    from osrbench import plots

    rec = next(r for r in _records(runs) if r.method == "softmax" and r.split == 0)
    known, unknown = records.read_scores(rec.dir, rec).pick("score")
    roc = plots.plot_roc([("softmax", known, unknown)], tmp_path / f"roc.{fmt}", "ROC")
    hist = plots.plot_hist(known, unknown, tmp_path / f"hist.{fmt}", "scores")
    assert MAGIC[fmt](roc.read_bytes()) and MAGIC[fmt](hist.read_bytes())
    points = list(csv.DictReader(open(tmp_path / "roc.csv")))
    fpr = np.array([float(p["fpr"]) for p in points])
    tpr = np.array([float(p["tpr"]) for p in points])
    assert {p["curve"] for p in points} == {"softmax"}
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids under the CSV's curve
    assert area == pytest.approx(rec.metrics["auroc"], abs=1e-12)  # the record's AUROC back
    bins = list(csv.DictReader(open(tmp_path / "hist.csv")))
    assert len(bins) == 40
    lo = [float(b["bin_low"]) for b in bins]
    assert lo[0] == min(known.min(), unknown.min()) and float(bins[-1]["bin_high"]) == max(known.max(), unknown.max())
    for name, values in (("known_fraction", known), ("unknown_fraction", unknown)):
        counts = [np.sum((values >= float(b["bin_low"])) & ((values < float(b["bin_high"])) | (i == len(bins) - 1)))
                  for i, b in enumerate(bins)]
        assert [float(b[name]) for b in bins] == pytest.approx(np.array(counts) / values.size, abs=1e-15)


def test_compare_plot_format_svg(runs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert cli.main(["compare", *METHODS, "--dataset", "digits", "--splits", "0", "--epochs", "1", "--no-run",
                     "--out", str(runs), "--metrics", "auroc", "--plot", str(tmp_path), "--plot-format", "svg"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["bars_auroc.svg", "classes_auroc.svg", "hist_arpl_split0.csv", "hist_arpl_split0.svg",
                     "hist_softmax_split0.csv", "hist_softmax_split0.svg", "roc_split0.csv", "roc_split0.svg"]
    assert all(MAGIC["svg"](p.read_bytes()) for p in tmp_path.glob("*.svg"))


def test_plot_format_choices_are_the_plots_formats():
    from osrbench import plots

    action = next(a for a in _subparsers(cli.build_parser())["compare"]._actions if a.dest == "plot_format")
    assert tuple(action.choices) == plots.PLOT_FORMATS


# ----------------------------------------------------------------------------- licence, citing


def test_license_and_citation_cff():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 osrbench developers\n")
    assert 'license = "MIT"' in (ROOT / "pyproject.toml").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["version"] == osrbench.__version__
    assert isinstance(cff["message"], str) and isinstance(cff["title"], str) and cff["type"] == "software"
    assert cff["authors"] and all(set(a) & {"name", "family-names"} for a in cff["authors"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", cff["date-released"])
    try:  # the schema itself where the validator is installed (its own venv in the author's check)
        from cffconvert.cli.create_citation import create_citation
    except ImportError:
        return
    create_citation(str(ROOT / "CITATION.cff"), None).validate()


def test_list_cite_names_every_methods_paper_and_the_datasets(capsys):
    assert cli.main(["list", "--cite"]) == 0
    flat = "".join(capsys.readouterr().out.split())
    reg = plugins.get()
    doc = registry.load()
    for spec in reg.methods.values():
        assert "".join(spec.citation.split()) in flat, spec.name
    for name in ("mnist", "svhn", "cifar10", "tiny_imagenet", "cub"):
        assert "".join(doc.datasets[name]["cite"].split()) in flat, name
    for entry in doc.protocols.values():
        assert "".join(entry["cite"].split()) in flat
    assert "Neal,Olson,Fern,Wong&Li,OpenSetLearningwithCounterfactualImages,ECCV2018" in flat


# -------------------------------------------------------------------------------- notebook API


def test_read_runs_and_the_frame(runs):
    got = osrbench.read_runs(runs)
    assert isinstance(got, osrbench.runs.Runs) and all(isinstance(r, records.Record) for r in got)
    assert sorted((r.method, r.split) for r in got) == sorted((m, k) for m in METHODS for k in (0, 1))
    pytest.importorskip("pandas")
    df = osrbench.runs_frame(runs)
    assert list(df.columns[:len(osrbench.runs.FRAME_COLUMNS)]) == list(osrbench.runs.FRAME_COLUMNS)
    for rec in got:
        row = df[(df.method == rec.method) & (df.split == rec.split)].iloc[0]
        assert {m: row[m] for m in rec.metrics} == dict(rec.metrics)
        assert row.config_hash == rec.config_hash and row.epochs == 1 and row.dir == str(rec.dir)


def test_to_frame_without_pandas_is_one_line(runs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(osrbench.runs.FramesUnavailable, match=r"pandas.*pip install 'osrbench\[frames\]'"):
        osrbench.read_runs(runs).to_frame()


def test_read_runs_of_no_folder_is_a_user_error(tmp_path):
    with pytest.raises(osrbench.errors.UserError, match="no results folder"):
        osrbench.read_runs(tmp_path / "nothing")


def test_read_runs_needs_no_torch(runs):
    blocker = textwrap.dedent(f"""
        import json, sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in ("torch", "torchvision"):
                    raise ImportError(name)
        sys.meta_path.insert(0, NoTorch())
        import osrbench
        print(json.dumps(sorted(r.method for r in osrbench.read_runs({str(runs)!r}))))
    """)
    proc = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == sorted([*METHODS, *METHODS])


def test_the_notebook_page_runs(runs, tmp_path, monkeypatch, capsys):
    pytest.importorskip("pandas")
    page = (ROOT / "docs" / "NOTEBOOK.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) >= 4
    shutil.copytree(runs, tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/NOTEBOOK.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "softmax digits auroc 0 0" in out and "arpl digits auroc 1 0" in out
    assert len(osrbench.read_runs(tmp_path / "runs")) == 5  # the page trained one more
