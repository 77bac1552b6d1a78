"""The command line: bad input gets one clear line and exit code 2; nothing on disk is lost."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from osrbench import checkpoints, cli, engine, records


def _err(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("osrbench: error: ")
    return err[0]


BASE = ["run", "--dataset", "digits", "--epochs", "1", "--device", "cpu", "--quiet"]


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["run", "--method", "sofmax", "--dataset", "digits"], "unknown method 'sofmax'.*did you mean 'softmax'"),
        (["run", "--method", "softmax", "--dataset", "digitz"], "unknown dataset 'digitz'.*did you mean 'digits'"),
        (["run", "--method", "softmax", "--dataset", "digits", "--protocol", "f2"], "unknown protocol 'f2' \\(valid: auroc, f1, osrci, ssb, openood\\)"),
        (["run", "--method", "softmax", "--dataset", "digits", "--recipe", "mls-papr"], "unknown recipe 'mls-papr'.*did you mean 'mls-paper'"),
        (["run", "--method", "softmax", "--dataset", "digits", "--set", "learning_rate=0.1"], "unknown config key 'learning_rate'"),
        (["run", "--method", "softmax", "--dataset", "digits", "--set", "lr=fast"], "config key 'lr' expects float"),
        (["run", "--method", "softmax", "--dataset", "digits", "--set", "lr"], "--set expects key=value"),
        (["run", "--method", "softmax", "--dataset", "digits", "--split", "7"], "split 7 out of range .*valid: 0-4"),
        (["run", "--method", "softmax", "--dataset", "digits", "--epochs", "0"], "--epochs must be positive"),
        (["run", "--method", "softmax", "--dataset", "digits", "--device", "tpu"], "unknown device 'tpu'"),
        (["compare", "softmax", "nope", "--dataset", "digits"], "unknown method 'nope'"),
        (["compare", "softmax", "--dataset", "digits", "--splits", "3-9"], "out of range"),
        (["splits", "cifar11"], "unknown dataset 'cifar11'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, expect):
    import re

    code = cli.main([*argv, "--out", str(tmp_path)] if argv[0] in ("run", "compare") else argv)
    assert code == 2
    assert re.search(expect, _err(capsys)), expect
    assert not list(tmp_path.rglob("*.json"))


def test_missing_and_corrupt_checkpoints(capsys, tmp_path):
    argv = [*BASE, "--method", "softmax", "--out", str(tmp_path)]
    assert cli.main([*argv, "--resume"]) == 2
    assert "no checkpoint to resume" in _err(capsys)
    assert cli.main(argv) == 0
    capsys.readouterr()
    ckpt = next(tmp_path.rglob(checkpoints.CHECKPOINT))
    result = next(tmp_path.rglob(records.RESULT))
    before = result.read_bytes()
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated
    assert cli.main([*argv[:4], "2", *argv[5:], "--resume"]) == 2
    assert "truncated or damaged" in _err(capsys)
    assert result.read_bytes() == before


def test_resume_with_a_different_config_is_refused_and_keeps_the_checkpoint(capsys, tmp_path):
    argv = [*BASE, "--method", "softmax", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    capsys.readouterr()
    ckpt = next(tmp_path.rglob(checkpoints.CHECKPOINT))
    blob = ckpt.read_bytes()
    # Another epoch count lands in the same folder: refused without --resume / --force.
    assert cli.main([*argv[:4], "2", *argv[5:]]) == 2
    assert "--resume to continue it or --force" in _err(capsys)
    # A changed hyperparameter is another run folder, so resuming it finds nothing.
    assert cli.main([*argv, "--set", "lr=0.05", "--resume"]) == 2
    assert "no checkpoint to resume" in _err(capsys)
    assert ckpt.read_bytes() == blob


def test_checkpoint_from_another_config_is_refused(capsys, tmp_path):
    argv = [*BASE, "--method", "softmax", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    capsys.readouterr()
    src = next(tmp_path.rglob(checkpoints.CHECKPOINT))
    other = engine.plan(engine.RunRequest("softmax", "digits", out=tmp_path, overrides={"lr": 0.05}, epochs=1))
    other.dir.mkdir(parents=True)
    (other.dir / checkpoints.CHECKPOINT).write_bytes(src.read_bytes())
    assert cli.main([*argv, "--set", "lr=0.05", "--resume"]) == 2
    assert "made with a different config" in _err(capsys)


def test_run_prints_metrics_and_record(capsys, tmp_path):
    assert cli.main([*BASE, "--method", "softmax", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "auroc" in out and "record:" in out


def test_list_plugins_and_splits(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("softmax", "digits", "cifar+50", "tiny_imagenet", "osrci"):
        assert name in out
    assert "osrci 5x20/180" in out
    assert cli.main(["plugins", "--json"]) == 0
    infos = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert "softmax" in infos["softmax"]["methods"] and infos["softmax"]["error"] is None
    assert cli.main(["splits", "cifar10", "--protocol", "osrci"]) == 0
    out = capsys.readouterr().out
    assert "same classes as split 0" in out


def test_data_check_names_the_missing_file(capsys, tmp_path):
    assert cli.main(["data", "check", "cifar10", "--data-root", str(tmp_path)]) == 2
    out = " ".join(capsys.readouterr().out.split())  # the hints are wrapped
    assert "cifar-10-batches-py" in out and "osrbench data download cifar10" in out
    assert cli.main(["data", "check", "digits", "--data-root", str(tmp_path)]) == 0


def test_data_check_fits_a_100_column_terminal_with_the_hints_under_the_table(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short root: a path longer than the width stays whole, unwrapped
    assert cli.main(["data", "check", "--data-root", "data/root"]) == 0  # every dataset; only digits is ready
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    rows = {line.split()[0]: line for line in lines[3:] if re.match(r"^\S+\s+(ready|not ready)\s", line)}
    assert "not ready" in rows["cifar10"] and "Krizhevsky 2009" in rows["cifar10"]  # the licence on its row
    assert rows["digits"].split()[1] == "ready"
    last_row = max(lines.index(row) for row in rows.values())
    hints = "\n".join(lines[last_row + 1:])
    assert "cifar10:\n  - missing folder cifar-10-batches-py/" in hints
    assert "osrbench data download cifar10" in " ".join(hints.split())  # wrapped, whole when joined


@pytest.mark.parametrize("argv", [["list"], ["plugins", "--json"]])
def test_a_reader_that_closes_stdout_early_ends_the_command_quietly(argv):
    """``osrbench list | head -1``: no BrokenPipeError traceback, exit 141 (128 + SIGPIPE).

    The pipe's read end is closed before the command starts, so its first write fails whatever the
    pipe's buffer size (a reader that reads one line first could find all the output buffered)."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "osrbench.cli", *argv], stdout=write,
                                stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert err == "" and proc.returncode == cli.EXIT_BROKEN_PIPE


def test_a_folder_that_shadows_the_installed_osrbench_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    """A clone's folder (no __init__.py) where python would import it instead of the installed host."""
    monkeypatch.chdir(tmp_path)
    assert cli.shadow_warning() is None  # nothing called osrbench here
    (tmp_path / "osrbench" / "osrbench").mkdir(parents=True)  # what cloning into ./osrbench leaves
    assert cli.main(["list"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("osrbench: warning: ")
    assert f"{tmp_path / 'osrbench'} is a folder without __init__.py" in err[0]
    assert "run them from another folder" in err[0]
    # And it is right: python started here gets an empty namespace package, not the host.
    probe = subprocess.run([sys.executable, "-c", "import osrbench; print(hasattr(osrbench, 'View'))"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False"
    # The installed host's own folder (an editable install run from its clone) is no shadow.
    assert cli.shadow_warning(Path(cli.__file__).resolve().parents[1]) is None
