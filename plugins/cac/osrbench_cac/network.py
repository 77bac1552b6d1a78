"""The CAC release's network (``networks/openSetClassifier.py``), module for module.

Attribute names and construction order are the release's, so the state-dict keys match its files
(``encoder.convN.*``, ``encoder.bnN.*``, their aliases ``encoder.encoderM.I.*``, ``classify.*``,
``anchors``) and the initial draws come in its order.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _init_weights(module: nn.Module) -> None:
    """``_initialize_weights`` of the release (N 50-61 and 159-170; the two are identical)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0)


class BaseEncoder(nn.Module):
    """Nine 3x3 convs in three blocks, each block ending in BN + LeakyReLU(0.2) and Dropout2d(p)."""

    def __init__(self, num_channels: int, dropout: float = 0.2):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.relu = nn.LeakyReLU(0.2)
        widths = [64, 64, 128, 128, 128, 128, 128, 128, 128]
        for i, w in enumerate(widths, 1):
            setattr(self, f"bn{i}", nn.BatchNorm2d(w))
        ins = [num_channels, 64, 64, 128, 128, 128, 128, 128, 128]
        for i, (c_in, c_out) in enumerate(zip(ins, widths), 1):
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, 3, 2 if i % 3 == 0 else 1, 1, bias=False))
        for b in range(3):
            layers = []
            for i in range(3 * b + 1, 3 * b + 4):
                layers += [getattr(self, f"conv{i}"), getattr(self, f"bn{i}"), self.relu]
            setattr(self, f"encoder{b + 1}", nn.Sequential(*layers, self.dropout))
        _init_weights(self)  # BaseEncoder(init_weights=True), N 153-154

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder3(self.encoder2(self.encoder1(x)))


def flat_size(image_size: int) -> int:
    """128 * ceil(H/8)^2: three stride-2 convs with padding 1 (the release: 32 px -> 2048, 64 -> 8192)."""
    side = image_size
    for _ in range(3):
        side = math.ceil(side / 2)
    return 128 * side * side


class OpenSetClassifier(nn.Module):
    """Encoder, flatten, ``classify`` (Linear with bias) to the K-d logit space, then float64
    euclidean distances to the K anchors."""

    def __init__(self, num_classes: int, num_channels: int, image_size: int, dropout: float, alpha: float):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = BaseEncoder(num_channels, dropout)
        self.classify = nn.Linear(flat_size(image_size), num_classes)
        # The release's non-trainable Parameter (never in a gradient step): a buffer under its key.
        self.register_buffer("anchors", torch.diag(torch.full((num_classes,), float(alpha))).double())
        _init_weights(self)  # openSetClassifier(init_weights=True), N 29-30: every module again

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).reshape(len(x), -1)

    def distances(self, z: torch.Tensor, anchors: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) float64 ||z - a_k||_2 (N 67-80), to ``anchors`` (default: the training anchors)."""
        a = self.anchors if anchors is None else anchors
        return torch.linalg.vector_norm(z.double().unsqueeze(1) - a.unsqueeze(0), 2, dim=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.classify(self.flat(x))
        return z, self.distances(z)


class BackboneOpenSetClassifier(nn.Module):
    """CAC's anchored logit layer on a pretrained-style backbone (``backbone`` resnet50 / vit_b16).

    ``encoder`` is the extractor of :func:`osrbench.models.backbones.make_backbone` (pooled
    features, grey images replicated to three channels), ``classify`` a Linear(feat_dim -> K) with
    the release's Linear init (N(0, 0.01), bias 0; applied to it alone, so a weights file or the
    extractor's own init is kept), then the same float64 distances to the anchors alpha * e_k.
    """

    def __init__(self, encoder: nn.Module, feat_dim: int, num_classes: int, alpha: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder = encoder
        self.classify = nn.Linear(feat_dim, num_classes)
        self.register_buffer("anchors", torch.diag(torch.full((num_classes,), float(alpha))).double())
        _init_weights(self.classify)
        self.weights_info: dict | None = None

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.encoder(x)

    distances = OpenSetClassifier.distances
    forward = OpenSetClassifier.forward
