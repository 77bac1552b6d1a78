"""MEDAF (Wang et al., AAAI 2024) as ``Vanixxz/MEDAF`` trains it.

The specification, with the release's file and line for each rule, is this plugin's README.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

import osrbench
from osrbench import layouts
from osrbench.method import Context, Features, Method, MethodSpec, Option, Prediction
from osrbench.training import (
    OPTIM_DEFAULTS,
    OPTIM_OPTIONS,
    logit_scores,
    lr_at,
    make_optimizer,
    set_lr,
    zero_grad_in_place,
)
from osrbench_medaf.network import MultiBranchNet, attn_div

DEFAULTS: dict[str, Any] = {
    **OPTIM_DEFAULTS,
    # misc/osr.yml and osr_main.py 94-102: one configuration for every dataset
    "epochs": 150,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-5,
    "milestones": [130],
    "gamma": 0.1,
    "loss_wgts": [0.7, 1.0, 0.01],
    "gate_temp": 100.0,
    "lgs_temp": 100.0,
    "input_mean": [0.5, 0.5, 0.5],  # datasets/tools.py simple_norm
    "input_std": [0.25, 0.25, 0.25],
    "train_scale": [0.1, 2.0],  # datasets/tools.py manual_ctr: x * U(0.1, 2) after normalising
    "f1_tpr": 0.95,
}

OPTIONS: dict[str, Option] = {
    **OPTIM_OPTIONS,
    "loss_wgts": Option(minimum=0, help="weights of the experts' CE sum, the fused CE and the attention-diversity term"),
    "gate_temp": Option(exclusive_minimum=0, help="temperature of the gate's softmax (release 100)"),
    "lgs_temp": Option(exclusive_minimum=0, help="temperature of the test MSP of the fused logits (release 100)"),
    "input_std": Option(exclusive_minimum=0, help="per-channel std the method divides its inputs by"),
    "train_scale": Option(minimum=0, span=True, help="range [lo, hi] of manual_ctr's per-image factor in training; [] = off"),
    "f1_tpr": Option(exclusive_minimum=0, maximum=1, help="macro-F1 threshold: the training score whose TPR is closest"),
}

RECIPES = {"medaf-release": {"*": {}}}

#: Datasets the release has (osr_main.py 15-37); the others take its one configuration too.
RELEASE_DATASETS = ("svhn", "cifar10", "cifar+10", "cifar+50", "tiny_imagenet")


def medaf_losses(out: Mapping[str, Any], labels: torch.Tensor, wgts: list[float]) -> dict[str, torch.Tensor]:
    """train 40-42: CE of each expert and of the fused logits, attnDiv, and the weighted total."""
    ce = [F.cross_entropy(z.float(), labels) for z in out["logits"]]
    div = attn_div(out["cams"])
    total = wgts[0] * (ce[0] + ce[1] + ce[2]) + wgts[1] * ce[3] + wgts[2] * div
    return {"b1": ce[0], "b2": ce[1], "b3": ce[2], "gate": ce[3], "divAttn": div, "loss": total}


def tpr_threshold(scores: torch.Tensor, tpr: float) -> float:
    """test 108-113 with knowns only: among the distinct scores t (decreasing, as roc_curve's
    thresholds), the first whose fraction of scores >= t is closest to ``tpr``."""
    s = torch.sort(scores.double().flatten(), descending=True).values
    distinct, counts = torch.unique_consecutive(s, return_counts=True)
    accepted = torch.cumsum(counts, 0).double() / len(s)
    return float(distinct[torch.argmin((accepted - tpr).abs())])


class MEDAF(Method):
    phases = ("train",)
    graph_safe = True  # pure tensor step; manual_ctr draws from ctx.generator

    def setup(self, ctx: Context) -> None:
        self.cfg = cfg = ctx.config
        c = ctx.image_shape[0]
        if len(cfg["loss_wgts"]) != 3:
            raise ValueError(f"loss_wgts needs 3 weights (experts' CE, fused CE, attnDiv), got {cfg['loss_wgts']}")
        if len(cfg["train_scale"]) not in (0, 2):
            raise ValueError(f"train_scale is [lo, hi] or [], got {cfg['train_scale']}")
        if len(cfg["input_mean"]) != c or len(cfg["input_std"]) != c:
            raise ValueError(f"input_mean and input_std need {c} values, got {cfg['input_mean']}, {cfg['input_std']}")
        self.num_classes = ctx.num_classes
        self.dataset = ctx.dataset
        self.image_size = ctx.image_shape[1]
        self.device = ctx.device
        self.generator = ctx.generator
        self.net = ctx.place(MultiBranchNet(ctx.num_classes, cfg["gate_temp"]))
        self.mean = torch.tensor(cfg["input_mean"], device=ctx.device).view(1, -1, 1, 1)
        self.std = torch.tensor(cfg["input_std"], device=ctx.device).view(1, -1, 1, 1)
        classifier, extractor = self.net.param_groups()
        self.opt = make_optimizer([{"params": classifier}, {"params": extractor}], cfg)
        self.epoch = 0
        self.threshold: float | None = None
        set_lr(self.opt, lr_at(0, cfg))

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def train_step(self, phase: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.net.train()
        x = self._input(images)
        if self.cfg["train_scale"]:
            lo, hi = self.cfg["train_scale"]
            s = torch.rand(len(x), generator=self.generator, device=self.generator.device).to(x.device, x.dtype)
            x = x * (lo + (hi - lo) * s).view(-1, 1, 1, 1)
        losses = medaf_losses(self.net(x, labels), labels, self.cfg["loss_wgts"])
        zero_grad_in_place(self.opt)
        losses["loss"].backward()
        self.opt.step()
        return {k: v.detach() for k, v in losses.items()}

    def end_epoch(self, epoch: int) -> None:
        self.epoch = epoch + 1
        self.threshold = None  # the network moved on: the fit stage sets it again
        set_lr(self.opt, lr_at(self.epoch, self.cfg))

    def _fused(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self._input(images))["logits"][-1]

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        self.net.eval()
        fused = self._fused(images)
        dtype = self.cfg["score_dtype"]
        scores = logit_scores(fused, temperature=self.cfg["lgs_temp"], dtype=dtype)
        scores["msp_t1"] = logit_scores(fused, dtype=dtype)["msp"]
        return Prediction(logits=fused, score=scores["msp"], scores=scores)

    def features(self, images: torch.Tensor) -> Features:
        """The three experts' pooled features side by side (no head(): the gate makes the fused logits
        depend on the image beyond them)."""
        self.net.eval()
        out = self.net(self._input(images), pooled=True)
        return Features(penultimate=out["pooled"], logits=out["logits"][-1])

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """The F1 threshold: the release's TPR-0.95 rule (test 108-113) on the training images."""
        self.net.eval()
        scores = torch.cat([self.predict(x).score.double().cpu() for x, _ in batches])
        self.threshold = tpr_threshold(scores, self.cfg["f1_tpr"])

    def f1_rule(self) -> tuple[str, float] | None:
        return None if self.threshold is None else ("score", self.threshold)

    external_layouts = ("medaf-release",)

    def load_external(self, layout: str, weights: Mapping[str, torch.Tensor]) -> None:
        """The release's ``{'epoch', 'state_dict', 'optimizer', 'scheduler'}`` (osr_main.py 127-132)."""
        state = layouts.plain_state(weights, "state_dict.")
        if not state:
            raise layouts.LayoutError("a medaf-release file holds the network under 'state_dict' (osr_main.py "
                                      "save_checkpoint); this one has no 'state_dict.*' key")
        layouts.load_module(self.net, state, "the MEDAF release network (MultiBranchNet)")
        layouts.drop_prefix(weights, "optimizer.", "the release's optimiser state (evaluation trains nothing)")
        layouts.drop_prefix(weights, "scheduler.", "the release's scheduler state (evaluation trains nothing)")
        if isinstance(weights, layouts.ExternalWeights) and "epoch" in weights.others:
            epoch = weights.others["epoch"]
            if isinstance(epoch, int) and not isinstance(epoch, bool):
                weights.info["trained_epochs"] = epoch  # the release saves epoch + 1
            layouts.drop(weights, ["epoch"], "the release's epoch counter (recorded as trained_epochs)")
        self.threshold = None

    def adaptations(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "data": "the host's stream (shared crop/flip, zero padding) instead of the release's reflect-padded crop, "
                    "flip and FixMatch RandAugment(2, 10); normalisation and manual_ctr applied by the method",
            "f1_threshold": "the release's TPR-0.95 rule on the training images (the release picks it on the test set)",
        }
        if self.dataset not in RELEASE_DATASETS:
            out["recipe"] = f"{self.dataset} is not in the release: its one configuration (misc/osr.yml)"
        if self.image_size < 8:
            out["image_size"] = f"{self.image_size} px: CAMs smaller than 1x1 are not defined by the release"
        elif self.image_size < 16:
            out["image_size"] = f"{self.image_size} px: {self.image_size // 8}x{self.image_size // 8} CAMs"
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "epoch": self.epoch,
                "threshold": self.threshold}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.epoch = state["epoch"]
        self.threshold = state.get("threshold")
        set_lr(self.opt, lr_at(self.epoch, self.cfg))


@osrbench.hookimpl
def osrbench_register_methods(register):
    register(
        MethodSpec(
            name="medaf",
            factory=MEDAF,
            defaults=DEFAULTS,
            recipes=RECIPES,
            default_recipe="medaf-release",
            description="MEDAF: three ResNet-18 experts with CAM attention diversity, gated fusion; score MSP/100",
            citation="Wang, Mu, Zhu, Hu, Exploring Diverse Representations for Open Set Recognition, AAAI 2024",
            options=OPTIONS,
        )
    )
