"""CIFAR-10 and CIFAR+N (CIFAR-10 knowns, CIFAR-100 test unknowns) from the python pickles.

Layouts (torchvision's, which is also what the official tarballs unpack to)::

    ROOT/cifar-10-batches-py/{data_batch_1 .. data_batch_5, test_batch}   (b'data', b'labels')
    ROOT/cifar-100-python/{train, test}                                    (b'data', b'fine_labels')

CIFAR+N (METHODS.md §7.1): train = CIFAR-10 train of the 4 known classes, test-known = CIFAR-10
test of those classes, test-unknown = CIFAR-100 **test** images whose fine label is in the split's
unknown list; the other CIFAR-10 classes are not used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from osrbench.datasets import OpenSetData
from osrbench.data._files import (
    build_open_set,
    cifar_batch,
    cifar_batch_problems,
    concat,
    download_hint,
    missing_line,
    raise_if,
    run_download,
)

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR100_DIR = "cifar-100-python"
CIFAR100_TEST = "test"

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


def _check(folder: Path, names: tuple[str, ...], hint: str) -> list[str]:
    if not folder.is_dir():
        return [missing_line(f"folder {folder.name}/ (files {', '.join(names)})", folder.parent, hint)]
    return [missing_line(name, folder, hint) for name in names if not (folder / name).is_file()]


def _damaged(folder: Path, names: tuple[str, ...], label_key: str, num_classes: int) -> list[str]:
    """Of batch files that are all present: each one's problems when read with the safe unpickler
    (the pickle's structure, its keys, image bytes = 3072 per label, labels in range)."""
    return [line for name in names for line in cifar_batch_problems(folder / name, label_key, num_classes)]


def _cifar10_problems(root: Path, cli_name: str, deep: bool = True) -> list[str]:
    root = Path(root)
    hint = download_hint(cli_name, root, f"fetch {CIFAR10_URL} by hand and unpack it in {root}")
    names = CIFAR10_TRAIN + (CIFAR10_TEST,)
    missing = _check(root / CIFAR10_DIR, names, hint)
    return missing if missing or not deep else _damaged(root / CIFAR10_DIR, names, "labels", 10)


def _cifar100_problems(root: Path, cli_name: str, deep: bool = True) -> list[str]:
    root = Path(root)
    hint = download_hint(cli_name, root, f"fetch {CIFAR100_URL} by hand and unpack it in {root}")
    # only the test file is read (unknowns come from CIFAR-100 test)
    names = (CIFAR100_TEST,)
    missing = _check(root / CIFAR100_DIR, names, hint)
    return missing if missing or not deep else _damaged(root / CIFAR100_DIR, names, "fine_labels", 100)


def _cifar10_arrays(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = Path(root) / CIFAR10_DIR
    train_x, train_y = concat(cifar_batch(folder / name, "labels", 10) for name in CIFAR10_TRAIN)
    test_x, test_y = cifar_batch(folder / CIFAR10_TEST, "labels", 10)
    return train_x, train_y, test_x, test_y


# --------------------------------------------------------------------------------------------
# CIFAR-10


def check_cifar10(root: Path) -> list[str]:
    """One line per missing CIFAR-10 batch file, else per damaged one (empty = ready)."""
    return _cifar10_problems(root, "cifar10")


def load_cifar10(root: Path, split: Any, image_size: int) -> OpenSetData:
    """CIFAR-10 train (known) / test (known and unknown), (N, 3, S, S) uint8."""
    raise_if(_cifar10_problems(root, "cifar10", deep=False))  # reading the batches checks the rest
    train_x, train_y, test_x, test_y = _cifar10_arrays(root)
    return build_open_set(train_x, train_y, test_x, test_y, split, image_size)


def download_cifar10(root: Path) -> None:
    """Fetch CIFAR-10 into ``ROOT/cifar-10-batches-py`` with torchvision; failures raise DataNotFound."""
    root = Path(root)
    if not check_cifar10(root):
        return

    def fetch() -> None:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=True, download=True)

    manual = f"download {CIFAR10_URL} and unpack it in {root} (giving {root / CIFAR10_DIR})"
    run_download("cifar10", root, manual, fetch, check_cifar10)


# --------------------------------------------------------------------------------------------
# CIFAR+N


def check_cifar_plus(root: Path) -> list[str]:
    """CIFAR-10 batches and CIFAR-100 ``test`` (empty = ready)."""
    return _cifar10_problems(root, "cifar+10") + _cifar100_problems(root, "cifar+10")


def load_cifar_plus(root: Path, split: Any, image_size: int) -> OpenSetData:
    """CIFAR+N: ``split.known`` are CIFAR-10 ids, ``split.unknown`` CIFAR-100 fine-label ids."""
    raise_if(_cifar10_problems(root, "cifar+10", deep=False) + _cifar100_problems(root, "cifar+10", deep=False))
    train_x, train_y, test_x, test_y = _cifar10_arrays(root)
    unk_x, unk_y = cifar_batch(Path(root) / CIFAR100_DIR / CIFAR100_TEST, "fine_labels", 100)
    return build_open_set(train_x, train_y, test_x, test_y, split, image_size, unknown_x=unk_x, unknown_y=unk_y)


def download_cifar_plus(root: Path) -> None:
    """Fetch CIFAR-10 and CIFAR-100 with torchvision; failures raise DataNotFound."""
    root = Path(root)
    if not check_cifar_plus(root):
        return

    def fetch() -> None:
        from torchvision.datasets import CIFAR10, CIFAR100

        if check_cifar10(root):
            CIFAR10(str(root), train=True, download=True)
        CIFAR100(str(root), train=False, download=True)

    manual = (f"download {CIFAR10_URL} and {CIFAR100_URL} and unpack both in {root} "
              f"(giving {root / CIFAR10_DIR} and {root / CIFAR100_DIR})")
    run_download("cifar+N", root, manual, fetch, check_cifar_plus)
