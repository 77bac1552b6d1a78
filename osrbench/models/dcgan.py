"""DCGAN generator and discriminator of ARPL+CS and DIAS (METHODS.md §3), with the size adaptations.

``gan_mode`` (recorded by the methods that use a GAN):

- ``"reference"``: the releases' networks. G32 (32 px) or G64 (64 px); D is the same layers for
  both sizes (32 px: 16, 8, 4, 1; 64 px: 32, 16, 8, 5, then pooled). Only H = W = 32 or 64.
- ``"wrap"`` (adaptation): G = G32 with ``nc = C`` followed by a fixed antialiased bilinear resize
  of its output to H×W; D = D with ``nc = C`` preceded by a fixed resize of its input to 32×32.
  Any H×W.
- ``"native"`` (adaptation): a DCGAN chain re-derived for the size, for H = W = 4·2^n, n >= 1
  (8, 16, 32, 64, 128, …). G: ConvT nz→c k4 s1 p0 (4×4) → BN → ReLU, then ConvT k4 s2 p1 → BN →
  ReLU doubling the size while halving the channels, last ConvT → C → Sigmoid at H. The width at
  4×4 is ``ngf·min(8, 2^(n+1))``, which gives 100→256→C for 8 px and reproduces G32/G64 exactly
  at 32/64 px. D mirrors it: Conv C→2·ndf k4 s2 p1 → LReLU(0.2), further Conv k4 s2 p1 → BN →
  LReLU doubling the channels down to 4×4, then Conv k4 s1 p0 (doubling, capped at 16·ndf) →
  Sigmoid → AdaptiveAvgPool(1) → flatten → Linear(→1) → Sigmoid. At 32 px it equals the reference
  D; at 64 px it has one more stride-2 conv than the reference D (ends at 1×1, not 5×5).

The ``resize32`` route of §3 (resize the *dataset* to 32×32, replicate to 3 channels, then use the
reference networks) is a data option (``--image-size 32``), not a model mode.

All conv / transposed-conv layers have ``bias=False``; init: Conv/ConvT weight ~ N(0, 0.02), BN
weight ~ N(1, 0.02), BN bias 0; D's Linear keeps PyTorch's default init. The two sigmoids in series
at the end of D are reference behaviour; D returns probabilities of shape (B,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from osrbench.models.batchnorm import UncountedBatchNorm2d, count_batches

__all__ = [
    "GAN_MODES",
    "Generator",
    "Discriminator",
    "Resize2d",
    "resolve_gan_mode",
    "make_gan",
    "sample_noise",
    "init_dcgan_",
    "native_sizes_ok",
]

#: The concrete GAN modes (``"auto"`` resolves to one of them, see :func:`resolve_gan_mode`).
GAN_MODES = ("reference", "wrap", "native")
_REFERENCE_SIZES = (32, 64)
_WRAP_SIZE = 32  # G32 / D operate at 32×32 in wrap mode.


def _as_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        h = w = image_size
    else:
        h, w = (int(v) for v in image_size)
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return h, w


def _native_depth(h: int, w: int) -> int | None:
    """n with H = W = 4·2^n, n >= 1; None if the size has no native chain."""
    if h != w or h < 8 or h % 4:
        return None
    q = h // 4
    if q & (q - 1):
        return None
    return q.bit_length() - 1


def native_sizes_ok(image_size: int | tuple[int, int]) -> bool:
    """Whether ``gan_mode="native"`` supports this size (square, 4·2^n with n >= 1)."""
    return _native_depth(*_as_hw(image_size)) is not None


def _supported_text() -> str:
    return (
        "supported: gan_mode 'reference' for image size 32 or 64 (3-channel reference networks); "
        "'wrap' for any H×W (G32/D with a fixed resize); 'native' for square sizes 4·2^n with "
        "n >= 1 (8, 16, 32, 64, 128, ...); or resize the data to 32×32 with --image-size 32 "
        "(the resize32 route) and use 'reference'"
    )


def resolve_gan_mode(image_size: int | tuple[int, int], mode: str = "auto") -> str:
    """Resolve ``mode`` for ``image_size`` to one of :data:`GAN_MODES`, or raise ValueError.

    ``"auto"``: ``"reference"`` for 32 and 64 px, ``"native"`` for the other square sizes
    4·2^n (8, 16, 128, …), ``"wrap"`` for every other size (e.g. 28 or 20 px).
    An explicit mode is returned unchanged if it supports the size.
    """
    h, w = _as_hw(image_size)
    if mode == "auto":
        if h == w and h in _REFERENCE_SIZES:
            return "reference"
        if _native_depth(h, w) is not None:
            return "native"
        return "wrap"
    if mode == "reference":
        if h == w and h in _REFERENCE_SIZES:
            return mode
        raise ValueError(
            f"gan_mode 'reference' needs image size 32 or 64, got {h}×{w}: use --image-size 32 "
            "(the reference resize32 route: resize the data to 32×32 and replicate to 3 channels) "
            "or gan_mode 'wrap' / 'native' (adaptations, not comparable with published numbers)"
        )
    if mode == "native":
        if _native_depth(h, w) is not None:
            return mode
        raise ValueError(f"gan_mode 'native' does not support image size {h}×{w}; {_supported_text()}")
    if mode == "wrap":
        return mode
    raise ValueError(f"unknown gan_mode {mode!r}; expected 'auto' or one of {GAN_MODES}; {_supported_text()}")


def init_dcgan_(module: nn.Module) -> None:
    """Reference DCGAN init: Conv/ConvT weight ~ N(0, 0.02); BN weight ~ N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Resize2d(nn.Module):
    """Fixed (parameter-free) antialiased bilinear resize of (B, C, h, w) to (B, C, H, W).

    Bilinear weights are non-negative and sum to one, so values in [0, 1] stay in [0, 1].
    """

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)

    def extra_repr(self) -> str:
        return f"size={self.size}, mode=bilinear, antialias=True"


def _generator_chain(nz: int, ngf: int, nc: int, depth: int) -> nn.Sequential:
    """ConvT nz→c (4×4) → BN → ReLU, ``depth - 1`` doublings, ConvT → nc → Sigmoid (4·2^depth px)."""
    c = ngf * min(8, 2 ** (depth + 1))
    layers: list[nn.Module] = [nn.ConvTranspose2d(nz, c, 4, 1, 0, bias=False), UncountedBatchNorm2d(c), nn.ReLU(True)]
    for _ in range(depth - 1):
        c_next = max(1, c // 2)
        layers += [nn.ConvTranspose2d(c, c_next, 4, 2, 1, bias=False), UncountedBatchNorm2d(c_next), nn.ReLU(True)]
        c = c_next
    layers += [nn.ConvTranspose2d(c, nc, 4, 2, 1, bias=False), nn.Sigmoid()]
    return nn.Sequential(*layers)


def _discriminator_chain(nc: int, ndf: int, n_down: int) -> tuple[nn.Sequential, int]:
    """Conv nc→2ndf s2 → LReLU, ``n_down - 1`` × (Conv s2 → BN → LReLU), Conv k4 s1 p0 → Sigmoid."""
    c = ndf * 2
    cap = ndf * 16
    layers: list[nn.Module] = [nn.Conv2d(nc, c, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    for _ in range(n_down - 1):
        c_next = min(2 * c, cap)
        layers += [nn.Conv2d(c, c_next, 4, 2, 1, bias=False), UncountedBatchNorm2d(c_next), nn.LeakyReLU(0.2, inplace=True)]
        c = c_next
    c_out = min(2 * c, cap)
    layers += [nn.Conv2d(c, c_out, 4, 1, 0, bias=False), nn.Sigmoid()]
    return nn.Sequential(*layers), c_out


class Generator(nn.Module):
    """DCGAN generator: noise (B, nz, 1, 1) → images (B, nc, H, W) in (0, 1).

    :param image_size: H (int) or (H, W); (H, W) other than square only in ``"wrap"`` mode.
    :param mode: ``"reference"`` (G32 / G64), ``"wrap"``, ``"native"`` or ``"auto"``
        (see :func:`resolve_gan_mode`); the resolved mode is kept in :attr:`mode`.

    The layers live in :attr:`main` (``main.0`` … as in the releases); wrap mode appends a fixed
    :class:`Resize2d` in :attr:`resize` (no parameters).
    """

    def __init__(
        self,
        nz: int = 100,
        ngf: int = 64,
        nc: int = 3,
        image_size: int | tuple[int, int] = 32,
        mode: str = "reference",
    ) -> None:
        super().__init__()
        self.mode = resolve_gan_mode(image_size, mode)
        self.image_size = _as_hw(image_size)
        self.nz, self.ngf, self.nc = nz, ngf, nc
        h, w = self.image_size
        if self.mode == "wrap":
            self.main = _generator_chain(nz, ngf, nc, 3)  # G32
            self.resize: nn.Module = Resize2d((h, w))
        else:  # reference (G32 = depth 3, G64 = depth 4) or native
            depth = _native_depth(h, w)
            assert depth is not None
            self.main = _generator_chain(nz, ngf, nc, depth)
            self.resize = nn.Identity()
        init_dcgan_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        count_batches(self.main)  # one kernel for all its BNs
        return self.resize(self.main(z))


class Discriminator(nn.Module):
    """DCGAN discriminator: images (B, nc, H, W) → probabilities (B,) in (0, 1).

    ``main`` (convs, ending in a Sigmoid) → ``avgpool`` → flatten → ``classifier``
    (Linear(c→1) → Sigmoid), as in the releases. ``"reference"`` uses the same layers for 32 and
    64 px; ``"wrap"`` resizes the input to 32×32 first (:attr:`resize`); ``"native"`` uses a chain
    of stride-2 convs down to 4×4.
    """

    def __init__(
        self,
        ndf: int = 64,
        nc: int = 3,
        image_size: int | tuple[int, int] = 32,
        mode: str = "reference",
    ) -> None:
        super().__init__()
        self.mode = resolve_gan_mode(image_size, mode)
        self.image_size = _as_hw(image_size)
        self.ndf, self.nc = ndf, nc
        h, w = self.image_size
        if self.mode == "wrap":
            self.resize: nn.Module = Resize2d((_WRAP_SIZE, _WRAP_SIZE))
            n_down = 3
        elif self.mode == "reference":
            self.resize = nn.Identity()
            n_down = 3  # the same layers for 32 and 64 px
        else:
            self.resize = nn.Identity()
            depth = _native_depth(h, w)
            assert depth is not None
            n_down = depth
        self.main, c_out = _discriminator_chain(nc, ndf, n_down)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(c_out, 1), nn.Sigmoid())
        init_dcgan_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        count_batches(self.main)  # one kernel for all its BNs
        h = self.main(self.resize(x))
        h = torch.flatten(self.avgpool(h), 1)
        return self.classifier(h).flatten()


def make_gan(
    image_size: int | tuple[int, int],
    channels: int,
    mode: str = "auto",
    nz: int = 100,
) -> tuple[Generator, Discriminator, str]:
    """Build (G, D) for images of ``channels``×``image_size`` with ngf = ndf = 64.

    Returns ``(G, D, resolved_mode)``; record ``resolved_mode`` as the run's ``gan_mode``.
    Raises ValueError if the mode does not support the size.
    """
    resolved = resolve_gan_mode(image_size, mode)
    g = Generator(nz=nz, ngf=64, nc=channels, image_size=image_size, mode=resolved)
    d = Discriminator(ndf=64, nc=channels, image_size=image_size, mode=resolved)
    return g, d, resolved


def sample_noise(
    batch: int,
    nz: int,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """z ~ N(0, I) of shape (batch, nz, 1, 1), drawn with ``generator`` and placed on ``device``.

    The draw happens on the generator's own device (so the same seeded generator gives the same
    noise whatever ``device`` is); ``generator=None`` uses the global RNG of ``device``.
    """
    shape = (batch, nz, 1, 1)
    if generator is None:
        return torch.randn(shape, device=device)
    z = torch.randn(shape, generator=generator, device=generator.device)
    return z if device is None else z.to(device)
