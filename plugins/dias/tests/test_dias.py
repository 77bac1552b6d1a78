"""Tests of the DIAS plugin (METHODS.md §6): losses, sub-steps, BN quirks, shapes, engine runs."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from osrbench import engine, plugins
from osrbench.config import ENGINE_DEFAULTS, resolve
from osrbench.method import Context
from osrbench_dias import losses
from osrbench_dias.plugin import DEFAULTS, DIAS

K = 6


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def make_method(size: int = 8, k: int = K, **overrides) -> DIAS:
    cfg = {**ENGINE_DEFAULTS, **DEFAULTS, "image_size": size, **overrides}
    ctx = Context(
        num_classes=k, image_shape=(3, size, size), device=torch.device("cpu"), config=cfg,
        generator=torch.Generator().manual_seed(7), epochs=cfg["epochs"],
    )
    m = DIAS()
    m.setup(ctx)
    return m


def batch(size: int = 8, b: int = 8, k: int = K):
    g = torch.Generator().manual_seed(3)
    return torch.rand(b, 3, size, size, generator=g), torch.arange(b) % k


def log_softmax_rows(rows):
    out = []
    for r in rows:
        lse = math.log(sum(math.exp(v) for v in r))
        out.append([v - lse for v in r])
    return out


# ---------------------------------------------------------------------------------------------
# loss terms on fixed tensors, against hand computation
# ---------------------------------------------------------------------------------------------

LOGITS = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
LABELS = [0, 2]


def test_sce_half_has_peak_half_plus_half_over_k():
    ls = log_softmax_rows(LOGITS)
    kk = 3
    expected = 0.0
    for row, y in zip(ls, LABELS):
        q = [0.5 / kk + (0.5 if c == y else 0.0) for c in range(kk)]
        assert math.isclose(max(q), 0.5 + 0.5 / kk)
        expected += -sum(qc * lc for qc, lc in zip(q, row))
    expected /= 2
    got = losses.sce(torch.tensor(LOGITS), torch.tensor(LABELS), 0.5)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_sce_one_is_the_uniform_target():
    ls = log_softmax_rows(LOGITS)
    expected = sum(-sum(r) / 3 for r in ls) / 2
    z = torch.tensor(LOGITS)
    assert losses.sce(z, torch.tensor(LABELS), 1.0).item() == pytest.approx(expected, rel=1e-6)
    assert losses.sce(z, torch.tensor([1, 1]), 1.0).item() == pytest.approx(expected, rel=1e-6)  # labels ignored
    assert losses.sce(z, None, 1.0).item() == pytest.approx(expected, rel=1e-6)
    assert losses.sce(torch.zeros(2, 3), None, 1.0).item() == pytest.approx(math.log(3), rel=1e-6)  # min log K


def test_discriminator_loss():
    d_real, d_fake = torch.tensor([0.9, 0.6]), torch.tensor([0.2, 0.4])
    expected = -(math.log(0.9) + math.log(0.6)) / 2 - (math.log(0.8) + math.log(0.6)) / 2
    assert losses.discriminator_loss(d_real, d_fake).item() == pytest.approx(expected, rel=1e-6)


def test_generator_loss_subtracts_the_classifier_term():
    d_fake = torch.tensor([0.8, 0.3])
    ls = log_softmax_rows(LOGITS)
    adv = -(math.log(0.8) + math.log(0.3)) / 2
    cls = sum(-sum(r) / 3 for r in ls) / 2
    total, a, c = losses.generator_loss(d_fake, torch.tensor(LOGITS), torch.tensor(LABELS), 0.1, 1.0)
    assert a.item() == pytest.approx(adv, rel=1e-6)
    assert c.item() == pytest.approx(cls, rel=1e-6)
    assert total.item() == pytest.approx(adv - 0.1 * cls, rel=1e-6)  # MINUS beta * SCE_1
    # gradient: G is pushed towards *lower* uniform-target CE, i.e. confident fakes
    z = torch.tensor(LOGITS, requires_grad=True)
    losses.generator_loss(d_fake, z, None, 0.1, 1.0)[0].backward()
    p = torch.softmax(torch.tensor(LOGITS), 1)
    assert torch.allclose(z.grad, -0.1 * (p - 1 / 3) / 2, atol=1e-7)


def test_gan_classifier_loss_adds_the_classifier_term():
    ls_real = log_softmax_rows([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    ce = -(ls_real[0][1] + ls_real[1][2]) / 2
    ls_fake = log_softmax_rows(LOGITS)
    fake = sum(-sum(r) / 3 for r in ls_fake) / 2
    total, c, f = losses.gan_classifier_loss(
        torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([1, 2]), torch.tensor(LOGITS), 0.1, 1.0
    )
    assert (c.item(), f.item()) == (pytest.approx(ce, rel=1e-6), pytest.approx(fake, rel=1e-6))
    assert total.item() == pytest.approx(ce + 0.1 * fake, rel=1e-6)


def test_pull_loss_is_half_sum_of_mean_l1_with_stop_gradient():
    x1p = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], requires_grad=True)  # (1, 1, 2, 2)
    x1c = torch.tensor([[[[0.0, 2.5], [3.0, 1.0]]]], requires_grad=True)
    x2p = torch.tensor([[[[1.0]]], [[[-1.0]]]], requires_grad=True)  # (2, 1, 1, 1)
    x2c = torch.tensor([[[[0.5]]], [[[1.0]]]], requires_grad=True)
    l1a = (1.0 + 0.5 + 0.0 + 3.0) / 4
    l1b = (0.5 + 2.0) / 2
    got = losses.pull_loss(x1p, x1c, x2p, x2c)
    assert got.item() == pytest.approx(0.5 * (l1a + l1b), rel=1e-6)
    got.backward()
    assert x1c.grad is None and x2c.grad is None  # C's maps are targets only
    assert torch.allclose(x1p.grad, torch.tensor([[[[1.0, -1.0], [0.0, 1.0]]]]) * 0.5 / 4)
    total, ce, pull = losses.copycat_loss(
        torch.tensor(LOGITS), torch.tensor(LABELS), x1p, x1c, x2p, x2c, 2.0
    )
    ls = log_softmax_rows(LOGITS)
    ce_exp = -(ls[0][0] + ls[1][2]) / 2
    assert total.item() == pytest.approx(ce_exp + 2.0 * 0.5 * (l1a + l1b), rel=1e-6)


def test_fake_and_classifier_losses():
    easy = [[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]
    hard1 = [[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    hard2 = LOGITS
    y = [0, 2]

    def sce_hand(rows, alpha):
        tot = 0.0
        for r, lab in zip(log_softmax_rows(rows), y):
            q = [alpha / 3 + ((1 - alpha) if c == lab else 0.0) for c in range(3)]
            tot += -sum(qc * lc for qc, lc in zip(q, r))
        return tot / len(rows)

    expected = (sce_hand(easy, 1.0) + sce_hand(hard1, 0.5) + sce_hand(hard2, 0.5)) / 3
    t = torch.tensor
    lf = losses.fake_loss(t(easy), t(hard1), t(hard2), t(y), 1.0, 0.5)
    assert lf.item() == pytest.approx(expected, rel=1e-6)
    zc = [[0.2, -0.3, 0.1], [1.0, 0.0, 2.0]]
    total, ce = losses.classifier_loss(t(zc), t(y), lf, 0.1)
    assert ce.item() == pytest.approx(sce_hand(zc, 0.0), rel=1e-6)
    assert total.item() == pytest.approx(sce_hand(zc, 0.0) + 0.1 * expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# sub-steps: which network moves, modes, BN branches and the running-statistics quirk
# ---------------------------------------------------------------------------------------------


def snapshot(m: DIAS) -> dict[str, list[torch.Tensor]]:
    return {n: [p.detach().clone() for p in net.parameters()]
            for n, net in (("C", m.net), ("P", m.copycat), ("G", m.G), ("D", m.D))}


def changed(before, m: DIAS) -> set[str]:
    after = snapshot(m)
    return {n for n in before if any(not torch.equal(a, b) for a, b in zip(before[n], after[n]))}


def counts(net, branch: int) -> list[int]:
    return [int(getattr(net, f"bn{i}").bns[branch].num_batches_tracked) for i in range(1, 10)]


def all_counts(m: DIAS):
    return {(n, b): counts(net, b) for n, net in (("C", m.net), ("P", m.copycat)) for b in (0, 1)}


def delta(before, m):
    after = all_counts(m)
    return {key: [a - b for a, b in zip(after[key], before[key])] for key in before}


ZERO, ONE = [0] * 9, [1] * 9


def test_pass_a_substeps_move_only_their_network_and_use_bn_branch_1_for_fakes():
    m = make_method()
    x, y = batch()
    fake = m.G(torch.randn(x.shape[0], 100, 1, 1))

    before, c0 = snapshot(m), all_counts(m)
    d = m.step_d(x, fake)
    assert changed(before, m) == {"D"}
    assert delta(c0, m) == {("C", 0): ZERO, ("C", 1): ZERO, ("P", 0): ZERO, ("P", 1): ZERO}
    assert d.dim() == 0 and not d.requires_grad

    before, c0 = snapshot(m), all_counts(m)
    g = m.step_g(fake, y)
    assert changed(before, m) == {"G"}
    assert delta(c0, m) == {("C", 0): ZERO, ("C", 1): ONE, ("P", 0): ZERO, ("P", 1): ZERO}
    assert all(v.dim() == 0 and not v.requires_grad for v in g.values())
    assert g["g"].item() == pytest.approx(g["g_adv"].item() - 0.1 * g["g_cls"].item(), rel=1e-5)

    before, c0 = snapshot(m), all_counts(m)
    c = m.step_c_gan(x, y)
    assert changed(before, m) == {"C"}
    # real batch through branch 0, the fresh fakes through branch 1
    assert delta(c0, m) == {("C", 0): ONE, ("C", 1): ONE, ("P", 0): ZERO, ("P", 1): ZERO}
    assert c["c"].item() == pytest.approx(c["c_ce"].item() + 0.1 * c["c_gan"].item(), rel=1e-5)


def test_copycat_step_moves_only_p_with_c_in_eval():
    m = make_method()
    x, y = batch()
    m.gan_step(x, y)
    before, c0 = snapshot(m), all_counts(m)
    out = m.step_copycat(x, y)
    assert changed(before, m) == {"P"}
    assert delta(c0, m) == {("C", 0): ZERO, ("C", 1): ZERO, ("P", 0): ONE, ("P", 1): ZERO}
    assert out["p"].item() == pytest.approx(out["p_ce"].item() + out["pull"].item(), rel=1e-5)


def test_classifier_step_moves_only_c_and_updates_branch0_stats_1_2_3_times():
    m = make_method()
    x, y = batch()
    m.gan_step(x, y)
    m.step_copycat(x, y)
    before, c0 = snapshot(m), all_counts(m)
    out = m.step_classifier(x, y)
    assert changed(before, m) == {"C"}
    assert delta(c0, m) == {
        ("C", 0): [1, 1, 1, 2, 2, 2, 3, 3, 3], ("C", 1): ZERO, ("P", 0): ZERO, ("P", 1): ZERO,
    }
    assert out["c"].item() == pytest.approx(out["c_ce"].item() + 0.1 * out["fake"].item(), rel=1e-5)


def test_classifier_step_running_mean_follows_momentum_arithmetic():
    """bn1 sees the real batch; bn4 real then x1^P; bn7 real, x1^P then x2^P (momentum 0.1 each)."""
    m = make_method()
    x, y = batch()
    m.gan_step(x, y)
    m.step_copycat(x, y)
    inputs: dict[int, list[torch.Tensor]] = {1: [], 4: [], 7: []}
    hooks = [getattr(m.net, f"bn{i}").bns[0].register_forward_pre_hook(
        lambda mod, args, i=i: inputs[i].append(args[0].detach().clone())) for i in inputs]
    start = {i: getattr(m.net, f"bn{i}").bns[0].running_mean.clone() for i in inputs}
    m.step_classifier(x, y)
    for h in hooks:
        h.remove()
    assert [len(inputs[i]) for i in (1, 4, 7)] == [1, 2, 3]
    for i in inputs:
        r = start[i]
        for a in inputs[i]:
            r = 0.9 * r + 0.1 * a.mean(dim=(0, 2, 3))
        assert torch.allclose(getattr(m.net, f"bn{i}").bns[0].running_mean, r, atol=1e-6)


def test_modes_and_dropout_on_injected_paths():
    m = make_method()
    x, y = batch()
    calls: list[tuple[str, str, bool]] = []
    hooks = []
    for net_name, net in (("C", m.net), ("P", m.copycat)):
        for d in ("dr1", "dr2", "dr3"):
            hooks.append(getattr(net, d).register_forward_pre_hook(
                lambda mod, args, n=net_name, d=d: calls.append((n, d, mod.training))))
    m.step_copycat(x, y)
    assert sorted(calls) == sorted([("P", d, True) for d in ("dr1", "dr2", "dr3")]
                                   + [("C", d, False) for d in ("dr1", "dr2", "dr3")])
    calls.clear()
    m.step_classifier(x, y)
    # P eval (recomputed maps); C train: real pass + dropout on both injected paths
    assert sorted(calls) == sorted([("P", d, False) for d in ("dr1", "dr2", "dr3")]
                                   + [("C", "dr1", True), ("C", "dr2", True), ("C", "dr2", True),
                                      ("C", "dr3", True), ("C", "dr3", True), ("C", "dr3", True)])
    for h in hooks:
        h.remove()


@pytest.mark.parametrize("legacy", [True, False])
def test_legacy_zero_grad_moves_c_branch1_affine_in_classifier_step(legacy):
    """PyTorch 1.x zero_grad kept zeroed grads: branch-1 BN params still get momentum + decay."""
    m = make_method(legacy_zero_grad=legacy)
    x, y = batch()
    m.gan_step(x, y)
    w = m.net.bn5.bns[1].weight.detach().clone()
    buf = m.opt_c.state[m.net.bn5.bns[1].weight]["momentum_buffer"].clone()
    m.step_classifier(x, y)
    new = m.net.bn5.bns[1].weight.detach()
    if legacy:
        expected = w - 0.1 * (0.9 * buf + 1e-4 * w)  # SGD with grad 0: momentum and weight decay
        assert torch.allclose(new, expected, atol=1e-7)
    else:
        assert torch.equal(new, w)


def test_gan_step_fakes_are_fresh_for_the_c_step():
    m = make_method()
    x, y = batch()
    seen = []
    h = m.G.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].clone()))
    m.gan_step(x, y)
    h.remove()
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])  # z and fresh z'
    assert seen[0].shape == (x.shape[0], 100, 1, 1)


# ---------------------------------------------------------------------------------------------
# shapes of the hooks and injection points; GAN per size
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, mode, fake_size", [(8, "native", 8), (32, "reference", 32), (64, "reference", 32)])
def test_feature_hooks_injection_points_and_gan_per_size(size, mode, fake_size):
    m = make_method(size)
    x, y = batch(size, b=2)
    h1, h2, h3 = (-(-size // d) for d in (2, 4, 8))
    for net in (m.net, m.copycat):
        net.eval()
        with torch.no_grad():
            x1, x2, f, z = net.features(x, 0)
            assert x1.shape == (2, 128, h1, h1) and x2.shape == (2, 128, h2, h2)
            assert f.shape == (2, 128) and z.shape == (2, K)
            assert net.conv9(x2).shape[-1] == h3
            assert m.net.from_layer2(x1).shape == (2, K)
            assert m.net.from_layer3(x2).shape == (2, K)
            assert m.net.head(f).shape == (2, K)
    assert m.gan_mode == mode
    assert m.adaptations() == ({} if mode == "reference" else {"gan_mode": mode})
    with torch.no_grad():
        fake = m.G(torch.randn(2, 100, 1, 1))
    assert fake.shape == (2, 3, fake_size, fake_size)
    assert m.D(fake).shape == (2,) and m.D(x).shape == (2,)
    for phase in m.phases:
        out = m.train_step(phase, x, y)
        assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in out.values())


# ---------------------------------------------------------------------------------------------
# config, schedules, prediction, F1 rule
# ---------------------------------------------------------------------------------------------


def test_registered_spec_defaults_and_recipes():
    reg = plugins.get()
    spec = reg.method("dias")
    assert spec.default_recipe == "dias-release"
    for key, value in {
        "beta": 0.1, "lambda_fake": 0.1, "lambda_pull": 1.0, "alpha_hard": 0.5, "alpha_uniform": 1.0,
        "gan_lr": 2e-4, "gan_betas": [0.5, 0.999], "nz": 100, "lr": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "milestones": [60, 120, 180, 240], "gamma": 0.1, "epochs": 200,
        "batch_size": 64, "optim_mode": "sgd", "gan_mode": "auto",
    }.items():
        assert spec.defaults[key] == value, key
    _, tin = resolve(spec, reg.dataset("tiny_imagenet"))
    assert (tin["image_size"], tin["lr"], tin["epochs"], tin["optim_mode"]) == (32, 0.1, 200, "sgd")
    _, c10 = resolve(spec, reg.dataset("cifar10"))
    assert (c10["image_size"], c10["lr"], c10["epochs"]) == (32, 0.1, 200)
    _, digits = resolve(spec, reg.dataset("digits"))
    assert digits["epochs"] == 15 and digits["image_size"] == 8


def test_sgd_schedule_steps_once_per_epoch_for_both_optimisers():
    m = make_method()
    assert isinstance(m.opt_c, torch.optim.SGD) and isinstance(m.opt_p, torch.optim.SGD)
    assert m.opt_c is not m.opt_p
    lrs = {}
    for epoch in range(200):
        m.end_epoch(epoch)
        lrs[epoch + 1] = (m.opt_c.param_groups[0]["lr"], m.opt_p.param_groups[0]["lr"])
    for e, lr in ((59, 0.1), (60, 0.01), (119, 0.01), (120, 1e-3), (180, 1e-4)):
        assert lrs[e] == (pytest.approx(lr), pytest.approx(lr))
    g = m.opt_g.param_groups[0]
    assert isinstance(m.opt_g, torch.optim.Adam) and (g["lr"], g["betas"]) == (2e-4, (0.5, 0.999))
    assert m.opt_d.param_groups[0]["lr"] == 2e-4


def test_adam_mode_is_the_release_branch():
    m = make_method(optim_mode="adam")
    assert isinstance(m.opt_c, torch.optim.Adam) and isinstance(m.opt_p, torch.optim.Adam)
    grp = m.opt_c.param_groups[0]
    assert (grp["lr"], grp["betas"], grp["weight_decay"]) == (1e-3, (0.9, 0.999), 0.0)
    m.end_epoch(98)
    assert m.opt_p.param_groups[0]["lr"] == pytest.approx(1e-3)
    m.end_epoch(99)
    assert m.opt_p.param_groups[0]["lr"] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="optim_mode"):
        make_method(optim_mode="rmsprop")


@pytest.mark.parametrize(("epochs", "milestones", "drop_after"), [(10, [], 5), (31, [], 15), (10, [3], 3)])
def test_adam_mode_drops_the_lr_at_half_the_epochs_as_the_release(epochs, milestones, drop_after):
    """The release's Adam branch steps at max_epoch // 2 whatever the epoch count (not a fixed 100)."""
    m = make_method(optim_mode="adam", epochs=epochs, adam_milestones=milestones)
    m.end_epoch(drop_after - 2)
    assert m.opt_c.param_groups[0]["lr"] == pytest.approx(1e-3)
    m.end_epoch(drop_after - 1)
    assert m.opt_c.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_predict_scores_msp_float64_and_max_logit():
    m = make_method()
    x, _ = batch(b=4)
    m.net.train()
    pred = m.predict(x)
    assert not m.net.training
    with torch.no_grad():
        z = m.net(x, 0).double()
    assert torch.equal(pred.logits.double(), z)
    msp = (z.exp() / z.exp().sum(1, keepdim=True)).max(1).values
    assert pred.score.dtype == torch.float64
    assert torch.allclose(pred.score, msp, rtol=0, atol=1e-12)
    assert torch.equal(pred.scores["msp"], pred.score)
    assert torch.equal(pred.scores["mls"], z.max(1).values)


@pytest.mark.parametrize("k, theta", [(4, 0.575), (6, 0.5 / 6 + 0.5 - 0.05), (20, 0.475)])
def test_f1_rule_thresholds(k, theta):
    m = make_method(k=k)
    name, value = m.f1_rule()
    assert name == "score" and value == pytest.approx(theta, abs=1e-12)


def test_state_dict_round_trip():
    m = make_method()
    x, y = batch()
    m.gan_step(x, y)
    m.copycat_step(x, y)
    m.end_epoch(0)
    state = m.state_dict()
    assert set(state) == {"net", "copycat", "G", "D", "opt_c", "opt_p", "opt_g", "opt_d", "epoch"}
    other = make_method()
    other.load_state_dict(state)
    assert other.epoch == 1
    for a, b in zip(m.state_dict()["net"].values(), other.state_dict()["net"].values()):
        assert torch.equal(a, b)
    assert torch.equal(m.predict(x).logits, other.predict(x).logits)


# ---------------------------------------------------------------------------------------------
# end to end on digits through the engine, and exact resume
# ---------------------------------------------------------------------------------------------


def _request(out: Path, epochs: int, resume: str = "no") -> engine.RunRequest:
    return engine.RunRequest(method="dias", dataset="digits", epochs=epochs, out=out, device="cpu",
                             progress=False, resume=resume)


def _quiet(msg: str) -> None:
    pass


def test_digits_end_to_end_beats_chance(tmp_path):
    """One epoch of DIAS on the full digits split through the engine (~722 training images)."""
    rec = engine.run(_request(tmp_path, 1), log=_quiet).record
    assert rec.method == "dias" and rec.recipe == "dias-release"
    assert rec.adaptations == {"gan_mode": "native"}  # 8-px digits: native DCGAN chain
    assert rec.metrics["auroc"] > 0.6
    assert rec.metrics["acc"] > 0.5
    assert "macro_f1" in rec.metrics and rec.f1_rule == ("score", pytest.approx(0.5 / 6 + 0.45))
    assert set(rec.scores) == {"score", "msp", "mls"}
    scores = np.load(Path(rec.dir) / "scores.npz")
    for key in ("known_score", "unknown_score", "known_score_msp", "known_score_mls", "known_logits"):
        assert np.all(np.isfinite(scores[key])), key
    assert np.array_equal(scores["known_score"], scores["known_score_msp"])
    (row,) = rec.history
    assert {"gan/d", "gan/g", "gan/c", "copycat/p", "copycat/pull", "copycat/c", "copycat/fake"} <= set(row)


def _digits_subset_registry(every: int = 6) -> plugins.Plugins:
    """The installed plugins, with ``digits`` keeping every ``every``-th training image.

    DIAS costs ~18 classifier forward-equivalents per image and epoch, so the three runs of the
    resume test use ~120 training images (2 batches per pass) to stay within seconds on a CPU.
    """
    reg = plugins.Plugins()
    full = reg.datasets["digits"]

    def load(root, split, image_size):
        data = full.load(root, split, image_size)
        return dataclasses.replace(data, train_x=data.train_x[::every], train_y=data.train_y[::every])

    reg.datasets["digits"] = dataclasses.replace(full, load=load)
    return reg


def test_resume_is_exact(tmp_path):
    reg = _digits_subset_registry()
    straight = engine.run(_request(tmp_path / "straight", 3), registry=reg, log=_quiet).record
    assert straight.counts["train"] <= 128
    logs: list[str] = []
    engine.run(_request(tmp_path / "resumed", 2), registry=reg, log=logs.append)
    resumed = engine.run(_request(tmp_path / "resumed", 3, resume="yes"), registry=reg, log=logs.append).record
    assert any("resuming" in msg for msg in logs)
    a = np.load(Path(straight.dir) / "scores.npz")
    b = np.load(Path(resumed.dir) / "scores.npz")
    assert set(a.files) == set(b.files)
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key
    assert resumed.history == straight.history
    assert resumed.metrics == straight.metrics
