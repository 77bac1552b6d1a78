"""Energy-based open-set score (Liu, Wang, Owens, Li, "Energy-based Out-of-distribution Detection",
NeurIPS 2020) on a ``classifier32`` trained with plain cross-entropy.

The training is the Softmax baseline's; only the test score differs. The free energy of an image
is E(x) = -T · logsumexp(z / T) over its K logits z; the score is the negative energy

    score = T · logsumexp(z / T)        (higher = more likely known, as osrbench requires)

which, unlike the maximum softmax probability, does not saturate at 1 for confident images. The
MSP and the max logit of the same logits are stored too (``osrbench rescore`` can switch).
This plugin is the worked example of docs/PLUGINS.md: the paper's optional fine-tuning with an
outlier-exposure set is not implemented (osrbench's protocols give the method no outliers).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

import osrbench
from osrbench.method import Context, Method, MethodSpec, Option, Prediction
from osrbench.metrics import dias_f1_threshold
from osrbench.models import Classifier32
from osrbench.training import OPTIM_DEFAULTS, OPTIM_OPTIONS, logit_scores, lr_at, make_optimizer, set_lr

#: Every config key of the method with its default; ``--set key=value`` may change any of them.
DEFAULTS: dict[str, Any] = {
    **OPTIM_DEFAULTS,  # SGD lr 0.1, momentum 0.9, weight decay 1e-4, multistep schedule (ARPL release)
    "temperature": 1.0,  # T of the energy score (the paper uses T = 1)
}

#: The allowed values of the keys above (checked before a run starts; ``osrbench list --options``).
OPTIONS: dict[str, Option] = {
    **OPTIM_OPTIONS,
    "temperature": Option(exclusive_minimum=0, help="T of the energy score T * logsumexp(z / T)"),
}

#: The Softmax baseline's training recipe, so energy and softmax runs differ only in the score.
RECIPES = {
    "arpl-release": {
        "*": {},
        "tiny_imagenet": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0},
    },
}


def energy_scores(logits: torch.Tensor, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """Negative energy, MSP and max logit of a batch of logits, in float64 (higher = known)."""
    z = logits.double()
    return {"energy": temperature * torch.logsumexp(z / temperature, dim=1), **logit_scores(logits)}


class Energy(Method):
    phases = ("train",)
    graph_safe = True  # pure tensor steps: CUDA graphs may replay them (osrbench.graphs)

    def setup(self, ctx: Context) -> None:
        self.cfg = ctx.config
        if self.cfg["temperature"] <= 0:
            raise ValueError(f"temperature must be > 0, got {self.cfg['temperature']!r}")
        self.num_classes = ctx.num_classes
        self.net = ctx.place(Classifier32(ctx.num_classes, in_channels=ctx.image_shape[0]))
        self.opt = make_optimizer(self.net.parameters(), self.cfg)
        self.epoch = 0
        set_lr(self.opt, lr_at(0, self.cfg))

    def train_step(self, phase: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.net.train()
        loss = F.cross_entropy(self.net(images), labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    def end_epoch(self, epoch: int) -> None:
        self.epoch = epoch + 1
        set_lr(self.opt, lr_at(self.epoch, self.cfg))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        self.net.eval()
        logits = self.net(images)
        scores = energy_scores(logits, self.cfg["temperature"])
        return Prediction(logits=logits, score=scores["energy"], scores=scores)

    def f1_rule(self) -> tuple[str, float]:
        # The energy paper has no macro-F1 rule; apply the DIAS rule to the MSP of the same logits,
        # as osrbench does for every softmax-trained network.
        return "msp", dias_f1_threshold(self.num_classes)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.epoch = int(state["epoch"])
        set_lr(self.opt, lr_at(self.epoch, self.cfg))


@osrbench.hookimpl
def osrbench_register_methods(register):
    register(
        MethodSpec(
            name="energy",
            factory=Energy,
            defaults=DEFAULTS,
            recipes=RECIPES,
            default_recipe="arpl-release",
            description="Energy score T*logsumexp(z/T) of a cross-entropy classifier32 (example plugin)",
            citation="Liu, Wang, Owens, Li, \"Energy-based Out-of-distribution Detection\", NeurIPS 2020",
            options=OPTIONS,
        )
    )
