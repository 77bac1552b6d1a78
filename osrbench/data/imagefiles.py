"""Datasets kept as image files: the open-set view of a set too large to hold decoded at the run's size.

The fine-grained Semantic Shift Benchmark sets (CUB, FGVC-Aircraft, Stanford Cars) and ImageNet
have images of any size that are trained at 448 px (224 px for ImageNet) with RandAugment applied
at the image's own size first, as the MLS release does. Their readers return an
:class:`OpenSetFiles` (paths and labels) instead of an :class:`~osrbench.datasets.OpenSetData`
(uint8 tensors); the session picks the feed that decodes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Sequence

import torch

from osrbench.datasets import BadData

if TYPE_CHECKING:
    from osrbench.data.feed import ImageSet


@dataclass(frozen=True)
class ImageFiles:
    """Image files in a fixed order (absolute paths), decoded when a batch needs them."""

    paths: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, keep: torch.Tensor) -> "ImageFiles":
        """The files where the bool mask ``keep`` is true, in order."""
        return ImageFiles(tuple(p for p, k in zip(self.paths, keep.tolist()) if k))


@dataclass(frozen=True)
class OpenSetFiles:
    """One split of a file-backed dataset, the counterpart of :class:`~osrbench.datasets.OpenSetData`.

    ``image_size`` is the run's square size S; labels are int64 known labels 0..K-1 (the position
    in the split row); ``unknown_ids`` the original class id of each unknown test image.
    """

    train: ImageFiles
    train_y: torch.Tensor
    known: ImageFiles
    known_y: torch.Tensor
    unknown: ImageFiles
    unknown_ids: torch.Tensor
    image_size: int

    def __post_init__(self) -> None:
        if len(self.train) != len(self.train_y) or len(self.known) != len(self.known_y) \
                or len(self.unknown) != len(self.unknown_ids):
            raise BadData("image files and labels differ in length")
        empty = [part for part, f in (("training", self.train), ("known test", self.known),
                                      ("unknown test", self.unknown)) if len(f) == 0]
        if empty:
            raise BadData(f"the split has no {empty[0]} images: the data files hold none of its classes "
                          "(check the data and the split's class ids)")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    # The three image sets as the release's test transform makes them (Resize((S, S)) of the RGB
    # image), read like OpenSetData's tensors: evaluation, the fit stage and the post-hoc scorers
    # read a file-backed split through them (osrbench.data.feed.ImageSet); decoded when read.
    @cached_property
    def train_x(self) -> "ImageSet":
        from osrbench.data.feed import ImageSet

        return ImageSet(self.train.paths, self.image_size)

    @cached_property
    def known_x(self) -> "ImageSet":
        from osrbench.data.feed import ImageSet

        return ImageSet(self.known.paths, self.image_size)

    @cached_property
    def unknown_x(self) -> "ImageSet":
        from osrbench.data.feed import ImageSet

        return ImageSet(self.unknown.paths, self.image_size)


def select_files(
    train_paths: Sequence[str],
    train_y: Sequence[int],
    test_paths: Sequence[str],
    test_y: Sequence[int],
    known: Sequence[int],
    unknown: Sequence[int],
    image_size: int,
    unknown_paths: Sequence[str] | None = None,
    unknown_y: Sequence[int] | None = None,
) -> OpenSetFiles:
    """Cut a labelled file list into the open-set parts of a split (as :func:`osrbench.datasets.select`).

    ``known[i]`` becomes label ``i``; unknowns are the test files whose class is in ``unknown``,
    taken from ``(unknown_paths, unknown_y)`` when given (ImageNet-21K-P classes for ImageNet-SSB).
    """
    if len(set(known)) < 2:
        raise BadData(f"a split needs at least 2 known classes, got {list(known)}")
    position = {int(c): i for i, c in enumerate(known)}
    train_lab = torch.tensor([position.get(int(c), -1) for c in train_y], dtype=torch.int64)
    test_lab = torch.tensor([position.get(int(c), -1) for c in test_y], dtype=torch.int64)
    absent = sorted(set(int(c) for c in known) - {int(c) for c in train_y})
    if absent:
        raise BadData(f"known class(es) {absent[:10]} have no training images (incomplete data files?)")
    if unknown_paths is None:
        unknown_paths, unknown_y = test_paths, test_y
    assert unknown_y is not None
    wanted = {int(c) for c in unknown}
    unknown_lab = torch.tensor([int(c) for c in unknown_y], dtype=torch.int64)
    keep_unknown = torch.tensor([int(c) in wanted for c in unknown_y], dtype=torch.bool)
    return OpenSetFiles(
        train=ImageFiles(tuple(train_paths)).take(train_lab >= 0),
        train_y=train_lab[train_lab >= 0],
        known=ImageFiles(tuple(test_paths)).take(test_lab >= 0),
        known_y=test_lab[test_lab >= 0],
        unknown=ImageFiles(tuple(unknown_paths)).take(keep_unknown),
        unknown_ids=unknown_lab[keep_unknown],
        image_size=image_size,
    )
