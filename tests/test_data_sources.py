"""Tests for the file-based data sources (osrbench/data/{mnist,cifar,svhn,tiny_imagenet}.py).

Every test writes tiny files in the exact on-disk formats (idx, CIFAR python pickles, SVHN .mat,
a Tiny-ImageNet tree of JPEGs) into tmp_path. Pixel values encode each image's class (and index)
so the tests can tell exactly which images landed in which part with which label.
"""

from __future__ import annotations

import gzip
import importlib
import os
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import yaml
from PIL import Image

from osrbench.data import cifar, mnist, svhn, tiny_imagenet
from osrbench.data._files import read_idx_pair
from osrbench.datasets import DataNotFound
from osrbench.protocols import OpenSetSplit

REPO = Path(__file__).resolve().parents[1]


def make_split(known, unknown) -> OpenSetSplit:
    return OpenSetSplit("test", "test", 0, tuple(known), tuple(unknown))


def class_counts(labels: np.ndarray | list[int], num_classes: int) -> list[int]:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).tolist()


# ================================================================================================
# MNIST / Fashion-MNIST (idx)

MNIST_TRAIN_COUNTS = [3, 4, 2, 5, 3, 2, 4, 3, 2, 3]  # deliberately uneven: counts must come from data
MNIST_TEST_COUNTS = [2, 1, 3, 2, 2, 1, 2, 3, 1, 2]


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> None:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def mnist_arrays(counts: list[int], offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform 28x28 images whose value = 20 * class + offset + index-within-class (< 20)."""
    labels = np.repeat(np.arange(10), counts)
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]  # file order is not class order
    within = np.zeros_like(labels)
    for c in range(10):
        within[labels == c] = np.arange((labels == c).sum())
    values = 20 * labels + offset + within
    images = np.broadcast_to(values[:, None, None], (len(labels), 28, 28)).astype(np.uint8)
    return images, labels.astype(np.uint8)


def write_mnist(folder: Path, gz: bool = False) -> dict:
    tx, ty = mnist_arrays(MNIST_TRAIN_COUNTS, 0)
    vx, vy = mnist_arrays(MNIST_TEST_COUNTS, 10)
    write_idx(folder / "train-images-idx3-ubyte", tx, gz)
    write_idx(folder / "train-labels-idx1-ubyte", ty, gz)
    write_idx(folder / "t10k-images-idx3-ubyte", vx, gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", vy, gz)
    return dict(train_x=tx, train_y=ty, test_x=vx, test_y=vy)


def assert_mnist_like(data, known, unknown, size):
    assert data.train_x.dtype == torch.uint8 and data.known_x.dtype == torch.uint8
    assert data.train_x.shape == (sum(MNIST_TRAIN_COUNTS[c] for c in known), 1, size, size)
    assert data.known_x.shape == (sum(MNIST_TEST_COUNTS[c] for c in known), 1, size, size)
    assert data.unknown_x.shape == (sum(MNIST_TEST_COUNTS[c] for c in unknown), 1, size, size)
    # uniform images stay uniform through the resize; the value tells class and part
    for x in (data.train_x, data.known_x, data.unknown_x):
        flat = x.flatten(1)
        assert (flat == flat[:, :1]).all()
    train_v = data.train_x[:, 0, 0, 0].long()
    known_v = data.known_x[:, 0, 0, 0].long()
    unk_v = data.unknown_x[:, 0, 0, 0].long()
    assert ((train_v % 20) < 10).all() and ((known_v % 20) >= 10).all() and ((unk_v % 20) >= 10).all()
    # relabelling by row position: known[label] is the class the pixel encodes
    k = torch.tensor(known)
    assert torch.equal(k[data.train_y], train_v // 20)
    assert torch.equal(k[data.known_y], known_v // 20)
    assert torch.equal(data.unknown_ids, unk_v // 20)
    assert class_counts(data.train_y, len(known)) == [MNIST_TRAIN_COUNTS[c] for c in known]
    assert class_counts(data.known_y, len(known)) == [MNIST_TEST_COUNTS[c] for c in known]
    assert sorted(set(data.unknown_ids.tolist())) == sorted(unknown)
    assert data.train_y.dtype == torch.int64 and data.unknown_ids.dtype == torch.int64
    # every image of each part is used exactly once
    assert len(set(train_v.tolist())) == len(train_v)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_mnist_composition_relabel_and_resize(tmp_path, gz):
    write_mnist(tmp_path / "MNIST" / "raw", gz=gz)
    known, unknown = (3, 7, 8, 2, 4, 6), (0, 1, 5, 9)
    assert mnist.check_mnist(tmp_path) == []
    data = mnist.load_mnist(tmp_path, make_split(known, unknown), 32)
    assert_mnist_like(data, known, unknown, 32)
    assert data.train_y[data.train_x[:, 0, 0, 0] // 20 == 3].eq(0).all()  # class 3 -> label 0
    assert data.train_y[data.train_x[:, 0, 0, 0] // 20 == 6].eq(5).all()  # class 6 -> label 5


def test_mnist_keeps_native_size_and_exact_pixels(tmp_path):
    raw = write_mnist(tmp_path / "MNIST" / "raw")
    data = mnist.load_mnist(tmp_path, make_split((0, 1, 2, 4, 5, 9), (3, 6, 7, 8)), 28)
    assert data.train_x.shape[1:] == (1, 28, 28)
    expected = raw["train_x"][np.isin(raw["train_y"], (0, 1, 2, 4, 5, 9))]
    assert np.array_equal(data.train_x[:, 0].numpy(), expected)  # file order kept within the part


def test_mnist_plain_preferred_but_gz_mix_works(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    tx, ty = mnist_arrays(MNIST_TRAIN_COUNTS, 0)
    vx, vy = mnist_arrays(MNIST_TEST_COUNTS, 10)
    write_idx(folder / "train-images-idx3-ubyte", tx, gz=True)
    write_idx(folder / "train-labels-idx1-ubyte", ty, gz=False)
    write_idx(folder / "t10k-images-idx3-ubyte", vx, gz=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", vy, gz=True)
    assert mnist.check_mnist(tmp_path) == []
    assert_mnist_like(mnist.load_mnist(tmp_path, make_split((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)), 32),
                      (0, 1, 2, 3, 4, 5), (6, 7, 8, 9), 32)


def test_mnist_check_names_missing_file(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_mnist(folder)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    problems = mnist.check_mnist(tmp_path)
    assert len(problems) == 1
    assert "t10k-labels-idx1-ubyte" in problems[0] and str(folder) in problems[0]
    assert f"osrbench data download mnist --data-root {tmp_path}" in problems[0]
    with pytest.raises(DataNotFound) as err:
        mnist.load_mnist(tmp_path, make_split((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)), 32)
    assert str(err.value) == problems[0]


def test_mnist_check_empty_root_lists_all_four(tmp_path):
    problems = mnist.check_mnist(tmp_path)
    assert len(problems) == 4
    for name, line in zip(mnist.IDX_FILES, problems):
        assert name in line


@pytest.mark.parametrize("damage", ["truncated", "bad_magic", "short_header", "bad_gzip", "bad_label"])
def test_mnist_corrupt_files_raise_datanotfound(tmp_path, damage):
    folder = tmp_path / "MNIST" / "raw"
    write_mnist(folder, gz=(damage == "bad_gzip"))
    name = "train-images-idx3-ubyte"
    if damage == "truncated":
        p = folder / name
        p.write_bytes(p.read_bytes()[:-100])
    elif damage == "bad_magic":
        p = folder / name
        p.write_bytes(struct.pack(">I", 2049) + p.read_bytes()[4:])
    elif damage == "short_header":
        p = folder / name
        p.write_bytes(p.read_bytes()[:10])
    elif damage == "bad_gzip":
        name += ".gz"
        p = folder / name
        p.write_bytes(p.read_bytes()[:40])
    else:  # a label byte outside 0..9
        name = "t10k-labels-idx1-ubyte"
        p = folder / name
        b = bytearray(p.read_bytes())
        b[-1] = 42
        p.write_bytes(bytes(b))
    with pytest.raises(DataNotFound, match=name.replace(".", r"\.")):
        mnist.load_mnist(tmp_path, make_split((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)), 32)


def test_mnist_image_label_count_mismatch(tmp_path):
    folder = tmp_path / "MNIST" / "raw"
    write_mnist(folder)
    _, ty = mnist_arrays(MNIST_TRAIN_COUNTS, 0)
    write_idx(folder / "train-labels-idx1-ubyte", ty[:-1])
    with pytest.raises(DataNotFound, match="train-labels-idx1-ubyte"):
        mnist.load_mnist(tmp_path, make_split((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)), 32)


# Fashion-MNIST: ROOT/FashionMNIST/raw first, then the system folder (Debian: gzipped files)


@pytest.fixture
def no_system_fashion(tmp_path, monkeypatch):
    empty = tmp_path / "no-system-fashion"
    empty.mkdir()
    monkeypatch.setenv(mnist.FASHION_MNIST_ENV, str(empty))
    return empty


def test_fashion_from_root(tmp_path, no_system_fashion):
    write_mnist(tmp_path / "FashionMNIST" / "raw")
    assert mnist.check_fashion_mnist(tmp_path) == []
    known, unknown = (9, 0, 3, 5, 1, 2), (4, 6, 7, 8)
    assert_mnist_like(mnist.load_fashion_mnist(tmp_path, make_split(known, unknown), 32), known, unknown, 32)


def test_fashion_from_system_folder_with_debian_names(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_mnist(system, gz=True)  # the Debian package ships the four files gzipped
    assert sorted(p.name for p in system.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    monkeypatch.setenv(mnist.FASHION_MNIST_ENV, str(system))
    root = tmp_path / "root"
    assert mnist.check_fashion_mnist(root) == []
    known, unknown = (0, 1, 2, 3, 4, 5), (6, 7, 8, 9)
    assert_mnist_like(mnist.load_fashion_mnist(root, make_split(known, unknown), 32), known, unknown, 32)


def test_fashion_module_constant_is_the_default_system_folder(tmp_path, monkeypatch):
    system = tmp_path / "sys"
    write_mnist(system, gz=True)
    monkeypatch.delenv(mnist.FASHION_MNIST_ENV, raising=False)
    monkeypatch.setattr(mnist, "FASHION_MNIST_SYSTEM_DIR", system)
    assert mnist.fashion_system_dir() == system
    assert mnist.check_fashion_mnist(tmp_path / "root") == []


def test_fashion_root_copy_wins_over_system(tmp_path, monkeypatch):
    system = tmp_path / "sys"
    write_mnist(system, gz=True)
    monkeypatch.setenv(mnist.FASHION_MNIST_ENV, str(system))
    root = tmp_path / "root"
    folder = root / "FashionMNIST" / "raw"
    write_mnist(folder)
    # make the root copy recognisable: only class 0 in its test set gets a different value
    vx, vy = mnist_arrays(MNIST_TEST_COUNTS, 10)
    vx = vx.copy()
    vx[vy == 6] = 255
    write_idx(folder / "t10k-images-idx3-ubyte", vx)
    data = mnist.load_fashion_mnist(root, make_split((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)), 28)
    assert (data.unknown_x[data.unknown_ids == 6] == 255).all()


def test_fashion_missing_everywhere(tmp_path, no_system_fashion):
    problems = mnist.check_fashion_mnist(tmp_path)
    assert len(problems) == 5  # four files under ROOT + the system folder
    assert "train-images-idx3-ubyte" in problems[0] and str(tmp_path / "FashionMNIST" / "raw") in problems[0]
    assert all("apt-get install dataset-fashion-mnist" in p for p in problems)
    assert "osrbench data download fashion-mnist" in problems[0]
    assert str(no_system_fashion) in problems[-1]
    with pytest.raises(DataNotFound, match="apt-get install dataset-fashion-mnist"):
        mnist.load_fashion_mnist(tmp_path, make_split((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)), 32)


def test_real_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    monkeypatch.delenv(mnist.FASHION_MNIST_ENV, raising=False)
    system = mnist.FASHION_MNIST_SYSTEM_DIR
    names = [n + ".gz" for n in mnist.IDX_FILES]
    if not all((system / n).is_file() for n in names):
        pytest.skip(f"Fashion-MNIST not installed in {system} (apt-get install dataset-fashion-mnist)")
    train_x, train_y = read_idx_pair(system / names[0], system / names[1], 10)
    test_x, test_y = read_idx_pair(system / names[2], system / names[3], 10)
    assert train_x.shape == (60000, 1, 28, 28) and test_x.shape == (10000, 1, 28, 28)
    assert class_counts(train_y, 10) == [6000] * 10
    assert class_counts(test_y, 10) == [1000] * 10
    assert mnist.check_fashion_mnist(tmp_path) == []
    known, unknown = (0, 1, 2, 4, 5, 9), (3, 6, 7, 8)
    data = mnist.load_fashion_mnist(tmp_path, make_split(known, unknown), 32)
    assert data.image_shape == (1, 32, 32)
    assert data.train_x.dtype == torch.uint8
    assert class_counts(data.train_y, 6) == [6000] * 6
    assert class_counts(data.known_y, 6) == [1000] * 6
    assert len(data.unknown_x) == 4000 and class_counts(data.unknown_ids, 10) == [
        1000 if c in unknown else 0 for c in range(10)]
    assert int(data.train_x.max()) > 200 and int(data.train_x.min()) == 0


# ================================================================================================
# CIFAR-10 / CIFAR+N (python pickles)

C10_TRAIN_PER_BATCH = 2  # images per class per train batch (5 batches -> 10 per class)
C10_TEST_PER_CLASS = 3


def cifar_rows(labels: np.ndarray, r: np.ndarray, g: np.ndarray) -> np.ndarray:
    """N x 3072 rows: R plane = r, G plane = g, B plane = 200 with pixel (row 0, col 1) = 7."""
    n = len(labels)
    img = np.empty((n, 3, 32, 32), dtype=np.uint8)
    img[:, 0] = r[:, None, None]
    img[:, 1] = g[:, None, None]
    img[:, 2] = 200
    img[:, 2, 0, 1] = 7
    return img.reshape(n, 3072)


def dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path) -> None:
    folder = root / "cifar-10-batches-py"
    for b in range(1, 6):
        labels = np.tile(np.arange(10), C10_TRAIN_PER_BATCH)[::-1].copy()
        idx = (b - 1) * C10_TRAIN_PER_BATCH + np.arange(len(labels)) // 10
        data = cifar_rows(labels, 10 * labels, idx)  # R = 10 * class, G = index within class
        dump(folder / f"data_batch_{b}", {b"batch_label": b"training batch", b"labels": labels.tolist(),
                                           b"data": data, b"filenames": [b"x.png"] * len(labels)})
    labels = np.repeat(np.arange(10), C10_TEST_PER_CLASS)
    idx = np.arange(len(labels)) % C10_TEST_PER_CLASS
    dump(folder / "test_batch", {b"batch_label": b"testing batch", b"labels": labels.tolist(),
                                 b"data": cifar_rows(labels, 10 * labels + 1, 100 + idx)})


C100_TEST_IDS = list(range(0, 100, 3)) + [26, 31, 34, 44, 45, 63, 65, 77, 93, 98]  # several classes present


def write_cifar100(root: Path) -> list[int]:
    folder = root / "cifar-100-python"
    fine = np.repeat(np.array(sorted(set(C100_TEST_IDS))), 2)
    dump(folder / "test", {b"filenames": [b"y.png"] * len(fine), b"batch_label": b"testing batch",
                           b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
                           b"data": cifar_rows(fine, 150 + fine, np.full(len(fine), 250))})
    tl = np.arange(100)
    dump(folder / "train", {b"fine_labels": tl.tolist(), b"coarse_labels": (tl // 5).tolist(),
                            b"data": cifar_rows(tl, np.zeros(100), np.zeros(100))})
    return fine.tolist()


def test_cifar10_composition_relabel_channels(tmp_path):
    write_cifar10(tmp_path)
    assert cifar.check_cifar10(tmp_path) == []
    known, unknown = (3, 7, 8, 2, 4, 6), (0, 1, 5, 9)
    data = cifar.load_cifar10(tmp_path, make_split(known, unknown), 32)
    per_train = 5 * C10_TRAIN_PER_BATCH
    assert data.train_x.shape == (6 * per_train, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.known_x.shape == (6 * C10_TEST_PER_CLASS, 3, 32, 32)
    assert data.unknown_x.shape == (4 * C10_TEST_PER_CLASS, 3, 32, 32)
    k = torch.tensor(known)
    # R encodes class (train: 10c, test: 10c+1), G the index; B plane with its marker pixel
    assert torch.equal(k[data.train_y] * 10, data.train_x[:, 0, 5, 5].long())
    assert torch.equal(k[data.known_y] * 10 + 1, data.known_x[:, 0, 5, 5].long())
    assert torch.equal(data.unknown_ids * 10 + 1, data.unknown_x[:, 0, 5, 5].long())
    for x in (data.train_x, data.known_x, data.unknown_x):
        assert (x[:, 2, 0, 1] == 7).all() and (x[:, 2, 1, 0] == 200).all() and (x[:, 2, 31, 31] == 200).all()
    assert class_counts(data.train_y, 6) == [per_train] * 6
    assert class_counts(data.known_y, 6) == [C10_TEST_PER_CLASS] * 6
    assert sorted(set(data.unknown_ids.tolist())) == [0, 1, 5, 9]
    # each class gets all 10 train images, from all five batches
    for lab in range(6):
        assert sorted(data.train_x[data.train_y == lab, 1, 0, 0].tolist()) == list(range(per_train))


def test_cifar_plus_unknowns_from_cifar100_test(tmp_path):
    write_cifar10(tmp_path)
    fine = write_cifar100(tmp_path)
    assert cifar.check_cifar_plus(tmp_path) == []
    known = (0, 1, 8, 9)
    unknown = (26, 31, 34, 44, 45, 63, 65, 77, 93, 98)  # auroc cifar100-10 row 0
    data = cifar.load_cifar_plus(tmp_path, make_split(known, unknown), 32)
    assert data.train_x.shape == (4 * 5 * C10_TRAIN_PER_BATCH, 3, 32, 32)
    assert data.known_x.shape == (4 * C10_TEST_PER_CLASS, 3, 32, 32)
    assert len(data.unknown_x) == sum(f in unknown for f in fine) == 2 * len(unknown)
    assert sorted(set(data.unknown_ids.tolist())) == sorted(unknown)
    # unknowns are CIFAR-100 test images (R = 150 + fine id, G = 250) with the given fine ids
    assert torch.equal(data.unknown_x[:, 0, 3, 3].long(), 150 + data.unknown_ids)
    assert (data.unknown_x[:, 1] == 250).all()
    # the remaining CIFAR-10 classes (2..7) are not used at all
    used = set((data.train_x[:, 0, 0, 0] // 10).tolist()) | set((data.known_x[:, 0, 0, 0] // 10).tolist())
    assert used == set(known)
    k = torch.tensor(known)
    assert torch.equal(k[data.known_y] * 10 + 1, data.known_x[:, 0, 0, 0].long())


def test_cifar_accepts_python2_style_str_keys_and_raw_bytes(tmp_path):
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    labels = np.repeat(np.arange(10), C10_TEST_PER_CLASS)
    rows = cifar_rows(labels, 10 * labels + 1, np.zeros(len(labels)))
    dump(folder / "test_batch", {"labels": labels.tolist(), "data": rows.tobytes()})
    data = cifar.load_cifar10(tmp_path, make_split((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)), 32)
    assert torch.equal(data.known_y * 10 + 1, data.known_x[:, 0, 0, 0].long())


def test_cifar_check_names_missing_batch_and_folder(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    problems = cifar.check_cifar10(tmp_path)
    assert len(problems) == 1 and "data_batch_3" in problems[0]
    assert str(tmp_path / "cifar-10-batches-py") in problems[0]
    assert f"osrbench data download cifar10 --data-root {tmp_path}" in problems[0]
    with pytest.raises(DataNotFound) as err:
        cifar.load_cifar10(tmp_path, make_split((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)), 32)
    assert str(err.value) == problems[0]
    plus = cifar.check_cifar_plus(tmp_path)
    assert len(plus) == 2 and "data_batch_3" in plus[0] and "cifar-100-python" in plus[1]
    assert "osrbench data download cifar+10" in plus[1]
    with pytest.raises(DataNotFound, match="cifar-100-python"):
        cifar.load_cifar_plus(tmp_path, make_split((0, 1, 8, 9), (26, 31)), 32)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not_a_dict", "wrong_size", "code"])
def test_cifar_corrupt_pickles_raise_datanotfound(tmp_path, damage):
    write_cifar10(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    if damage == "truncated":
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    elif damage == "garbage":
        p.write_bytes(b"this is not a pickle at all")
    elif damage == "not_a_dict":
        dump(p, [1, 2, 3])
    elif damage == "wrong_size":
        dump(p, {b"labels": [0, 1, 2], b"data": np.zeros((3, 100), np.uint8)})
    else:  # a pickle that would run code must be refused, not executed
        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned",))
        dump(p, {b"labels": [0], b"data": Evil()})
    with pytest.raises(DataNotFound, match="data_batch_2"):
        cifar.load_cifar10(tmp_path, make_split((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)), 32)


# ================================================================================================
# SVHN (.mat)


SVHN_TRAIN_COUNTS = [4, 6, 5, 3, 3, 2, 2, 2, 2, 3]  # index = digit
SVHN_TEST_COUNTS = [2, 3, 3, 2, 2, 1, 1, 1, 1, 2]


def svhn_mat(path: Path, counts: list[int], offset: int) -> None:
    digits = np.repeat(np.arange(10), counts)
    n = len(digits)
    x = np.empty((32, 32, 3, n), dtype=np.uint8)  # H x W x C x N, as the official files
    x[:, :, 0, :] = (20 * digits + offset)[None, None, :]
    x[:, :, 1, :] = np.arange(n)[None, None, :]
    x[:, :, 2, :] = 200
    x[0, 1, 2, :] = 9  # row 0, col 1 of the blue channel
    y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # digit 0 is stored as 10
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"X": x, "y": y})


@pytest.mark.parametrize("subdir", ["svhn", "."], ids=["root-svhn", "root-direct"])
def test_svhn_composition_and_ten_means_zero(tmp_path, subdir):
    folder = tmp_path / subdir
    svhn_mat(folder / "train_32x32.mat", SVHN_TRAIN_COUNTS, 0)
    svhn_mat(folder / "test_32x32.mat", SVHN_TEST_COUNTS, 10)
    assert svhn.check(tmp_path) == []
    known, unknown = (0, 3, 5, 7, 8, 9), (1, 2, 4, 6)
    data = svhn.load(tmp_path, make_split(known, unknown), 32)
    assert data.train_x.shape == (sum(SVHN_TRAIN_COUNTS[c] for c in known), 3, 32, 32)
    assert data.known_x.shape == (sum(SVHN_TEST_COUNTS[c] for c in known), 3, 32, 32)
    assert data.unknown_x.shape == (sum(SVHN_TEST_COUNTS[c] for c in unknown), 3, 32, 32)
    assert data.train_x.dtype == torch.uint8
    k = torch.tensor(known)
    assert torch.equal(k[data.train_y] * 20, data.train_x[:, 0, 4, 4].long())
    assert torch.equal(k[data.known_y] * 20 + 10, data.known_x[:, 0, 4, 4].long())
    assert torch.equal(data.unknown_ids * 20 + 10, data.unknown_x[:, 0, 4, 4].long())
    # digit 0 (stored as 10) is class 0, which is known[0] -> label 0
    assert class_counts(data.train_y, 6) == [SVHN_TRAIN_COUNTS[c] for c in known]
    assert (data.train_x[data.train_y == 0, 0, 0, 0] == 0).all()
    assert int(data.unknown_ids.max()) < 10
    # H x W x C x N -> N x C x H x W without transposing H and W
    for x in (data.train_x, data.known_x, data.unknown_x):
        assert (x[:, 2, 0, 1] == 9).all() and (x[:, 2, 1, 0] == 200).all()


def test_svhn_check_names_missing_file(tmp_path):
    svhn_mat(tmp_path / "svhn" / "train_32x32.mat", SVHN_TRAIN_COUNTS, 0)
    problems = svhn.check(tmp_path)
    assert len(problems) == 1 and "test_32x32.mat" in problems[0]
    assert str(tmp_path / "svhn") in problems[0]
    assert f"osrbench data download svhn --data-root {tmp_path}" in problems[0]
    with pytest.raises(DataNotFound) as err:
        svhn.load(tmp_path, make_split((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)), 32)
    assert str(err.value) == problems[0]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no_x", "bad_label"])
def test_svhn_corrupt_mat_raises_datanotfound(tmp_path, damage):
    folder = tmp_path / "svhn"
    svhn_mat(folder / "train_32x32.mat", SVHN_TRAIN_COUNTS, 0)
    svhn_mat(folder / "test_32x32.mat", SVHN_TEST_COUNTS, 10)
    p = folder / "test_32x32.mat"
    if damage == "truncated":
        p.write_bytes(p.read_bytes()[:300])
    elif damage == "garbage":
        p.write_bytes(b"\x00" * 50)
    elif damage == "no_x":
        scipy.io.savemat(str(p), {"Z": np.zeros(3)})
    else:
        scipy.io.savemat(str(p), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [11]], np.uint8)})
    with pytest.raises(DataNotFound, match="test_32x32.mat"):
        svhn.load(tmp_path, make_split((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)), 32)


# ================================================================================================
# Tiny-ImageNet (JPEG tree)

# created in this (unsorted) order; class id = position in the sorted list
TIN_WNIDS = ["n04000000", "n01000000", "n03000000", "n05000000", "n02000000"]
TIN_SORTED = sorted(TIN_WNIDS)
TIN_TRAIN = {w: 2 + i % 3 for i, w in enumerate(TIN_WNIDS)}  # 2..4 train images per class
TIN_VAL = {w: 1 + i % 2 for i, w in enumerate(TIN_WNIDS)}  # 1..2 val images per class


def tin_colour(cid: int, part: str) -> tuple[int, int, int]:
    """Uniform colour: R = 40 * class id + 20, G = 60 (train) or 180 (val), B = 120."""
    return (40 * cid + 20, 60 if part == "train" else 180, 120)


def save_jpeg(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), colour).save(path, "JPEG", quality=95)


def write_tin(root: Path, val_layout: str = "raw") -> Path:
    base = root / "tiny-imagenet-200"
    for w in TIN_WNIDS:
        cid = TIN_SORTED.index(w)
        for k in range(TIN_TRAIN[w]):
            save_jpeg(base / "train" / w / "images" / f"{w}_{k}.JPEG", tin_colour(cid, "train"))
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    (base / "wnids.txt").write_text("\n".join(TIN_WNIDS) + "\n")
    lines, n = [], 0
    for w in reversed(TIN_WNIDS):
        for _ in range(TIN_VAL[w]):
            name = f"val_{n}.JPEG"
            cid = TIN_SORTED.index(w)
            if val_layout == "raw":
                dest = base / "val" / "images" / name
            elif val_layout == "wnid-images":
                dest = base / "val" / w / "images" / name
            elif val_layout == "wnid":
                dest = base / "val" / w / name
            else:  # MLS: val/images/<wnid>/
                dest = base / "val" / "images" / w / name
            save_jpeg(dest, tin_colour(cid, "val"))
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
            n += 1
    if val_layout == "raw":
        lines = lines[1::2] + lines[0::2]  # file order differs from annotation order
        (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def assert_tin(data, known, size):
    n_train = [TIN_TRAIN[TIN_SORTED[c]] for c in known]
    n_val = [TIN_VAL[TIN_SORTED[c]] for c in known]
    unknown = [c for c in range(5) if c not in known]
    assert data.train_x.shape == (sum(n_train), 3, size, size) and data.train_x.dtype == torch.uint8
    assert data.known_x.shape == (sum(n_val), 3, size, size)
    assert data.unknown_x.shape == (sum(TIN_VAL[TIN_SORTED[c]] for c in unknown), 3, size, size)
    assert class_counts(data.train_y, len(known)) == n_train
    assert class_counts(data.known_y, len(known)) == n_val
    assert sorted(set(data.unknown_ids.tolist())) == unknown
    k = torch.tensor(known)

    def decoded_id(x):  # JPEG is lossy: round R back to the class id
        return ((x[:, 0, size // 2, size // 2].float() - 20) / 40).round().long()

    assert torch.equal(decoded_id(data.train_x), k[data.train_y])
    assert torch.equal(decoded_id(data.known_x), k[data.known_y])
    assert torch.equal(decoded_id(data.unknown_x), data.unknown_ids)
    assert (data.train_x[:, 1].float() - 60).abs().max() <= 6
    assert (data.known_x[:, 1].float() - 180).abs().max() <= 6
    assert (data.unknown_x[:, 1].float() - 180).abs().max() <= 6


@pytest.mark.parametrize("size", [64, 32])
def test_tin_sorted_wnid_ids_and_val_from_annotations(tmp_path, size):
    write_tin(tmp_path)
    assert tiny_imagenet.check(tmp_path) == []
    known = (3, 0, 4)  # n04, n01, n05
    data = tiny_imagenet.load(tmp_path, make_split(known, (1, 2)), size)
    assert_tin(data, known, size)
    layout = tiny_imagenet.scan(tmp_path)
    assert layout.wnids == tuple(TIN_SORTED)
    # raw val is read in place: nothing was moved
    assert len(list((tmp_path / "tiny-imagenet-200" / "val" / "images").iterdir())) == sum(TIN_VAL.values())


@pytest.mark.parametrize("layout", ["wnid-images", "wnid", "mls"])
def test_tin_accepts_refoldered_val(tmp_path, layout):
    write_tin(tmp_path, val_layout=layout)
    assert tiny_imagenet.check(tmp_path) == []
    known = (1, 2)
    assert_tin(tiny_imagenet.load(tmp_path, make_split(known, (0, 3, 4)), 32), known, 32)


def test_tin_cache_reused_and_invalidated(tmp_path, monkeypatch):
    base = write_tin(tmp_path)
    split = make_split((0, 1), (2, 3, 4))
    calls = []
    real_decode = tiny_imagenet._decode

    def counting_decode(path):
        calls.append(path)
        return real_decode(path)

    monkeypatch.setattr(tiny_imagenet, "_decode", counting_decode)
    first = tiny_imagenet.load(tmp_path, split, 32)
    total = sum(TIN_TRAIN.values()) + sum(TIN_VAL.values())
    assert len(calls) == total
    cache = base / "osrbench-cache-32.npz"
    assert cache.is_file()
    assert not [p for p in base.iterdir() if p.name.endswith(".tmp")]  # atomic write left no temp file
    # second load: served from the cache, nothing decoded
    second = tiny_imagenet.load(tmp_path, split, 32)
    assert len(calls) == total
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.unknown_x, second.unknown_x)
    # 64 px has its own cache; after it exists, 32 px could derive from it but 32 is cached already
    tiny_imagenet.load(tmp_path, split, 64)
    assert len(calls) == 2 * total and (base / "osrbench-cache-64.npz").is_file()
    # a changed tree (one more train image for class 0) is decoded again, not served stale
    save_jpeg(base / "train" / TIN_SORTED[0] / "images" / "extra.JPEG", tin_colour(0, "train"))
    third = tiny_imagenet.load(tmp_path, split, 32)
    assert len(calls) == 3 * total + 1
    assert len(third.train_x) == len(first.train_x) + 1
    # a damaged cache file is rebuilt, not fatal
    cache.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="cache"):
        fourth = tiny_imagenet.load(tmp_path, split, 32)
    assert torch.equal(fourth.train_x, third.train_x)


def test_tin_derives_other_size_from_native_cache(tmp_path, monkeypatch):
    write_tin(tmp_path)
    split = make_split((0, 1), (2, 3, 4))
    full = tiny_imagenet.load(tmp_path, split, 64)

    def no_decode(path):
        raise AssertionError(f"decoded {path} although the 64 px cache is valid")

    monkeypatch.setattr(tiny_imagenet, "_decode", no_decode)
    small = tiny_imagenet.load(tmp_path, split, 32)
    assert small.train_x.shape[1:] == (3, 32, 32)
    assert (small.train_x.float().mean((2, 3)) - full.train_x.float().mean((2, 3))).abs().max() < 2


def test_tin_missing_tree_and_parts(tmp_path):
    problems = tiny_imagenet.check(tmp_path)
    assert len(problems) == 1 and "tiny-imagenet-200" in problems[0]
    assert f"osrbench data download tiny_imagenet --data-root {tmp_path}" in problems[0]
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in problems[0]
    with pytest.raises(DataNotFound) as err:
        tiny_imagenet.load(tmp_path, make_split((0,), (1,)), 64)
    assert str(err.value) == problems[0]
    base = write_tin(tmp_path)
    (base / "val" / "val_annotations.txt").unlink()
    problems = tiny_imagenet.check(tmp_path)
    assert len(problems) == 1 and "val_annotations.txt" in problems[0] and str(base / "val") in problems[0]


def test_tin_val_classes_must_match_train(tmp_path):
    base = write_tin(tmp_path)
    ann = base / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    # drop every val image of one class -> that class has no val image
    gone = TIN_WNIDS[3]
    keep = [line for line in lines if line.split("\t")[1] != gone]
    for line in lines:
        if line.split("\t")[1] == gone:
            (base / "val" / "images" / line.split("\t")[0]).unlink()
    ann.write_text("\n".join(keep) + "\n")
    problems = tiny_imagenet.check(tmp_path)
    assert len(problems) == 1 and gone in problems[0] and "no val image" in problems[0]
    with pytest.raises(DataNotFound, match=gone):
        tiny_imagenet.load(tmp_path, make_split((0, 1), (2, 3, 4)), 32)


def test_tin_annotation_problems(tmp_path):
    base = write_tin(tmp_path)
    ann = base / "val" / "val_annotations.txt"
    lines = ann.read_text().splitlines()
    first = lines[0].split("\t")
    lines[0] = "\t".join([first[0], "n09999999"] + first[2:])  # a wnid with no train folder
    lines = lines[:-1]  # the last image is no longer annotated
    ann.write_text("\n".join(lines) + "\n")
    problems = tiny_imagenet.check(tmp_path)
    assert any("n09999999" in p for p in problems)
    assert any("not listed in val_annotations.txt" in p for p in problems)
    ann.write_text("garbage line without tabs\n")
    assert any("malformed" in p for p in tiny_imagenet.check(tmp_path))


def test_tin_wnids_txt_must_agree_with_train(tmp_path):
    base = write_tin(tmp_path)
    (base / "wnids.txt").write_text("\n".join(TIN_WNIDS[:-1] + ["n07000000"]) + "\n")
    problems = tiny_imagenet.check(tmp_path)
    assert len(problems) == 1 and "wnids.txt" in problems[0] and "n07000000" in problems[0]


def test_tin_real_sized_tree_needs_500_and_50_per_class(tmp_path):
    # 200 classes switch on the real-set counts (files are listed, never decoded, by check)
    base = tmp_path / "tiny-imagenet-200"
    lines = []
    for i in range(200):
        w = f"n{i:08d}"
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        (d / f"{w}_0.JPEG").write_bytes(b"")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t1\t1")
    (base / "val" / "images").mkdir(parents=True)
    for i in range(200):
        (base / "val" / "images" / f"val_{i}.JPEG").write_bytes(b"")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    problems = tiny_imagenet.check(tmp_path)
    assert len(problems) == 2
    assert "200 classes" in problems[0] and "500" in problems[0]
    assert "200 classes" in problems[1] and "50 val" in problems[1]


def test_tin_corrupt_jpeg_names_file(tmp_path):
    base = write_tin(tmp_path)
    bad = base / "train" / TIN_SORTED[2] / "images" / f"{TIN_SORTED[2]}_1.JPEG"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataNotFound, match=bad.name):
        tiny_imagenet.load(tmp_path, make_split((0, 1), (2, 3, 4)), 32)
    assert not (base / "osrbench-cache-32.npz").exists()


def test_tin_greyscale_jpeg_becomes_rgb(tmp_path):
    base = write_tin(tmp_path)
    grey = base / "train" / TIN_SORTED[0] / "images" / f"{TIN_SORTED[0]}_0.JPEG"
    Image.new("L", (64, 64), 20).save(grey, "JPEG")
    data = tiny_imagenet.load(tmp_path, make_split((0, 1), (2, 3, 4)), 64)
    assert data.train_x.shape[1] == 3
    assert ((data.train_x[0].float() - 20).abs() <= 3).all()  # grey replicated to R, G, B


# ================================================================================================
# downloads (no network here: only the failure path and the no-op path can be tested)


def _fail(*args, **kwargs):
    raise urllib.error.URLError("network unreachable")


DOWNLOADS = [
    (mnist.download_mnist, "MNIST"),
    (mnist.download_fashion_mnist, "FashionMNIST"),
    (cifar.download_cifar10, "CIFAR10"),
    (cifar.download_cifar_plus, "CIFAR100"),
    (svhn.download, "SVHN"),
]


@pytest.mark.parametrize("fn,cls", DOWNLOADS, ids=[c for _, c in DOWNLOADS])
def test_failed_torchvision_download_becomes_datanotfound(tmp_path, monkeypatch, no_system_fashion, fn, cls):
    import torchvision.datasets

    for name in ("MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "SVHN"):
        monkeypatch.setattr(torchvision.datasets, name, _fail)
    with pytest.raises(DataNotFound, match="download of .* failed") as err:
        fn(tmp_path)
    assert "by hand" in str(err.value) and str(tmp_path) in str(err.value)


def test_failed_tin_download_becomes_datanotfound(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    seen = {}

    def fake(url, download_root, **kwargs):
        seen.update(url=url, root=download_root, **kwargs)
        raise OSError("connection refused")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake)
    with pytest.raises(DataNotFound, match="download of tiny_imagenet .* failed") as err:
        tiny_imagenet.download(tmp_path)
    assert seen["url"] == "http://cs231n.stanford.edu/tiny-imagenet-200.zip" and seen["root"] == str(tmp_path)
    assert "unzip it in" in str(err.value)


def test_download_is_a_noop_when_files_are_there(tmp_path, monkeypatch):
    import torchvision.datasets
    import torchvision.datasets.utils

    for name in ("MNIST", "CIFAR10", "CIFAR100", "SVHN"):
        monkeypatch.setattr(torchvision.datasets, name, _fail)
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", _fail)
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    svhn_mat(tmp_path / "svhn" / "train_32x32.mat", SVHN_TRAIN_COUNTS, 0)
    svhn_mat(tmp_path / "svhn" / "test_32x32.mat", SVHN_TEST_COUNTS, 0)
    write_tin(tmp_path)
    mnist.download_mnist(tmp_path)
    cifar.download_cifar10(tmp_path)
    cifar.download_cifar_plus(tmp_path)
    svhn.download(tmp_path)
    tiny_imagenet.download(tmp_path)


def test_download_that_leaves_files_missing_is_reported(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "SVHN", lambda *a, **k: None)  # "succeeds", writes nothing
    with pytest.raises(DataNotFound, match="still not usable"):
        svhn.download(tmp_path)


# ================================================================================================
# registry wiring


def test_registry_names_resolve_to_these_functions():
    reg = yaml.safe_load((REPO / "osrbench" / "registry.yaml").read_text())
    seen = 0
    for name, entry in reg["datasets"].items():
        for key in ("loader", "check", "download"):
            target = entry.get(key)
            if not target or not target.startswith(("osrbench.data.mnist:", "osrbench.data.cifar:",
                                                     "osrbench.data.svhn:", "osrbench.data.tiny_imagenet:")):
                continue
            module, _, func = target.partition(":")
            assert callable(getattr(importlib.import_module(module), func)), f"{name}.{key}: {target}"
            seen += 1
    assert seen == 7 * 3
