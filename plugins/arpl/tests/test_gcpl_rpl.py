"""GCPL and RPL of the ARPL plugin (METHODS.md §5.3): losses by hand and with explicit loops, step
by step against replicas of the release's criteria, the optimiser, initialisation, prediction, the
conformance suite, exact resume, release files, recipes and digits runs."""

from __future__ import annotations

import copy
import io
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("osrbench_arpl")

from osrbench import cli, engine, layouts, plugins, protocols, records, session  # noqa: E402
from osrbench import config as configmod  # noqa: E402
from osrbench.config import ENGINE_DEFAULTS  # noqa: E402
from osrbench.data.stream import to_input  # noqa: E402
from osrbench.evaluation import BATCH  # noqa: E402
from osrbench.method import Context  # noqa: E402
from osrbench.testing import CHECKS, run_check  # noqa: E402
from osrbench_arpl.gcpl_rpl import CENTRE_DEFAULTS, GCPL, RPL, class_distances, gcpl_loss, rpl_loss  # noqa: E402
from osrbench_arpl.arpl import ARPL, DEFAULTS  # noqa: E402

K = 4
METHODS = {"gcpl": GCPL, "rpl": RPL}


def _method(cls, size=8, k=K, seed=7, **overrides):
    defaults = DEFAULTS if cls is ARPL else CENTRE_DEFAULTS
    cfg = {**ENGINE_DEFAULTS, **defaults, "image_size": size, "epochs": 10, **overrides}
    m = cls()
    m.setup(Context(k, (3, size, size), torch.device("cpu"), cfg, torch.Generator().manual_seed(seed), 10))
    return m


def _batch(n=12, size=8, k=K, dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, 3, size, size, generator=g).to(dtype), torch.arange(n) % k


# ------------------------------------------------------------------------ independent loop versions


def _loop_distances(f, c, k):
    """d[i][class] = mean over the class's M centres (rows class*M + m) of sum_j (f_ij - c_j)^2 / D."""
    b, d = len(f), len(f[0])
    m = len(c) // k
    out = []
    for i in range(b):
        row = []
        for cls in range(k):
            total = 0.0
            for r in range(cls * m, cls * m + m):
                total += sum((f[i][j] - c[r][j]) ** 2 for j in range(d)) / d
            row.append(total / m)
        out.append(row)
    return out


def _loop_ce(z, y, temp):
    """mean_i of -log softmax(z_i / temp)[y_i]."""
    total = 0.0
    for row, t in zip(z, y):
        total += math.log(sum(math.exp(v / temp) for v in row)) - row[t] / temp
    return total / len(z)


def _loop_gcpl(f, y, c, k, temp, lam):
    d = _loop_distances(f, c, k)
    z = [[-v for v in row] for row in d]
    b, dim = len(f), len(f[0])
    pull = sum((f[i][j] - c[y[i]][j]) ** 2 for i in range(b) for j in range(dim)) / (b * dim) / 2
    return z, _loop_ce(z, y, temp) + lam * pull


def _loop_rpl(f, y, c, r, k, temp, lam):
    d = _loop_distances(f, c, k)
    b, dim = len(f), len(f[0])
    m = [sum((f[i][j] - c[y[i]][j]) ** 2 for j in range(dim)) / dim for i in range(b)]
    reg = sum((mi - r) ** 2 for mi in m) / b
    return d, _loop_ce(d, y, temp) + lam * reg


# ------------------------------------------------------------------------ hand-computed losses

# f (B=2, D=2), labels y = [0, 1].
F_ = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
Y_ = torch.tensor([0, 1])
# One centre per class: c0 = (0, 0), c1 = (1, 1).
#   d = ||f - c||^2 / 2:  f1: [1/2, 1/2];  f2: [4/2, 2/2] = [2, 1]
C1 = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
# Two centres per class (class-major rows): class 0 = rows 0, 1; class 1 = rows 2, 3.
#   rows:  f1 -> [0.5, 0.5, 0.5, 2.5];  f2 -> [2, 4, 1, 0];  class means: f1 [0.5, 1.5], f2 [3, 0.5]
C2 = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [0.0, 2.0]], dtype=torch.float64)


def test_distances_by_hand_one_and_two_centres_per_class():
    assert torch.allclose(class_distances(F_, C1, 2), torch.tensor([[0.5, 0.5], [2.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(class_distances(F_, C2, 2), torch.tensor([[0.5, 1.5], [3.0, 0.5]], dtype=torch.float64))


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_gcpl_loss_by_hand_one_centre(temp):
    logits, loss = gcpl_loss(F_, Y_, C1, 2, temp=temp, weight_pl=0.1)
    assert torch.allclose(logits, torch.tensor([[-0.5, -0.5], [-2.0, -1.0]], dtype=torch.float64))
    # CE of -d/τ: sample 1 (true 0) z = [-.5, -.5]; sample 2 (true 1) z = [-2, -1].
    ce1 = -math.log(math.exp(-0.5 / temp) / (2 * math.exp(-0.5 / temp)))  # = log 2
    ce2 = -math.log(math.exp(-1.0 / temp) / (math.exp(-2.0 / temp) + math.exp(-1.0 / temp)))
    # MSE(f, c_y) / 2: (f1 - c0)^2 = (1, 0), (f2 - c1)^2 = (1, 1): mean over B*D = 3/4, halved 3/8.
    expected = (ce1 + ce2) / 2 + 0.1 * 3 / 8
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    if temp == 1.0:
        assert loss.item() == pytest.approx((math.log(2) + math.log(1 + math.exp(-1))) / 2 + 0.0375, abs=1e-12)


@pytest.mark.parametrize("radius", [0.0, 0.25])
def test_rpl_loss_by_hand_one_centre(radius):
    r = torch.tensor([radius], dtype=torch.float64)
    logits, loss = rpl_loss(F_, Y_, C1, r, 2, temp=1.0, weight_pl=0.1)
    assert torch.allclose(logits, torch.tensor([[0.5, 0.5], [2.0, 1.0]], dtype=torch.float64))  # +d
    # CE of +d: sample 1 log 2; sample 2 (true 1, z = [2, 1]) log(1 + e).
    ce = (math.log(2) + math.log(1 + math.e)) / 2
    # m = mean_j (f - c_y)^2 = [1/2, 1]; mean (m - R)^2.
    reg = ((0.5 - radius) ** 2 + (1.0 - radius) ** 2) / 2
    assert loss.item() == pytest.approx(ce + 0.1 * reg, abs=1e-12)
    assert reg == {0.0: 0.625, 0.25: 0.3125}[radius]


def test_gcpl_and_rpl_losses_by_hand_two_centres_per_class():
    # Class distances [[0.5, 1.5], [3, 0.5]] (mean over each class's two centres).
    logits, loss = gcpl_loss(F_, Y_, C2, 2, weight_pl=0.1)
    assert torch.allclose(logits, -torch.tensor([[0.5, 1.5], [3.0, 0.5]], dtype=torch.float64))
    ce = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-2.5))) / 2
    # Release quirk: the own centre is centers[labels], row y of the 4-row table: row 0 = (0, 0) for
    # sample 1 and row 1 = (2, 0) (class 0's second centre) for sample 2: squares (1, 0) and (4, 4).
    pull = (1 + 0 + 4 + 4) / 4 / 2
    assert loss.item() == pytest.approx(ce + 0.1 * pull, abs=1e-12)

    logits, loss = rpl_loss(F_, Y_, C2, torch.zeros(1, dtype=torch.float64), 2, weight_pl=0.1)
    assert torch.allclose(logits, torch.tensor([[0.5, 1.5], [3.0, 0.5]], dtype=torch.float64))
    ce = (math.log(1 + math.e) + math.log(1 + math.exp(2.5))) / 2
    m = [1 / 2, 8 / 2]  # rows 0 and 1 again
    assert loss.item() == pytest.approx(ce + 0.1 * (m[0] ** 2 + m[1] ** 2) / 2, abs=1e-12)


@pytest.mark.parametrize("num_centers", [1, 2, 3])
@pytest.mark.parametrize("temp", [1.0, 0.5])
def test_losses_match_explicit_loops_on_random_cases(num_centers, temp):
    g = torch.Generator().manual_seed(num_centers)
    k, b, d = 3, 5, 7
    f = torch.randn(b, d, generator=g, dtype=torch.float64)
    c = 0.5 * torch.randn(k * num_centers, d, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 1, 0])
    r = 0.3
    fl, cl, yl = f.tolist(), c.tolist(), y.tolist()
    z, loss = gcpl_loss(f, y, c, k, temp=temp, weight_pl=0.1)
    z_loop, loss_loop = _loop_gcpl(fl, yl, cl, k, temp, 0.1)
    assert np.allclose(z.numpy(), z_loop, atol=1e-12) and loss.item() == pytest.approx(loss_loop, abs=1e-12)
    z, loss = rpl_loss(f, y, c, torch.tensor([r], dtype=torch.float64), k, temp=temp, weight_pl=0.1)
    z_loop, loss_loop = _loop_rpl(fl, yl, cl, r, k, temp, 0.1)
    assert np.allclose(z.numpy(), z_loop, atol=1e-12) and loss.item() == pytest.approx(loss_loop, abs=1e-12)


def test_label_smoothing_applies_to_the_ce_term_only():
    r = torch.zeros(1, dtype=torch.float64)
    _, plain = rpl_loss(F_, Y_, C1, r, 2)
    _, smooth = rpl_loss(F_, Y_, C1, r, 2, label_smoothing=0.9)
    # K = 2: target 0.1 on the true class, 0.9 on the other; z = [.5, .5] and [2, 1].
    ls2 = [2.0 - math.log(math.exp(2) + math.e), 1.0 - math.log(math.exp(2) + math.e)]
    ce = (math.log(2) - (0.9 * ls2[0] + 0.1 * ls2[1])) / 2
    assert smooth.item() == pytest.approx(ce + 0.1 * 0.625, abs=1e-12)
    assert plain.item() != pytest.approx(smooth.item())


# ------------------------------------------------------------------------ step by step against the release


class ReleaseDist(nn.Module):
    """The release's ``Dist`` (loss/Dist.py): K*M centres; l2 expanded, over D; reshape (B, K, M), mean over M."""

    def __init__(self, k: int, m: int, d: int = 128) -> None:
        super().__init__()
        self.k, self.m = k, m
        self.centers = nn.Parameter(0.1 * torch.randn(k * m, d))

    def forward(self, x):
        c2 = self.centers.pow(2).sum(1, keepdim=True)
        dist = (x.pow(2).sum(1, keepdim=True) - 2 * x @ self.centers.t() + c2.t()) / float(x.shape[1])
        return dist.reshape(-1, self.k, self.m).mean(2)


class ReleaseGCPLoss(nn.Module):
    def __init__(self, k, m=1):
        super().__init__()
        self.Dist = ReleaseDist(k, m)

    def forward(self, x, labels):
        dist = self.Dist(x)
        loss = F.cross_entropy(-dist / 1.0, labels)
        return loss + 0.1 * F.mse_loss(x, self.Dist.centers[labels, :]) / 2


class ReleaseRPLoss(nn.Module):
    def __init__(self, k, m=1):
        super().__init__()
        self.Dist = ReleaseDist(k, m)
        self.radius = nn.Parameter(torch.zeros(1))

    def forward(self, x, labels):
        dist = self.Dist(x)
        loss = F.cross_entropy(dist / 1.0, labels)
        own = (x - self.Dist.centers[labels, :]).pow(2).mean(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mse_loss warns about broadcasting the (1,) radius, as in the release
            return loss + 0.1 * F.mse_loss(own, self.radius)


@pytest.fixture
def float64():
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name,num_centers", [("gcpl", 1), ("rpl", 1), ("rpl", 2)])
def test_steps_equal_the_release_criterion_and_optimiser(float64, name, num_centers):
    m = _method(METHODS[name], num_centers=num_centers)
    net = copy.deepcopy(m.net)
    crit = (ReleaseGCPLoss if name == "gcpl" else ReleaseRPLoss)(K, num_centers)
    with torch.no_grad():
        crit.Dist.centers.copy_(m.rp.points)
    # osr.py: one SGD over [net.parameters(), criterion.parameters()], momentum 0.9, weight decay 1e-4.
    opt = torch.optim.SGD([{"params": net.parameters()}, {"params": crit.parameters()}], lr=0.1, momentum=0.9,
                          weight_decay=1e-4)
    x, y = _batch(dtype=torch.float64)
    for step in range(3):
        torch.manual_seed(step)  # the same dropout masks for both
        got = m.train_step(name, x, y)["loss"]
        torch.manual_seed(step)
        net.train()
        opt.zero_grad()
        want = crit(net.pooled(x, 0), y)
        want.backward()
        opt.step()
        assert got.item() == pytest.approx(want.item(), rel=1e-12), step
    for (key, a), b in zip(m.net.state_dict().items(), net.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), key
    assert torch.allclose(m.rp.points, crit.Dist.centers, rtol=1e-10, atol=1e-12)
    if name == "rpl":
        assert torch.allclose(m.rp.radius, crit.radius, rtol=1e-10, atol=1e-12)
        assert float(crit.radius.detach()) != 0.0


# ------------------------------------------------------------------------ parameters, optimiser, initialisation


@pytest.mark.parametrize("name", sorted(METHODS))
def test_loss_parameters_are_in_the_optimiser_and_weight_decay_acts_on_them(name):
    m = _method(METHODS[name])
    params = [m.rp.points] + ([m.rp.radius] if name == "rpl" else [])
    assert [n for n, _ in m.rp.named_parameters()] == (["points", "radius"] if name == "rpl" else ["points"])
    owned = {id(p) for g in m.opt.param_groups for p in g["params"]}
    assert all(id(p) in owned for p in params) and all(id(p) in owned for p in m.net.parameters())
    assert len(m.opt.param_groups) == 2 and {id(p) for p in m.opt.param_groups[1]["params"]} == {id(p) for p in params}
    assert all(g["weight_decay"] == 1e-4 and g["momentum"] == 0.9 for g in m.opt.param_groups)
    if name == "rpl":
        with torch.no_grad():
            m.rp.radius.fill_(0.5)  # weight decay is visible on a non-zero radius
    before = [p.detach().clone() for p in params]
    x, y = _batch()
    m.train_step(name, x, y)
    for p, p0 in zip(params, before):
        # First SGD step with momentum: buf = grad + wd * p; p <- p - lr * buf.
        assert torch.allclose(p.detach(), p0 - 0.1 * (p.grad + 1e-4 * p0), atol=1e-7)
        assert not torch.allclose(p.detach(), p0 - 0.1 * p.grad, atol=1e-9)  # the decay term is there
    assert m.net.fc.weight.grad is None  # the backbone's Linear head is unused


def test_centres_are_drawn_after_the_network_as_arpl_points():
    torch.manual_seed(0)
    a = _method(ARPL)
    torch.manual_seed(0)
    g = _method(GCPL)
    torch.manual_seed(0)
    r = _method(RPL)
    # The same global-RNG draws: network first, then 0.1 * randn(K * M, D) (the release's Dist).
    for other in (g, r):
        assert all(torch.equal(u, v) for u, v in zip(a.net.state_dict().values(), other.net.state_dict().values()))
        assert torch.equal(a.rp.points, other.rp.points)
    assert r.rp.radius.shape == (1,) and float(r.rp.radius.detach()) == 0.0 and not hasattr(g.rp, "radius")
    assert 0.05 < float(g.rp.points.detach().std()) < 0.2
    assert _method(RPL, num_centers=3).rp.points.shape == (3 * K, 128)
    assert a.rp.points.shape == g.rp.points.shape == r.rp.points.shape == (K, 128)
    with pytest.raises(ValueError, match="num_centers"):
        _method(GCPL, num_centers=0)


def test_phases_schedule_and_adaptations():
    g, r = _method(GCPL), _method(RPL)
    assert GCPL.phases == ("gcpl",) and RPL.phases == ("rpl",)
    x, y = _batch()
    out = g.train_step("gcpl", x, y)
    assert set(out) == {"loss"} and out["loss"].dim() == 0 and not out["loss"].requires_grad
    with pytest.raises(ValueError):
        g.train_step("arpl", x, y)
    r.end_epoch(29)
    assert r.epoch == 30 and all(grp["lr"] == pytest.approx(0.01) for grp in r.opt.param_groups)
    assert g.adaptations() == {} and r.adaptations() == {} and _method(RPL, num_centers=2).adaptations() == {}
    assert "num_centers" in _method(GCPL, num_centers=2).adaptations()  # the release's GCPLoss ignores it


# ------------------------------------------------------------------------ prediction


@pytest.mark.parametrize("name,sign", [("gcpl", -1.0), ("rpl", 1.0)])
def test_predict_scores_msp_of_signed_distances_in_eval_mode(name, sign):
    m = _method(METHODS[name], num_centers=2)
    x, y = _batch()
    m.train_step(name, x, y)
    pred = m.predict(x)
    assert not m.net.training
    with torch.no_grad():
        f = m.net.pooled(x, 0)
        d = class_distances(f, m.rp.points, K)
    assert torch.equal(pred.logits, sign * d) and pred.logits.shape == (len(x), K)
    msp = torch.softmax(pred.logits.double(), 1).max(1).values
    assert pred.score.dtype == torch.float64 and torch.equal(pred.score, msp)
    assert torch.equal(pred.scores["msp"], pred.score)
    assert torch.equal(pred.scores["mls"], pred.logits.double().max(1).values)
    assert m.f1_rule() == ("msp", pytest.approx(0.5 / K + 0.5 - 0.05))
    feats = m.features(x)
    assert torch.equal(feats.penultimate, f) and torch.equal(feats.logits, pred.logits)
    assert torch.equal(m.head(f), pred.logits)
    # score_dtype float32: the release's float32 softmax.
    m.cfg = {**m.cfg, "score_dtype": "float32"}
    p32 = m.predict(x)
    assert p32.score.dtype == torch.float32 and torch.equal(p32.score, torch.softmax(pred.logits.float(), 1).max(1).values)


# ------------------------------------------------------------------------ conformance suite


@pytest.mark.parametrize("check", [c for c in CHECKS if c != "sign"])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_conformance_with_the_defaults(name, check):
    assert run_check(name, check).ok


@pytest.mark.parametrize("name", sorted(METHODS))
def test_conformance_sign_with_four_times_the_steps(name):
    """The centre losses' gradients carry 1/D = 1/128 (d = ||f - c||^2 / D, no dot term as in ARPL), so
    the suite's two toy epochs of 6 steps leave them at chance; with batch 4 (24 steps an epoch)
    the toy separates, and every other check passes there too."""
    for check in CHECKS:
        assert run_check(name, check, overrides={"batch_size": 4}).ok, check
    assert "AUROC 1.000" in run_check(name, "sign", overrides={"batch_size": 4}).message


# ------------------------------------------------------------------------ exact resume


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name,num_centers", [("gcpl", 1), ("rpl", 1), ("rpl", 2)])
def test_state_dict_round_trip_is_exact(name, num_centers):
    cls = METHODS[name]
    m = _method(cls, seed=7, num_centers=num_centers)
    x, y = _batch()
    m.train_step(name, x, y)
    m.end_epoch(0)
    state = _roundtrip(m.state_dict())
    assert set(state) == {"net", "rp", "opt", "epoch"}
    fresh = _method(cls, seed=99, num_centers=num_centers)
    fresh.load_state_dict(state)
    assert fresh.epoch == 1
    a, b = m.predict(x), fresh.predict(x)
    assert torch.equal(a.logits, b.logits) and all(torch.equal(a.scores[k], b.scores[k]) for k in a.scores)
    rng = torch.get_rng_state()
    out_a = [m.train_step(name, x, y)["loss"] for _ in range(2)]
    torch.set_rng_state(rng)
    out_b = [fresh.train_step(name, x, y)["loss"] for _ in range(2)]
    assert all(torch.equal(u, v) for u, v in zip(out_a, out_b))
    sa, sb = m.state_dict(), fresh.state_dict()
    for part in ("net", "rp"):
        assert all(torch.equal(sa[part][k], sb[part][k]) for k in sa[part]), part
    assert sa["epoch"] == sb["epoch"]


# ------------------------------------------------------------------------ release files (arpl-release)


def _release_files(tmp, m, name, seed=1, num_centers=None):
    """The ARPL release's two files for ``--loss GCPLoss`` / ``RPLoss``: the network (DataParallel
    ``module.`` keys, plain BN names, the unused ``bn10``) and the criterion (``radius``, ``Dist.centers``)."""
    g = torch.Generator().manual_seed(seed)
    net = {}
    for key, value in m.net.state_dict().items():
        rel = key.replace(".bns.0.", ".")
        if value.dtype == torch.int64:
            net[f"module.{rel}"] = torch.randint(1, 1000, value.shape, generator=g)
        elif rel.endswith("running_var"):
            net[f"module.{rel}"] = torch.rand(value.shape, generator=g) + 0.5
        else:
            net[f"module.{rel}"] = 0.3 * torch.randn(value.shape, generator=g)
    for p in ("weight", "bias", "running_mean", "running_var"):
        net[f"module.bn10.{p}"] = torch.ones(128)
    net["module.bn10.num_batches_tracked"] = torch.tensor(5)
    rows = m.rp.points.shape[0] if num_centers is None else K * num_centers
    crit = {"Dist.centers": torch.randn(rows, 128, generator=g)}
    if name == "rpl":
        crit = {"radius": torch.tensor([0.7]), **crit}
    torch.save(net, tmp / f"classifier32_{name}_0_False_.pth")
    torch.save(crit, tmp / f"classifier32_{name}_0_False__criterion.pth")
    return tmp / f"classifier32_{name}_0_False_.pth", tmp / f"classifier32_{name}_0_False__criterion.pth", net, crit


def _weights(*paths):
    return layouts.ExternalWeights.from_files([(p.name, layouts.read_file(p)) for p in paths])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_release_files_load_one_to_one(tmp_path, name):
    m = _method(METHODS[name])
    net_path, crit_path, net, crit = _release_files(tmp_path, m, name)
    w = _weights(crit_path, net_path)
    m.load_external("arpl-release", w)
    assert w.unused() == []
    assert w.dropped_summary() == {"module.bn10.*": "bn10: declared by the release's classifier32 but never used by "
                                                    "its forward"}
    for key, value in m.net.state_dict().items():
        assert torch.equal(value, net["module." + key.replace(".bns.0.", ".")]), key
    assert torch.equal(m.rp.points, crit["Dist.centers"])
    if name == "rpl":
        assert torch.equal(m.rp.radius, crit["radius"])


def test_release_files_that_do_not_fit_are_refused_in_one_line(tmp_path):
    g, r = _method(GCPL), _method(RPL)
    (tmp_path / "g").mkdir()
    (tmp_path / "r").mkdir()
    (tmp_path / "m").mkdir()
    g_net, g_crit, _, _ = _release_files(tmp_path / "g", g, "gcpl")
    r_net, r_crit, _, _ = _release_files(tmp_path / "r", r, "rpl")
    _, m_crit, _, _ = _release_files(tmp_path / "m", r, "rpl", num_centers=2)
    arpl_crit = tmp_path / "arpl_criterion.pth"
    torch.save({"points": torch.zeros(K, 128), "radius": torch.zeros(1), "Dist.centers": torch.zeros(K, 128)}, arpl_crit)
    cases = [
        (g, (g_net,), r"gcpl needs the ARPL release's criterion .*GCPLoss: Dist.centers"),
        (g, (g_net, r_crit), r"GCPLoss\) does not fit: 1 unexpected key\(s\): radius"),
        (r, (r_net, g_crit), r"RPLoss\) does not fit: 1 missing key\(s\): radius"),
        (r, (r_net, arpl_crit), r"an ARPLoss criterion \(points, radius\), not a RPLoss one .*use --method arpl"),
        (r, (r_crit,), r"hold no network"),
        (r, (r_net, m_crit), r"8 centres are 2 per class: --set num_centers=2\) does not fit: 1 shape mismatch"),
    ]
    for method, files, pattern in cases:
        with pytest.raises(layouts.LayoutError, match=pattern) as exc:
            method.load_external("arpl-release", _weights(*files))
        assert "\n" not in str(exc.value)
    m2 = _method(RPL, num_centers=2)
    m2.load_external("arpl-release", _weights(r_net, m_crit))
    assert m2.rp.points.shape == (2 * K, 128)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_evaluate_reads_the_release_files(tmp_path, capsys, name):
    ds = plugins.get().dataset("digits")
    probe = _method(METHODS[name], k=6)
    net_path, crit_path, _, _ = _release_files(tmp_path, probe, name)
    out = tmp_path / "runs"
    argv = ["evaluate", "--method", name, "--dataset", "digits", "--device", "cpu", "--out", str(out),
            "--layout", "arpl-release", "--weights", str(net_path), "--weights", str(crit_path)]
    assert cli.main(argv) == 0
    rec = list(records.iter_records(out))[0]
    assert rec.external_weights["layout"] == "arpl-release" and rec.method == name
    assert set(rec.external_weights["dropped"]) == {"module.bn10.*"}
    scores = records.read_scores(rec.dir, rec)
    # The stored logits are the release network's signed distances to the release centres.
    probe.load_external("arpl-release", _weights(net_path, crit_path))
    data = session.load_data(ds, protocols.get_split(ds, "auroc", 0), 8)
    with torch.no_grad():
        want = probe.predict(to_input(data.known_x[:BATCH], "none")).logits.double().numpy()
    assert np.allclose(scores.known_logits[:BATCH], want, rtol=1e-6, atol=1e-7)
    msp = torch.softmax(torch.from_numpy(scores.known_logits).double(), 1).max(1).values.numpy()
    assert np.allclose(scores.known["score"], msp) and np.array_equal(scores.known["score"], scores.known["msp"])


# ------------------------------------------------------------------------ recipes and runs


def test_recipes_and_keys_resolve():
    reg = plugins.get()
    tin, cifar, mnist = reg.dataset("tiny_imagenet"), reg.dataset("cifar10"), reg.dataset("mnist")
    for name in METHODS:
        spec = reg.method(name)
        assert spec.default_recipe == "arpl-release" and set(spec.recipes) == {"arpl-release", "mls-paper"}
        assert "margin" not in spec.defaults and "beta" not in spec.defaults
        _, cfg = configmod.resolve(spec, cifar)
        assert (cfg["optimizer"], cfg["lr"], cfg["momentum"], cfg["weight_decay"]) == ("sgd", 0.1, 0.9, 1e-4)
        assert cfg["milestones"] == [30, 60, 90, 120] and cfg["epochs"] == 100 and cfg["batch_size"] == 64
        assert (cfg["temp"], cfg["weight_pl"], cfg["num_centers"], cfg["label_smoothing"]) == (1.0, 0.1, 1, 0.0)
        assert cfg["score_dtype"] == "float64"
        _, cfg = configmod.resolve(spec, tin)
        assert (cfg["optimizer"], cfg["lr"], cfg["weight_decay"], cfg["image_size"]) == ("adam", 1e-3, 0.0, 64)
        _, cfg = configmod.resolve(spec, tin, "mls-paper")
        assert (cfg["epochs"], cfg["schedule"], cfg["label_smoothing"], cfg["randaugment"]) == (600, "mls-cosine", 0.9, 9)
        assert configmod.resolve(spec, cifar, "mls-paper")[1]["randaugment"] == 6
        assert configmod.resolve(spec, mnist, "mls-paper")[1]["randaugment"] == 8
        with pytest.raises(configmod.ConfigError, match="num_centers"):
            configmod.resolve(spec, cifar, overrides={"num_centers": 0})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_digits_end_to_end_beats_chance(tmp_path, name):
    req = engine.RunRequest(method=name, dataset="digits", epochs=4, out=tmp_path, device="cpu", progress=False)
    rec = engine.run(req, log=lambda msg: None).record
    assert rec.metrics["auroc"] > 0.8 and rec.metrics["acc"] > 0.8, rec.metrics
    assert rec.f1_rule == ("msp", pytest.approx(0.5 / 6 + 0.5 - 0.05)) and "macro_f1" in rec.metrics
    scores = np.load(f"{rec.dir}/scores.npz")
    msp = torch.softmax(torch.from_numpy(scores["known_logits"]).double(), 1).max(1).values.numpy()
    assert np.allclose(scores["known_score"], msp)
    assert all(np.isfinite(row[f"{name}/loss"]) for row in rec.history)
    assert rec.adaptations == {}
