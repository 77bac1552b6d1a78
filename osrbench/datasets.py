"""Dataset specifications and the open-set view of a dataset.

A data source returns the whole dataset as uint8 tensors; :func:`select` cuts it into the three
open-set parts of one split (train-known, test-known, test-unknown), relabelling known classes by
their position in the split row (METHODS.md §1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence
from osrbench.errors import UserError

if TYPE_CHECKING:  # torch is imported where tensors are touched: specs stay torch-free
    import torch


class DataNotFound(UserError):
    """A dataset's files are missing or unreadable; the message says how to get them."""


class BadData(DataNotFound, ValueError):
    """Data that cannot make an open-set split: an empty part, a known class without training
    images (a one-class file), images and labels of different lengths, the wrong dtype or shape."""


@dataclass(frozen=True)
class OpenSetData:
    """One split of one dataset, ready for the engine.

    Images are uint8 (N, C, H, W) at the run's image size; labels are int64 known labels
    0..K-1 (position in the split row). ``unknown_ids`` holds the original class id of each
    unknown test image (for diagnostics; unknowns carry label -1 everywhere else).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    known_x: torch.Tensor
    known_y: torch.Tensor
    unknown_x: torch.Tensor
    unknown_ids: torch.Tensor

    def __post_init__(self) -> None:
        import torch

        for name in ("train_x", "known_x", "unknown_x"):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 4:
                got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
                raise BadData(f"{name} must be a uint8 (N, C, H, W) tensor, got {got}")
        if not (self.train_x.shape[1:] == self.known_x.shape[1:] == self.unknown_x.shape[1:]):
            raise BadData("train, known and unknown images must share (C, H, W)")
        if len(self.train_x) != len(self.train_y) or len(self.known_x) != len(self.known_y):
            raise BadData("images and labels differ in length")
        empty = [part for part, t in (("training", self.train_x), ("known test", self.known_x),
                                      ("unknown test", self.unknown_x)) if len(t) == 0]
        if empty:
            raise BadData(f"the split has no {empty[0]} images: the data files hold none of its classes "
                          "(one-class or damaged files? check the data and the split's class ids)")

    def resized(self, size: int) -> "OpenSetData":
        """The same split with every image resized to (size, size) (a no-op at that size)."""
        from osrbench.data.transforms import resize_uint8

        if self.train_x.shape[-1] == size and self.train_x.shape[-2] == size:
            return self
        return OpenSetData(
            resize_uint8(self.train_x, size), self.train_y,
            resize_uint8(self.known_x, size), self.known_y,
            resize_uint8(self.unknown_x, size), self.unknown_ids,
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


class ClassSplit(Protocol):
    """What a loader reads of a split (``osrbench.protocols.OpenSetSplit`` is one; protocols build on
    datasets, never the reverse)."""

    known: tuple[int, ...]  # original class ids; known[i] is label i
    unknown: tuple[int, ...]  # original class ids of the unknown test classes


#: ``load(root, split, image_size) -> OpenSetData``; ``root`` is the data root folder.
Loader = Callable[[Path, ClassSplit, int], OpenSetData]


@dataclass(frozen=True)
class DatasetSpec:
    """How a dataset is announced (built in, or by a plugin's ``osrbench_register_datasets``).

    :param name: the name users type (``--dataset NAME``).
    :param load: builds the :class:`OpenSetData` of a split at an image size.
    :param table: the split table the protocols use for it (``mnist`` for any 10-class set).
    :param num_classes: classes of the known-side source (unknown = the ids not in a row),
        unless ``unknown_table`` names a table of unknown ids (CIFAR+N).
    :param image_size: the reference image size S (square).
    :param augment: the reference training augmentation: ``none`` or ``crop_flip``
        (random crop with zero padding 4, then horizontal flip with p 0.5).
    :param check: returns a list of problems with the files under a root (empty = ready).
    :param download: fetches the files into a root (where the network allows).
    :param epochs: overrides the recipe's epoch count on this dataset (``--epochs`` wins).
    :param files: ``load`` returns an :class:`~osrbench.data.imagefiles.OpenSetFiles` (image files,
        decoded per pass by the file feed) instead of an :class:`OpenSetData`; its image size is
        then bounded by ``config.MAX_FILE_IMAGE_SIZE``, not ``config.MAX_IMAGE_SIZE``.
    """

    name: str
    load: Loader
    table: str
    num_classes: int
    image_size: int
    augment: str = "crop_flip"
    unknown_table: str | None = None
    epochs: int | None = None  # a dataset-level default epoch count (the embedded CPU set)
    description: str = ""
    source: str = ""
    licence: str = ""
    check: Callable[[Path], list[str]] = field(default=lambda root: [])
    download: Callable[[Path], None] | None = None
    files: bool = False


def select(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    known: Sequence[int],
    unknown: Sequence[int],
    unknown_x: torch.Tensor | None = None,
    unknown_y: torch.Tensor | None = None,
) -> OpenSetData:
    """Cut a labelled dataset into the open-set parts of a split.

    ``known[i]`` becomes label ``i``. Unknowns are the test images whose class is in ``unknown``,
    taken from ``(unknown_x, unknown_y)`` when given (CIFAR+N draws them from CIFAR-100) and from
    the test set otherwise.
    """
    import torch

    if len(set(known)) < 2:
        raise BadData(f"a split needs at least 2 known classes, got {list(known)}")
    for name, y in (("training", train_y), ("test", test_y)):
        if y.numel() == 0:
            raise BadData(f"the dataset has no {name} images (empty or damaged data files)")
    lut = torch.full((int(max(train_y.max(), test_y.max(), max(known))) + 1,), -1, dtype=torch.int64)
    lut[torch.as_tensor(list(known))] = torch.arange(len(known))
    train_lab = lut[train_y.long()]
    test_lab = lut[test_y.long()]
    keep_train = train_lab >= 0
    keep_known = test_lab >= 0
    if unknown_x is None:
        unknown_x, unknown_y = test_x, test_y
    assert unknown_y is not None
    keep_unknown = torch.isin(unknown_y.long(), torch.as_tensor(list(unknown), dtype=torch.int64))
    per_class = torch.bincount(train_lab[keep_train], minlength=len(known))
    absent = [int(known[i]) for i in range(len(known)) if int(per_class[i]) == 0]
    if absent:
        present = sorted({int(c) for c in torch.unique(train_y).tolist()})
        raise BadData(f"known class(es) {absent} have no training images (the training data holds only "
                      f"class(es) {present[:10]}{' ...' if len(present) > 10 else ''}); "
                      "a one-class or damaged data file?")
    return OpenSetData(
        train_x=train_x[keep_train],
        train_y=train_lab[keep_train],
        known_x=test_x[keep_known],
        known_y=test_lab[keep_known],
        unknown_x=unknown_x[keep_unknown],
        unknown_ids=unknown_y[keep_unknown].long(),
    )
