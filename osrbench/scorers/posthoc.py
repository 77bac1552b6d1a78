"""The math of the built-in post-hoc scorers, after OpenOOD v1.5's postprocessors.

Plain functions of float64 CPU tensors (ODIN excepted: it runs the network); each score function
returns one float64 score per row, higher = more likely known. :data:`OPENOOD` holds every
scorer's defaults, tuning grid and provenance, read by :mod:`osrbench.scorers`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from osrbench.method import Option
from osrbench.scoring import NotApplicable

#: Entries (queries x bank) of one block of KNN's distance matrix: 2**24 float64 is 128 MiB,
#: whatever the number of queries and the size of the bank.
KNN_BLOCK = 2**24
#: OpenOOD's feature normaliser keeps 1e-10 away from a division by zero.
NORM_EPS = 1e-10
#: A head counts as affine when its fit ``f W^T + b`` misses it by at most this relative
#: (Frobenius) error on random features: loose enough for float32, TF32 or bf16 heads, far below
#: how far a ReLU MLP or a cosine classifier strays.
AFFINE_RTOL = 1e-2
#: Seeded random features the affine fit is checked on.
AFFINE_CHECKS = 16


# ----------------------------------------------------------------------------------- logits
def msp(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability (OpenOOD ``msp``), in float64 so confident rows do not tie at 1."""
    return torch.softmax(logits.double(), dim=1).max(dim=1).values


def mls(logits: torch.Tensor) -> torch.Tensor:
    """Maximum logit (OpenOOD ``mls``)."""
    return logits.double().max(dim=1).values


def energy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Negative free energy ``T logsumexp(z / T)`` (OpenOOD ``ebo``)."""
    t = float(temperature)
    return t * torch.logsumexp(logits.double() / t, dim=1)


def gen(logits: torch.Tensor, gamma: float, m: int) -> torch.Tensor:
    """Negative generalized entropy of the ``min(m, K)`` largest softmax probabilities (OpenOOD ``gen``)."""
    p = torch.softmax(logits.double(), dim=1)
    top = p.topk(min(int(m), p.shape[1]), dim=1).values
    return -(top**gamma * (1 - top) ** gamma).sum(dim=1)


def odin(logits_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, temperature: float,
         noise: float, input_std: torch.Tensor) -> torch.Tensor:
    """ODIN (OpenOOD ``odin``): the temperature-scaled MSP after a step against the gradient sign.

    The step lowers the cross-entropy of the predicted class, which raises knowns' confidence more
    than unknowns'. The sign is OpenOOD's (a zero gradient counts as +1) and is divided per channel
    by ``input_std``, the std the inputs were normalised with, so the step is ``noise`` in [0, 1]
    pixel units. Call it under ``torch.enable_grad()`` with the network in eval mode.
    """
    x = images.detach().clone().requires_grad_(True)
    logits = logits_fn(x)
    loss = F.cross_entropy(logits / temperature, logits.detach().argmax(dim=1))
    # autograd.grad, not backward(): the method's parameter gradients stay untouched.
    (grad,) = torch.autograd.grad(loss, x)
    sign = ((grad >= 0).to(x.dtype) - 0.5) * 2
    step = sign / input_std.to(x.device, x.dtype).view(1, -1, 1, 1)
    with torch.no_grad():
        z = logits_fn(x.detach() - noise * step).double().cpu() / temperature
    z = z - z.max(dim=1, keepdim=True).values
    return (z.exp() / z.exp().sum(dim=1, keepdim=True)).max(dim=1).values


# --------------------------------------------------------------------------------- features
def mahalanobis_fit(penultimate: torch.Tensor, labels: torch.Tensor, num_classes: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means and the precision of the class-centred features' shared covariance (OpenOOD ``mds``).

    The covariance is sklearn's ``EmpiricalCovariance(assume_centered=False)`` (centred again,
    divided by N) and the precision its symmetric pseudo-inverse, as ``precision_`` (``pinvh``) is.
    """
    f = penultimate.double()
    labels = labels.long()
    means = torch.stack([f[labels == c].mean(dim=0) for c in range(num_classes)])
    centred = f - means[labels]
    centred = centred - centred.mean(dim=0)
    cov = centred.T @ centred / len(centred)
    return means, torch.linalg.pinv(cov, hermitian=True)


def mahalanobis(penultimate: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """``max_k -(f - mu_k)^T P (f - mu_k)``: minus the squared Mahalanobis distance to the nearest class mean."""
    f = penultimate.double()
    per_class = []
    for mu in means:
        d = f - mu
        per_class.append(-((d @ precision) * d).sum(dim=1))
    return torch.stack(per_class, dim=1).max(dim=1).values


def _unit(f: torch.Tensor) -> torch.Tensor:
    # OpenOOD writes x / ||x|| + 1e-10 (the 1e-10 added after dividing): that shifts every vector
    # by the same constant, which leaves every distance unchanged but makes a zero feature NaN.
    return f / (f.norm(dim=1, keepdim=True) + NORM_EPS)


def knn_fit(penultimate: torch.Tensor) -> torch.Tensor:
    """The bank KNN searches: the L2-normalised training features (OpenOOD ``knn``)."""
    return _unit(penultimate.double())


def knn(penultimate: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """Minus the squared L2 distance from the normalised feature to its k-th nearest bank feature.

    Squared, as faiss ``IndexFlatL2`` (OpenOOD's search) returns it. Exact brute force in float64,
    one block of :data:`KNN_BLOCK` distances at a time, so memory does not grow with the test set.
    """
    k = int(k)
    if k > len(bank):
        raise NotApplicable(f"knn: k = {k} exceeds the {len(bank)} training features it searches")
    q = _unit(penultimate.double())
    bank_sq = (bank * bank).sum(dim=1)
    rows = max(1, KNN_BLOCK // len(bank))
    block = torch.empty(min(rows, len(q)), len(bank), dtype=torch.float64)  # reused: no fresh pages per block
    out = []
    for chunk in q.split(rows):
        # ||b||^2 - 2 q.b ranks the bank as the distance does; ||q||^2 is added to the k-th alone.
        partial = torch.addmm(bank_sq, chunk, bank.T, alpha=-2, out=block[:len(chunk)])
        kth = partial.topk(k, dim=1, largest=False).values[:, -1]
        out.append((kth + (chunk * chunk).sum(dim=1)).clamp_min(0))
    return -torch.cat(out)


def affine_head(head_fn: Callable[[torch.Tensor], torch.Tensor], dim: int,
                scorer: str = "vim") -> tuple[torch.Tensor, torch.Tensor]:
    """``(W (K, D), b (K,))`` of a head that is ``f W^T + b``, read by probing it (ViM needs them).

    ``b`` is the head at 0 and W's columns its response to the unit vectors; seeded random
    features then check that the head really is that affine map. A head that is not raises
    :class:`NotApplicable` naming ``scorer`` (the caller), which the host reports as "not
    applicable to this method".
    """
    with torch.no_grad():  # a probe, never differentiated
        b = head_fn(torch.zeros(1, dim, dtype=torch.float64)).double()[0]
        w = (head_fn(torch.eye(dim, dtype=torch.float64)).double() - b).T.contiguous()
        points = torch.randn(AFFINE_CHECKS, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        got = head_fn(points).double()
    err = float((got - (points @ w.T + b)).norm() / got.norm().clamp_min(torch.finfo(torch.float64).tiny))
    if not err <= AFFINE_RTOL:
        raise NotApplicable(f"{scorer}: the method's head is not affine (W f + b), which {scorer} needs "
                            f"(relative error {err:.2g} on random features)")
    return w, b


def vim_fit(penultimate: torch.Tensor, w: torch.Tensor, b: torch.Tensor, dim: int
            ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(u, NS, alpha)`` of ViM (OpenOOD ``vim``) from the training features and the head's W, b.

    ``u = -pinv(W) b`` is the origin where all logits vanish; NS spans the directions of the
    uncentred covariance of ``f - u`` after its ``dim`` largest; ``alpha`` scales the residual
    norm to the training set's mean maximum logit.
    """
    f = penultimate.double()
    d = f.shape[1]
    if not 1 <= dim < d:
        raise NotApplicable(f"vim: its principal subspace needs 1 <= dim < D, and dim = {dim} with D = {d}")
    u = -torch.linalg.pinv(w) @ b
    x = f - u
    cov = x.T @ x / len(x)  # EmpiricalCovariance(assume_centered=True)
    # OpenOOD calls np.linalg.eig; eigh (the covariance is symmetric) returns the same eigenpairs,
    # in ascending order and possibly of other signs or bases within an eigenspace, none of which
    # changes the residual norm once sorted descending.
    _, vecs = torch.linalg.eigh(cov)
    ns = vecs.flip(1)[:, dim:].contiguous()
    alpha = (f @ w.T + b).max(dim=1).values.mean() / (x @ ns).norm(dim=1).mean()
    return u, ns, float(alpha)


def vim(penultimate: torch.Tensor, logits: torch.Tensor, u: torch.Tensor, ns: torch.Tensor,
        alpha: float) -> torch.Tensor:
    """Energy minus the scaled norm of the feature's residual outside the principal subspace."""
    residual = ((penultimate.double() - u) @ ns).norm(dim=1)
    return -alpha * residual + torch.logsumexp(logits.double(), dim=1)


def react_fit(penultimate: torch.Tensor, percentile: float) -> float:
    """ReAct's clipping threshold: that percentile of every training activation (``np.percentile``)."""
    return float(np.percentile(penultimate.double().numpy().ravel(), percentile))


def react(penultimate: torch.Tensor, head_fn: Callable[[torch.Tensor], torch.Tensor],
          threshold: float) -> torch.Tensor:
    """Energy of the logits of the features clipped at the threshold (OpenOOD ``react``)."""
    return torch.logsumexp(head_fn(penultimate.double().clamp(max=threshold)).double(), dim=1)


# --------------------------------------------------------------------------- configuration
#: Defaults (``postprocessor_args``) and grids (``postprocessor_sweep``) from OpenOOD v1.5's
#: ``configs/postprocessors/<name>.yml`` (Jingkang50/OpenOOD); names as osrbench.scorers reads them.
OPENOOD: dict[str, dict] = {
    "msp": {  # msp.yml: no arguments
        "params": {}, "grid": {},
        "description": "maximum softmax probability",
        "citation": "Hendrycks & Gimpel, A Baseline for Detecting Misclassified and Out-of-Distribution "
                    "Examples in Neural Networks (ICLR 2017); OpenOOD v1.5 msp postprocessor",
        "adaptation": "",
    },
    "mls": {  # mls.yml: no arguments
        "params": {}, "grid": {},
        "description": "maximum logit",
        "citation": "Hendrycks et al., Scaling Out-of-Distribution Detection for Real-World Settings "
                    "(ICML 2022); OpenOOD v1.5 mls postprocessor",
        "adaptation": "",
    },
    "energy": {  # ebo.yml: temperature 1, temperature_list [1, 10, 100, 1000]
        "params": {"temperature": 1}, "grid": {"temperature": [1, 10, 100, 1000]},
        "options": {"temperature": Option(exclusive_minimum=0)},
        "description": "negative free energy T logsumexp(z / T) of the logits",
        "citation": "Liu et al., Energy-based Out-of-distribution Detection (NeurIPS 2020); "
                    "OpenOOD v1.5 ebo postprocessor",
        "adaptation": "",
    },
    "gen": {  # gen.yml: gamma 0.1, M 100, gamma_list [0.01 .. 10], M_list [10 .. 1000]
        "params": {"gamma": 0.1, "m": 100},
        "grid": {"gamma": [0.01, 0.1, 0.5, 1, 2, 5, 10], "m": [10, 50, 100, 200, 500, 1000]},
        "options": {"gamma": Option(exclusive_minimum=0), "m": Option(minimum=1)},
        "description": "negative generalized entropy of the top-M softmax probabilities",
        "citation": "Liu, Lochman & Zach, GEN: Pushing the Limits of Softmax-Based Out-of-Distribution "
                    "Detection (CVPR 2023); OpenOOD v1.5 gen postprocessor",
        "adaptation": "",
    },
    "odin": {  # odin.yml: temperature 1000, noise 0.0014, sweep [1, 10, 100, 1000] x [0.0014, 0.0028]
        "params": {"temperature": 1000, "noise": 0.0014},
        "grid": {"temperature": [1, 10, 100, 1000], "noise": [0.0014, 0.0028]},
        "options": {"temperature": Option(exclusive_minimum=0), "noise": Option(minimum=0)},
        "description": "temperature-scaled softmax confidence after a gradient-sign input perturbation",
        "citation": "Liang, Li & Srikant, Enhancing The Reliability of Out-of-distribution Image Detection "
                    "in Neural Networks (ICLR 2018); OpenOOD v1.5 odin postprocessor",
        "adaptation": "",
    },
    "mahalanobis": {  # mds.yml: no arguments
        "params": {}, "grid": {},
        "description": "minus the squared Mahalanobis distance to the nearest class mean (shared covariance)",
        "citation": "Lee et al., A Simple Unified Framework for Detecting Out-of-Distribution Samples and "
                    "Adversarial Attacks (NeurIPS 2018); OpenOOD v1.5 mds postprocessor",
        "adaptation": "",
    },
    # knn.yml at the v1.5 tag (since 3215174, "enable knn hparam search", 2023-04-02): K 50,
    # K_list [50, 100, 200, 500, 1000], APS_mode True: v1.5 tunes K over that list, and so does
    # osrbench where it tunes (a K above the fit set is n/a for that candidate only); 50 otherwise.
    "knn": {
        "params": {"k": 50}, "grid": {"k": [50, 100, 200, 500, 1000]},
        "options": {"k": Option(minimum=1)},
        "description": "minus the squared distance to the k-th nearest normalised training feature",
        "citation": "Sun et al., Out-of-Distribution Detection with Deep Nearest Neighbors (ICML 2022); "
                    "OpenOOD v1.5 knn postprocessor",
        "adaptation": "",
    },
    "vim": {  # vim.yml: dim 256, dim_list [256, 1000] (of ResNet-18's 512 / ResNet-50's 2048 features)
        "params": {"dim_fraction": 0.5}, "grid": {"dim_fraction": [0.25, 0.5, 0.75]},
        "options": {"dim_fraction": Option(exclusive_minimum=0, exclusive_maximum=1)},
        "description": "energy minus the scaled residual norm outside the features' principal subspace",
        "citation": "Wang et al., ViM: Out-Of-Distribution with Virtual-logit Matching (CVPR 2022); "
                    "OpenOOD v1.5 vim postprocessor",
        "adaptation": "principal dimension as a fraction of the feature size D (default 0.5, OpenOOD's "
                      "dim 256 of ResNet-18's 512), tuned over 0.25/0.5/0.75 of D instead of dim 256/1000",
    },
    "react": {  # react.yml: percentile 90, percentile_list [85, 90, 95, 99]
        "params": {"percentile": 90}, "grid": {"percentile": [85, 90, 95, 99]},
        "options": {"percentile": Option(minimum=0, maximum=100)},
        "description": "energy of the logits after clipping features at a percentile of the activations",
        "citation": "Sun, Guo & Li, ReAct: Out-of-distribution Detection With Rectified Activations "
                    "(NeurIPS 2021); OpenOOD v1.5 react postprocessor",
        "adaptation": "clipping threshold is the percentile of the training set's activations "
                      "(OpenOOD: of its ID validation set)",
    },
}
