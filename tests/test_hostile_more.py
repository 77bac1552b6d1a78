"""Hostile inputs of issue 36 (item 2), the provenance notes it corrects (item 7) and the plugin
authors' guesses it answers (item 8).

Each hostile case ends as tests/test_hostile.py demands (exit code 2, one line
``osrbench: error: ...``, no traceback) and writes nothing: the runs folder, the evaluated run's
folder or the plugin folder does not exist afterwards. The table's runner and set-ups are
test_hostile.py's own (loaded from its file: the tests run in importlib mode).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from osrbench import cli, plugins

_spec = importlib.util.spec_from_file_location("_hostile_table", Path(__file__).with_name("test_hostile.py"))
H = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(H)

DIGITS, RUN = H.DIGITS, H.RUN
PACK = ("compare", "softmax", "--splits", "0", "--seeds", "0-1", "--jobs", "2", "--pack", "yes", *DIGITS)
EVALUATE = ("evaluate", "--method", "softmax", "--dataset", "digits", "--layout", "osrbench", "--device", "cpu",
            "--out", "{tmp}/ev")


def _weights(change) -> callable:
    """``{tmp}/ok.pt``: a trained run's checkpoint, rewritten as ``change(payload)`` with a valid trailer."""
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        H._weights_file(tmp, mp)
        H._hashed_checkpoint(change)(tmp / "ok.pt")
    return setup


def _nan_first_weight(ckpt: dict) -> dict:
    state = {**ckpt["state"], "net": dict(ckpt["state"]["net"])}
    name = next(k for k, v in state["net"].items() if v.is_floating_point())
    state["net"][name] = torch.full_like(state["net"][name], float("nan"))
    return {**ckpt, "state": state}


def _cac_release_with_nan(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """A CAC-release-shaped file whose weights are NaN (the CAC layout compares aliased modules)."""
    torch.save({"net": {"conv1.weight": torch.full((4, 3, 3, 3), float("nan"))}, "acc": 0.5, "epoch": 3},
               tmp / "cac.pth")


def _state_missing_a_key(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    from osrbench import checkpoints

    H._weights_file(tmp, mp)
    state = checkpoints.read(tmp / "ok.pt")["state"]
    net = dict(state["net"])
    net.pop(next(iter(net)))
    torch.save({**state, "net": net}, tmp / "state.pt")


CASES = (
    # the pack's option checks are the single run's: cuda_graphs=true off CUDA is refused before any run
    H.Hostile("pack-cuda-graphs-on-cpu", (*PACK, "--set", "cuda_graphs=true"),
              r"cuda_graphs=true needs a CUDA device, and this run is on cpu \(drop --set cuda_graphs=true\)"),
    H.Hostile("run-cuda-graphs-on-cpu", (*RUN, "--set", "cuda_graphs=true"), r"cuda_graphs=true needs a CUDA device"),
    # an interval option: low <= high, two numbers (or [] where the method allows it off)
    H.Hostile("medaf-train-scale-reversed", ("run", "--method", "medaf", *DIGITS, "--set", "train_scale=[2.0, 0.1]"),
              r"config key 'train_scale': \[2\.0, 0\.1\] is not an interval \(must be \[low, high\] with low <= high"),
    H.Hostile("medaf-train-scale-one", ("run", "--method", "medaf", *DIGITS, "--set", "train_scale=[2.0]"),
              r"'train_scale': \[2\.0\] is not an interval"),
    H.Hostile("pack-medaf-train-scale-reversed", ("compare", "medaf", *PACK[2:], "--set", "train_scale=[2, 1]"),
              r"'train_scale': \[2, 1\] is not an interval"),
    # epochs read from a weights file are bounded
    H.Hostile("evaluate-trained-epochs-negative", (*EVALUATE, "--weights", "{tmp}/ok.pt"),
              r"ok\.pt: .*epoch -5 is not a count of epochs", _weights(lambda c: {**c, "epoch": -5})),
    H.Hostile("evaluate-trained-epochs-1e30", (*EVALUATE, "--weights", "{tmp}/ok.pt"),
              r"--weights .*ok\.pt: it states 10{30} trained epochs, not a count of epochs \(0 to 100,000\)",
              _weights(lambda c: {**c, "epoch": 10**30})),
    # NaN weights are refused as NaN, before any comparison of tensors
    H.Hostile("evaluate-nan-weights", (*EVALUATE, "--weights", "{tmp}/ok.pt"),
              r"--weights .*ok\.pt: 'net\.conv1\.weight' holds 1,728 NaN or infinite value\(s\) of 1,728",
              _weights(_nan_first_weight)),
    H.Hostile("evaluate-nan-weights-cac-release",
              ("evaluate", "--method", "cac", "--dataset", "digits", "--layout", "cac-release", "--device", "cpu",
               "--weights", "{tmp}/cac.pth", "--out", "{tmp}/ev"),
              r"--weights cac\.pth: 'net\.conv1\.weight' holds 108 NaN or infinite value\(s\) of 108: the weights are "
              r"damaged or diverged", _cac_release_with_nan),
    # a folder name with a control character is refused (a space is quoted where it is printed)
    H.Hostile("new-plugin-folder-newline", ("new-plugin", "hostile-nl", "--dir", "{tmp}", "--folder", "a\nb"),
              r"--folder 'a\\nb' holds a control character"),
    H.Hostile("new-plugin-folder-tab", ("new-plugin", "hostile-tab", "--dir", "{tmp}", "--folder", "a\tb"),
              r"--folder 'a\\tb' holds a control character"),
    H.Hostile("new-plugin-dir-newline", ("new-plugin", "hostile-nd", "--dir", "{tmp}/x\ny"),
              r"--dir '.*x\\ny' holds a control character"),
    H.Hostile("list-recipe-unknown", ("list", "--recipe", "nosuch"),
              r"no method has a recipe 'nosuch' \(recipes: .*mls-paper"),
)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_ends_in_one_line_and_exit_2_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    tmp = tmp_path / "case"
    r = H.attempt(case, tmp, monkeypatch, capsys)
    assert H.problems(case, r) == []
    if case.argv[0] in ("run", "compare"):
        assert not (tmp / "runs").exists()
    if case.argv[0] == "evaluate":
        assert not (tmp / "ev").exists()
    if case.argv[0] == "new-plugin":
        assert not list(tmp.glob("*hostile*")) and not list(tmp.glob("a*b")) and not list(tmp.glob("x*y"))


# ------------------------------------------------------------------------------- option bounds


def test_an_interval_option_wants_two_numbers_low_first():
    from osrbench.method import Option

    opt = Option(minimum=0, span=True)
    assert [opt.violation(v) for v in ([0.1, 2.0], [1, 1], [])] == [None, None, None]
    assert [opt.violation(v) for v in ([2.0, 0.1], [1.0], [1, 2, 3], 1.5)] == ["span"] * 4
    assert opt.violation([-1, 2]) == "range"  # the bounds of each end come first
    assert Option(span=True).violation(["a", "b"]) == "span"
    assert opt.allowed_span() == "[low, high] with low <= high, each >= 0, or []"


def test_every_interval_option_of_the_plugins_declares_span(capsys):
    """The list-valued keys of every registered method: the intervals among them ([lo, hi]) are the
    ones declared ``span``; the others (Adam's betas, milestones, per-channel means, loss weights)
    are not intervals."""
    reg = plugins.get()
    lists = {(m, k) for m, spec in reg.methods.items() for k, v in spec.defaults.items() if isinstance(v, list)}
    spans = {(m, k) for m, spec in reg.methods.items() for k, o in spec.options.items() if o.span}

    def help_of(method: str, key: str) -> str:
        option = reg.method(method).options.get(key)
        return option.help if option else ""

    intervals = {(m, k) for m, k in lists if "[lo, hi]" in help_of(m, k)}
    assert spans == intervals == {("medaf", "train_scale")}
    assert cli.main(["list", "--options", "medaf"]) == 0
    assert re.search(r"train_scale\s+\[0\.1, 2\.0\]\s+list\s+\[low, high\] with low <= high, each >= 0, or \[\]",
                     capsys.readouterr().out)


# ------------------------------------------------------------------ epochs and weights of files


def test_trained_epochs_are_bounded():
    from osrbench import external

    assert [external.trained_epochs(v, "f") for v in (None, 0, 600, external.MAX_TRAINED_EPOCHS)] == [
        None, 0, 600, external.MAX_TRAINED_EPOCHS]
    for bad in (-5, 10**30, external.MAX_TRAINED_EPOCHS + 1, True, "3", 2.0):
        with pytest.raises(external.LayoutError, match=r"--weights f: it states .* trained epochs, not a count"):
            external.trained_epochs(bad, "f")


def test_infinite_weights_are_refused_as_such_and_integers_are_not_checked():
    from osrbench import layouts

    layouts.check_finite({"a": torch.ones(3), "n": torch.tensor([1, 2])}, str)
    with pytest.raises(layouts.LayoutError, match=r"--weights a: 'a' holds 2 NaN or infinite value\(s\) of 3"):
        layouts.check_finite({"a": torch.tensor([1.0, float("inf"), -float("inf")])}, str)


def _no_set_up(monkeypatch):
    """Reading the split's images raises: a test that gets past the checks would say so."""
    from osrbench import session

    def refuse(*args, **kwargs):
        raise AssertionError("the split's images were read before the files were checked")
    monkeypatch.setattr(session, "load_data", refuse)


@pytest.mark.parametrize("argv, setup, expect", [
    (("--method", "softmax", "--weights", "{tmp}/state.pt"), _state_missing_a_key,
     r"--weights .*state\.pt does not fit the method's state: 1 missing key\(s\): net\.conv1\.weight"),
    (("--method", "arpl", "--weights", "{tmp}/ok.pt"), H._weights_file,
     r"--weights .*ok\.pt: a checkpoint of method 'softmax', not 'arpl'"),
    (("--method", "softmax", "--weights", "{tmp}/missing.pt"), None, r"--weights .*missing\.pt: no such file"),
], ids=["missing-key", "other-method", "missing-file"])
def test_evaluate_checks_the_files_before_it_reads_the_split(argv, setup, expect, tmp_path, monkeypatch, capsys):
    tmp = tmp_path / "case"
    tmp.mkdir()
    if setup:
        setup(tmp, monkeypatch)
    _no_set_up(monkeypatch)
    case = H.Hostile("evaluate-fit", ("evaluate", "--dataset", "digits", "--layout", "osrbench", "--device", "cpu",
                                      "--out", "{tmp}/ev", *argv), expect)
    r = H.attempt(case, tmp, monkeypatch, capsys)
    assert H.problems(case, r) == []
    assert not (tmp / "ev").exists()


# ------------------------------------------------------------------------ the conformance CLI


@pytest.mark.parametrize("argv, expect", [
    ([], r"nothing to check: name one or more methods and/or --scorer NAME"),
    (["softmax", "--device", "tpu"], r"unknown device 'tpu' \(valid: auto, cpu, cuda, cuda:N\)"),
    (["--scorer", "msp", "--device", "meta"], r"unknown device 'meta'"),
    pytest.param(["softmax", "--device", "cuda"], r"device 'cuda' requested but CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_the_conformance_cli_refuses_what_it_cannot_check_in_one_line(argv, expect, capsys):
    from osrbench.testing.__main__ import _main

    assert _main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith(H.PREFIX) and re.search(expect, err), err


# ----------------------------------------------------------------------------------- new-plugin


def test_a_folder_with_a_space_is_quoted_wherever_it_is_printed(tmp_path, capsys):
    parent = tmp_path / "my plugins"
    parent.mkdir()
    assert cli.main(["new-plugin", "hostile-sp", "--dir", str(parent), "--folder", "with space"]) == 0
    out = capsys.readouterr().out
    cd = next(line.strip() for line in out.splitlines() if line.strip().startswith("cd "))
    assert shlex.split(cd) == ["cd", str(parent / "with space")]  # pasted into a shell, it goes there
    assert shlex.split(out.splitlines()[0])[1] == f"{parent / 'with space'}/:"
    assert (parent / "with space" / "pyproject.toml").is_file()


# ---------------------------------------------------------------------------- failures in a pack

_CHANGING_TERMS = """
import torch
import osrbench
from osrbench_softmax.softmax import DEFAULTS, Softmax

class NanAux(Softmax):
    # a diagnostic term that appears, NaN, after a few steps (graph_safe inherited from softmax)
    steps = 0

    def train_step(self, phase, images, labels):
        out = super().train_step(phase, images, labels)
        self.steps += 1
        if self.steps > 8:
            out["aux"] = torch.tensor(float("nan"))
        return out

@osrbench.hookimpl
def osrbench_register_methods(register):
    register(osrbench.MethodSpec(name="{method}", factory=NanAux, defaults=DEFAULTS))
"""


def _failure_lines(err: str, tmp: Path) -> list[str]:
    """What compare's summary says of each failed run (after its label), the runs folder as TMP."""
    return [line.split(": ", 1)[1].replace(str(tmp), "TMP") for line in err.splitlines()
            if line.startswith("  nan-aux ")]


def test_a_run_that_fails_in_a_pack_is_reported_as_it_is_alone(tmp_path, monkeypatch, capsys):
    """The same NaN loss term: in a pack on the CPU (graphs replayed in Python) the message is the
    run's own, not a shape error of the replayed loss terms."""
    H._plugins(("nan-aux", "nan-aux"), template=_CHANGING_TERMS)(tmp_path, monkeypatch)
    argv = ["compare", "nan-aux", "--splits", "0", "--seeds", "0-1", *DIGITS[:-2]]
    assert cli.main([*argv, "--out", str(tmp_path / "alone")]) == 1
    alone = _failure_lines(capsys.readouterr().err, tmp_path / "alone")
    assert cli.main([*argv, "--jobs", "2", "--pack", "yes", "--out", str(tmp_path / "pack")]) == 1
    packed = _failure_lines(capsys.readouterr().err, tmp_path / "pack")
    assert len(alone) == 2 and all("loss term 'train/aux' became nan in epoch 0" in line for line in alone), alone
    assert packed == alone


_INTERRUPTED_ONCE = """
import os
import osrbench
from osrbench_softmax.softmax import DEFAULTS, Softmax

class CtrlC(Softmax):
    # Ctrl-C after a few steps of the first run that gets there, once per test (a flag file)
    def train_step(self, phase, images, labels):
        flag = os.environ["HOSTILE_CTRL_C_FLAG"]
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps == 5 and not os.path.exists(flag):
            open(flag, "w").close()
            raise KeyboardInterrupt
        return super().train_step(phase, images, labels)

@osrbench.hookimpl
def osrbench_register_methods(register):
    register(osrbench.MethodSpec(name="{method}", factory=CtrlC, defaults=DEFAULTS))
"""


@pytest.mark.parametrize("jobs", [["--jobs", "2", "--pack", "yes"], []], ids=["pack", "one-at-a-time"])
def test_ctrl_c_of_compare_prints_the_command_that_continues_it(jobs, tmp_path, monkeypatch, capsys):
    """compare has no --resume: a plain rerun resumes every run, and the line says that command."""
    H._plugins(("ctrl-c", "ctrl-c"), template=_INTERRUPTED_ONCE)(tmp_path, monkeypatch)
    monkeypatch.setenv("HOSTILE_CTRL_C_FLAG", str(tmp_path / "interrupted"))
    argv = ["compare", "ctrl-c", "--splits", "0", "--seeds", "0-1", *jobs, *DIGITS[:-1], str(tmp_path / "runs")]
    assert cli.main(argv) == 130
    (err,) = capsys.readouterr().err.splitlines()
    assert "--resume" not in err
    head, again = err.split("; continue with: ")
    running = ("ctrl-c split 0 seed 0", "ctrl-c split 0 seed 1") if jobs else ("ctrl-c split 0 seed 0",)
    assert head == "osrbench: interrupted; " + "; ".join(
        f"{run}: no checkpoint had been written yet: the run starts over next time" for run in running)
    assert shlex.split(again) == ["osrbench", *argv]
    assert cli.main(shlex.split(again)[1:]) == 0  # the printed command continues: both runs finish
    assert len(list((tmp_path / "runs").rglob("result.json"))) == 2


def test_ctrl_c_of_worker_processes_says_what_each_run_keeps(tmp_path, monkeypatch, capsys):
    """``--pack no``: Ctrl-C reaches the driver while it waits for its workers."""
    import multiprocessing.connection

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(multiprocessing.connection, "wait", interrupted)
    argv = [*PACK[:-1], str(tmp_path / "runs")]
    argv[argv.index("yes")] = "no"
    assert cli.main(argv) == 130
    (err,) = capsys.readouterr().err.splitlines()
    assert err == ("osrbench: interrupted; softmax split 0 seed 0: no checkpoint had been written yet: the run starts "
                   "over next time; softmax split 0 seed 1: no checkpoint had been written yet: the run starts over "
                   f"next time; continue with: {shlex.join(['osrbench', *argv])}")


# ------------------------------------------------------------------------- provenance (item 7)


def test_the_openmax_note_says_what_openood_returns():
    """OpenOOD v1.5's openmax_postprocessor.py: ``conf = -1 * torch.from_numpy(np.array(score_openmax))[:, -1]``,
    -P(unknown), which is osrbench's score (tests/test_openmax.py checks the value): not an adaptation."""
    from osrbench.scorers.openmax import OPENOOD_OPENMAX

    assert "largest of all" not in OPENOOD_OPENMAX["adaptation"] and "P(unknown)" not in OPENOOD_OPENMAX["adaptation"]
    readme = (Path(__file__).parents[1] / "plugins" / "softmax" / "README.md").read_text(encoding="utf-8")
    assert "largest of all K+1" not in readme and "conf = -1 * score_openmax[:, -1]" in readme


def test_the_knn_grid_is_openood_v15s_k_list():
    """configs/postprocessors/knn.yml at OpenOOD's v1.5 tag: K 50, K_list [50, 100, 200, 500, 1000], APS_mode True."""
    from osrbench.scorers.posthoc import OPENOOD

    assert OPENOOD["knn"]["params"] == {"k": 50}
    assert OPENOOD["knn"]["grid"] == {"k": [50, 100, 200, 500, 1000]}


# -------------------------------------------------------------- plugin authors' guesses (item 8)


def test_the_scorer_toys_features_are_signed_as_the_guide_says():
    from osrbench.testing.scorers import toy_images

    known, _, unknown = toy_images(20, 20, seed=0)
    assert (known < 0).any() and (unknown < 0).any()  # not post-ReLU
    guide = (Path(__file__).parents[1] / "docs" / "PLUGINS.md").read_text(encoding="utf-8")
    assert "*The toy's features are signed, not post-ReLU.*" in guide


def test_list_recipe_prints_what_a_recipe_sets_per_method_and_dataset(capsys):
    assert cli.main(["list", "--recipe", "mls-paper"]) == 0
    out = capsys.readouterr().out
    spec = plugins.get().method("arpl")
    for scope, values in spec.recipes["mls-paper"].items():
        for key, value in values.items():
            shown = repr(value).replace("'", '"').replace("True", "true").replace("False", "false")
            assert re.search(rf"^arpl\s+{re.escape(scope)}\s+{key}\s+{re.escape(shown)}\s", out, re.M), (scope, key)
    assert re.search(r"^arpl\s+tiny_imagenet\s+lr\s+0\.001\s+0\.1$", out, re.M)
    assert not re.search(r"^softmax\s", out, re.M) or "mls-paper" in plugins.get().method("softmax").recipes


def test_a_sign_failure_at_chance_accuracy_suggests_the_toys_learning_rate():
    from osrbench.testing.check_runs import _chance_hint

    class Session:
        def config(self):
            return {"lr": 0.1}

    hint = _chance_hint(Session(), 1 / 3)
    assert "near chance (1/3)" in hint and "try --set lr=0.01" in hint
    assert _chance_hint(Session(), 0.9) == ""


def test_the_method_scaffold_has_features_and_head(tmp_path):
    from osrbench import scaffold

    root = scaffold.new_plugin("hostile-feat", tmp_path, check_installed=False)
    code = (root / "osrbench_hostile_feat" / "plugin.py").read_text()
    assert "    def features(self, images: torch.Tensor) -> Features:" in code
    assert "    def head(self, penultimate: torch.Tensor) -> torch.Tensor:" in code
    assert textwrap.dedent("""\
        # features() and head(): the post-hoc scorers that read penultimate features (mahalanobis, knn,""") in code
