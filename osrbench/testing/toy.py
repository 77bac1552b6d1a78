"""The conformance suite's toy problem: a separable open-set set held in memory, and its dataset spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from osrbench.datasets import DatasetSpec, OpenSetData

#: The name the toy problem is registered under for the ``engine`` check.
TOY_DATASET = "osrbench-toy"
#: Known classes of the toy problem the method-level checks train on.
TOY_CLASSES = 3
#: Side of the toy images (8 px: classifier32 and the native DCGAN both support it).
TOY_SIZE = 8
#: Training images per known class, test images per known class, unknown test images.
TOY_TRAIN_PER_CLASS = 32
TOY_TEST_PER_CLASS = 8
TOY_UNKNOWN = 24
#: Batch size of the toy runs (so one epoch is a handful of steps per phase).
TOY_BATCH = 16
#: Epochs of the toy run A (the ``state`` check resumes between them).
TOY_EPOCHS = 2


# Bright, mutually distinct colours and spatial patterns, one of each per known class.
_PALETTE = (
    (255, 48, 48), (48, 255, 48), (48, 48, 255), (255, 255, 48), (255, 48, 255),
    (48, 255, 255), (255, 160, 48), (160, 48, 255), (255, 255, 255), (48, 160, 255),
)


def _pattern(k: int, size: int) -> torch.Tensor:
    i = torch.arange(size)[:, None].expand(size, size)
    j = torch.arange(size)[None, :].expand(size, size)
    half, q = size // 2, max(1, size // 4)
    masks = (
        i < half, j < half, i >= j, (i // q) % 2 == 0, (j // q) % 2 == 0,
        ((i // q) + (j // q)) % 2 == 0, torch.minimum(torch.minimum(i, j), torch.minimum(size - 1 - i, size - 1 - j)) < q,
        i >= half, j >= half, i + j < size,
    )
    return masks[k % len(masks)]


def toy_data(
    num_known: int = TOY_CLASSES,
    image_size: int = TOY_SIZE,
    train_per_class: int = TOY_TRAIN_PER_CLASS,
    test_per_class: int = TOY_TEST_PER_CLASS,
    num_unknown: int = TOY_UNKNOWN,
    seed: int = 0,
) -> OpenSetData:
    """A separable synthetic open-set split, built in memory (uint8, 3 channels).

    Known class k is a bright colour ``_PALETTE[k]`` on a spatial pattern of its own (halves,
    stripes, checker, border, ...) with per-image brightness and pixel jitter; unknowns are dim,
    unstructured noise (values 0..63). Any method that learns the known classes at all ranks them
    above the unknowns.
    """
    if not 1 <= num_known <= len(_PALETTE):
        raise ValueError(f"num_known must be in 1..{len(_PALETTE)}, got {num_known}")
    g = torch.Generator().manual_seed(seed)

    def known(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(num_known).repeat_interleave(per_class)
        colour = torch.tensor(_PALETTE, dtype=torch.float32)[labels % len(_PALETTE)]  # (N, 3)
        masks = torch.stack([_pattern(int(k), image_size) for k in labels]).float()  # (N, S, S)
        gain = 0.75 + 0.25 * torch.rand(len(labels), 1, 1, 1, generator=g)
        x = masks[:, None] * colour[:, :, None, None] * gain
        x = x + torch.randint(-20, 21, x.shape, generator=g).float()
        return x.clamp(0, 255).to(torch.uint8), labels

    train_x, train_y = known(train_per_class)
    known_x, known_y = known(test_per_class)
    unknown_x = torch.randint(0, 64, (num_unknown, 3, image_size, image_size), generator=g).to(torch.uint8)
    return OpenSetData(train_x, train_y, known_x, known_y, unknown_x, torch.full((num_unknown,), -1, dtype=torch.int64))


def _toy_loader(root: Path, split: Any, image_size: int) -> OpenSetData:
    return toy_data(num_known=split.num_known, image_size=image_size, train_per_class=8, test_per_class=8,
                    num_unknown=16, seed=split.index)


def toy_dataset_spec(name: str = TOY_DATASET) -> DatasetSpec:
    """The toy problem as a dataset (10 classes on the ``mnist`` split table, so 6 known)."""
    return DatasetSpec(
        name=name, load=_toy_loader, table="mnist", num_classes=10, image_size=TOY_SIZE, augment="none",
        description="osrbench.testing toy problem: coloured patterns vs dim noise (in memory)",
        source="generated", licence="none",
    )
