"""The fit stage (Method.fit) and Method.features: what the engine, rescore and the conformance suite promise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from osrbench import checkpoints, engine, plugins, records, rescore
from osrbench.data.stream import to_input
from osrbench.errors import UserError
from osrbench.method import Features, Method, MethodSpec, Prediction
from osrbench.testing import ConformanceError, run_check
from osrbench.training import OPTIM_DEFAULTS, make_optimizer


class Means(Method):
    """A perceptron whose fit stage stores the class means of its training logits; its named score
    ``near`` is minus the distance to the nearest mean, so it is wrong until fit has run."""

    phases = ("train",)
    fits = 0  # calls of fit, over every instance

    def setup(self, ctx):
        c, h, w = ctx.image_shape
        self.k = ctx.num_classes
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, ctx.num_classes)).to(ctx.device)
        self.opt = make_optimizer(self.net.parameters(), ctx.config)
        self.means = torch.zeros(ctx.num_classes, ctx.num_classes, device=ctx.device)
        self.seen: list[torch.Tensor] = []

    def train_step(self, phase, x, y):
        loss = F.cross_entropy(self.net(x), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def fit(self, batches):
        type(self).fits += 1
        self.net.eval()
        sums = torch.zeros_like(self.means)
        counts = torch.zeros(self.k, device=self.means.device)
        for x, y in batches:
            self.seen.append(x.clone())
            sums.index_add_(0, y, self.net(x))
            counts += torch.bincount(y, minlength=self.k)
        self.means = sums / counts.clamp_min(1)[:, None]

    @torch.no_grad()
    def predict(self, x):
        self.net.eval()
        z = self.net(x)
        near = -torch.cdist(z, self.means).min(1).values
        return Prediction(z, z.softmax(1).max(1).values, {"near": near})

    def features(self, x):
        self.net.eval()
        f = self.net[:3](x)
        return Features(f, self.net[3](f))

    def head(self, f):
        return self.net[3](f)

    def state_dict(self):
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "means": self.means}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.means = state["means"].to(self.means.device)


class ForgetsMeans(Means):
    def state_dict(self):
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])


class NoGradFeatures(Means):
    @torch.no_grad()
    def features(self, x):
        return super().features(x)


class OtherLogits(Means):
    def features(self, x):
        out = super().features(x)
        return Features(out.penultimate, out.logits + 1)


def _registry(factory, name="means", installed=False):
    """A registry with the method (``installed``: added to the process's registry, which rescore uses)."""
    reg = plugins.get() if installed else plugins.Plugins(entry_points=False)
    reg.methods[name] = MethodSpec(name, factory, defaults={**OPTIM_DEFAULTS, "lr": 0.05})
    reg.origin[f"method:{name}"] = "osrbench"
    return reg


def _req(tmp_path, **kw):
    return engine.RunRequest(method="means", dataset="digits", out=tmp_path, device="cpu", progress=False,
                             epochs=2, checkpoint_every=1, **kw)


def test_the_suite_passes_a_method_with_a_fit_stage_and_features():
    reg = _registry(Means)
    assert "fit saw 96 training images in file order, unaugmented" in run_check("means", "fit", registry=reg).message
    assert "head gives them back, differentiable" in run_check("means", "features", registry=reg).message


@pytest.mark.parametrize(("factory", "check", "message"), [
    (ForgetsMeans, "fit", r"^fit: a fresh setup \+ load_state_dict of the fitted state predicts different score 'near'"),
    (NoGradFeatures, "features", r"^features: features\(\) returned logits without a graph back to the images"),
    (OtherLogits, "features", r"^features: features\(\)\.logits differ from predict\(\)\.logits"),
])
def test_the_suite_names_a_broken_fit_or_features_contract(factory, check, message):
    with pytest.raises(ConformanceError, match=message):
        run_check("means", check, registry=_registry(factory))


def test_the_engine_fits_once_after_the_last_epoch_on_the_training_images_in_order(tmp_path, monkeypatch):
    reg = _registry(Means)
    made = []
    monkeypatch.setattr(Means, "fits", 0)
    real = reg.methods["means"]
    reg.methods["means"] = MethodSpec("means", lambda: made.append(Means()) or made[-1], defaults=real.defaults)
    out = engine.run(_req(tmp_path, overrides={"augment": "crop_flip"}), registry=reg)
    assert Means.fits == 1
    method = made[-1]
    data = engine.plan(_req(tmp_path), reg).dataset
    from osrbench import protocols, session

    split = protocols.get_split(data, "auroc", 0)
    d = session.load_data(data, split, out.record.config["image_size"])
    assert torch.equal(torch.cat(method.seen), to_input(d.train_x))  # unaugmented although the run augments
    ckpt = checkpoints.read(out.record.dir / checkpoints.CHECKPOINT)
    assert ckpt["fitted"] is True and ckpt["epoch"] == 2
    assert torch.equal(ckpt["state"]["means"], method.means)
    assert out.record.metrics["auroc"] > 0.5


def test_a_resume_after_the_fit_stage_does_not_fit_again_and_one_before_it_does(tmp_path, monkeypatch):
    reg = _registry(Means)
    monkeypatch.setattr(Means, "fits", 0)
    first = engine.run(_req(tmp_path), registry=reg).record
    folder = first.dir
    scores = records.read_scores(folder, first)
    (folder / records.RESULT).unlink()  # killed after the fitted checkpoint, before the record
    again = engine.run(_req(tmp_path, resume="yes"), registry=reg)
    assert Means.fits == 1 and again.record.metrics == first.metrics
    # killed inside fit: only the pre-fit checkpoint of the last epoch is left
    (folder / records.RESULT).unlink()
    ckpt = checkpoints.read(folder / checkpoints.CHECKPOINT)
    checkpoints.save(folder, {**ckpt, "fitted": False, "state": {**ckpt["state"], "means": torch.zeros(6, 6)}})
    third = engine.run(_req(tmp_path, resume="yes"), registry=reg)
    assert Means.fits == 2 and third.record.metrics == first.metrics
    assert records.read_scores(folder, third.record).known["near"].tolist() == scores.known["near"].tolist()


def test_rescore_from_checkpoint_uses_the_fitted_state(tmp_path, monkeypatch):
    reg = _registry(Means, installed=True)
    rec = engine.run(_req(tmp_path), registry=reg).record
    monkeypatch.setattr(Means, "fits", 0)
    again = rescore.scores_from_checkpoint(rec)
    stored = records.read_scores(rec.dir, rec)
    assert Means.fits == 0
    assert again.known["near"].tolist() == stored.known["near"].tolist()


def test_rescoring_refuses_a_checkpoint_that_does_not_reproduce_the_run(tmp_path):
    """A method that leaves its fitted state out of state_dict: rebuilt from the checkpoint, its
    ``near`` score differs from the stored one, and neither rescore nor a post-hoc scorer uses it."""
    reg = _registry(ForgetsMeans, installed=True)
    rec = engine.run(_req(tmp_path), registry=reg).record
    msp = plugins.Plugins(entry_points=False).scorers["msp"]
    message = r"the checkpoint does not reproduce the run's stored score 'near' \(max abs difference"
    with pytest.raises(UserError, match=message):
        rescore.posthoc_from_checkpoint(rec, [msp])
    with pytest.raises(UserError, match=message):
        rescore.rescore_record(rec, "near", from_checkpoint=True)
    assert not (rec.dir / records.POSTHOC).exists()
