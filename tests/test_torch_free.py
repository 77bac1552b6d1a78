"""``osrbench.metrics``, ``osrbench.protocols`` and ``osrbench.registry`` work where torch cannot be
imported (DESIGN.md: they know nothing of torch training), and the package's public names are lazy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import osrbench

PACKAGE = Path(osrbench.__file__).resolve().parent

# Runs in a fresh interpreter: any import of torch or torchvision raises ImportError.
BLOCKED = textwrap.dedent(
    """
    import json, sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("torch", "torchvision"):
                raise ImportError(f"torch is blocked in this test ({name})")
            return None

    sys.meta_path.insert(0, NoTorch())
    """
)


def _run_without_torch(body: str) -> dict:
    code = BLOCKED + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_blocker_really_blocks_torch():
    out = _run_without_torch(
        """
        try:
            import torch
        except ImportError:
            blocked = True
        else:
            blocked = False
        print(json.dumps({"blocked": blocked}))
        """
    )
    assert out == {"blocked": True}


def test_metrics_protocols_and_registry_import_and_work_without_torch():
    out = _run_without_torch(
        """
        import osrbench.metrics as metrics
        import osrbench.protocols as protocols
        import osrbench.registry as registry

        res = metrics.evaluate([0.9, 0.8, 0.6, 0.3], [0, 1, 0, 3], [0, 1, 2, 3], [0.7, 0.4, 0.2],
                               unknown_preds=[1, 0, 2], f1_threshold=0.5)
        spec = {s.name: s for s in registry.builtin_datasets()}["digits"]
        split = protocols.get_split(spec, "auroc", 0)
        import osrbench
        print(json.dumps({
            "metrics": sorted(res), "auroc": res["auroc"],
            "known": list(split.known), "unknown": list(split.unknown), "hash": split.hash,
            "n_splits": protocols.num_splits(spec, "auroc"),
            "version": osrbench.__version__, "hookimpl": callable(osrbench.hookimpl),
            "torch": sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "torchvision")),
        }))
        """
    )
    from osrbench import metrics, protocols, registry

    assert out["torch"] == []
    assert out["metrics"] == sorted(metrics.METRICS)
    assert out["auroc"] == metrics.auroc([0.9, 0.8, 0.6, 0.3], [0.7, 0.4, 0.2]) == 9 / 12
    spec = {s.name: s for s in registry.builtin_datasets()}["digits"]
    want = protocols.get_split(spec, "auroc", 0)
    assert (tuple(out["known"]), tuple(out["unknown"]), out["hash"]) == (want.known, want.unknown, want.hash)
    assert out["n_splits"] == 5
    assert out["version"] == osrbench.__version__ and out["hookimpl"]


def test_public_names_are_lazy_and_only_the_torch_ones_need_torch():
    out = _run_without_torch(
        """
        import osrbench
        from osrbench import hookimpl
        spec_ok = osrbench.DatasetSpec.__name__  # datasets needs no torch to import
        try:
            from osrbench import MethodSpec
        except ImportError as exc:
            method = "ImportError"
        else:
            method = "imported"
        print(json.dumps({"spec": spec_ok, "method": method, "dir": sorted(set(osrbench.__all__) - set(dir(osrbench)))}))
        """
    )
    assert out == {"spec": "DatasetSpec", "method": "ImportError", "dir": []}


def test_every_public_name_resolves():
    from osrbench import MethodSpec, OpenSetData
    from osrbench.datasets import OpenSetData as data_cls
    from osrbench.method import MethodSpec as spec_cls

    assert MethodSpec is spec_cls and OpenSetData is data_cls
    for name in osrbench.__all__:
        assert getattr(osrbench, name) is not None, name
    assert osrbench.__version__ and callable(osrbench.hookimpl)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        osrbench.nope  # noqa: B018
    from osrbench import metrics  # a submodule still imports through ``from osrbench import``

    assert metrics.__name__ == "osrbench.metrics"


# ------------------------------------------------------------------------------------ --help


def test_help_lists_every_command_without_importing_torch():
    """The root parser and every command's ``register`` import no torch (DESIGN.md; issue 14)."""
    out = _run_without_torch(
        """
        import contextlib, io
        from osrbench import cli

        def help_of(argv):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                try:
                    cli.main(argv)
                except SystemExit as exc:
                    code = exc.code
                else:
                    code = "returned"
            return code, buf.getvalue()

        code, text = help_of(["--help"])
        commands = sorted(cli.build_parser()._subparsers._group_actions[0].choices)
        codes = {c: help_of([c, "--help"])[0] for c in commands}
        print(json.dumps({
            "code": code, "text": text, "commands": commands, "codes": codes,
            "torch": sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "torchvision")),
        }))
        """
    )
    expected = ["compare", "completion", "data", "evaluate", "export", "leaderboard", "list", "new-plugin", "plugins", "report",
                "rescore", "run", "score", "splits", "sweep", "verify"]
    assert out["code"] == 0 and out["torch"] == []
    assert out["commands"] == expected
    assert out["codes"] == {c: 0 for c in expected}  # each command's own --help too
    for command in expected:
        assert re.search(rf"^    {command}\s", out["text"], re.M), command  # listed, with its help line


def test_help_runs_as_a_program_without_torch():
    code = BLOCKED + "import runpy\nsys.argv = ['osrbench', '--help']\nrunpy.run_module('osrbench.cli', run_name='__main__')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr
    assert "usage: osrbench" in proc.stdout and "new-plugin" in proc.stdout


# The import-cycle check of this package's modules (metrics, protocols, registry, ...) is the general
# one in tests/test_architecture.py: no cycle anywhere in osrbench/.


def test_results_are_read_compared_reported_and_rescored_without_torch(tmp_path):
    """A machine without torch can read runs: records, compare, report, export and rescoring from
    stored scores (only rescoring from a checkpoint rebuilds the network)."""
    import numpy as np

    from osrbench import records

    scores = records.Scores(np.eye(3)[[0, 1, 2, 0]] + 0.1, np.full((2, 3), 0.3), np.array([0, 1, 2, 0]),
                            np.array([7, 8]), {"score": np.array([0.9, 0.8, 0.7, 0.6])},
                            {"score": np.array([0.65, 0.2])})
    np.savez(tmp_path / "scores.npz", **scores.to_arrays())
    out = _run_without_torch(
        f"""
        import numpy as np
        import osrbench.compare, osrbench.export, osrbench.report, osrbench.site.leaderboard, osrbench.site.report_page
        from osrbench import records, rescore
        with np.load({str(tmp_path / "scores.npz")!r}) as z:
            scores = records.Scores.from_arrays({{k: z[k] for k in z.files}})
        print(json.dumps({{"auroc": scores.metrics()["auroc"],
                          "torch": sorted(m for m in sys.modules if m.partition(".")[0] in ("torch", "torchvision"))}}))
        """
    )
    assert out["torch"] == [] and out["auroc"] == scores.metrics()["auroc"] == 7 / 8
