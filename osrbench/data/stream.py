"""The device-resident, seeded training stream.

The split's training images live on the run's device as one uint8 tensor. Each (epoch, phase)
pass draws its permutation and augmentation parameters from a CPU generator seeded by
``(seed, epoch, phase)`` only, so every method, device and resumed run sees bit-identical
batches, and a pass needs no generator state from earlier passes. Augmentation is batched tensor
indexing: no per-sample Python on the hot path.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from osrbench.data.normalization import (CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD,  # noqa: F401
                                        NORMALIZE_CHOICES, NORMALIZE_STATS)

PAD = 4  # RandomCrop(S, padding=4), zero fill
#: Bytes of augmented uint8 images a pass prepares at once on the device (a whole CIFAR-10 or
#: MNIST split; Tiny-ImageNet at 64 px in ten chunks).
CHUNK_BYTES = 128 * 2**20


def derive_seed(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed for ``(seed, *keys)``, independent of every other key tuple."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@functools.lru_cache(maxsize=None)
def _stats(normalize: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std of ``normalize`` as (1, 3, 1, 1) tensors, made once per device (not once per batch)."""
    mean, std = NORMALIZE_STATS[normalize]
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1),
            torch.tensor(std, device=device).view(1, 3, 1, 1))


@functools.lru_cache(maxsize=None)
def _scale(device: torch.device) -> torch.Tensor:
    """255 as a float32 0-d tensor: uint8 / it is float32, float(x) / 255 in one kernel."""
    return torch.tensor(255.0, dtype=torch.float32, device=device)


def to_input(images: torch.Tensor, normalize: str = "none", out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1], grey replicated to 3 channels (METHODS.md §1).

    One kernel for a contiguous batch: the division reads the uint8 images, casts and divides in
    float32, the same values as ``images.float() / 255``. ``out``: a float32 tensor of the result's
    shape to write into instead (a CUDA graph's static input; the same values, its own strides).
    """
    if normalize not in NORMALIZE_CHOICES:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_CHOICES)}, got {normalize!r}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if out is not None:
        x = torch.div(images, _scale(images.device), out=out)
        if normalize != "none":
            mean, std = _stats(normalize, x.device)
            x.sub_(mean).div_(std)  # the same float operations as (x - mean) / std
        return x
    x = torch.div(images, _scale(images.device))
    if normalize != "none":
        mean, std = _stats(normalize, x.device)
        x = (x - mean) / std
    return x.contiguous()


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Random crop with zero padding PAD at the given (dy, dx) offsets, then horizontal flips.

    ``offsets`` is (B, 2) in [0, 2*PAD]; ``flips`` is a (B,) bool mask. Equal to torchvision's
    RandomCrop(S, padding=4) followed by RandomHorizontalFlip for those draws.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (PAD, PAD, PAD, PAD))
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=images.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def check_stream_args(augment: str, batch_size: int) -> None:
    """What both feeds (this stream and the file feed) refuse of their arguments."""
    if augment not in ("none", "crop_flip"):
        raise ValueError(f"augment must be none or crop_flip, got {augment!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")


class TrainStream:
    """Shuffled training batches of one split, identical for every method given the seed.

    :param augment: ``none`` or ``crop_flip`` (METHODS.md §7.2).
    :param normalize: ``none`` (reference), ``cifar`` (MLS-paper recipe) or ``imagenet``.
    :param randaugment: RandAugment magnitude M of the MLS recipe (0 = off), applied first.
    :param randaugment_n: RandAugment N, ops per image (drawn with replacement, applied in order).
    :param on_host: keep the images in (pinned) host memory and move each batch to the device:
        the fallback for data that does not fit the device. ``None`` decides by the device's free
        memory. The permutation and augmentation draws are the same either way, so the batches
        are identical.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        seed: int,
        device: torch.device | str = "cpu",
        augment: str = "none",
        normalize: str = "none",
        randaugment: int = 0,
        randaugment_ops: str = "all",
        randaugment_n: int = 1,
        on_host: bool | None = None,
    ) -> None:
        check_stream_args(augment, batch_size)
        self.device = torch.device(device)
        if on_host is None:
            on_host = self.device.type == "cuda" and images.nbytes > 0.5 * torch.cuda.mem_get_info(self.device)[0]
        self.on_host = on_host
        self.storage = torch.device("cpu") if on_host else self.device
        self.images = images.pin_memory() if on_host and self.device.type == "cuda" else images.to(self.storage)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.normalize = normalize
        self.randaugment = randaugment
        self.randaugment_ops = randaugment_ops
        self.randaugment_n = randaugment_n

    def __len__(self) -> int:
        """Batches per pass (the last partial batch is kept)."""
        return math.ceil(len(self.images) / self.batch_size)

    def chunk_images(self) -> int:
        """Images a pass prepares at once: :data:`CHUNK_BYTES` of 3-channel uint8 images, in whole
        batches (RandAugment works in float: an eighth as many; the host fallback: one batch)."""
        if self.on_host:
            return self.batch_size
        per_image = 3 * math.prod(self.images.shape[2:]) * (8 if self.randaugment else 1)
        return max(1, CHUNK_BYTES // max(1, per_image) // self.batch_size) * self.batch_size

    def batches(self, epoch: int, phase: int = 0, into: Callable[[torch.Tensor], torch.Tensor] | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The pass's batches: every image once, in the pass's order, augmented with its draws.

        The images of a chunk (the whole pass of a CIFAR-10 split) are gathered, augmented and
        replicated to 3 channels in a few kernels; each batch is then a view of the chunk made a
        float input in one kernel. The chunking changes no value: every operation is per image.
        ``into(uint8_batch)``: the float32 tensor a full batch is written into (a CUDA graph's
        static input, :meth:`osrbench.graphs.StepGraphs.input_buffer`), valid until the next batch.
        """
        n = len(self.images)
        g = torch.Generator().manual_seed(derive_seed(self.seed, 0, epoch, phase))
        perm = torch.randperm(n, generator=g)
        offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        if self.randaugment:
            from osrbench.data.randaugment import RandAugmentDraws

            ra = RandAugmentDraws(n, self.randaugment, self.randaugment_ops, g, num_ops=self.randaugment_n)
        host_perm = perm
        perm, offsets, flips = perm.to(self.device), offsets.to(self.device), flips.to(self.device)
        chunk = self.chunk_images()
        for first in range(0, n, chunk):
            sl = slice(first, first + chunk)
            idx = perm[sl]
            if self.on_host:
                x = self.images[host_perm[sl]].to(self.device, non_blocking=True)
            else:
                x = self.images[idx]
            if self.randaugment:
                x = ra.apply(x, sl)
            if self.augment == "crop_flip":
                x = crop_flip(x, offsets[sl], flips[sl])
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x, y = x.contiguous(), self.labels[idx]
            for start in range(0, len(x), self.batch_size):
                xb = x[start:start + self.batch_size]
                out = into(xb) if into is not None and len(xb) == self.batch_size else None
                yield to_input(xb, self.normalize, out), y[start:start + self.batch_size]
