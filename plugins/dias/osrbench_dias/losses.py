"""The DIAS loss terms (METHODS.md §6.2-§6.3) as pure functions of tensors.

Every function returns 0-d tensors that still carry their graph; the method detaches what it
reports. Notation: SCE_a(z, y) = mean_i -sum_k q_ik log softmax(z_i)_k with
q = (1 - a) one-hot(y) + a / K (PyTorch's ``label_smoothing`` convention); SCE_1 is the uniform
target (labels ignored). L1(a, b) = mean |a - b| over every element.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from osrbench.training import bce, mls_smoothed_cross_entropy, smoothed_cross_entropy

__all__ = [
    "sce",
    "discriminator_loss",
    "generator_loss",
    "gan_classifier_loss",
    "pull_loss",
    "copycat_loss",
    "fake_loss",
    "classifier_loss",
]


def sce(logits: torch.Tensor, labels: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """SCE_alpha; ``alpha = 1`` is the uniform target (``labels`` may then be None)."""
    return smoothed_cross_entropy(logits, labels, alpha)


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Step A2: BCE(D(x), 1) + BCE(D(sg x~), 0), on D's probabilities.

    The release calls ``backward`` on the two terms separately; the gradient of the sum is the same.
    """
    return bce(d_real, 1.0) + bce(d_fake, 0.0)


def generator_loss(
    d_fake: torch.Tensor, cls_logits: torch.Tensor, labels: torch.Tensor | None, beta: float, alpha_uniform: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step A3: L_G = BCE(D(x~), 1) **-** beta * SCE_alpha_uniform(C(x~; BN 1)).

    Returns ``(L_G, adversarial term, classifier term)``. The minus sign is the release's
    (``errG + beta * errG_F * -1.``): G *maximises* C's cross-entropy to the uniform target, i.e. it
    seeks fakes C is confident on (the opposite of ARPL+CS's generator).
    """
    adv = bce(d_fake, 1.0)
    cls = sce(cls_logits, labels, alpha_uniform)
    return adv - beta * cls, adv, cls


def gan_classifier_loss(
    logits_real: torch.Tensor,
    labels: torch.Tensor,
    logits_fake: torch.Tensor,
    beta: float,
    alpha_uniform: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step A4: CE(C(x; BN 0), y) + beta * SCE_alpha_uniform(C(G(z'); BN 1)); returns (total, CE, SCE).

    ``label_smoothing`` eps > 0 smooths the CE of the real images as the MLS release does (1 - eps on
    the true class, eps / (K - 1) elsewhere); 0 is the release's plain CE.
    """
    ce = mls_smoothed_cross_entropy(logits_real, labels, label_smoothing)
    fake = sce(logits_fake, labels, alpha_uniform)
    return ce + beta * fake, ce, fake


def pull_loss(x1_p: torch.Tensor, x1_c: torch.Tensor, x2_p: torch.Tensor, x2_c: torch.Tensor) -> torch.Tensor:
    """½ [L1(x1^P, sg x1^C) + L1(x2^P, sg x2^C)]: Copycat imitates C's layer-1 and layer-2 maps.

    The targets are detached here as well (the release detaches them; the method also computes
    them without a graph).
    """
    return 0.5 * (F.l1_loss(x1_p, x1_c.detach()) + F.l1_loss(x2_p, x2_c.detach()))


def copycat_loss(
    logits_p: torch.Tensor,
    labels: torch.Tensor,
    x1_p: torch.Tensor,
    x1_c: torch.Tensor,
    x2_p: torch.Tensor,
    x2_c: torch.Tensor,
    lambda_pull: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step B1: L_P = CE(z^P, y) + lambda_pull * pull_loss; returns (total, CE, pull)."""
    ce = F.cross_entropy(logits_p, labels)
    pull = pull_loss(x1_p, x1_c, x2_p, x2_c)
    return ce + lambda_pull * pull, ce, pull


def fake_loss(
    h_easy: torch.Tensor,
    h_hard1: torch.Tensor,
    h_hard2: torch.Tensor,
    labels: torch.Tensor,
    alpha_uniform: float,
    alpha_hard: float,
) -> torch.Tensor:
    """L_fake = ⅓ [SCE_alpha_uniform(h_easy) + SCE_alpha_hard(h_hard1, y) + SCE_alpha_hard(h_hard2, y)].

    ``h_easy = C.head(sg f^P)``, ``h_hard1 = C.from_layer2(sg x1^P)``, ``h_hard2 = C.from_layer3(sg x2^P)``.
    """
    return (
        sce(h_easy, labels, alpha_uniform) + sce(h_hard1, labels, alpha_hard) + sce(h_hard2, labels, alpha_hard)
    ) / 3


def classifier_loss(
    logits_c: torch.Tensor, labels: torch.Tensor, l_fake: torch.Tensor, lambda_fake: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step B2: L_C = CE(z^C, y) + lambda_fake * L_fake; returns (total, CE) (``label_smoothing`` as
    :func:`gan_classifier_loss`)."""
    ce = mls_smoothed_cross_entropy(logits_c, labels, label_smoothing)
    return ce + lambda_fake * l_fake, ce
