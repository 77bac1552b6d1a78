"""The openmax method: softmax's training bit for bit, a fit stage, OpenMax's score and decision rule."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from osrbench import checkpoints, config, devices, engine, evaluation, plugins, records, session
from osrbench.data.stream import to_input
from osrbench.errors import MethodFailed
from osrbench.models import Classifier32
from osrbench.scorers.openmax import OPENOOD_OPENMAX, fit_openmax, openmax_probs, openmax_score
from osrbench.testing import CHECKS, run_check

from osrbench_softmax.openmax import OPENMAX_SPEC, OpenMax, known_if_accepted, unfitted_probs

EPOCHS = 2


@pytest.fixture(scope="module", autouse=True)
def _registry():
    plugins.reset()  # the softmax plugin registers openmax in its hook (installed editable)
    yield


def _req(out: Path, method: str, **kw) -> engine.RunRequest:
    kw.setdefault("epochs", EPOCHS)
    return engine.RunRequest(method=method, dataset="digits", out=out, device="cpu", progress=False, **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """softmax and openmax on digits split 0, seed 0, two epochs, in one output folder."""
    out = tmp_path_factory.mktemp("runs")
    with devices.cpu_threads(1):
        return out, {m: engine.run(_req(out, m)).record for m in ("softmax", "openmax")}


def _ckpt(rec) -> dict:
    return checkpoints.read(Path(rec.dir) / checkpoints.CHECKPOINT)


def _scores(rec) -> records.Scores:
    return records.read_scores(Path(rec.dir), rec)


# --------------------------------------------------------------------------------- the conformance suite


@pytest.mark.parametrize("check", CHECKS)
def test_openmax_conforms(check):
    run_check("openmax", check)


# ----------------------------------------------------------------------------------- spec and config


def test_spec_is_softmax_without_score_plus_openmax_keys():
    reg = plugins.get()
    soft, om = reg.method("softmax"), reg.method("openmax")
    assert om is not None and reg.plugin_of("method", "openmax").name == "softmax"
    assert set(om.defaults) == (set(soft.defaults) - {"score"}) | {
        "tail_size", "alpha", "distance", "eu_weight", "weibull_threshold"}
    assert {k: om.defaults[k] for k in OPENOOD_OPENMAX["params"]} == OPENOOD_OPENMAX["params"]
    assert om.defaults["weibull_threshold"] == 0.9
    assert set(om.recipes) == set(soft.recipes) and om.default_recipe == soft.default_recipe == "arpl-release"
    ds = reg.dataset("digits")
    for recipe in soft.recipes:  # every training key resolves as softmax's
        _, a = config.resolve(soft, ds, recipe, None, None)
        _, b = config.resolve(om, ds, recipe, None, None)
        assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k in a}
    with pytest.raises(config.ConfigError):
        config.resolve(om, ds, None, None, {"score": "mls"})  # openmax's main score is always OpenMax's
    with pytest.raises(config.ConfigError):
        config.resolve(om, ds, None, None, {"distance": "manhattan"})


def test_alpha_above_k_is_refused_at_setup(tmp_path):
    with pytest.raises(MethodFailed, match="alpha=7 exceeds the 6 known classes"):
        engine.run(_req(tmp_path, "openmax", overrides={"alpha": 7}))


# ------------------------------------------------------------------------- the same training as softmax


def test_openmax_trains_the_softmax_network_bit_for_bit(runs):
    _, recs = runs
    soft, om = _ckpt(recs["softmax"]), _ckpt(recs["openmax"])
    assert om["fitted"] is True and soft["fitted"] is False
    assert soft["state"]["net"].keys() == om["state"]["net"].keys()
    for name, w in soft["state"]["net"].items():
        assert torch.equal(w, om["state"]["net"][name]), name
    assert soft["state"]["opt"]["param_groups"] == om["state"]["opt"]["param_groups"]
    assert soft["state"]["opt"]["state"].keys() == om["state"]["opt"]["state"].keys()
    for a, b in zip(soft["state"]["opt"]["state"].values(), om["state"]["opt"]["state"].values()):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert soft["state"]["epoch"] == om["state"]["epoch"] == EPOCHS
    assert soft["history"] == om["history"]  # the same losses, epoch by epoch
    s, o = _scores(recs["softmax"]), _scores(recs["openmax"])
    assert np.array_equal(s.known_logits, o.known_logits) and np.array_equal(s.unknown_logits, o.unknown_logits)
    for name in ("msp", "mls"):  # computed as softmax computes them
        assert np.array_equal(s.known[name], o.known[name]) and np.array_equal(s.unknown[name], o.unknown[name])
    assert not np.array_equal(s.known["score"], o.known["score"])  # only the scores differ
    assert recs["openmax"].metrics["acc"] == recs["softmax"].metrics["acc"]


def test_mls_paper_recipe_trains_the_same_network_too(tmp_path):
    """RandAugment, CIFAR normalisation and the cosine schedule draw the same numbers for both methods.

    One epoch of this recipe leaves the network too weak for an OpenMax fit on a digit class (here:
    one correctly classified training image), so openmax's fit stage may fail, in one line naming
    the class, after the last epoch's checkpoint was written.
    """
    with devices.cpu_threads(1):
        kw = {"recipe": "mls-paper", "epochs": 1, "overrides": {"randaugment": 8}}  # digits has no M of its own
        soft = engine.run(_req(tmp_path, "softmax", **kw)).record
        p = engine.plan(_req(tmp_path, "openmax", **kw))
        try:
            engine.run(p.request)
        except MethodFailed as exc:
            assert "raised in fit(batches): OpenMaxFitFailed: openmax: class " in str(exc)
    om = checkpoints.read(p.dir / checkpoints.CHECKPOINT)
    assert om["epoch"] == 1 and p.config["schedule"] == "mls-cosine" and p.config["normalize"] == "cifar"
    assert soft.config["score"] == "mls" and "score" not in p.config
    shared = [k for k in soft.config if k != "score"]
    assert {k: soft.config[k] for k in shared} == {k: p.config[k] for k in shared}
    net = _ckpt(soft)["state"]["net"]
    assert all(torch.equal(w, om["state"]["net"][name]) for name, w in net.items())


# ---------------------------------------------------------------------- the score, recomputed independently


def test_main_score_is_openmax_of_a_model_fitted_on_the_training_logits(runs):
    _, recs = runs
    rec = recs["openmax"]
    p = engine.plan(_req(Path("unused"), "openmax"))
    data = session.load_data(p.dataset, p.split, p.config["image_size"])
    # the training logits from the softmax run's network, in the fit pass's batches of 500
    net = Classifier32(p.split.num_known, in_channels=3)
    net.load_state_dict(_ckpt(recs["softmax"])["state"]["net"])
    net.eval()
    with devices.cpu_threads(1), torch.no_grad():
        train_logits = torch.cat([net(to_input(x, "none")).double() for x in data.train_x.split(evaluation.BATCH)])
    model = fit_openmax(train_logits, data.train_y, p.split.num_known, 20, "euclidean", 0.5)
    stored = _ckpt(rec)["state"]["openmax"]
    assert torch.equal(stored["means"], model.means) and torch.equal(stored["shape"], model.shape)
    assert torch.equal(stored["scale"], model.scale) and torch.equal(stored["small_score"], model.small_score)
    sc = _scores(rec)
    for part, logits in (("known", sc.known_logits), ("unknown", sc.unknown_logits)):
        z = torch.from_numpy(logits)
        want = openmax_score(z, model, 3).numpy()
        got = getattr(sc, part)
        assert np.array_equal(got["score"], want), part
        assert np.array_equal(got["openmax"], want), part
        probs = openmax_probs(z, model, 3)
        argmax_known = probs.argmax(1) < probs.shape[1] - 1  # torch's argmax takes the first maximum, as numpy's
        expected = torch.where(argmax_known, probs[:, :-1].max(1).values, torch.zeros(len(z), dtype=torch.float64))
        assert np.array_equal(got["openmax_known"], expected.numpy()), part


def test_f1_rule_is_openmax_decision_rule(runs):
    _, recs = runs
    rec = recs["openmax"]
    assert tuple(rec.f1_rule) == ("openmax_known", 0.9)
    sc = _scores(rec)
    named = np.r_[sc.known["openmax_known"], sc.unknown["openmax_known"]]
    assert named.min() >= 0.0 and named.max() <= 1.0
    assert 0 < (named > 0.9).sum() < len(named)  # the rule both accepts and rejects on this run
    # OpenOOD's rule, spelt out: known iff argmax of the K+1 is a known class and its probability >= 0.9
    y_true = np.r_[sc.known_labels, np.full(len(sc.unknown_logits), -1)]
    pred = np.r_[sc.known_logits.argmax(1), sc.unknown_logits.argmax(1)]
    y_pred = np.where(named >= 0.9, pred, -1)  # no probability is exactly 0.9, so >= and > agree
    labels = np.union1d(y_true, y_pred)
    f1 = [2 * ((y_true == c) & (y_pred == c)).sum() / ((y_true == c).sum() + (y_pred == c).sum()) for c in labels]
    assert rec.metrics["macro_f1"] == pytest.approx(float(np.mean(f1)), abs=1e-12)


# ------------------------------------------------------------------------------------------- resume


def test_resume_after_the_fitted_checkpoint_does_not_fit_again(runs, tmp_path, monkeypatch):
    out, recs = runs
    rec = recs["openmax"]
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    folder = copy / Path(rec.dir).relative_to(out)
    (folder / records.RESULT).unlink()  # only the evaluation is missing: the checkpoint is final and fitted

    def refit(self, batches):
        raise AssertionError("fit ran again")

    monkeypatch.setattr(OpenMax, "fit", refit)
    with devices.cpu_threads(1):
        again = engine.run(_req(copy, "openmax", resume="yes")).record
    assert again.metrics == rec.metrics and tuple(again.f1_rule) == tuple(rec.f1_rule)
    assert again.scores == rec.scores and again.history == rec.history
    a, b = _scores(rec), _scores(again)
    for name in a.names:
        assert np.array_equal(a.known[name], b.known[name]) and np.array_equal(a.unknown[name], b.unknown[name])


# ------------------------------------------------------------------------------------- state and fallback


def test_predict_before_fit_and_the_model_in_state_dict():
    from osrbench.method import Context

    cfg = config.resolve(OPENMAX_SPEC, plugins.get().dataset("digits"), None, 1, None)[1]
    torch.manual_seed(0)
    ctx = Context(num_classes=3, image_shape=(3, 8, 8), device=torch.device("cpu"), config=cfg, epochs=1,
                  generator=torch.Generator().manual_seed(0))
    m = OpenMax()
    m.setup(ctx)
    x = torch.rand(40, 3, 8, 8)
    before = m.predict(x)  # unfitted: every W-score 0, so the K+1 probabilities are softmax([z, 0])
    assert m.adaptations()["openmax_fitted"] is False and "openmax" not in m.state_dict()
    assert torch.equal(before.score, -unfitted_probs(before.logits)[:, -1])
    expected = -1.0 / (1.0 + torch.exp(before.logits.double()).sum(1))
    assert torch.allclose(before.score, expected, rtol=1e-12, atol=0)
    assert torch.isfinite(before.score).all() and set(before.scores) == {"openmax", "msp", "mls", "openmax_known"}
    # a model (as fit leaves it) survives torch.save / torch.load(weights_only=True) as plain values
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(90) % 3
    logits = 4 * torch.nn.functional.one_hot(labels, 3).double() + torch.randn(90, 3, generator=g, dtype=torch.float64)
    m.model = fit_openmax(logits, labels, 3, 20, "euclidean", 0.5)
    assert "openmax_fitted" not in m.adaptations()
    after = m.predict(x)
    assert not torch.equal(after.score, before.score)
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert set(state["openmax"]) == {"means", "shape", "scale", "small_score", "translate_amount", "distance",
                                     "eu_weight"}
    fresh = OpenMax()
    fresh.setup(ctx)
    fresh.load_state_dict(state)
    again = fresh.predict(x)
    assert torch.equal(after.logits, again.logits) and torch.equal(after.score, again.score)
    assert torch.equal(after.scores["openmax_known"], again.scores["openmax_known"])


def test_known_if_accepted_breaks_ties_towards_the_known_class():
    probs = torch.tensor([[0.4, 0.2, 0.4], [0.1, 0.3, 0.6], [0.95, 0.03, 0.02]], dtype=torch.float64)
    assert known_if_accepted(probs).tolist() == [0.4, 0.0, 0.95]
