"""The ``classifier32`` ("VGG32") backbone and its two-branch-BN variant (METHODS.md §2).

One class covers both networks of the releases:

- ``Classifier32(K)`` is the plain ``classifier32`` (one BN branch);
- ``Classifier32(K, bn_branches=2)`` is ``classifier32ABN``: each of the nine BNs is a pair of
  independent ``BatchNorm2d``; the caller picks one branch for the whole batch (branch 0 = real
  images and test time, branch 1 = GAN images). Convs and the head are shared.

Layer table (input C×H×W, every conv 3×3, padding 1, ``bias=False``, LeakyReLU slope 0.2)::

    input   Dropout2d(0.2) on the image
    block 1 conv1 C→64 s1, conv2 64→64 s1, conv3 64→128 s2           -> x1  (128×⌈H/2⌉²)
    block 2 Dropout2d(0.2), conv4 s1, conv5 s1, conv6 s2 (128→128)   -> x2  (128×⌈H/4⌉²)
    block 3 Dropout2d(0.2), conv7 s1, conv8 s1, conv9 128→feat_dim s2
    pool    AdaptiveAvgPool(1) → flatten                              -> f   (feat_dim)
    head    fc: Linear(feat_dim → K, bias=False)                      -> z   (K logits)

Each conv is followed by BN → LeakyReLU(0.2). The unused tenth BN of the releases (``bn10``) is
not declared. Parameter names follow the releases (``conv1..conv9``, ``bn1..bn9`` with their
branches in ``bnN.bns.<i>``, ``fc``, ``dr1..dr3``).

Everything is batched tensor code with no per-sample Python and no layout assumptions, so the
module works unchanged under ``channels_last`` memory format, autocast (bf16/fp16) and
``torch.compile``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from osrbench.models.batchnorm import UncountedBatchNorm2d, count_batches

__all__ = ["MultiBatchNorm2d", "Classifier32", "init_classifier32_"]

#: LeakyReLU negative slope used after every BN.
LRELU_SLOPE = 0.2
#: Dropout2d probability of the input and of the two inner dropouts.
DROPOUT_P = 0.2


class MultiBatchNorm2d(nn.Module):
    """``branches`` independent BatchNorm2d layers; one is used per call.

    Each branch has its own affine parameters and running statistics (eps 1e-5, momentum 0.1).
    ``forward(x, branch)`` normalises the whole batch with branch ``branch`` only, so a train-mode
    call updates that branch's running statistics and batch count and leaves the others untouched;
    ``count=False`` leaves the count to the caller.
    """

    def __init__(self, num_features: int, branches: int = 1) -> None:
        super().__init__()
        if branches < 1:
            raise ValueError(f"branches must be >= 1, got {branches}")
        self.num_features = num_features
        self.bns = nn.ModuleList(
            UncountedBatchNorm2d(num_features, eps=1e-5, momentum=0.1) for _ in range(branches)
        )

    @property
    def branches(self) -> int:
        return len(self.bns)

    def forward(self, x: torch.Tensor, branch: int = 0, count: bool = True) -> torch.Tensor:
        if count:
            count_batches([self.bns[branch]])
        return self.bns[branch](x)

    def extra_repr(self) -> str:
        return f"{self.num_features}, branches={self.branches}"


def init_classifier32_(module: nn.Module) -> None:
    """Reference init (§2.1): conv weights ~ N(0, 0.05); BN weight ~ N(1, 0.02), bias 0.

    Running statistics keep their fresh values (mean 0, var 1); Linear layers keep PyTorch's
    default init. Applied in place to every submodule of ``module``.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.05)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Classifier32(nn.Module):
    """``classifier32`` / ``classifier32ABN`` with the injection interface DIAS needs (§2.3).

    :param num_classes: K, the number of logits.
    :param in_channels: input channels (3 = reference; 1 is an adaptation, §2.4).
    :param bn_branches: 1 = plain ``classifier32``; 2 = ``classifier32ABN``.
    :param feat_dim: width of conv9/bn9 and of the pooled feature ``f`` (MLS release; 128 =
        reference).

    Every method takes ``bn``, the BN branch used for the whole batch (default 0). The three
    Dropout2d layers are active only in train mode.
    """

    #: Per block: its leading dropout and its (conv, bn) pairs, by attribute name (looked up at
    #: call time, so replacing or converting a layer never leaves a stale reference).
    _BLOCKS = (
        ("dr1", (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))),
        ("dr2", (("conv4", "bn4"), ("conv5", "bn5"), ("conv6", "bn6"))),
        ("dr3", (("conv7", "bn7"), ("conv8", "bn8"), ("conv9", "bn9"))),
    )

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        bn_branches: int = 1,
        feat_dim: int = 128,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.bn_branches = bn_branches
        self.feat_dim = feat_dim

        def conv(cin: int, cout: int, stride: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)

        def bn(c: int) -> MultiBatchNorm2d:
            return MultiBatchNorm2d(c, bn_branches)

        self.conv1 = conv(in_channels, 64, 1)
        self.conv2 = conv(64, 64, 1)
        self.conv3 = conv(64, 128, 2)

        self.conv4 = conv(128, 128, 1)
        self.conv5 = conv(128, 128, 1)
        self.conv6 = conv(128, 128, 2)

        self.conv7 = conv(128, 128, 1)
        self.conv8 = conv(128, 128, 1)
        self.conv9 = conv(128, feat_dim, 2)

        self.bn1, self.bn2, self.bn3 = bn(64), bn(64), bn(128)
        self.bn4, self.bn5, self.bn6 = bn(128), bn(128), bn(128)
        self.bn7, self.bn8, self.bn9 = bn(128), bn(128), bn(feat_dim)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(feat_dim, num_classes, bias=False)
        self.dr1 = nn.Dropout2d(DROPOUT_P)
        self.dr2 = nn.Dropout2d(DROPOUT_P)
        self.dr3 = nn.Dropout2d(DROPOUT_P)

        init_classifier32_(self)

    # ------------------------------------------------------------------ building blocks
    def _check_bn(self, bn: int) -> None:
        if not 0 <= bn < self.bn_branches:
            raise ValueError(f"bn branch {bn} out of range: this network has {self.bn_branches} branch(es)")

    def _block(self, i: int, x: torch.Tensor, bn: int) -> torch.Tensor:
        """Block ``i`` (0-based) = its leading Dropout2d, then three conv → BN → LeakyReLU.

        The BNs do not count the batch themselves: the public entry points count it once for
        every block they ran (:meth:`_count_batches`).
        """
        dropout, layers = self._BLOCKS[i]
        x = getattr(self, dropout)(x)
        for conv, norm in layers:
            x = F.leaky_relu(getattr(self, norm)(getattr(self, conv)(x), bn, count=False), LRELU_SLOPE)
        return x

    def _count_batches(self, first_block: int, bn: int) -> None:
        """``num_batches_tracked += 1`` on branch ``bn`` of every BN in blocks ``first_block``..3,
        in train mode: what BatchNorm2d itself does per layer, in one foreach kernel."""
        count_batches(getattr(self, norm).bns[bn] for _, layers in self._BLOCKS[first_block:] for _, norm in layers)

    def _block1(self, x: torch.Tensor, bn: int = 0) -> torch.Tensor:
        """Input Dropout2d + conv1..conv3: image → x1."""
        return self._block(0, x, bn)

    def _block2(self, x1: torch.Tensor, bn: int = 0) -> torch.Tensor:
        """Dropout2d + conv4..conv6: x1 → x2."""
        return self._block(1, x1, bn)

    def _block3(self, x2: torch.Tensor, bn: int = 0) -> torch.Tensor:
        """Dropout2d + conv7..conv9: x2 → last feature map."""
        return self._block(2, x2, bn)

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(h), 1)

    # ------------------------------------------------------------------ public interface
    def features(
        self, x: torch.Tensor, bn: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(x1, x2, f, z)``: block-1 map, block-2 map, pooled feature, logits.

        ``x1``/``x2`` are taken after their block's last activation, before the next block's
        dropout, i.e. exactly what :meth:`from_layer2` / :meth:`from_layer3` consume.
        """
        self._check_bn(bn)
        self._count_batches(0, bn)
        x1 = self._block1(x, bn)
        x2 = self._block2(x1, bn)
        f = self._pool(self._block3(x2, bn))
        return x1, x2, f, self.fc(f)

    def forward(self, x: torch.Tensor, bn: int = 0) -> torch.Tensor:
        """Logits ``z`` of a batch of images, using BN branch ``bn``."""
        return self.head(self.pooled(x, bn))

    def logits(self, x: torch.Tensor, bn: int = 0) -> torch.Tensor:
        """Alias of :meth:`forward` (the name used in METHODS.md §2.3)."""
        return self.forward(x, bn)

    def pooled(self, x: torch.Tensor, bn: int = 0) -> torch.Tensor:
        """Pooled feature ``f`` (B, feat_dim) of a batch of images; the head is not applied."""
        self._check_bn(bn)
        self._count_batches(0, bn)
        return self._pool(self._block3(self._block2(self._block1(x, bn), bn), bn))

    def from_layer2(self, x1: torch.Tensor, bn: int = 0) -> torch.Tensor:
        """Logits from a block-1 map: Dropout2d + block 2 + block 3 + pool + head."""
        self._check_bn(bn)
        self._count_batches(1, bn)
        return self.head(self._pool(self._block3(self._block2(x1, bn), bn)))

    def from_layer3(self, x2: torch.Tensor, bn: int = 0) -> torch.Tensor:
        """Logits from a block-2 map: Dropout2d + block 3 + pool + head."""
        self._check_bn(bn)
        self._count_batches(2, bn)
        return self.head(self._pool(self._block3(x2, bn)))

    def head(self, f: torch.Tensor) -> torch.Tensor:
        """Only the final Linear: pooled feature (B, feat_dim) → logits (B, K)."""
        return self.fc(f)

    #: The entry points besides ``forward`` that the methods call (``compile`` compiles them too).
    ENTRY_POINTS = ("features", "pooled", "from_layer2", "from_layer3")

    def compile(self, *args, **kwargs) -> None:
        """``nn.Module.compile`` (the forward) and each of :attr:`ENTRY_POINTS`, in place."""
        super().compile(*args, **kwargs)
        for name in self.ENTRY_POINTS:
            setattr(self, name, torch.compile(getattr(type(self), name).__get__(self), *args, **kwargs))
