"""osrbench.testing (the plugin conformance suite), osrbench new-plugin and the example plugin."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from osrbench import checkpoints, cli, engine, plugins, records, scaffold, session, testing
from osrbench.method import Method, MethodSpec, Prediction
from osrbench.testing import CHECKS, ConformanceError, check_method, run_check
from osrbench.training import OPTIM_DEFAULTS, make_optimizer

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ("softmax", "openmax", "gcpl", "rpl", "arpl", "arpl-cs", "dias")
#: GCPL's and RPL's distances are divided by D = 128, so their feature gradients start ~65x smaller
#: than ARPL's: the toy's 2 x 6 steps leave them at chance. Batch 4 gives them 2 x 24 steps.
TOY_OVERRIDES = {"gcpl": {"batch_size": 4}, "rpl": {"batch_size": 4}}


# ------------------------------------------------------------------ the real methods pass the suite


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("method", [*BUILTIN, "energy"])
def test_installed_methods_conform(method, check):
    if method not in plugins.get().methods:
        if method == "energy":
            pytest.fail("the example plugin is not installed: pip install --no-deps -e examples/energy (make test does)")
        pytest.skip(f"plugin of {method!r} not installed")
    result = run_check(method, check, overrides=TOY_OVERRIDES.get(method))
    assert result.ok


# ---------------------------------------------------------------- a tiny method and broken variants


class Tiny(Method):
    """A two-layer perceptron: a method that keeps every contract, fast on CPU."""

    phases = ("train",)

    def setup(self, ctx):
        self.cfg = ctx.config
        c, h, w = ctx.image_shape
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, 32), torch.nn.ReLU(),
                                       torch.nn.Linear(32, ctx.num_classes)).to(ctx.device)
        self.opt = make_optimizer(self.net.parameters(), self.cfg)

    def loss(self, x, y):
        return F.cross_entropy(self.net(x), y)

    def train_step(self, phase, x, y):
        loss = self.loss(x, y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def predict(self, x):
        z = self.net(x)
        return Prediction(z, F.softmax(z.double(), 1).max(1).values, {"mls": z.double().max(1).values})

    def state_dict(self):
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])


class ScoreColumn(Tiny):
    @torch.no_grad()
    def predict(self, x):
        out = super().predict(x)
        return Prediction(out.logits, out.score[:, None])


class Reversed(Tiny):
    @torch.no_grad()
    def predict(self, x):
        out = super().predict(x)
        return Prediction(out.logits, -out.score)


class Unseeded(Tiny):
    def setup(self, ctx):
        super().setup(ctx)
        with torch.no_grad():  # draws from a generator nobody seeds
            self.net[1].weight.add_(1e-3 * torch.randn(self.net[1].weight.shape, generator=torch.Generator().manual_seed(
                time.perf_counter_ns())))


class ForgetsOptimiser(Tiny):
    def state_dict(self):
        return {"net": self.net.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])


class Note:
    def __init__(self, text):
        self.text = text


class PickledObject(Tiny):
    def state_dict(self):
        return {**super().state_dict(), "note": Note("arbitrary objects cannot be loaded safely")}


class Attached(Tiny):
    def train_step(self, phase, x, y):
        loss = self.loss(x, y)
        self.opt.zero_grad()
        loss.backward(retain_graph=True)
        self.opt.step()
        return {"loss": loss}


class FloatLoss(Tiny):
    def train_step(self, phase, x, y):
        return {"loss": super().train_step(phase, x, y)["loss"].item()}


class BatchDependent(Tiny):
    @torch.no_grad()
    def predict(self, x):
        out = super().predict(x)
        z = out.logits - out.logits.mean(0)
        return Prediction(z, z.double().max(1).values)


class BadRule(Tiny):
    def f1_rule(self):
        return "nope", 0.5


class Exploding(Tiny):
    def train_step(self, phase, x, y):
        raise RuntimeError("shapes do not match")


class GraphSafeTiny(Tiny):
    graph_safe = True


class ReadsOnHost(GraphSafeTiny):
    def loss(self, x, y):
        loss = super().loss(x, y)
        return loss * 0.5 if loss.item() > 100 else loss  # .item() waits for the device


class MakesHostTensor(GraphSafeTiny):
    def loss(self, x, y):
        return super().loss(x, y) * torch.tensor(1.0)  # a host tensor: a copy a graph cannot record


class CountsSteps(GraphSafeTiny):
    steps = 0

    def loss(self, x, y):
        self.steps += 1  # a Python counter in the math: a graph would freeze its first value
        return super().loss(x, y) / self.steps


class ReadsOnHostUndeclared(ReadsOnHost):
    graph_safe = False


class ReturnsNothing(Tiny):
    def train_step(self, phase, x, y):
        super().train_step(phase, x, y)
        return {}


class ReportsAccuracy(GraphSafeTiny):
    """A diagnostic term beside the loss: allowed, logged like a loss (and packed with it under graphs)."""

    def train_step(self, phase, x, y):
        z = self.net(x)
        loss = F.cross_entropy(z, y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "acc": (z.argmax(1) == y).float().mean().detach()}


class InvertedNamedScore(Tiny):
    @torch.no_grad()
    def predict(self, x):
        out = super().predict(x)
        return Prediction(out.logits, out.score, {"mls": -out.scores["mls"]})  # higher = more likely unknown


class DeclaresInvertedNamedScore(InvertedNamedScore):
    sign_check_exempt = {"mls": "stored for reference only"}


class ExemptsAMissingScore(Tiny):
    sign_check_exempt = {"mlss": "a typo"}


class NumpyState(Tiny):
    def state_dict(self):
        return {**super().state_dict(), "stats": {"mean": np.float64(0.5)}}  # a float subclass safe loading refuses


class MasksLabels(GraphSafeTiny):
    def loss(self, x, y):
        keep = y >= 0  # all True here, so the shapes never change on the toy: the op itself is the problem
        return F.cross_entropy(self.net(x)[keep], y[keep])


class WritesThroughMask(GraphSafeTiny):
    def loss(self, x, y):
        weight = torch.ones_like(y, dtype=torch.float32)
        weight[y == 0] = torch.full_like(weight[:1], 2.0)  # index_put_ with a boolean mask
        return (F.cross_entropy(self.net(x), y, reduction="none") * weight).mean()


class GathersNonzero(GraphSafeTiny):
    def loss(self, x, y):
        (rows,) = torch.where(y >= 0)  # the one-argument where is nonzero
        return F.cross_entropy(self.net(x)[rows], y[rows])


class BranchesOnEpoch(GraphSafeTiny):
    epoch = 0

    def loss(self, x, y):
        loss = super().loss(x, y)
        return loss * 0.5 if self.epoch >= 1 else loss  # a graph recorded in epoch 0 replays the epoch-0 branch

    def end_epoch(self, epoch):
        self.epoch = epoch + 1

    def state_dict(self):
        return {**super().state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.epoch = state["epoch"]


class RestartsOptimiser(GraphSafeTiny):
    def end_epoch(self, epoch):
        self.opt.state.clear()  # warm restarts: epoch 1 creates the momentum buffers anew, inside replayed steps


def _registry(factory, name="tiny", defaults=None, recipes=None, default_recipe=None):
    reg = plugins.Plugins(entry_points=False)
    reg.methods[name] = MethodSpec(name, factory, defaults={**OPTIM_DEFAULTS, "lr": 0.05, **(defaults or {})},
                                   recipes=recipes or {}, default_recipe=default_recipe)
    reg.origin[f"method:{name}"] = "osrbench"
    return reg


def test_a_conforming_method_passes_every_check_and_leaves_the_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    threads = torch.get_num_threads()
    report = check_method("tiny", registry=_registry(Tiny))
    assert report.ok and [r.name for r in report.results] == list(CHECKS)
    assert "AUROC 1.000" in report["sign"].message
    assert torch.equal(torch.get_rng_state(), before) and torch.get_num_threads() == threads
    assert "all checks passed" in str(report)


@pytest.mark.parametrize(
    ("factory", "check", "message"),
    [
        (ScoreColumn, "predict", r"^predict: score has shape \(24, 1\), expected \(24,\)"),
        (Reversed, "sign", r"^sign: AUROC .* is 0\.0\d\d < 0\.8 \(below 0\.5: is the score's sign reversed"),
        (Unseeded, "determinism", r"^determinism: two runs with seed 0 gave different logits"),
        (ForgetsOptimiser, "state", r"^state: resuming from state_dict and training one more epoch gave different"),
        (PickledObject, "state", r"^state: state_dict\(\)\['note'\] is a [\w.]*Note; state_dict\(\) may hold only "
                                 r"tensors, bool, int, float, str, None"),
        (NumpyState, "state", r"^state: state_dict\(\)\['stats'\]\['mean'\] is a numpy\.float64; "),
        (ReturnsNothing, "train", r"^train: train_step\('train', \.\.\.\) returned an empty dict; it must return at "
                                  r"least one named loss term"),
        (InvertedNamedScore, "sign", r"^sign: AUROC of the named score 'mls' on the separable toy problem is 0\.0\d\d "
                                     r"< 0\.8 \(below 0\.5: is the score's sign reversed"),
        (MasksLabels, "graphs", r"^graphs: train_step\('train', \.\.\.\) runs aten::index\.Tensor with a boolean "
                                r"mask index \(t\[mask\], whose shape depends on the mask's values\), which waits"),
        (WritesThroughMask, "graphs", r"^graphs: train_step\('train', \.\.\.\) runs aten::index_put_ with a boolean "
                                      r"mask index"),
        (GathersNonzero, "graphs", r"^graphs: train_step\('train', \.\.\.\) runs aten::nonzero, which waits"),
        (BranchesOnEpoch, "graphs", r"^graphs: full batch 4 of phase 'train' in epoch 0 and in epoch 1 ran different "
                                    r"operations \(first difference at operation \d+: "),
        (RestartsOptimiser, "graphs", r"^graphs: optimiser 0 \(SGD\) created its state 'momentum_buffer' for "
                                      r"parameter 0 in a full batch of phase 'train' after the warm-up \(epoch 1\)"),
        (Attached, "train", r"^train: train_step\('train', \.\.\.\) returned loss 'loss' with its autograd graph"),
        (FloatLoss, "train", r"^train: train_step\('train', \.\.\.\) returned loss 'loss' as float"),
        (BatchDependent, "predict", r"^predict: logits of an image depend on the other images of its batch"),
        (BadRule, "predict", r"^predict: f1_rule\(\) names score 'nope'"),
        (Exploding, "train", r"^train: train_step\('train', \.\.\.\) in epoch 0 raised RuntimeError: shapes do not match"),
        (ReadsOnHost, "graphs", r"^graphs: train_step\('train', \.\.\.\) runs aten::_local_scalar_dense, which waits"),
        (MakesHostTensor, "graphs", r"^graphs: train_step\('train', \.\.\.\) runs aten::lift_fresh"),
        (CountsSteps, "graphs", r"^graphs: two consecutive full batches of phase 'train' ran different operations "
                                r"\(first difference at operation \d+: aten::div\.Tensor vs aten::div\.Tensor, or their"),
    ],
)
def test_a_broken_contract_is_named(factory, check, message):
    reg = _registry(factory)
    with pytest.raises(ConformanceError, match=message):
        run_check("tiny", check, registry=reg)


def test_a_named_score_the_method_exempts_is_not_sign_checked_and_the_report_says_why():
    message = run_check("tiny", "sign", registry=_registry(DeclaresInvertedNamedScore)).message
    assert "not sign-checked, as the method declares: mls: stored for reference only" in message
    assert "named:" not in message  # the inverted mls is not among the checked scores
    with pytest.raises(ConformanceError, match=r"^sign: sign_check_exempt names \['mlss'\], which predict does not "
                                               r"return as named scores \(it returns \['mls'\]\)"):
        run_check("tiny", "sign", registry=_registry(ExemptsAMissingScore))


@pytest.mark.parametrize("factory", [GraphSafeTiny, ReadsOnHostUndeclared])
def test_graphs_passes_a_graph_safe_method_and_one_that_does_not_declare_it(factory):
    message = run_check("tiny", "graphs", registry=_registry(factory)).message
    if factory is GraphSafeTiny:
        assert "none host-bound, stable across steps" in message and "identical to eager" in message
        assert "1 captured, 3 eager, 8 replayed" in message  # 6 full batches a pass, 2 epochs, warm-up 3
    else:
        assert message.startswith("not declared graph_safe")


# ------------------------------------------------------ the engine's side of the contracts and the suite's


def _toy_run(factory, tmp_path, epochs=1):
    """A run request of ``factory`` on the suite's toy dataset, and the registry that knows both."""
    reg = _registry(factory)
    reg.datasets[testing.TOY_DATASET] = testing.toy_dataset_spec()
    reg.origin[f"dataset:{testing.TOY_DATASET}"] = "osrbench"
    req = engine.RunRequest(method="tiny", dataset=testing.TOY_DATASET, epochs=epochs, device="cpu",
                            overrides={"batch_size": testing.TOY_BATCH}, out=tmp_path / "runs", data_root=tmp_path,
                            progress=False, checkpoint_every=1)
    return req, reg


def test_diagnostic_terms_beside_the_loss_pass_and_are_logged_like_losses(tmp_path):
    report = check_method("tiny", registry=_registry(ReportsAccuracy), checks=("train", "graphs", "engine"))
    assert report.ok, str(report)
    req, reg = _toy_run(ReportsAccuracy, tmp_path)
    (row,) = engine.run(req, registry=reg).record.history
    assert set(row) == {"epoch", "train/loss", "train/acc"} and 0 <= row["train/acc"] <= 1


class RecordsContext(Tiny):
    seen: list = []

    def setup(self, ctx):
        RecordsContext.seen.append(ctx)
        super().setup(ctx)


def test_context_says_how_many_training_images_a_pass_holds(tmp_path):
    RecordsContext.seen.clear()
    run_check("tiny", "train", registry=_registry(RecordsContext))
    toy = testing.TOY_CLASSES * testing.TOY_TRAIN_PER_CLASS
    assert {ctx.train_size for ctx in RecordsContext.seen} == {toy}
    assert RecordsContext.seen[0].steps_per_epoch == -(-toy // testing.TOY_BATCH)
    RecordsContext.seen.clear()
    req, reg = _toy_run(RecordsContext, tmp_path)
    rec = engine.run(req, registry=reg).record
    assert [ctx.train_size for ctx in RecordsContext.seen] == [rec.counts["train"]] and rec.counts["train"] > 0


def test_the_engine_refuses_a_step_without_loss_terms_in_one_line(tmp_path):
    req, reg = _toy_run(ReturnsNothing, tmp_path)
    with pytest.raises(session.BadLosses) as info:
        engine.run(req, registry=reg)
    message = str(info.value)
    assert message.startswith("train_step('train', ...) returned an empty dict") and "\n" not in message
    error = json.loads((engine.plan(req, reg).dir / records.ERROR).read_text())
    assert error["stage"] == "train_step" and "returned an empty dict" in error["error"]


class NumpyStateLater(Tiny):
    """Its state_dict takes a numpy value only after the second epoch (a statistic computed late)."""

    done = 0

    def end_epoch(self, epoch):
        self.done = epoch + 1

    def state_dict(self):
        state = super().state_dict()
        return {**state, "stats": {"mean": np.float64(0.5)}} if self.done >= 2 else state


def test_a_numpy_value_in_state_fails_the_run_when_it_is_saved_and_the_last_good_checkpoint_stays(tmp_path):
    req, reg = _toy_run(NumpyStateLater, tmp_path, epochs=2)
    with pytest.raises(checkpoints.UnloadableState) as info:
        engine.run(req, registry=reg)
    message = str(info.value)
    assert "\n" not in message and "state_dict()['stats']['mean'] is a numpy.float64" in message
    assert "cannot be read back by safe loading" in message and "torch.from_numpy" in message
    folder = engine.plan(req, reg).dir
    assert checkpoints.read(folder / checkpoints.CHECKPOINT)["epoch"] == 1  # epoch 1's, intact and resumable
    assert not (folder / checkpoints.PREVIOUS).exists() and not (folder / records.RESULT).exists()
    assert json.loads((folder / records.ERROR).read_text())["stage"] == "state_dict"


@pytest.mark.parametrize(("state", "problem"), [
    ({"net": {"w": torch.zeros(2)}, "opt": {"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": [
        {"lr": 0.1, "betas": (0.9, 0.99), "params": [0], "foreach": None}]}, "epoch": 3, "rng": (3, (1, 2), None)},
     None),
    ({"a": [1, np.arange(3)]}, "state_dict()['a'][1] is a numpy.ndarray"),
    ({"a": {"b": np.int64(2)}}, "state_dict()['a']['b'] is a numpy.int64"),
    ({"seen": {1, 2}}, "state_dict()['seen'] is a set"),
    ({1.5: torch.zeros(1)}, "state_dict() has the key 1.5 of type float (keys must be str or int)"),
])
def test_state_problem_names_the_key_path_and_the_type(state, problem):
    assert checkpoints.state_problem(state) == problem


def test_a_real_module_and_optimiser_state_is_accepted():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    for opt in (torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), torch.optim.Adam(net.parameters())):
        net(torch.randn(4, 2)).sum().backward()
        opt.step()
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [1])
        state = {"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                 "gen": torch.Generator().get_state()}
        assert checkpoints.state_problem(state) is None


def test_checks_that_need_a_failed_one_are_skipped_and_check_method_lists_the_failures():
    reg = _registry(Exploding)
    with pytest.raises(ConformanceError, match=r"^sign: not run: it needs 'train', which failed"):
        run_check("tiny", "sign", registry=reg)
    with pytest.raises(ConformanceError) as info:
        check_method("tiny", registry=reg)
    report = info.value.report
    assert {r.name: r.status for r in report.results} == {
        "register": "passed", "spec": "passed", "train": "failed", "predict": "skipped", "sign": "skipped",
        "determinism": "skipped", "state": "skipped", "features": "skipped", "fit": "skipped", "graphs": "skipped",
        "engine": "failed",
    }
    assert "broke 2 contract(s)" in str(info.value) and "train: train_step('train', ...)" in str(info.value)
    assert check_method("tiny", registry=reg, raise_on_failure=False).ok is False


@pytest.mark.parametrize(
    ("defaults", "recipes", "default_recipe", "message"),
    [
        ({"betas": (0.9, 0.99)}, None, None, r"^spec: defaults\['betas'\] = \(0\.9, 0\.99\) has type tuple.*use a list"),
        ({"when": float("nan")}, None, None, r"^spec: defaults\['when'\] = nan is not finite"),
        ({"device_list": {1: "a"}}, None, None, r"^spec: defaults\['device_list'\] has a non-str key 1"),
        ({"epochs": "many"}, None, None, r"^spec: engine key 'epochs': config key 'epochs' expects int"),
        ({}, {"paper": {"cifar10": {"lrr": 0.1}}}, None, r"^spec: recipe 'paper' for 'cifar10' does not resolve: .*'lrr'"),
        ({}, {"paper": {"*": {}}}, "papers", r"^spec: default_recipe 'papers' is not one of the recipes \['paper'\]"),
    ],
)
def test_spec_problems_are_named(defaults, recipes, default_recipe, message):
    reg = _registry(Tiny, defaults=defaults, recipes=recipes, default_recipe=default_recipe)
    with pytest.raises(ConformanceError, match=message):
        run_check("tiny", "spec", registry=reg)


def test_an_unknown_method_fails_register_with_a_hint():
    with pytest.raises(ConformanceError, match=r"^register: unknown method 'tinny'.*did you mean 'tiny'"):
        run_check("tinny", "register", registry=_registry(Tiny))
    with pytest.raises(ValueError, match="unknown check 'speed'"):
        run_check("tiny", "speed", registry=_registry(Tiny))


def test_the_toy_problem_is_separable_and_sized_as_asked():
    d = testing.toy_data(num_known=4, image_size=16, train_per_class=5, test_per_class=2, num_unknown=7)
    assert d.train_x.shape == (20, 3, 16, 16) and d.known_x.shape == (8, 3, 16, 16) and d.unknown_x.shape == (7, 3, 16, 16)
    assert sorted(set(d.train_y.tolist())) == [0, 1, 2, 3]
    assert d.unknown_x.max() < 64 < d.known_x.float().amax((1, 2, 3)).min()  # unknowns are dim noise
    assert torch.equal(testing.toy_data().train_x, testing.toy_data().train_x)


def test_the_guide_documents_every_check():
    guide = (ROOT / "docs" / "PLUGINS.md").read_text()
    for name in CHECKS:
        assert f"| `{name}` | {testing.CHECK_DOCS[name]} |" in guide, \
            f"docs/PLUGINS.md's conformance table does not state check {name!r} as CHECK_DOCS does"


def test_the_guide_documents_every_context_field_and_every_helper_the_template_uses():
    import dataclasses
    import re

    from osrbench import method

    guide = (ROOT / "docs" / "PLUGINS.md").read_text()
    for f in dataclasses.fields(method.Context):
        assert f"| `{f.name}`" in guide, f"docs/PLUGINS.md's Context table lacks the field {f.name!r}"
    template = Path(scaffold.__file__).read_text()  # the plugin.py template is a string in it
    used = re.search(r"from osrbench\.training import ([^\n]+)", template).group(1)
    helpers = guide.split("## Training helpers")[1].split("\n## ")[0]
    for name in (n.strip() for n in used.split(",")):
        assert f"`{name}" in helpers, f"the new-plugin template uses osrbench.training.{name}, which the guide's helpers table lacks"


# --------------------------------------------------------------------------------- osrbench new-plugin


def _install_fake(site: Path, name: str) -> None:
    """What ``pip install -e`` leaves behind, without pip: the package on sys.path and a dist-info."""
    info = site / f"{scaffold.package_name(name)}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: osrbench-{name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[osrbench]\n{name} = {scaffold.package_name(name)}.plugin\n")


@pytest.fixture
def generate(tmp_path, monkeypatch):
    """``generate(name, kind)``: write a plugin with ``osrbench new-plugin`` and install it as pip would
    (for this test only); returns ``(root, site)``."""
    names = []

    def make(name: str, kind: str = "method") -> tuple[Path, Path]:
        root = scaffold.new_plugin(name, tmp_path, kind=kind)
        site = tmp_path / f"site-{name}"
        _install_fake(site, name)
        monkeypatch.syspath_prepend(str(root))
        monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        names.append(scaffold.package_name(name))
        return root, site

    yield make
    for mod in [m for m in sys.modules if m.startswith(tuple(names))]:
        del sys.modules[mod]
    importlib.invalidate_caches()


@pytest.fixture
def generated(generate):
    return generate("toy-osr")


def test_new_plugin_writes_a_package_that_passes_the_suite_unmodified(generated):
    root, _ = generated
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "osrbench_toy_osr/__init__.py", "osrbench_toy_osr/plugin.py", "pyproject.toml",
                     "tests/test_conformance.py"]
    assert '[project.entry-points.osrbench]\ntoy-osr = "osrbench_toy_osr.plugin"' in (root / "pyproject.toml").read_text()
    assert 'run_check("toy-osr", check)' in (root / "tests" / "test_conformance.py").read_text()
    reg = plugins.Plugins()
    assert reg.infos["toy-osr"].error is None and reg.infos["toy-osr"].methods == ["toy-osr"]
    report = check_method("toy-osr", registry=reg)
    assert report.ok, str(report)
    assert report["features"].status == "passed", report["features"]  # features() and head(): feature scorers apply


def test_new_plugin_scorer_writes_a_package_that_passes_the_scorer_suite_unmodified(generate):
    from osrbench.testing.scorers import SCORER_CHECKS, check_scorer

    root, _ = generate("toy-score", "scorer")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "osrbench_toy_score/__init__.py", "osrbench_toy_score/plugin.py", "pyproject.toml",
                     "tests/test_conformance.py"]
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points.osrbench]\ntoy-score = "osrbench_toy_score.plugin"' in pyproject
    assert 'license = "MIT"' in pyproject and 'requires = ["setuptools>=77"]' in pyproject
    assert 'check_scorer("toy-score", raise_on_failure=False)' in (root / "tests" / "test_conformance.py").read_text()
    readme = (root / "README.md").read_text()
    for command, _ in scaffold.setup_commands("toy-score", "scorer") + scaffold.use_commands("toy-score", "scorer"):
        assert command in readme
    reg = plugins.Plugins()
    info = reg.infos["toy-score"]
    assert (info.error, info.methods, info.scorers) == (None, [], ["toy-score"])
    spec = reg.scorer("toy-score")
    report = check_scorer(spec)
    assert [r.name for r in report.results] == list(SCORER_CHECKS) and report.ok, str(report)
    assert report["grid"].message == "3 candidate(s)"  # the template shows a tuning grid, and it applies


def test_the_suite_catches_an_inverted_scaffold_scorer(generate):
    """The generated scorer's tests can fail: with its sign flipped, direction says so."""
    from osrbench.testing.scorers import check_scorer

    root, _ = generate("toy-flip", "scorer")
    plugin = root / "osrbench_toy_flip" / "plugin.py"
    text = plugin.read_text()
    assert text.count("return t * torch.logsumexp") == 1
    plugin.write_text(text.replace("return t * torch.logsumexp", "return -t * torch.logsumexp"))
    report = check_scorer(plugins.Plugins().scorer("toy-flip"), raise_on_failure=False)
    assert [r.name for r in report.failures] == ["direction"]
    assert "inverted? higher must mean more likely known" in report["direction"].message


def test_the_guide_walks_through_the_scorer_scaffold_as_it_is(tmp_path):
    """docs/PLUGINS.md's scorer walk-through gives the scaffold's own commands, and its test file's code."""
    import re

    guide = (ROOT / "docs" / "PLUGINS.md").read_text()
    walk = guide.split("## From zero to a post-hoc scorer")[1].split("\n## ")[0]
    assert "osrbench new-plugin mine --scorer" in walk
    for command, _ in scaffold.setup_commands("mine", "scorer") + scaffold.use_commands("mine", "scorer"):
        assert command in walk, f"the guide's scorer walk-through lacks {command!r}"
    generated = (scaffold.new_plugin("mine", tmp_path, check_installed=False, kind="scorer")
                 / "tests" / "test_conformance.py").read_text()
    block = re.search(r"```python\n(import pytest\nfrom osrbench\.testing\.scorers .*?)```", guide, re.S).group(1)
    code = [line for line in block.splitlines() if line.strip()]
    assert code and all(line in generated for line in code), "the guide's scorer test differs from the scaffold's"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["method", "scorer"])
def test_the_generated_test_file_passes_under_pytest(generate, kind):
    from osrbench.testing.scorers import SCORER_CHECKS

    root, site = generate(f"toy-{kind}", kind)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(root), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                         cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"{len(CHECKS if kind == 'method' else SCORER_CHECKS)} passed" in run.stdout


@pytest.mark.parametrize("flag, taken, message", [
    ([], "softmax", "method 'softmax' is already registered by plugin 'softmax'"),
    (["--scorer"], "msp", "scorer 'msp' is already registered by plugin 'osrbench'"),
])
def test_new_plugin_cli_refuses_bad_names_and_existing_folders(tmp_path, capsys, flag, taken, message):
    assert cli.main(["new-plugin", "mine", *flag, "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    used = scaffold.use_commands("mine", "scorer" if flag else "method")[-1][0]
    assert f"wrote {tmp_path / 'osrbench-mine'}/" in out and f"  {used}\n" in out
    before = (tmp_path / "osrbench-mine" / "osrbench_mine" / "plugin.py").read_text()
    for argv, expected in [
        (["mine"], "osrbench-mine already exists"),
        (["My_Method"], "invalid plugin name 'My_Method'"),
        (["-x"], None),
        ([taken], message),
        (["dias2-"], "invalid plugin name 'dias2-'"),
        (["a" * 41], "plugin name of 41 characters is too long"),
    ]:
        if expected is None:
            with pytest.raises(SystemExit):
                cli.main(["new-plugin", *argv, *flag, "--dir", str(tmp_path)])
            capsys.readouterr()
            continue
        assert cli.main(["new-plugin", *argv, *flag, "--dir", str(tmp_path)]) == cli.EXIT_USER
        err = capsys.readouterr().err
        assert err.startswith("osrbench: error: ") and expected in err and err.count("\n") == 1
    assert (tmp_path / "osrbench-mine" / "osrbench_mine" / "plugin.py").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["osrbench-mine"]


def test_new_plugin_folder_names_the_package_folder(tmp_path, capsys):
    assert cli.main(["new-plugin", "mine", "--dir", str(tmp_path), "--folder", "dice-scorer"]) == 0
    assert f"cd {tmp_path / 'dice-scorer'}" in capsys.readouterr().out
    assert (tmp_path / "dice-scorer" / "osrbench_mine" / "plugin.py").is_file()
    assert not (tmp_path / "osrbench-mine").exists()
    for folder, message in [("dice-scorer", "dice-scorer already exists; remove it or choose another --dir or --folder"),
                            ("a/b", "--folder 'a/b' must be one folder name, not a path"),
                            ("..", "--folder '..' must be one folder name")]:
        assert cli.main(["new-plugin", "other", "--dir", str(tmp_path), "--folder", folder]) == cli.EXIT_USER
        err = capsys.readouterr().err
        assert err.startswith("osrbench: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "a").exists()


def test_scaffold_names():
    assert scaffold.package_name("my-osr2") == "osrbench_my_osr2"
    assert scaffold.class_name("method") == "MethodMethod"  # never shadows osrbench.method.Method
    for bad in ("", "9lives", "a_b", "a--b", "A", "a b"):
        with pytest.raises(scaffold.ScaffoldError):
            scaffold.validate_name(bad)


# ---------------------------------------------------------------------------- the example plugin


@pytest.fixture
def one_thread():
    """Tiny CPU runs are several times faster in one thread on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_example_plugin_is_listed_and_runs(tmp_path, capsys, one_thread):
    assert cli.main(["plugins", "--json"]) == 0
    import json

    infos = {i["name"]: i for i in json.loads(capsys.readouterr().out)}
    assert infos["energy"]["distribution"] == "osrbench-energy" and infos["energy"]["methods"] == ["energy"]
    assert infos["energy"]["error"] is None
    code = cli.main(["run", "--method", "energy", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
                     "--quiet", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "auroc" in out and out.startswith("energy on digits")


def test_the_energy_score_is_the_negative_free_energy():
    from osrbench_energy.plugin import energy_scores

    z = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    s = energy_scores(z, temperature=2.0)
    assert torch.allclose(s["energy"], 2.0 * torch.logsumexp(z.double() / 2.0, 1))
    assert s["energy"][0] > s["energy"][1]  # confident = more likely known


def test_loss_terms_of_any_float_dtype_pass_and_integer_terms_fail():
    """The dtype rule PLUGINS.md states for train_step's terms, as the suite's train check applies it."""
    from osrbench.testing.runs import _check_losses

    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        _check_losses("train", "train", 0, {"loss": torch.zeros((), dtype=dtype)})
    for dtype in (torch.int64, torch.bool):
        with pytest.raises(Exception, match="expected a float tensor") as exc:
            _check_losses("train", "train", 0, {"correct": torch.zeros((), dtype=dtype)})
        assert "train" in str(exc.value)


def test_the_graph_safe_common_cases_as_the_guide_names_them():
    """arange / zeros / constants from setup pass the graphs check's host test; F.one_hot does not
    (it reads the labels' min and max on the host), and the guide's replacements do."""
    from osrbench.testing.check_graphs import _host_bound, trace_ops

    labels, classes = torch.tensor([0, 2, 1]), torch.arange(5)

    def host(step) -> str | None:
        with trace_ops() as ops:
            step()
        return _host_bound(ops)

    assert host(lambda: F.one_hot(labels, 5)) is not None
    assert host(lambda: torch.tensor([1.0, 2.0])) == "aten::lift_fresh"  # a tensor from host data
    for fine in (lambda: (labels[:, None] == classes).float(),
                 lambda: torch.zeros(3, 5).scatter_(1, labels[:, None], 1.0),
                 lambda: torch.arange(5) + torch.full((5,), 2.0) + torch.eye(5)[0]):
        assert host(fine) is None


def test_the_command_passes_set_overrides_to_the_toy_runs_and_refuses_a_bad_one(monkeypatch, capsys):
    from osrbench.testing import __main__ as command

    seen = []

    def fake(name, **kw):
        seen.append((name, kw["overrides"]))
        return type("Report", (), {"ok": True, "__str__": lambda self: "ok"})()

    monkeypatch.setattr(command, "check_method", fake)
    assert command._main(["medaf", "--set", "lr=0.01", "--set", "milestones=[1]"]) == 0
    assert seen == [("medaf", {"lr": 0.01, "milestones": [1]})]
    assert command._main(["medaf", "--set", "lr"]) == 2
    assert capsys.readouterr().err.strip() == "osrbench: error: --set expects key=value, got 'lr'"
