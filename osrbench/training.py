"""Building blocks plugin authors share: optimisers, learning-rate schedules, soft targets.

Schedules are functions of the epoch (``lr_at``) set on the optimiser at every epoch start, so a
resumed run needs no scheduler state and the epoch counter alone reproduces the rate exactly.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F

from osrbench.method import Option

#: Config keys every optimiser/schedule user shares, with the ARPL-release values.
OPTIM_DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd",  # sgd | adam
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "betas": [0.9, 0.999],  # Adam
    "schedule": "multistep",  # multistep | mls-cosine
    "milestones": [30, 60, 90, 120],
    "gamma": 0.1,
    "warmup_epochs": 10,  # mls-cosine only
}

#: The allowed values of :data:`OPTIM_DEFAULTS` (a method adds ``**OPTIM_OPTIONS`` to its options).
OPTIM_OPTIONS: dict[str, Option] = {
    "optimizer": Option(choices=("sgd", "adam"), help="optimiser of the classifier"),
    "lr": Option(exclusive_minimum=0, help="base learning rate"),
    "momentum": Option(minimum=0, help="SGD momentum"),
    "weight_decay": Option(minimum=0, help="weight decay (L2) of the optimiser"),
    "betas": Option(minimum=0, exclusive_maximum=1, help="Adam betas"),
    "schedule": Option(choices=("multistep", "mls-cosine"), help="learning-rate schedule, stepped once per epoch"),
    "milestones": Option(minimum=0, help="multistep: epochs at which the learning rate is multiplied by gamma"),
    "gamma": Option(exclusive_minimum=0, help="multistep: learning-rate factor at each milestone"),
    "warmup_epochs": Option(minimum=0, help="mls-cosine: epochs of linear warm-up"),
}


def make_optimizer(params: Iterable[torch.nn.Parameter] | Iterable[dict], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD (lr, momentum, weight decay) or Adam (lr, betas, weight decay) from a config."""
    kind = cfg["optimizer"]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    if kind == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), weight_decay=cfg["weight_decay"])
    raise ValueError(f"optimizer must be sgd or adam, got {kind!r}")


def multistep_lr(epoch: int, base: float, milestones: Iterable[int], gamma: float) -> float:
    """torch's MultiStepLR stepped once per epoch: base * gamma ** (milestones passed)."""
    return base * gamma ** sum(1 for m in milestones if epoch >= m)


def mls_cosine_lr(epoch: int, base: float, epochs: int, warmup: int = 10, restarts: int = 2) -> float:
    """The MLS release's ``cosine_warm_restarts_warmup`` schedule (METHODS.md §4.2).

    The release (``utils/schedulers.py``, ``CosineAnnealingWarmupRestarts_New``: torch's
    ``CosineAnnealingWarmRestarts`` with ``T_0 = int(epochs / (num_restarts + 1))``,
    ``eta_min = 1e-3 * lr`` and a linear warm-up) stepped as its ``osr.py`` does,
    ``scheduler.step(epoch=epoch)`` after each epoch. The rate used during ``epoch``:
    eta = 1e-3 * base, T = epochs // (restarts + 1),
    f(t) = eta + (base - eta) * (1 + cos(pi * t / T)) / 2; epoch 0 uses eta, epochs 1..warmup
    ramp linearly to f(warmup), later epochs use f((epoch - 1) mod T). Every float operation is
    the release's, in its order, so the rates are equal to the last bit.
    """
    eta = 1e-3 * base
    period = max(1, epochs // (restarts + 1))

    def f(t: int) -> float:
        return eta + (base - eta) * (1 + math.cos(math.pi * t / period)) / 2

    if epoch == 0:
        return eta
    if epoch <= warmup:
        # the release's warmup_lrs[epoch - 1]; its target f(warmup) takes no modulo (a warm-up
        # longer than T ramps towards a point of the second period)
        return eta + (f(warmup) - eta) / warmup * epoch
    return f((epoch - 1) % period)


def lr_at(epoch: int, cfg: Mapping[str, Any]) -> float:
    if cfg["schedule"] == "multistep":
        return multistep_lr(epoch, cfg["lr"], cfg["milestones"], cfg["gamma"])
    if cfg["schedule"] == "mls-cosine":
        return mls_cosine_lr(epoch, cfg["lr"], cfg["epochs"], cfg["warmup_epochs"])
    raise ValueError(f"schedule must be multistep or mls-cosine, got {cfg['schedule']!r}")


def zero_grad_in_place(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.zero_grad(set_to_none=False)`` (PyTorch 1.x's default) in one foreach kernel per
    device and dtype.

    The gradients stay allocated, zero-filled, so the optimiser keeps stepping parameters the next
    loss does not reach (by momentum and weight decay), as the releases' PyTorch did. torch's own
    ``zero_grad`` fills them one kernel per tensor unless the optimiser was built with ``foreach``.
    """
    grads: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                if p.grad.grad_fn is not None:
                    p.grad.detach_()
                else:
                    p.grad.requires_grad_(False)
                grads.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    for same in grads.values():
        torch._foreach_zero_(same)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def logit_scores(logits: torch.Tensor, temperature: float = 1.0, dtype: str = "float64") -> dict[str, torch.Tensor]:
    """The two scores every softmax-trained network offers (higher = more likely known).

    ``msp``: maximum softmax probability at ``temperature``; ``mls``: maximum logit. float64 by
    default, because float32 softmax saturates at exactly 1.0 on easy samples and creates ties
    (METHODS.md §8.2, pitfall 8). ``dtype="float32"`` (config key ``score_dtype``) computes them as
    the releases do, ``torch.softmax`` of the float32 logits kept in float32, to reproduce their
    published numbers exactly.
    """
    z = logits.double() if dtype == "float64" else logits.float()
    return {"msp": F.softmax(z / temperature, dim=1).max(1).values, "mls": z.max(1).values}


def bce(prob: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of a probability against a constant target, in float32.

    Autocast refuses ``binary_cross_entropy`` on probabilities (it is unsafe in half precision),
    so the GAN losses compute it here outside autocast; in float32 runs this is plain BCE.
    """
    with torch.autocast(prob.device.type, enabled=False):
        p = prob.float()
        return F.binary_cross_entropy(p, torch.full_like(p, target))


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_k target_k log softmax(logits)_k."""
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """SCE_alpha (PyTorch ``label_smoothing`` convention): target (1 - alpha) one-hot + alpha / K.

    ``alpha = 1`` is the uniform target (labels ignored, may be None); METHODS.md §6.2.
    """
    if alpha == 1.0:
        return -F.log_softmax(logits, dim=1).mean(1).mean()
    return F.cross_entropy(logits, labels, label_smoothing=alpha)


def mls_smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """The MLS recipe's smoothing: 1 - eps on the true class, eps / (K - 1) on each other class."""
    k = logits.shape[1]
    if eps == 0:
        return F.cross_entropy(logits, labels)
    target = torch.full_like(logits, eps / (k - 1))
    target.scatter_(1, labels[:, None], 1.0 - eps)
    return soft_cross_entropy(logits, target)
