"""The ARPL / ARPL+CS plugin (METHODS.md §5): losses, step isolation, BN branches, GAN sizes,
end-to-end runs on digits, exact resume and recipes."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("osrbench_arpl")

from osrbench import config as configmod  # noqa: E402
from osrbench import engine, plugins  # noqa: E402
from osrbench.config import ENGINE_DEFAULTS  # noqa: E402
from osrbench.method import Context  # noqa: E402
from osrbench_arpl.arpl import (  # noqa: E402
    ARPL,
    ARPLCS,
    CS_DEFAULTS,
    DEFAULTS,
    arpl_logits,
    arpl_loss,
    fake_loss,
)

K = 4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _method(cls=ARPLCS, size=8, k=K, seed=7, **overrides):
    defaults = CS_DEFAULTS if cls is ARPLCS else DEFAULTS
    cfg = {**ENGINE_DEFAULTS, **defaults, "image_size": size, "epochs": 10, **overrides}
    m = cls()
    m.setup(Context(k, (3, size, size), torch.device("cpu"), cfg, torch.Generator().manual_seed(seed), 10))
    return m


def _batch(n=12, size=8, k=K):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % k


# ------------------------------------------------------------------------ hand-computed losses

# f (B=2, D=2), P (K=2), labels y = [0, 1]:
#   d_e = ||f - P_k||^2 / 2:  f1 = (1, 0): [0.5, 0.5];  f2 = (0, 2): [2, 1]
#   d_d = f . P_k:            f1: [0, 1];             f2: [0, 2]
#   z = d_e - d_d:            f1: [0.5, -0.5];        f2: [2, -1]
F_ = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
P_ = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
Y_ = torch.tensor([0, 1])


def test_logits_are_distance_minus_dot_by_hand():
    z = arpl_logits(F_, P_)
    assert torch.allclose(z, torch.tensor([[0.5, -0.5], [2.0, -1.0]], dtype=torch.float64), atol=1e-12)


def test_logit_structure_on_random_features():
    f, p = torch.randn(5, 128, dtype=torch.float64), 0.1 * torch.randn(3, 128, dtype=torch.float64)
    d_e = ((f[:, None, :] - p[None, :, :]) ** 2).mean(2)  # direct form, not the expanded one
    d_d = f @ p.t()
    z = arpl_logits(f, p)
    assert torch.allclose(z, d_e - d_d, atol=1e-10)
    # Sign: the dot term enters with a minus; a zero feature gets z_k = ||P_k||^2 / D >= 0.
    z0 = arpl_logits(torch.zeros(1, 128, dtype=torch.float64), p)
    assert torch.allclose(z0[0], (p**2).sum(1) / 128)
    assert torch.all(z0 > 0)
    # Flipping the points flips the dot term: z(f, P) - z(f, -P) = d_e(P) - d_e(-P) - 2 f.P.
    d_e_neg = ((f[:, None, :] + p[None, :, :]) ** 2).mean(2)
    assert torch.allclose(arpl_logits(f, p) - arpl_logits(f, -p), d_e - d_e_neg - 2 * d_d, atol=1e-10)


@pytest.mark.parametrize(
    "radius,temp,expected_reg",
    [
        # hinge active: max(0, 0.5 - 0.5 + 1) = 1, max(0, 1 - 0.5 + 1) = 1.5 -> mean 1.25
        (0.5, 1.0, 1.25),
        # hinge inactive for both samples (R = 5): 0
        (5.0, 1.0, 0.0),
        # temperature 2 divides the logits inside CE only
        (0.5, 2.0, 1.25),
    ],
)
def test_arpl_loss_by_hand(radius, temp, expected_reg):
    r = torch.tensor([radius], dtype=torch.float64)
    logits, loss = arpl_loss(F_, Y_, P_, r, temp=temp, weight_pl=0.1, margin=1.0)
    # CE of z/τ: sample 1 true class 0 with z = [0.5, -0.5]; sample 2 true class 1 with z = [2, -1].
    ce1 = -math.log(math.exp(0.5 / temp) / (math.exp(0.5 / temp) + math.exp(-0.5 / temp)))
    ce2 = -math.log(math.exp(-1.0 / temp) / (math.exp(2.0 / temp) + math.exp(-1.0 / temp)))
    expected = (ce1 + ce2) / 2 + 0.1 * expected_reg
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert torch.allclose(logits, torch.tensor([[0.5, -0.5], [2.0, -1.0]], dtype=torch.float64))


def test_arpl_loss_with_mls_label_smoothing_by_hand():
    r = torch.tensor([0.5], dtype=torch.float64)
    _, loss = arpl_loss(F_, Y_, P_, r, label_smoothing=0.9)
    # K = 2: target 0.1 on the true class, 0.9 / (K - 1) = 0.9 on the other.
    ls1 = [0.5 - math.log(math.exp(0.5) + math.exp(-0.5)), -0.5 - math.log(math.exp(0.5) + math.exp(-0.5))]
    ls2 = [2.0 - math.log(math.exp(2.0) + math.exp(-1.0)), -1.0 - math.log(math.exp(2.0) + math.exp(-1.0))]
    ce = (-(0.1 * ls1[0] + 0.9 * ls1[1]) - (0.9 * ls2[0] + 0.1 * ls2[1])) / 2
    assert loss.item() == pytest.approx(ce + 0.1 * 1.25, abs=1e-12)


def test_fake_loss_by_hand():
    # Distance-only softmax, no dot term, no temperature: f1 d_e = [0.5, 0.5] -> p = [1/2, 1/2];
    # f2 d_e = [2, 1] -> p = [e/(e+1), 1/(e+1)]. F = exp(mean_i sum_k p log p) (exp after the mean).
    e = math.e
    h1 = math.log(0.5)
    p = [e / (e + 1), 1 / (e + 1)]
    h2 = p[0] * math.log(p[0]) + p[1] * math.log(p[1])
    expected = math.exp((h1 + h2) / 2)
    got = fake_loss(F_, P_).item()
    assert got == pytest.approx(expected, abs=1e-12)
    # Not the softmax of the full logits (z2 = [2, -1]) and not the mean of per-sample exps.
    q = [math.exp(2) / (math.exp(2) + math.exp(-1)), math.exp(-1) / (math.exp(2) + math.exp(-1))]
    wrong = math.exp((h1 + q[0] * math.log(q[0]) + q[1] * math.log(q[1])) / 2)
    assert abs(got - wrong) > 1e-4
    assert abs(got - (math.exp(h1) + math.exp(h2)) / 2) > 1e-4


def test_fake_loss_is_one_over_k_for_equidistant_features():
    pts = torch.eye(3, dtype=torch.float64)  # every point at the same distance from f = 0
    assert fake_loss(torch.zeros(4, 3, dtype=torch.float64), pts).item() == pytest.approx(1 / 3, abs=1e-12)


# ------------------------------------------------------------------------ parameters and steps


def _snapshot(m: ARPLCS) -> dict[str, dict[str, torch.Tensor]]:
    return {
        "G": {k: v.detach().clone() for k, v in m.G.named_parameters()},
        "D": {k: v.detach().clone() for k, v in m.D.named_parameters()},
        "net": {k: v.detach().clone() for k, v in m.net.named_parameters()},
        "rp": {k: v.detach().clone() for k, v in m.rp.named_parameters()},
    }


def _changed(a, b) -> dict[str, bool]:
    return {part: any(not torch.equal(a[part][k], b[part][k]) for k in a[part]) for part in a}


def _bn_stats(net, branch: int) -> list[torch.Tensor]:
    out = []
    for i in range(1, 10):
        bn = getattr(net, f"bn{i}").bns[branch]
        out += [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]
    return out


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_parameters_points_radius_and_optimisers():
    m = _method()
    assert m.rp.points.shape == (K, 128) and m.rp.radius.shape == (1,)
    assert float(m.rp.radius.detach()) == 0.0
    assert 0.05 < float(m.rp.points.detach().std()) < 0.2  # 0.1 * N(0, 1)
    owned = {id(p) for g in m.opt.param_groups for p in g["params"]}
    assert id(m.rp.points) in owned and id(m.rp.radius) in owned
    assert all(id(p) in owned for p in m.net.parameters())
    assert all(g["weight_decay"] == 1e-4 for g in m.opt.param_groups)  # weight decay acts on P, R
    assert {id(p) for g in m.optG.param_groups for p in g["params"]} == {id(p) for p in m.G.parameters()}
    assert {id(p) for g in m.optD.param_groups for p in g["params"]} == {id(p) for p in m.D.parameters()}
    for opt in (m.optG, m.optD):
        assert opt.param_groups[0]["lr"] == 2e-4 and opt.param_groups[0]["betas"] == (0.5, 0.999)
        assert opt.param_groups[0]["weight_decay"] == 0
    assert m.net.bn_branches == 2 and _method(ARPL).net.bn_branches == 1
    assert ARPLCS.phases == ("cs", "arpl") and ARPL.phases == ("arpl",)


def test_each_optimiser_changes_only_what_it_owns_and_bn_branches_split():
    m = _method()
    x, y = _batch()
    m._train_mode()
    fake = m.G(m.noise(x.shape[0]))
    s0, b0, b1 = _snapshot(m), _bn_stats(m.net, 0), _bn_stats(m.net, 1)

    m.d_step(x, fake)
    s1 = _snapshot(m)
    assert _changed(s0, s1) == {"G": False, "D": True, "net": False, "rp": False}
    assert _same(b0, _bn_stats(m.net, 0)) and _same(b1, _bn_stats(m.net, 1))  # D step never runs C

    m.g_step(fake)
    s2 = _snapshot(m)
    assert _changed(s1, s2) == {"G": True, "D": False, "net": False, "rp": False}
    # Nothing but G received a gradient from the G loss, so no later step can be affected by it.
    assert all(p.grad is None for mod in (m.net, m.rp) for p in mod.parameters())
    # The fake batch went through branch 1: branch-1 statistics moved, branch 0 untouched.
    assert _same(b0, _bn_stats(m.net, 0))
    assert not _same(b1, _bn_stats(m.net, 1))
    b1 = _bn_stats(m.net, 1)
    g_grads = [p.grad.clone() for p in m.G.parameters()]

    m.classifier_step(x, y)
    s3 = _snapshot(m)
    assert _changed(s2, s3) == {"G": False, "D": False, "net": True, "rp": True}
    assert not torch.equal(s2["rp"]["points"], s3["rp"]["points"])
    assert not torch.equal(s2["rp"]["radius"], s3["rp"]["radius"])
    assert torch.equal(s2["net"]["fc.weight"], s3["net"]["fc.weight"])  # the head is unused
    # G was neither stepped nor given a gradient (its grads are still those of its own step).
    assert all(torch.equal(g, p.grad) for g, p in zip(g_grads, m.G.parameters()))
    # Real batch -> branch 0, fresh fake batch -> branch 1: both moved by exactly one batch.
    assert not _same(b0, _bn_stats(m.net, 0)) and not _same(b1, _bn_stats(m.net, 1))
    assert int(m.net.bn1.bns[0].num_batches_tracked) == 1 and int(m.net.bn1.bns[1].num_batches_tracked) == 2
    b0, b1 = _bn_stats(m.net, 0), _bn_stats(m.net, 1)

    out = m.train_step("arpl", x, y)  # plain pass: real images only, branch 0
    s4 = _snapshot(m)
    assert _changed(s3, s4) == {"G": False, "D": False, "net": True, "rp": True}
    assert not _same(b0, _bn_stats(m.net, 0)) and _same(b1, _bn_stats(m.net, 1))
    assert set(out) == {"loss"} and out["loss"].dim() == 0 and not out["loss"].requires_grad


def test_plain_pass_moves_branch1_bn_like_the_release_zero_grad():
    """Release quirk (PyTorch < 2 zero_grad zero-fills): once pass CS gave the branch-1 BN
    parameters a gradient, the plain pass still applies SGD momentum + weight decay to them."""
    m = _method()
    x, y = _batch()
    b1 = {n: p for n, p in m.net.named_parameters() if ".bns.1." in n}
    assert len(b1) == 18
    before = {n: p.detach().clone() for n, p in b1.items()}
    m.train_step("arpl", x, y)  # no CS step yet: branch 1 never had a gradient, nothing moves
    assert all(b1[n].grad is None and torch.equal(before[n], b1[n]) for n in b1)

    m.train_step("cs", x, y)
    fc = m.net.fc.weight.detach().clone()
    before = {n: p.detach().clone() for n, p in b1.items()}
    bufs = {n: m.opt.state[p]["momentum_buffer"].clone() for n, p in b1.items()}
    m.train_step("arpl", x, y)
    for n, p in b1.items():
        assert torch.equal(p.grad, torch.zeros_like(p))
        expected = before[n] - 0.1 * (0.9 * bufs[n] + 1e-4 * before[n])  # SGD: buf = 0.9 buf + wd p
        assert torch.allclose(p.detach(), expected, atol=1e-7), n
        assert not torch.equal(p.detach(), before[n])
    assert m.net.fc.weight.grad is None and torch.equal(m.net.fc.weight.detach(), fc)


def test_cs_step_returns_detached_scalars_and_uses_the_run_generator():
    m = _method()
    x, y = _batch()
    state = m.generator.get_state()
    out = m.train_step("cs", x, y)
    assert set(out) == {"loss", "g", "d"}
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in out.values())
    assert not torch.equal(state, m.generator.get_state())  # two noise draws came from ctx.generator
    with pytest.raises(ValueError):
        m.train_step("nope", x, y)


def test_schedule_is_a_function_of_the_epoch():
    m = _method()
    assert m.opt.param_groups[0]["lr"] == pytest.approx(0.1)
    m.end_epoch(28)
    assert m.epoch == 29 and m.opt.param_groups[0]["lr"] == pytest.approx(0.1)
    m.end_epoch(29)
    assert m.epoch == 30 and all(g["lr"] == pytest.approx(0.01) for g in m.opt.param_groups)
    assert m.optG.param_groups[0]["lr"] == 2e-4 and m.optD.param_groups[0]["lr"] == 2e-4
    assert m.state_dict()["epoch"] == 30


def test_predict_scores_raw_max_logit_in_eval_mode():
    m = _method()
    x, y = _batch()
    m.train_step("cs", x, y)
    pred = m.predict(x)
    assert not m.net.training
    with torch.no_grad():
        z = arpl_logits(m.net.pooled(x, 0), m.rp.points)
    assert torch.equal(pred.logits, z)
    assert pred.score.dtype == torch.float64 and torch.equal(pred.score, z.double().max(1).values)
    assert torch.equal(pred.scores["mls"], pred.score)
    msp = torch.softmax(z.double(), 1).max(1).values
    assert pred.scores["msp"].dtype == torch.float64 and torch.allclose(pred.scores["msp"], msp)
    name, theta = m.f1_rule()
    assert name == "msp" and theta == pytest.approx(0.5 / K + 0.5 - 0.05)


# ------------------------------------------------------------------------ GAN sizes


def test_gan_shapes_for_every_registered_image_size():
    sizes = {spec.image_size for spec in plugins.get().datasets.values()}
    assert sizes <= {8, 32, 64, 224, 448}, sizes  # extend the expectations below if a dataset adds a size
    # mode, ConvT layers in G; the SSB sizes (224 ImageNet, 448 fine-grained) wrap the 32-px pair
    expect = {8: ("native", 2), 32: ("reference", 4), 64: ("reference", 5), 224: ("wrap", 4), 448: ("wrap", 4)}
    for size in sorted(sizes | set(expect)):
        m = _method(size=size)
        mode, n_convt = expect[size]
        assert m.gan_mode == mode
        assert sum(isinstance(layer, nn.ConvTranspose2d) for layer in m.G.modules()) == n_convt
        m._train_mode()
        with torch.no_grad():
            fake = m.G(m.noise(2))
            assert fake.shape == (2, 3, size, size)
            assert float(fake.min()) >= 0.0 and float(fake.max()) <= 1.0
            assert m.D(fake).shape == (2,)
            d_map = m.D.main(fake)
        if mode == "reference":
            # The release's D for both sizes: 32 px ends at 1x1, 64 px at 5x5 (then pooled).
            assert d_map.shape[1:] == (1024, *(2 * ((1 if size == 32 else 5),)))
            assert m.adaptations() == {}
        else:
            assert m.adaptations()["gan_mode"] == mode
            assert m.adaptations()["gan_image_size"] == [size, size]
    assert "gan_range" in _method(size=32, normalize="cifar").adaptations()


# ------------------------------------------------------------------------ exact resume


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # what the engine's safe checkpoint loading does


@pytest.mark.parametrize("cls", [ARPL, ARPLCS])
def test_state_dict_round_trip_is_exact(cls):
    m = _method(cls, seed=7)
    x, y = _batch()
    for phase in m.phases:
        m.train_step(phase, x, y)
    m.end_epoch(0)
    state = _roundtrip(m.state_dict())

    fresh = _method(cls, seed=99)
    fresh.load_state_dict(state)
    assert fresh.epoch == 1
    a, b = m.predict(x), fresh.predict(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.score, b.score)
    assert all(torch.equal(a.scores[k], b.scores[k]) for k in a.scores)

    # Training continues identically from the same RNG states.
    if cls is ARPLCS:
        fresh.generator.set_state(m.generator.get_state())
    rng = torch.get_rng_state()
    out_a = [m.train_step(ph, x, y) for ph in m.phases]
    torch.set_rng_state(rng)
    out_b = [fresh.train_step(ph, x, y) for ph in fresh.phases]
    for da, db in zip(out_a, out_b):
        assert all(torch.equal(da[k], db[k]) for k in da)
    sa, sb = m.state_dict(), fresh.state_dict()
    assert set(sa) == set(sb)
    for part in sa:
        if part.startswith("opt"):
            continue
        if isinstance(sa[part], dict):
            assert all(torch.equal(sa[part][k], sb[part][k]) for k in sa[part]), part
        else:
            assert sa[part] == sb[part], part


# ------------------------------------------------------------------------ recipes


def test_recipes_resolve():
    reg = plugins.get()
    arpl, cs = reg.method("arpl"), reg.method("arpl-cs")
    tin, cifar, mnist = reg.dataset("tiny_imagenet"), reg.dataset("cifar10"), reg.dataset("mnist")
    assert arpl.default_recipe == cs.default_recipe == "arpl-release"
    for spec in (arpl, cs):
        name, cfg = configmod.resolve(spec, tin)
        assert name == "arpl-release"
        assert (cfg["optimizer"], cfg["lr"], cfg["weight_decay"]) == ("adam", 1e-3, 0.0)
        assert cfg["milestones"] == [30, 60, 90, 120] and cfg["schedule"] == "multistep"
        assert cfg["epochs"] == 100 and cfg["batch_size"] == 64 and cfg["image_size"] == 64
        _, cfg = configmod.resolve(spec, cifar)
        assert (cfg["optimizer"], cfg["lr"], cfg["weight_decay"], cfg["momentum"]) == ("sgd", 0.1, 1e-4, 0.9)
        assert (cfg["temp"], cfg["weight_pl"], cfg["margin"], cfg["label_smoothing"]) == (1.0, 0.1, 1.0, 0.0)
        assert cfg["normalize"] == "none" and cfg["randaugment"] == 0

        _, cfg = configmod.resolve(spec, tin, "mls-paper")
        assert (cfg["optimizer"], cfg["lr"], cfg["weight_decay"], cfg["label_smoothing"]) == ("adam", 1e-3, 0.0, 0.9)
        assert (cfg["epochs"], cfg["batch_size"], cfg["schedule"], cfg["normalize"]) == (600, 128, "mls-cosine", "cifar")
        assert cfg["randaugment"] == 9
        _, cfg = configmod.resolve(spec, mnist, "mls-paper")
        assert cfg["randaugment"] == 8 and cfg["label_smoothing"] == 0.0 and cfg["optimizer"] == "sgd"
    assert configmod.resolve(cs, cifar, "mls-paper")[1]["randaugment"] == 15
    assert configmod.resolve(arpl, cifar, "mls-paper")[1]["randaugment"] == 6
    _, cfg = configmod.resolve(cs, cifar)
    assert (cfg["beta"], cfg["gan_lr"], cfg["gan_betas"], cfg["nz"], cfg["gan_mode"]) == (0.1, 2e-4, [0.5, 0.999], 100, "auto")
    assert "beta" not in arpl.defaults


# ------------------------------------------------------------------------ end to end on digits


@pytest.mark.parametrize("method,epochs", [("arpl", 2), ("arpl-cs", 1)])
def test_digits_end_to_end_beats_chance(tmp_path, method, epochs):
    req = engine.RunRequest(method=method, dataset="digits", epochs=epochs, out=tmp_path, device="cpu", progress=False)
    rec = engine.run(req, log=lambda msg: None).record
    assert rec.metrics["auroc"] > 0.6, rec.metrics
    assert rec.metrics["acc"] > 0.5
    assert rec.f1_rule == ("msp", pytest.approx(0.5 / 6 + 0.5 - 0.05)) and "macro_f1" in rec.metrics
    scores = np.load(f"{rec.dir}/scores.npz")
    for key in ("known_score", "unknown_score", "known_score_msp", "unknown_score_msp"):
        assert np.all(np.isfinite(scores[key]))
    assert np.allclose(scores["known_score"], scores["known_logits"].max(1))
    phases = ["arpl/loss"] if method == "arpl" else ["cs/loss", "cs/g", "cs/d", "arpl/loss"]
    assert all(set(phases) <= set(row) and all(np.isfinite(row[p]) for p in phases) for row in rec.history)
    if method == "arpl-cs":
        assert rec.adaptations["gan_mode"] == "native"  # 8 px digits: no reference GAN
    else:
        assert rec.adaptations == {}
