"""The built-in scorers' math (osrbench.scorers.posthoc) against independent computations.

Hand-computed values for the logit scorers; numpy / scipy / scikit-learn re-implementations of
OpenOOD v1.5's postprocessors for the feature scorers; closed-form and finite-difference gradient
signs for ODIN; the sign of every scorer on a separable toy problem, through the functions and
through the built-in ScoreSpecs; and the cases where a scorer does not apply.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.covariance import EmpiricalCovariance
from sklearn.neighbors import NearestNeighbors

from osrbench import scoring
from osrbench.method import Features, Method, Prediction
from osrbench.metrics import auroc
from osrbench.scorers import BUILTIN_SCORERS, posthoc
from osrbench.scoring import NotApplicable, View

F64 = torch.float64

#: What osrbench/scorers/__init__.py reads of each scorer's params.
READS = {"msp": set(), "mls": set(), "energy": {"temperature"}, "gen": {"gamma", "m"},
         "odin": {"temperature", "noise"}, "mahalanobis": set(), "knn": {"k"}, "vim": {"dim_fraction"},
         "react": {"percentile"}}
#: OpenOOD's name of each postprocessor.
OPENOOD_NAME = {"msp": "msp", "mls": "mls", "energy": "ebo", "gen": "gen", "odin": "odin",
                "mahalanobis": "mds", "knn": "knn", "vim": "vim", "react": "react"}


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


# ------------------------------------------------------------------ logits: hand-computed values
# Row 0: exp(z) = (1, 3, 4), softmax (1/8, 3/8, 1/2); row 1: flat, softmax 1/3 each.
Z = torch.tensor([[0.0, math.log(3), math.log(4)], [0.0, 0.0, 0.0]], dtype=torch.float32)


def test_msp_and_mls_by_hand():
    assert posthoc.msp(Z).dtype == F64 and posthoc.mls(Z).dtype == F64
    torch.testing.assert_close(posthoc.msp(Z), t64([1 / 2, 1 / 3]))
    torch.testing.assert_close(posthoc.mls(Z), t64([math.log(4), 0.0]))


def test_msp_is_float64_so_confident_rows_do_not_tie():
    z = torch.tensor([[0.0, 20.0], [0.0, 25.0]], dtype=torch.float32)
    s = posthoc.msp(z)
    assert s[1] > s[0]  # both round to 1.0 in float32


def test_energy_by_hand():
    torch.testing.assert_close(posthoc.energy(Z, 1), t64([math.log(8), math.log(3)]))
    # T = 2: exp(z / 2) = (1, sqrt 3, 2)
    torch.testing.assert_close(posthoc.energy(Z, 2), t64([2 * math.log(3 + math.sqrt(3)), 2 * math.log(3)]))


def test_gen_by_hand():
    # gamma 1: p (1 - p) summed over the top-m probabilities, negated.
    torch.testing.assert_close(posthoc.gen(Z, 1, 100), t64([-(16 + 15 + 7) / 64, -2 / 3]))
    torch.testing.assert_close(posthoc.gen(Z, 1, 2), t64([-(16 + 15) / 64, -4 / 9]))
    half = -(math.sqrt(1 / 4) + math.sqrt(15) / 8 + math.sqrt(7) / 8)
    torch.testing.assert_close(posthoc.gen(Z, 0.5, 3), t64([half, -3 * math.sqrt(2 / 9)]))


# -------------------------------------------------------------------------------------- ODIN
class Spy:
    """A logits function that records the inputs it is called with."""

    def __init__(self, fn):
        self.fn, self.inputs = fn, []

    def __call__(self, x):
        self.inputs.append(x.detach().clone())
        return self.fn(x)


STD = torch.tensor([0.5, 0.25, 1.0])


def _odin_expected(x: np.ndarray, sign: np.ndarray, logits_np, temperature: float, noise: float):
    x_new = x - noise * sign / STD.numpy().astype(np.float64).reshape(1, 3, 1, 1)
    return x_new, softmax(logits_np(x_new) / temperature, axis=1).max(axis=1)


def test_odin_matches_the_closed_form_gradient_sign_of_a_linear_network():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 12)).astype(np.float32)
    a[:, 5] = 0  # input 5 gets an exactly zero gradient: OpenOOD's sign makes it +1, not 0
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    temperature, noise = 10.0, 0.01
    net = torch.nn.Linear(12, 3, bias=False)
    net.weight.data = torch.from_numpy(a)
    spy = Spy(lambda im: net(im.flatten(1)))
    with torch.enable_grad():
        score = posthoc.odin(spy, torch.from_numpy(x), temperature, noise, STD)
    assert net.weight.grad is None  # the method's own gradients are left alone

    x64, a64 = x.astype(np.float64).reshape(4, 12), a.astype(np.float64)
    z = x64 @ a64.T
    onehot = np.eye(3)[z.argmax(axis=1)]
    grad = (softmax(z / temperature, axis=1) - onehot) @ a64  # d CE(z/T, y) / dx, up to 1 / (N T) > 0
    sign = np.where(grad >= 0, 1.0, -1.0).reshape(4, 3, 2, 2)
    assert (sign.reshape(4, 12)[:, 5] == 1).all()
    x_new, expected = _odin_expected(x.astype(np.float64), sign, lambda v: v.reshape(4, 12) @ a64.T,
                                     temperature, noise)
    np.testing.assert_allclose(spy.inputs[1].numpy(), x_new, rtol=0, atol=1e-6)
    assert score.dtype == F64 and score.device.type == "cpu"
    np.testing.assert_allclose(score.numpy(), expected, rtol=0, atol=1e-7)
    unperturbed = softmax(z / temperature, axis=1).max(axis=1)
    assert np.abs(expected - unperturbed).min() > 1e-4  # the step matters at this tolerance


def test_odin_gradient_sign_matches_finite_differences_of_a_nonlinear_network():
    rng = np.random.default_rng(2)
    w1, w2 = t64(rng.standard_normal((6, 12))), t64(rng.standard_normal((4, 6)))
    x = t64(rng.standard_normal((5, 3, 2, 2)))
    temperature, noise = 2.0, 0.003

    def logits_fn(im):
        return torch.tanh(im.flatten(1) @ w1.T) @ w2.T

    spy = Spy(logits_fn)
    with torch.enable_grad():
        score = posthoc.odin(spy, x, temperature, noise, STD)

    labels = logits_fn(x).argmax(dim=1)

    def loss(v):
        return float(torch.nn.functional.cross_entropy(logits_fn(v) / temperature, labels))

    fd = np.zeros(x.numel())
    h = 1e-6
    for i in range(x.numel()):
        e = torch.zeros(x.numel(), dtype=F64)
        e[i] = h
        e = e.view_as(x)
        fd[i] = (loss(x + e) - loss(x - e)) / (2 * h)
    fd = fd.reshape(x.shape)
    sign = np.where(fd >= 0, 1.0, -1.0)
    x_new, expected = _odin_expected(x.numpy(), sign, lambda v: logits_fn(t64(v)).numpy(), temperature, noise)
    assert np.abs(fd).min() > 1e-5  # every finite-difference sign is beyond doubt
    np.testing.assert_allclose(spy.inputs[1].numpy(), x_new, rtol=0, atol=1e-12)
    np.testing.assert_allclose(score.numpy(), expected, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------- Mahalanobis
def _classes(seed: int, n_per: int = 20, k: int = 3, d: int = 4):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per)
    feats = rng.standard_normal((k, d))[labels] * 3 + rng.standard_normal((len(labels), d)) * rng.uniform(0.5, 2, d)
    return feats, labels


@pytest.mark.parametrize("singular", [False, True])
def test_mahalanobis_matches_sklearn_empirical_covariance_and_explicit_loops(singular):
    feats, labels = _classes(3)
    test = np.random.default_rng(4).standard_normal((7, feats.shape[1])) * 4
    if singular:  # a repeated feature: the covariance is singular, the precision its pseudo-inverse
        feats, test = (np.concatenate([a, a[:, :1]], axis=1) for a in (feats, test))
    k = 3
    mu = np.stack([feats[labels == c].mean(axis=0) for c in range(k)])
    centred = np.concatenate([feats[labels == c] - mu[c] for c in range(k)])
    prec = EmpiricalCovariance(assume_centered=False).fit(centred).precision_
    expected = []
    for f in test:
        expected.append(max(-(f - mu[c]) @ prec @ (f - mu[c]) for c in range(k)))

    means, precision = posthoc.mahalanobis_fit(t64(feats), torch.from_numpy(labels), k)
    np.testing.assert_allclose(means.numpy(), mu, rtol=1e-12)
    np.testing.assert_allclose(precision.numpy(), prec, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(posthoc.mahalanobis(t64(test), means, precision).numpy(), expected, rtol=1e-9)


# --------------------------------------------------------------------------------------- KNN
def _openood_normalizer(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True) + 1e-10  # OpenOOD's expression, verbatim math


@pytest.mark.parametrize("k", [1, 5, 40])
def test_knn_matches_sklearn_nearest_neighbors_on_openood_normalised_features(k, monkeypatch):
    rng = np.random.default_rng(5)
    bank_raw, query = rng.standard_normal((40, 6)) + 0.5, rng.standard_normal((13, 6))
    dist, _ = NearestNeighbors(n_neighbors=k).fit(_openood_normalizer(bank_raw)).kneighbors(_openood_normalizer(query))
    expected = -dist[:, -1] ** 2
    bank = posthoc.knn_fit(t64(bank_raw))
    np.testing.assert_allclose(bank.norm(dim=1).numpy(), 1.0, rtol=1e-9)
    np.testing.assert_allclose(posthoc.knn(t64(query), bank, k).numpy(), expected, rtol=1e-9, atol=1e-12)
    monkeypatch.setattr(posthoc, "KNN_BLOCK", 7)  # one query per block
    np.testing.assert_allclose(posthoc.knn(t64(query), bank, k).numpy(), expected, rtol=1e-9, atol=1e-12)


def test_knn_scores_a_zero_feature_instead_of_nan():
    bank = posthoc.knn_fit(t64(np.eye(3)))
    s = posthoc.knn(torch.zeros(2, 3, dtype=F64), bank, 2)
    torch.testing.assert_close(s, t64([-1.0, -1.0]))


def test_knn_with_k_above_the_bank_size_is_not_applicable():
    bank = posthoc.knn_fit(t64(np.random.default_rng(6).standard_normal((10, 3))))
    assert posthoc.knn(bank, bank, 10).shape == (10,)
    with pytest.raises(NotApplicable, match="k = 11 exceeds the 10 training features"):
        posthoc.knn(bank, bank, 11)


def _rss_and_peak_kib() -> tuple[int, int]:
    status = Path("/proc/self/status").read_text()
    return tuple(int(re.search(rf"{key}:\s+(\d+)", status).group(1)) for key in ("VmRSS", "VmHWM"))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_knn_of_10k_queries_against_a_50k_bank_stays_within_bounded_memory():
    g = torch.Generator().manual_seed(7)
    query = torch.randn(10_000, 8, generator=g, dtype=F64)
    bank = posthoc.knn_fit(torch.randn(50_000, 8, generator=g, dtype=F64))
    Path("/proc/self/clear_refs").write_text("5")  # resets this process's peak RSS
    before, _ = _rss_and_peak_kib()
    s = posthoc.knn(query, bank, 50)
    _, peak = _rss_and_peak_kib()
    assert (peak - before) * 1024 < 1 << 30, "the full 10k x 50k distance matrix alone would be 3.7 GiB"
    q = posthoc.knn_fit(query[:5])
    full = ((q[:, None, :] - bank[None]) ** 2).sum(-1)
    torch.testing.assert_close(s[:5], -full.kthvalue(50, dim=1).values)


# ------------------------------------------------------------------------------- affine head
def _float32_head(layer: torch.nn.Module):
    """The head as osrbench.scorers calls it: float64 in, the network's float32, float64 out."""
    return lambda f: layer(f.float()).double()


def test_affine_head_recovers_a_linear_layer():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 3)
    w, b = posthoc.affine_head(_float32_head(layer), 6)
    torch.testing.assert_close(w, layer.weight.double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(b, layer.bias.double(), rtol=0, atol=1e-6)
    w_true, b_true = t64(np.arange(12.0).reshape(3, 4) - 5), t64([1.0, -2.0, 0.5])
    w, b = posthoc.affine_head(lambda f: f @ w_true.T + b_true, 4)
    torch.testing.assert_close(w, w_true, rtol=0, atol=1e-12)
    torch.testing.assert_close(b, b_true, rtol=0, atol=1e-12)


@pytest.mark.parametrize("head", ["relu_mlp", "cosine"])
def test_a_head_that_is_not_affine_is_not_applicable(head):
    torch.manual_seed(0)
    if head == "relu_mlp":
        head_fn = _float32_head(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)))
    else:
        weight = torch.randn(3, 6, dtype=F64)
        head_fn = lambda f: 10 * torch.nn.functional.normalize(f, dim=1) @ weight.T  # noqa: E731
    with pytest.raises(NotApplicable, match=r"^vim: the method's head is not affine \(W f \+ b\), which vim needs"):
        posthoc.affine_head(head_fn, 6)
    # A plugin's scorer that reads W and b is named in the message, not vim.
    with pytest.raises(NotApplicable, match=r"^dice: the method's head is not affine \(W f \+ b\), which dice needs"):
        posthoc.affine_head(head_fn, 6, scorer="dice")


# --------------------------------------------------------------------------------------- ViM
def _vim_numpy(train, test, w, b, dim):
    """OpenOOD v1.5's ViM postprocessor in numpy (np.linalg.eig, sklearn EmpiricalCovariance)."""
    u = -np.matmul(np.linalg.pinv(w), b)
    cov = EmpiricalCovariance(assume_centered=True).fit(train - u).covariance_
    vals, vecs = np.linalg.eig(cov)
    ns = np.ascontiguousarray((vecs.T[np.argsort(vals * -1)[dim:]]).T).real
    alpha = (train @ w.T + b).max(axis=-1).mean() / np.linalg.norm((train - u) @ ns, axis=-1).mean()
    score = -alpha * np.linalg.norm((test - u) @ ns, axis=-1) + logsumexp(test @ w.T + b, axis=-1)
    return u, alpha, score


@pytest.mark.parametrize("dim", [1, 2, 4])
def test_vim_matches_openood_in_numpy(dim):
    rng = np.random.default_rng(8)
    scales = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    train = rng.standard_normal((200, 6)) * scales + 1.0
    test = rng.standard_normal((9, 6)) * 3
    w, b = rng.standard_normal((3, 6)), rng.standard_normal(3)
    u_np, alpha_np, expected = _vim_numpy(train, test, w, b, dim)
    u, ns, alpha = posthoc.vim_fit(t64(train), t64(w), t64(b), dim)
    np.testing.assert_allclose(u.numpy(), u_np, rtol=1e-10, atol=1e-12)
    assert ns.shape == (6, 6 - dim)
    assert alpha == pytest.approx(alpha_np, rel=1e-9)
    score = posthoc.vim(t64(test), t64(test @ w.T + b), u, ns, alpha)
    np.testing.assert_allclose(score.numpy(), expected, rtol=1e-9)


@pytest.mark.parametrize("dim", [0, 6, 7])
def test_vim_needs_a_principal_dimension_below_the_feature_size(dim):
    rng = np.random.default_rng(9)
    with pytest.raises(NotApplicable, match=f"dim = {dim} with D = 6"):
        posthoc.vim_fit(t64(rng.standard_normal((20, 6))), t64(rng.standard_normal((3, 6))), t64(np.zeros(3)), dim)


# ------------------------------------------------------------------------------------- ReAct
def test_react_threshold_is_numpy_percentile_of_all_activations():
    f = t64([[0, 1, 2], [3, 4, 5]])
    assert posthoc.react_fit(f, 50) == 2.5
    assert posthoc.react_fit(f, 90) == pytest.approx(4.5)
    assert posthoc.react_fit(f, 85) == pytest.approx(4.25)


def test_react_is_the_energy_of_the_clipped_features():
    rng = np.random.default_rng(10)
    feats = np.abs(rng.standard_normal((12, 5))) * 3
    w, b = rng.standard_normal((4, 5)), rng.standard_normal(4)
    threshold = posthoc.react_fit(t64(feats), 90)
    expected = logsumexp(np.minimum(feats, threshold) @ w.T + b, axis=1)
    score = posthoc.react(t64(feats), lambda f: f @ t64(w).T + t64(b), threshold)
    np.testing.assert_allclose(score.numpy(), expected, rtol=1e-12)
    assert np.abs(expected - logsumexp(feats @ w.T + b, axis=1)).max() > 1e-3  # clipping changed something


# ------------------------------------------------------------------ sign on a separable toy problem
K, D = 3, 12


def _toy():
    """Class c: 5 (+ noise) on features 4c..4c+3, 0 elsewhere; unknowns: +-2.9 alternating.

    The head sums each class's four features, so knowns' logits are confident and unknowns' flat
    (0), and unknowns lie far from every class mean, off the directions the classes span.
    """
    rng = np.random.default_rng(11)
    train_y = np.repeat(np.arange(K), 60)  # more per class than KNN's default k = 50
    known_y = np.repeat(np.arange(K), 10)
    means = 5 * np.repeat(np.eye(K), 4, axis=1)
    train = means[train_y] + 0.5 * rng.standard_normal((len(train_y), D))
    known = means[known_y] + 0.5 * rng.standard_normal((len(known_y), D))
    unknown = 2.9 * np.resize([1.0, -1.0], D) + 0.5 * rng.standard_normal((25, D))
    return train, train_y, known, unknown


TRAIN, TRAIN_Y, KNOWN, UNKNOWN = _toy()
W_TOY = torch.from_numpy(np.repeat(np.eye(K), 4, axis=1))


def _head(f):
    return f @ W_TOY.T


def _images(f: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(f.astype(np.float32)).view(-1, 3, 2, 2)


def _fn_scores(name: str, feats: np.ndarray) -> torch.Tensor:
    p = posthoc.OPENOOD[name]["params"]
    f = t64(feats)
    z = _head(f)
    train = t64(TRAIN)
    if name == "msp":
        return posthoc.msp(z)
    if name == "mls":
        return posthoc.mls(z)
    if name == "energy":
        return posthoc.energy(z, p["temperature"])
    if name == "gen":
        return posthoc.gen(z, p["gamma"], p["m"])
    if name == "odin":
        with torch.enable_grad():
            return posthoc.odin(lambda x: x.flatten(1) @ W_TOY.float().T, _images(feats), p["temperature"],
                                p["noise"], torch.ones(3))
    if name == "mahalanobis":
        return posthoc.mahalanobis(f, *posthoc.mahalanobis_fit(train, torch.from_numpy(TRAIN_Y), K))
    if name == "knn":
        return posthoc.knn(f, posthoc.knn_fit(train), p["k"])
    if name == "vim":
        w, b = posthoc.affine_head(_head, D)
        return posthoc.vim(f, z, *posthoc.vim_fit(train, w, b, round(p["dim_fraction"] * D)))
    assert name == "react"
    return posthoc.react(f, _head, posthoc.react_fit(train, p["percentile"]))


@pytest.mark.parametrize("name", list(READS))
def test_every_scorer_ranks_knowns_above_far_unknowns(name):
    assert auroc(_fn_scores(name, KNOWN).numpy(), _fn_scores(name, UNKNOWN).numpy()) == 1.0


class ToyMethod(Method):
    """Images are the toy's features (3 x 2 x 2 = 12); the head is the toy's."""

    def __init__(self):
        self.fc = torch.nn.Linear(D, K, bias=False)
        self.fc.weight.data = W_TOY.float()

    def setup(self, ctx):
        raise NotImplementedError

    def train_step(self, phase, images, labels):
        raise NotImplementedError

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def features(self, images):
        f = images.flatten(1)
        return Features(f, self.fc(f))

    def head(self, penultimate):
        return self.fc(penultimate)

    def predict(self, images):
        z = self.features(images).logits
        return Prediction(z, z.max(dim=1).values)


def test_the_builtin_specs_call_these_functions_as_they_are_defined():
    """Every built-in spec but OpenMax, fitted and applied by the host with its defaults, on the toy."""
    net = scoring.Network(ToyMethod(), torch.device("cpu"), torch.ones(3))

    def view(feats, labels=None):
        z = net.head(torch.from_numpy(feats).float()).double()
        return View(z.detach(), t64(feats), None if labels is None else torch.from_numpy(labels), None, net)

    specs = [s for s in BUILTIN_SCORERS if s.name in READS]
    assert len(specs) == len(READS)
    train = view(TRAIN, TRAIN_Y)
    for spec in specs:
        fitted = scoring.fit(spec, spec.params, train)
        known, unknown = (scoring.apply(spec, fitted, spec.params, view(f), _images(f), lambda x: x)
                          for f in (KNOWN, UNKNOWN))
        assert auroc(known, unknown) == 1.0, spec.name


# ------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize("name", list(READS))
def test_each_scorer_has_its_params_grid_and_provenance(name):
    conf = posthoc.OPENOOD[name]
    assert set(conf) <= {"params", "grid", "description", "citation", "adaptation", "options"}
    assert set(conf["params"]) == READS[name]
    # every parameter declares the values it allows (checked when set by hand)
    assert set(conf.get("options", {})) == READS[name]
    for key, values in conf["grid"].items():
        assert conf["params"][key] in values, f"{name}: the default {key} is not in its grid"
    assert conf["description"] and "\n" not in conf["description"] + conf["adaptation"]
    assert conf["citation"].endswith(f"OpenOOD v1.5 {OPENOOD_NAME[name]} postprocessor")
    assert bool(conf["adaptation"]) == (name in ("vim", "react"))


def test_head64_takes_view_features_to_the_networks_dtype_and_returns_float64_cpu():
    """What a plugin's head scorer calls: float64 CPU features in (as a View holds them), the
    network's own dtype inside, float64 CPU logits out; affine_head reads W, b through it."""
    from osrbench.scoring import Network

    class HalfHead:  # a method whose head runs in float16 and rejects any other dtype
        def __init__(self):
            self.fc = torch.nn.Linear(4, 3).to(torch.float16)

        def head(self, f):
            assert f.dtype == torch.float16, f.dtype
            return self.fc(f)

    torch.manual_seed(0)
    method = HalfHead()
    net = Network(method, torch.device("cpu"), torch.ones(3))
    f = torch.randn(5, 4, dtype=F64)
    z = net.head64(f)
    assert z.dtype == torch.float64 and z.device.type == "cpu" and z.shape == (5, 3)
    torch.testing.assert_close(z, method.fc(f.half()).double())
    w, b = posthoc.affine_head(net.head64, 4, scorer="mine")
    torch.testing.assert_close(w, method.fc.weight.double(), rtol=0, atol=1e-2)
