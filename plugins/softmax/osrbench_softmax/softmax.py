"""Softmax baseline (METHODS.md §4): classifier32 (or the ``backbone`` option's ResNet-50 / ViT-B/16,
:mod:`osrbench.models.backbones`) trained with cross-entropy.

``openmax`` (:mod:`osrbench_softmax.openmax`) builds on it: this training, then a fit stage and
the OpenMax score; :mod:`osrbench_softmax.plugin` registers both.

Scores: ``msp`` (maximum softmax probability, computed in float64 so easy samples do not
saturate at 1.0 and tie) or ``mls`` (maximum logit, the MLS paper). Both are stored with every
run, so ``osrbench rescore`` can switch between them without retraining.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from osrbench import layouts
from osrbench.method import Context, Features, Method, MethodSpec, Option, Prediction
from osrbench.metrics import dias_f1_threshold
from osrbench.models.backbones import (BACKBONE_DEFAULTS, BACKBONE_OPTIONS, PRETRAINED, load_classifier, make_network,
                                       network_adaptations)
from osrbench.training import OPTIM_DEFAULTS, OPTIM_OPTIONS, logit_scores, lr_at, make_optimizer, mls_smoothed_cross_entropy, set_lr

DEFAULTS: dict[str, Any] = {
    **OPTIM_DEFAULTS,
    "score": "msp",  # msp | mls
    "label_smoothing": 0.0,  # MLS convention: 1 - eps on the true class, eps / (K - 1) elsewhere
    **BACKBONE_DEFAULTS,  # classifier32 | resnet50 | vit_b16, and a local weights file
}

#: The allowed values of the keys above (checked before a run starts; ``osrbench list --options``).
OPTIONS: dict[str, Option] = {
    **OPTIM_OPTIONS,
    "score": Option(choices=("msp", "mls"), help="test score: maximum softmax probability or maximum logit"),
    "label_smoothing": Option(minimum=0, maximum=1, help="MLS label smoothing eps of the cross-entropy (0 = off)"),
    **BACKBONE_OPTIONS,
}

# MLS-paper recipe (METHODS.md §4.2): RandAugment magnitude per dataset.
_MLS_M = {"mnist": 8, "fashion-mnist": 8, "svhn": 18, "cifar10": 6, "cifar+10": 6, "cifar+50": 6, "tiny_imagenet": 9}

RECIPES = {
    "arpl-release": {
        "*": {},
        "tiny_imagenet": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0},
    },
    "mls-paper": {
        "*": {"epochs": 600, "batch_size": 128, "schedule": "mls-cosine", "normalize": "cifar", "score": "mls"},
        **{name: {"randaugment": m} for name, m in _MLS_M.items()},
        "tiny_imagenet": {
            "randaugment": 9, "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "label_smoothing": 0.9,
        },
    },
    # The MLS release's Semantic Shift Benchmark runs (bash_scripts/osr_finegrained_train.sh, --loss
    # Softmax): SGD lr 0.001 (momentum 0.9, weight decay 1e-4: osr.py's SGD for every dataset but
    # Tiny-ImageNet), batch 32, 600 epochs, 448 px, RandAugment N = 2, cosine warm restarts with
    # warm-up (2 restarts), CIFAR normalisation ('rand-augment' transform), scored by MLS; M and
    # label smoothing per dataset from the README's cross-entropy table. Stanford Cars has no row.
    "mls-ssb": {
        "*": {
            "epochs": 600, "batch_size": 32, "image_size": 448, "optimizer": "sgd", "lr": 0.001, "momentum": 0.9,
            "weight_decay": 1e-4, "schedule": "mls-cosine", "warmup_epochs": 10, "augment": "crop_flip",
            "normalize": "cifar", "randaugment_n": 2, "score": "mls",
            # timm's ResNet-50 as the release fine-tunes it; its MoCo-Places weights are a local file
            # (--set backbone_weights=PATH), so the recipe cannot name them.
            "backbone": "resnet50",
        },
        "cub": {"randaugment": 30, "label_smoothing": 0.3},
        "aircraft": {"randaugment": 15, "label_smoothing": 0.2},
    },
    # The MLS release's ImageNet SSB evaluation (methods/tests/openset_test_imagenet.py): nothing is
    # trained; a pretrained ImageNet-1K classifier (osrbench evaluate --layout torchvision) is scored on
    # ImageNet-1K val against the Easy / Hard 21K-P classes with its own test transform, for timm's
    # resnet50 (default_cfg): 224 px, Resize(int(224 / 0.875) = 256, bicubic) + CenterCrop(224),
    # ImageNet mean / std. Its script prints MSP (-max softmax); the paper's headline score is MLS:
    # both are stored (osrbench rescore switches). torchvision's own classifiers use bilinear there
    # (the script's *_torch branch): --set test_interpolation=bilinear.
    "imagenet-eval": {
        "*": {"backbone": "resnet50", "normalize": "imagenet", "score": "mls"},
        # the test transform is for image files; the in-memory datasets are resized when read
        "imagenet-ssb": {"image_size": 224, "crop_pct": 0.875, "test_interpolation": "bicubic"},
    },
}


class Softmax(Method):
    phases = ("train",)
    graph_safe = True  # pure tensor steps: CUDA graphs may replay them (osrbench.graphs)

    def setup(self, ctx: Context) -> None:
        self.cfg = ctx.config
        self.check_config(ctx)
        self.num_classes = ctx.num_classes
        self.backbone = self.cfg.get("backbone", "classifier32")  # .get: configs of runs from before the option
        self.in_channels = ctx.image_shape[0]
        self.net = ctx.place(make_network(self.backbone, ctx.num_classes, in_channels=self.in_channels,
                                          image_size=ctx.image_shape[1], weights=self.cfg.get("backbone_weights", "")))
        self.opt = make_optimizer(self.net.parameters(), self.cfg)
        self.epoch = 0
        set_lr(self.opt, lr_at(0, self.cfg))

    def check_config(self, ctx: Context) -> None:
        """Refuse what the options cannot (subclasses check their own keys here; it draws no random number)."""
        if self.cfg["score"] not in ("msp", "mls"):
            raise ValueError(f"score must be msp or mls, got {self.cfg['score']!r}")

    def train_step(self, phase: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        self.net.train()
        logits = self.net(images)
        loss = mls_smoothed_cross_entropy(logits, labels, self.cfg["label_smoothing"])
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
        scores = logit_scores(logits, dtype=self.cfg["score_dtype"])
        return Prediction(logits=logits, score=scores[self.cfg["score"]], scores=scores)

    def features(self, images: torch.Tensor) -> Features:
        self.net.eval()
        f = self.net.pooled(images)
        return Features(penultimate=f, logits=self.net.head(f))

    def head(self, penultimate: torch.Tensor) -> torch.Tensor:
        return self.net.head(penultimate)

    #: The ARPL release trains this baseline too (``osr.py --loss Softmax``); the MLS release ships
    #: softmax-trained VGG32 (classifier32) checkpoints of Tiny-ImageNet, and evaluates pretrained
    #: ImageNet classifiers (torchvision / timm files, head included) on the ImageNet SSB.
    external_layouts = ("arpl-release", "mls-release", "torchvision")

    def load_external(self, layout: str, weights: Mapping[str, torch.Tensor]) -> None:
        """The ARPL release's ``--loss Softmax`` network (``classifier32``; its criterion file, if
        given, is empty: the ``Softmax`` criterion has no parameters), an MLS release checkpoint
        (``pretrained_weights/tinyimagenet_<i>.pth``: classifier32, feat_dim 128), or a torchvision /
        timm ImageNet classifier (``torchvision``: backbone resnet50 or vit_b16, its head this head)."""
        if layout == "torchvision":
            if self.backbone not in PRETRAINED:
                raise layouts.LayoutError(f"--layout torchvision holds a resnet50 or vit_b16 ImageNet classifier; this "
                                          f"run's backbone is {self.backbone} (add --set backbone=resnet50 or vit_b16, "
                                          "or --recipe imagenet-eval)")
            if self.cfg.get("backbone_weights"):
                raise layouts.LayoutError("--layout torchvision loads the whole classifier; drop --set backbone_weights")
            load_classifier(self.net, weights)
            return
        if self.backbone != "classifier32":
            raise layouts.LayoutError(f"--layout {layout} holds a classifier32 network; this run's backbone is "
                                      f"{self.backbone} (drop --set backbone)")
        if layout == "mls-release":
            layouts.load_module(self.net, layouts.mls_release(weights), "the MLS release network (classifier32)")
            return
        net, criterion = layouts.arpl_release(weights)
        if criterion is not None:
            raise layouts.LayoutError(
                "softmax reads the ARPL release's --loss Softmax files, whose criterion is empty; these files "
                "hold an ARPLoss criterion (points, radius): evaluate them with --method arpl or arpl-cs")
        layouts.load_module(self.net, net, "the ARPL release network (classifier32)")

    def adaptations(self) -> dict[str, Any]:
        return network_adaptations(self.net, self.in_channels)

    def f1_rule(self) -> tuple[str, float]:
        # The DIAS rule thresholds MSP; it applies to any softmax-trained network.
        return "msp", dias_f1_threshold(self.num_classes)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.epoch = state["epoch"]
        set_lr(self.opt, lr_at(self.epoch, self.cfg))


SPEC = MethodSpec(
    name="softmax",
    factory=Softmax,
    defaults=DEFAULTS,
    recipes=RECIPES,
    default_recipe="arpl-release",
    description="Softmax cross-entropy baseline; score MSP (default) or max-logit (score=mls)",
    citation="Hendrycks & Gimpel, ICLR 2017 (MSP); Vaze et al., ICLR 2022 (MLS)",
    options=OPTIONS,
)
