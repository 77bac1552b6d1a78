"""CAC (plugins/cac/README.md): the loss by hand and against a replica of the release's, the network,
its initialisation and training steps against a replica of the release's code, the anchor fit and
the score, pinned float64 steps, the conformance suite, exact resume, release files, recipes and a
digits run."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn, optim

pytest.importorskip("osrbench_cac")

from osrbench_cac.network import OpenSetClassifier, flat_size
from osrbench_cac.plugin import (
    CAC,
    DEFAULTS,
    RELEASE_STATS,
    cac_loss,
    cac_scores,
    trial_mean,
)

from osrbench import cli, engine, layouts, plugins, protocols, records, session
from osrbench import config as configmod
from osrbench.config import ENGINE_DEFAULTS
from osrbench.method import Context
from osrbench.testing import CHECKS, run_check
from osrbench.testing.pinned import pinned_epoch, state_abs_sum

K = 4


# ------------------------------------------------------------------ replicas of the release's code
# networks/openSetClassifier.py (bd9c7f5), with .cuda() removed and the Linear's input size a parameter
# (the release: 128*4*4 at 32 px, 128*8*8 at 64 px).


class ReleaseBaseEncoder(nn.Module):
    def __init__(self, num_channels, init_weights, dropout=0.3):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.relu = nn.LeakyReLU(0.2)
        self.bn1 = nn.BatchNorm2d(64)
        self.bn2 = nn.BatchNorm2d(64)
        self.bn3 = nn.BatchNorm2d(128)
        self.bn4 = nn.BatchNorm2d(128)
        self.bn5 = nn.BatchNorm2d(128)
        self.bn6 = nn.BatchNorm2d(128)
        self.bn7 = nn.BatchNorm2d(128)
        self.bn8 = nn.BatchNorm2d(128)
        self.bn9 = nn.BatchNorm2d(128)
        self.conv1 = nn.Conv2d(num_channels, 64, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(64, 64, 3, 1, 1, bias=False)
        self.conv3 = nn.Conv2d(64, 128, 3, 2, 1, bias=False)
        self.conv4 = nn.Conv2d(128, 128, 3, 1, 1, bias=False)
        self.conv5 = nn.Conv2d(128, 128, 3, 1, 1, bias=False)
        self.conv6 = nn.Conv2d(128, 128, 3, 2, 1, bias=False)
        self.conv7 = nn.Conv2d(128, 128, 3, 1, 1, bias=False)
        self.conv8 = nn.Conv2d(128, 128, 3, 1, 1, bias=False)
        self.conv9 = nn.Conv2d(128, 128, 3, 2, 1, bias=False)
        self.encoder1 = nn.Sequential(self.conv1, self.bn1, self.relu, self.conv2, self.bn2, self.relu,
                                      self.conv3, self.bn3, self.relu, self.dropout)
        self.encoder2 = nn.Sequential(self.conv4, self.bn4, self.relu, self.conv5, self.bn5, self.relu,
                                      self.conv6, self.bn6, self.relu, self.dropout)
        self.encoder3 = nn.Sequential(self.conv7, self.bn7, self.relu, self.conv8, self.bn8, self.relu,
                                      self.conv9, self.bn9, self.relu, self.dropout)
        if init_weights:
            self._initialize_weights()

    def _initialize_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        return self.encoder3(self.encoder2(self.encoder1(x)))


class ReleaseOpenSetClassifier(nn.Module):
    def __init__(self, num_classes=20, num_channels=3, flat=2048, init_weights=False, dropout=0.3):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = ReleaseBaseEncoder(num_channels, init_weights, dropout)
        self.classify = nn.Linear(flat, num_classes)
        self.anchors = nn.Parameter(torch.zeros(self.num_classes, self.num_classes).double(), requires_grad=False)
        if init_weights:
            self._initialize_weights()

    def forward(self, x, skip_distance=False):
        batch_size = len(x)
        x = self.encoder(x)
        x = x.view(batch_size, -1)
        outLinear = self.classify(x)
        if skip_distance:
            return outLinear, None
        return outLinear, self.distance_classifier(outLinear)

    _initialize_weights = ReleaseBaseEncoder._initialize_weights

    def set_anchors(self, means):
        self.anchors = nn.Parameter(means.double(), requires_grad=False)

    def distance_classifier(self, x):
        n = x.size(0)
        m = self.num_classes
        d = self.num_classes
        x = x.unsqueeze(1).expand(n, m, d).double()
        anchors = self.anchors.unsqueeze(0).expand(n, m, d)
        return torch.norm(x - anchors, 2, 2)


def release_cac_loss(distances, gt, num_known_classes, lbda):
    """train_cacOpenset.py 85-98 (without .cuda())."""
    true = torch.gather(distances, 1, gt.view(-1, 1)).view(-1)
    non_gt = torch.Tensor([[i for i in range(num_known_classes) if gt[x] != i] for x in range(len(distances))]).long()
    others = torch.gather(distances, 1, non_gt)
    anchor = torch.mean(true)
    tuplet = torch.exp(-others + true.unsqueeze(1))
    tuplet = torch.mean(torch.log(1 + torch.sum(tuplet, dim=1)))
    total = lbda * anchor + tuplet
    return total, anchor, tuplet


def release_anchor_means(net, batches, num_classes, flip):
    """utils.find_anchor_means / gather_outputs(only_correct=True, data_idx=0) with eval_cacOpenset.py 59."""
    X, y = [], []
    loaders = [batches, [(x.flip(3), t) for x, t in batches]] if flip else [batches]
    for loader in loaders:
        for images, targets in loader:
            logits, distances = net(images)  # noqa: RUF059 - the release's line
            _, predicted = torch.max(logits, 1)
            mask = predicted == targets
            X += logits[mask].cpu().detach().tolist()
            y += targets[mask].cpu().tolist()
    X, y = np.asarray(X), np.asarray(y)
    with warnings.catch_warnings():  # a class without a correct image: numpy warns and gives NaN, as in the release
        warnings.simplefilter("ignore", RuntimeWarning)
        means = [np.mean(np.squeeze(X[y == cl]), axis=0) for cl in range(num_classes)]
    return torch.Tensor(np.array(means))


def release_scores(distances):
    """utils.gather_outputs(calculate_scores=True) 167-170."""
    softmin = torch.nn.Softmax(dim=1)(-distances)
    return distances * (1 - softmin)


# ------------------------------------------------------------------ helpers


def _method(size=8, k=K, seed=7, **overrides):
    cfg = {**ENGINE_DEFAULTS, **DEFAULTS, "image_size": size, "epochs": 10, **overrides}
    m = CAC()
    m.setup(Context(k, (3, size, size), torch.device("cpu"), cfg, torch.Generator().manual_seed(seed), 10))
    return m


def _batch(n=12, size=8, k=K, dtype=torch.float32, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g).to(dtype), torch.arange(n) % k


# ------------------------------------------------------------------ the loss


def test_loss_by_hand():
    d = torch.tensor([[1.0, 2.0, 4.0], [3.0, 0.5, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    total, anchor, tuplet = cac_loss(d, y, 0.1)
    a = (1.0 + 1.0) / 2
    t = (math.log(1 + math.exp(1 - 2) + math.exp(1 - 4)) + math.log(1 + math.exp(1 - 3) + math.exp(1 - 0.5))) / 2
    assert anchor.item() == pytest.approx(a, abs=1e-15)
    assert tuplet.item() == pytest.approx(t, rel=1e-15)
    assert total.item() == pytest.approx(0.1 * a + t, rel=1e-15)
    # Both terms fall as the true anchor gets closer than the others (the signs).
    closer = d.clone()
    closer[0, 0], closer[1, 2] = 0.5, 0.2
    t2, a2, u2 = cac_loss(closer, y, 0.1)
    assert a2 < anchor and u2 < tuplet and t2 < total


@pytest.mark.parametrize("k", [2, 4, 7])
def test_loss_and_gradient_match_the_release(k):
    g = torch.Generator().manual_seed(k)
    d = (torch.rand(9, k, generator=g, dtype=torch.float64) * 8).requires_grad_()
    y = torch.randint(0, k, (9,), generator=g)
    mine = cac_loss(d, y, 0.3)
    (gm,) = torch.autograd.grad(mine[0], d)
    ref = release_cac_loss(d, y, k, 0.3)
    (gr,) = torch.autograd.grad(ref[0], d)
    for a, b in zip(mine, ref):
        assert torch.allclose(a, b, rtol=1e-13, atol=0)
    assert torch.allclose(gm, gr, rtol=1e-12, atol=1e-15)


def test_score_is_the_release_score_with_the_host_sign():
    g = torch.Generator().manual_seed(0)
    d = torch.rand(20, 5, generator=g, dtype=torch.float64) * 10
    assert torch.equal(cac_scores(d), release_scores(d))
    # argmin of d * (1 - softmin d) is argmin d (metrics.accuracy takes argmin of the scores)
    assert torch.equal(cac_scores(d).argmin(1), d.argmin(1))
    d2 = torch.tensor([[0.0, 1.0], [3.0, 1.0]], dtype=torch.float64)
    p = math.exp(-1) / (1 + math.exp(-1))
    assert cac_scores(d2)[1].tolist() == pytest.approx([3 * (1 - math.exp(-3) / (math.exp(-3) + math.exp(-1))),
                                                        1 * (1 - math.exp(-1) / (math.exp(-3) + math.exp(-1)))])
    assert cac_scores(d2)[0].tolist() == pytest.approx([0.0, 1 - p])


# ------------------------------------------------------------------ network and steps against the release


@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32)])
def test_network_init_and_forward_match_the_release(channels, size):
    torch.manual_seed(11)
    ref = ReleaseOpenSetClassifier(K, channels, flat_size(size), init_weights=True, dropout=0.2)
    ref.set_anchors(torch.diag(torch.Tensor([10 for _ in range(K)])))
    torch.manual_seed(11)
    net = OpenSetClassifier(K, channels, size, 0.2, 10.0)
    ours, theirs = net.state_dict(), ref.state_dict()
    assert list(ours) == list(theirs)  # the same keys in the same order (aliases included)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), key
    x = torch.rand(5, channels, size, size)
    for mode in ("train", "eval"):
        getattr(net, mode)(), getattr(ref, mode)()
        torch.manual_seed(1)
        z, d = net(x)
        torch.manual_seed(1)
        zr, dr = ref(x)
        assert torch.equal(z, zr) and d.dtype == torch.float64 and torch.allclose(d, dr, rtol=1e-15, atol=0)


def test_training_steps_and_stage_restart_match_the_release_float64():
    """Three float64 steps at lr 0.01, the stage boundary (the release's -r: a new SGD at 0.001),
    two more steps: losses and every parameter against the release's loop (train_cacOpenset.py
    82-83, 111-128; the input normalisation of datasets/utils.py 168)."""
    size, k, lbda, wd = 8, K, 0.1, 5e-4
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        m = _method(size, k, weight_decay=wd, milestones=[1], channels=3)
        torch.manual_seed(0)
        ref = ReleaseOpenSetClassifier(k, 3, flat_size(size), init_weights=True, dropout=0.2)
        ref.set_anchors(torch.diag(torch.Tensor([10.0] * k)))
        assert all(torch.equal(a, b) for a, b in zip(m.net.state_dict().values(), ref.state_dict().values()))
        opt = optim.SGD(ref.parameters(), lr=0.01, momentum=0.9, weight_decay=wd)
        mean = torch.tensor(DEFAULTS["input_mean"]).view(1, -1, 1, 1)
        std = torch.tensor(DEFAULTS["input_std"]).view(1, -1, 1, 1)
        for step in range(5):
            if step == 3:
                m.end_epoch(0)  # milestone 1: lr x 0.1 and momentum restarts
                opt = optim.SGD(ref.parameters(), lr=0.001, momentum=0.9, weight_decay=wd)
            x, y = _batch(16, size, k, torch.float64, seed=step)
            torch.manual_seed(100 + step)
            out = m.train_step("train", x, y)
            torch.manual_seed(100 + step)
            ref.train()
            opt.zero_grad()
            _, dist = ref((x - mean) / std)
            total, anchor, tuplet = release_cac_loss(dist, y, k, lbda)
            total.backward()
            opt.step()
            assert out["loss"].item() == pytest.approx(total.item(), rel=1e-12), step
            assert out["anchor"].item() == pytest.approx(anchor.item(), rel=1e-12)
            assert out["tuplet"].item() == pytest.approx(tuplet.item(), rel=1e-12)
            for (name, a), b in zip(m.net.state_dict().items(), ref.state_dict().values()):
                assert torch.allclose(a, b, rtol=1e-10, atol=1e-13), (step, name)
        assert torch.equal(m.net.anchors, torch.diag(torch.full((k,), 10.0)))  # never trained
        assert m.opt.param_groups[0]["lr"] == pytest.approx(0.001)
    finally:
        torch.set_default_dtype(torch.float32)


def test_one_channel_network_reads_the_first_channel_and_normalises():
    m = _method(channels=1, input_mean=[0.25], input_std=[0.5])
    x, _ = _batch()
    x2 = x.clone()
    x2[:, 1:] = 0.9  # the other channels are ignored
    assert torch.equal(m._input(x), (x[:, :1] - 0.25) / 0.5) and torch.equal(m._input(x), m._input(x2))
    assert m.net.encoder.conv1.weight.shape[1] == 1


# ------------------------------------------------------------------ fit and predict


@pytest.mark.parametrize("flip", [False, True])
def test_fit_anchors_are_the_release_means_of_correct_logits(flip):
    m = _method(fit_flip=flip)
    m.net.eval()
    batches = []
    for i in range(3):  # labels: the network's own classes, every third one wrong
        x, _ = _batch(30, seed=10 + i)
        with torch.no_grad():
            y = m.net(m._input(x))[0].argmax(1)
        y[::3] = (y[::3] + 1) % K
        batches.append((x, y))
    with torch.no_grad():
        want = release_anchor_means(m.net, [(m._input(x), y) for x, y in batches], K, flip)  # Normalize: flips commute
    m.fit(batches)
    full = [k for k in range(K) if k not in m.empty_classes]
    assert len(full) >= 2 and all(torch.isnan(want[k]).all() for k in m.empty_classes)
    assert torch.equal(m.test_anchors[full], want[full].double())
    assert m.test_anchors.dtype == torch.float64 and m.fitted and "cac_fitted" not in m.adaptations()
    # Training keeps the release's anchors; predict uses the fitted ones; training on unfits.
    assert torch.equal(m.net.anchors, torch.diag(torch.full((K,), 10.0, dtype=torch.float64)))
    x, _ = batches[0]
    with torch.no_grad():
        z = m.net(m._input(x))[0]
    assert torch.equal(m.predict(x).logits, -torch.cdist(z.double(), m.test_anchors).clamp(min=0)) or \
        torch.allclose(m.predict(x).logits, -torch.cdist(z.double(), m.test_anchors), rtol=1e-12)
    m.end_epoch(0)
    assert not m.fitted and m.adaptations()["cac_fitted"] is False


def test_fit_keeps_the_training_anchor_of_a_class_without_a_correct_image():
    m = _method()
    x, y = _batch(12)
    with torch.no_grad():
        pred = m.net(m._input(x))[0].argmax(1)
    y = pred.clone()
    y[y == 0] = 1  # nothing labelled 0 is predicted 0
    m.fit([(x, y)])
    assert 0 in m.empty_classes and torch.equal(m.test_anchors[0], torch.tensor([10.0, 0, 0, 0], dtype=torch.float64))
    assert m.adaptations()["cac_training_anchors_kept"] == m.empty_classes
    assert torch.isfinite(m.test_anchors).all()


def test_predict_scores_and_logits():
    m = _method()
    x, _ = _batch()
    pred = m.predict(x)
    m.net.eval()
    with torch.no_grad():
        _, d = m.net(m._input(x))
    assert torch.equal(pred.logits, -d) and pred.logits.dtype == torch.float64
    assert torch.equal(pred.score, -release_scores(d).min(1).values)
    assert torch.equal(pred.scores["cac"], pred.score) and torch.equal(pred.scores["distance"], -d.min(1).values)
    assert m.f1_rule() is None and m.adaptations()["cac_fitted"] is False
    f = m.features(x)
    assert torch.allclose(f.logits, pred.logits) and f.penultimate.shape == (12, 128)


# ------------------------------------------------------------------ pinned float64 steps




def _pinned_run():
    run = pinned_epoch("cac")
    losses = [{k.split("/", 1)[1]: v for k, v in row.items()} for row in run.losses]  # one phase: "train"
    state = run.state  # the network and its optimiser (what the release's checkpoint holds)
    return losses, state_abs_sum(state["net"]) + state_abs_sum(state["opt"]["state"])


# Taken from this code after test_training_steps_and_stage_restart_match_the_release_float64 held:
# a change in any of them means the math changed.
PINNED = {
    "losses": [
        {"loss": 2.8432521106134665, "anchor": 10.041554254883135, "tuplet": 1.8390966851251531},
        {"loss": 2.821492915999173, "anchor": 10.014708319790943, "tuplet": 1.8200220840200787},
        {"loss": 2.7591356067791146, "anchor": 9.956395916707141, "tuplet": 1.7634960151084003},
    ],
    "state_abs_sum": 74379.5093364472,
}


def test_float64_training_steps_are_pinned():
    losses, abs_sum = _pinned_run()
    assert len(losses) == len(PINNED["losses"])
    for got, want in zip(losses, PINNED["losses"]):
        assert sorted(got) == sorted(want)
        for key in want:
            assert math.isclose(got[key], want[key], rel_tol=1e-12), (key, got[key], want[key])
    assert math.isclose(abs_sum, PINNED["state_abs_sum"], rel_tol=1e-12), abs_sum


# ------------------------------------------------------------------ conformance, runs, resume


@pytest.mark.parametrize("check", CHECKS)
def test_conformance(check):
    run_check("cac", check)


def _req(tmp_path, epochs, **kw):
    return engine.RunRequest(method="cac", dataset="digits", epochs=epochs, out=tmp_path, device="cpu",
                             progress=False, checkpoint_every=1, **kw)


def test_digits_run_beats_chance_and_records_the_adaptations(tmp_path):
    rec = engine.run(_req(tmp_path, 3), log=lambda msg: None).record
    assert rec.recipe == "cac-release" and rec.metrics["acc"] > 0.6 and rec.metrics["auroc"] > 0.6, rec.metrics
    assert "macro_f1" not in rec.metrics and rec.f1_rule is None
    assert set(rec.scores) == {"score", "cac", "distance"}
    assert rec.adaptations["image_size"].startswith("8 px") and "mnist" in rec.adaptations["recipe"]
    assert "cac_fitted" not in rec.adaptations
    assert rec.config["channels"] == 1 and rec.config["batch_size"] == 128 and rec.config["milestones"] == [35]
    assert {"train/loss", "train/anchor", "train/tuplet"} <= set(rec.history[0])


def test_resume_across_the_stage_boundary_is_exact(tmp_path):
    over = {"milestones": [2]}  # the momentum restart happens after epoch 2, between the two runs' ends
    straight = engine.run(_req(tmp_path / "a", 3, overrides=over), log=lambda m: None).record
    engine.run(_req(tmp_path / "b", 2, overrides=over), log=lambda m: None)
    resumed = engine.run(_req(tmp_path / "b", 3, overrides=over, resume="yes"), log=lambda m: None).record
    a, b = np.load(Path(straight.dir) / "scores.npz"), np.load(Path(resumed.dir) / "scores.npz")
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key
    assert resumed.history == straight.history and resumed.metrics == straight.metrics


# ------------------------------------------------------------------ release files


def _release_file(tmp_path, k=6, channels=1, size=8, key="means"):
    torch.manual_seed(5)
    ref = ReleaseOpenSetClassifier(k, channels, flat_size(size), init_weights=True, dropout=0.2)
    ref.set_anchors(torch.diag(torch.Tensor([10.0] * k)))
    ref.train()
    with torch.no_grad():  # BN statistics of a few batches, as a trained file has
        for _ in range(3):
            ref(torch.rand(32, channels, size, size))
    state = ref.state_dict()
    if key == "means":  # the files the release ships: anchors named "means", and class Gaussians
        state["means"] = state.pop("anchors")
        state["covars"], state["invcovars"] = torch.rand(k, k, k).double(), torch.rand(k, k, k).double()
    path = tmp_path / "MNIST_0_CACclassifierAnchorLoss.pth"
    torch.save({"net": state, "acc": 99.0, "epoch": 32}, path)
    return path, ref


@pytest.mark.parametrize("key", ["means", "anchors"])
def test_evaluate_reads_the_release_file_and_refits_the_anchors(tmp_path, key):
    path, ref = _release_file(tmp_path, key=key)
    out = tmp_path / "runs"
    argv = ["evaluate", "--method", "cac", "--dataset", "digits", "--device", "cpu", "--out", str(out),
            "--layout", "cac-release", "--weights", str(path)]
    assert cli.main(argv) == 0
    (rec,) = list(records.iter_records(out))
    assert rec.external_weights["layout"] == "cac-release"
    legacy = {"net.covars", "net.invcovars"} if key == "means" else set()
    assert set(rec.external_weights["dropped"]) == {"acc", "epoch"} | legacy
    assert "cac_fitted" not in rec.adaptations  # the fit stage ran on the loaded network
    # The stored logits are -distances of the release network to the refitted anchors.
    ds = plugins.get().dataset("digits")
    data = session.load_data(ds, protocols.get_split(ds, "auroc", 0), 8)
    mean, std = DEFAULTS["input_mean"], DEFAULTS["input_std"]
    _, cfg = configmod.resolve(plugins.get().method("cac"), ds)
    mean, std = cfg["input_mean"][0], cfg["input_std"][0]
    ref.eval()
    with torch.no_grad():
        prep = lambda u8: ((u8.float() / 255)[:, :1] - mean) / std
        train = [(prep(data.train_x[i:i + 500]), data.train_y[i:i + 500]) for i in range(0, len(data.train_x), 500)]
        means = release_anchor_means(ref, train, 6, flip=False)
        ref.set_anchors(means)
        _, d = ref(prep(data.known_x[:100]))
    # An untrained file: classes without a correct training image get NaN anchors in the release,
    # their training anchors here; the others must agree.
    full = [k for k in range(6) if not torch.isnan(means[k]).any()]
    assert full and rec.adaptations.get("cac_training_anchors_kept", []) == [k for k in range(6) if k not in full]
    scores = records.read_scores(rec.dir, rec)
    assert np.allclose(scores.known_logits[:100][:, full], -d[:, full].numpy(), rtol=1e-5, atol=1e-6)
    own = -release_scores(-torch.from_numpy(scores.known_logits)).min(1).values.numpy()
    assert np.allclose(scores.known["score"], own, rtol=1e-12, atol=0)


def test_a_file_of_another_network_is_one_line(tmp_path):
    path, _ = _release_file(tmp_path, channels=3)  # digits' recipe has channels=1
    argv = ["evaluate", "--method", "cac", "--dataset", "digits", "--device", "cpu", "--out", str(tmp_path / "r"),
            "--layout", "cac-release", "--weights", str(path)]
    with pytest.raises(layouts.LayoutError, match=r"encoder.conv1.weight \[64, 3, 3, 3\] \(expected \[64, 1, 3, 3\]\)"):
        m = _method(channels=1, k=6, input_mean=[0.1], input_std=[0.3])
        m.load_external("cac-release", layouts.ExternalWeights.from_files([(path.name, torch.load(path))]))
    assert cli.main(argv) == 2
    torch.save({"state": {}}, tmp_path / "other.pth")
    with pytest.raises(layouts.LayoutError, match="no 'net.\\*' key"):
        _method().load_external("cac-release", {"state.x": torch.zeros(1)})


# ------------------------------------------------------------------ recipes


def test_recipe_per_dataset_from_the_release_config():
    reg = plugins.get()
    spec = reg.method("cac")
    assert spec.default_recipe == "cac-release"
    # digits: the dataset's own 15 epochs win over the recipe (stage 1 only)
    want = {  # dataset: epochs, milestones, weight decay, batch, dropout, channels, fit_flip
        "digits": (15, [35], 5e-6, 128, 0.2, 1, False), "mnist": (70, [35], 5e-6, 128, 0.2, 1, False),
        "fashion-mnist": (70, [35], 5e-6, 128, 0.2, 1, False), "svhn": (75, [50], 5e-6, 128, 0.2, 3, False),
        "cifar10": (200, [150], 5e-6, 128, 0.2, 3, True), "cifar+10": (200, [150], 5e-4, 128, 0.2, 3, True),
        "cifar+50": (200, [150], 5e-4, 32, 0.2, 3, True), "tiny_imagenet": (800, [500], 1e-3, 128, 0.3, 3, True),
    }
    # The release has no config for the SSB and OpenOOD sets: they take its CIFAR-10 row ("*").
    fallback = set(reg.datasets) - set(want)
    assert fallback == {"cub", "aircraft", "scars", "imagenet-ssb", "cifar50"}
    want.update({name: want["cifar10"] for name in fallback})
    for name, row in want.items():
        _, cfg = configmod.resolve(spec, reg.dataset(name))
        got = (cfg["epochs"], cfg["milestones"], cfg["weight_decay"], cfg["batch_size"], cfg["dropout"],
               cfg["channels"], cfg["fit_flip"])
        assert got == row, name
        assert (cfg["optimizer"], cfg["lr"], cfg["momentum"], cfg["gamma"], cfg["alpha"], cfg["lbda"]) == \
            ("sgd", 0.01, 0.9, 0.1, 10.0, 0.1)
        assert len(cfg["input_mean"]) == cfg["channels"] and cfg["normalize"] == "none"
    assert configmod.resolve(spec, reg.dataset("tiny_imagenet"))[1]["image_size"] == 64
    assert trial_mean(RELEASE_STATS["mnist"][0]) == [0.1343]
    with pytest.raises(configmod.ConfigError, match="channels"):
        configmod.resolve(spec, reg.dataset("digits"), overrides={"channels": 2})
