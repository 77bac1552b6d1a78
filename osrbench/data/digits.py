"""The embedded dataset: scikit-learn's 8x8 digits (1,797 images, 10 classes), no download.

Partition (deterministic, stratified, independent of any random generator): within each class,
in the file's order, every third image (positions 2, 5, 8, ...) is a test image and the rest are
training images, giving 1,201 training and 596 test images. Pixel values 0..16 are scaled to
0..255 (rounded) so the images are uint8 like every other source; they stay 1x8x8 (the host
replicates grey images to 3 channels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from osrbench.datasets import OpenSetData, select


def arrays() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y) of the fixed partition; images uint8 (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn; imported late for a fast CLI

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    rank = np.zeros_like(labels)  # position of each image within its class
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    test = rank % 3 == 2
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    t = torch.from_numpy(test)
    return x[~t], y[~t], x[t], y[t]


def load(root: Path, split, image_size: int) -> OpenSetData:
    train_x, train_y, test_x, test_y = arrays()
    return select(train_x, train_y, test_x, test_y, split.known, split.unknown).resized(image_size)


def check(root: Path) -> list[str]:
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        return ["digits: scikit-learn is not installed (pip install scikit-learn)"]
    return []
