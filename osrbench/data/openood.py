"""OpenOOD v1.5's open-set recognition benchmarks, read from its image lists (``--protocol openood``).

OpenOOD (github.com/Jingkang50/OpenOOD, MIT) reports four OSR benchmarks, five seeds each, whose class
splits exist only as image-list files it ships as a download (not in its git repository). Its configs
``configs/datasets/osr_<b>/<b>_seed<N>.yml`` and ``..._osr.yml`` name them; osrbench reads them as they
unpack, under the data root::

    ROOT/openood/benchmark_imglist/osr_cifar6/train/train_cifar10_6_seed1.txt     training (known)
    ROOT/openood/benchmark_imglist/osr_cifar6/test/test_cifar10_6_id_seed1.txt    test, known
    ROOT/openood/benchmark_imglist/osr_cifar6/test/test_cifar10_4_ood_seed1.txt   test, unknown
    ROOT/openood/images_classic/cifar10/...                                        the images

``ROOT/openood`` is OpenOOD's ``./data`` folder. Split ``i`` is OpenOOD's seed ``i + 1``.

``--dataset`` -> benchmark (lists ``train_<k>_seedN``, ``test_<k>_id_seedN``, ``test_<u>_ood_seedN``;
images under ``images_classic/``; the configs' size):

- ``mnist`` -> ``osr_mnist6`` (``mnist_6``, ``mnist_4``; ``mnist/``; 28 px)
- ``cifar10`` -> ``osr_cifar6`` (``cifar10_6``, ``cifar10_4``; ``cifar10/``; 32 px)
- ``cifar50`` -> ``osr_cifar50`` (``cifar100_50``, ``cifar100_50``; ``cifar100/``; 32 px)
- ``tiny_imagenet`` -> ``osr_tin20`` (``tin_20``, ``tin_180``; ``tin/``; 64 px)

``osr_cifar50`` is CIFAR-100 with 50 known and 50 unknown classes (``train_cifar100_50``,
``num_classes: 50``), not CIFAR+50 (CIFAR-10 knowns against CIFAR-100 unknowns), hence its own
dataset name ``cifar50``.

What is OpenOOD's and what is osrbench's:

- A list line is parsed as ``ImglistDataset.getitem`` parses it (:func:`parse_line`); an image is
  opened with PIL, converted to RGB and passed through OpenOOD's deterministic transform steps
  (``Resize(pre_size)`` bilinear, ``CenterCrop(image_size)``: the identity at the configs' native
  sizes), then kept as uint8 for the device-resident stream; a run at another ``image_size`` is
  resized as every osrbench dataset is.
- OpenOOD trains on the ``train`` list only; its ``val`` list picks the best epoch
  (``best.ckpt``), which osrbench does not do (the final epoch is evaluated), so ``val`` is not read.
- Known labels are the id lists' labels, 0..K-1 as OpenOOD trains them. OpenOOD sets every unknown
  label to -1 at evaluation (``ood_evaluator.py``: ``ood_gt = -1 * np.ones_like(ood_gt)``), so the
  unknowns' classes are taken from their paths. A class is the folder after the image set and its
  part (``cifar10/test/airplane/0298.png`` -> ``airplane``); class ids are the positions of the class
  names, sorted (as numbers when every name is one), over the three lists. Over OpenOOD's full
  lists these are the datasets' own ids (CIFAR-10 and CIFAR-100 name their classes in alphabetical
  order, Tiny-ImageNet's ids are its sorted wnids, MNIST's folders are its digits).
- Normalisation (OpenOOD's per-dataset mean / std) and training augmentation (OpenOOD's base
  preprocessor: flip, then crop with padding 4, on all four benchmarks) belong to the recipe: the
  dataset's reference augmentation applies unless ``--set augment=crop_flip`` (mnist's is ``none``),
  and MNIST runs at osrbench's 32 px unless ``--set image_size=28``.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from osrbench.datasets import BadData, DataNotFound
from osrbench.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from osrbench.datasets import OpenSetData

#: The folder under the data root that holds OpenOOD's ``benchmark_imglist/`` and ``images_classic/``.
FOLDER = "openood"
LISTS = "benchmark_imglist"
IMAGES = "images_classic"
#: OpenOOD's seeds 1-5 are splits 0-4.
SEEDS = (1, 2, 3, 4, 5)
#: Where OpenOOD's download script fetches ``benchmark_imglist.zip`` (``scripts/download/download.py``).
LISTS_URL = "https://drive.google.com/uc?id=1lI1j0_fDDvjIt9JlWAw09X8ks-yrR_H1"


@dataclass(frozen=True)
class Benchmark:
    """One OpenOOD OSR benchmark as its configs name it."""

    name: str  # osr_cifar6: the folder under benchmark_imglist/
    known: str  # cifar10_6: train_<known>_seedN.txt, test_<known>_id_seedN.txt
    unknown: str  # cifar10_4: test_<unknown>_ood_seedN.txt
    images: str  # cifar10: the folder under images_classic/ (OpenOOD's download name)
    num_known: int  # the configs' num_classes
    size: int  # the configs' pre_size = image_size

    def lists(self, seed: int) -> dict[str, str]:
        """Part -> the list file, relative to ``ROOT/openood``."""
        base = f"{LISTS}/{self.name}"
        return {
            "train": f"{base}/train/train_{self.known}_seed{seed}.txt",
            "known": f"{base}/test/test_{self.known}_id_seed{seed}.txt",
            "unknown": f"{base}/test/test_{self.unknown}_ood_seed{seed}.txt",
        }


#: osrbench dataset name -> OpenOOD benchmark (configs/datasets/osr_*/<b>_seed<N>.yml, seeds 1-5 alike).
BENCHMARKS = {
    "mnist": Benchmark("osr_mnist6", "mnist_6", "mnist_4", "mnist", 6, 28),
    "cifar10": Benchmark("osr_cifar6", "cifar10_6", "cifar10_4", "cifar10", 6, 32),
    "cifar50": Benchmark("osr_cifar50", "cifar100_50", "cifar100_50", "cifar100", 50, 32),
    "tiny_imagenet": Benchmark("osr_tin20", "tin_20", "tin_180", "tin", 20, 64),
}


def download_hint(root: Path, bench: Benchmark) -> str:
    """How to get a benchmark's lists and images: OpenOOD's own download script."""
    return (f"get them with OpenOOD's scripts/download/download.py (github.com/Jingkang50/OpenOOD, needs gdown): "
            f"python scripts/download/download.py --contents datasets --dataset_mode dataset "
            f"--datasets {bench.images} --save_dir {Path(root) / FOLDER} (the lists are {LISTS_URL}, "
            f"unpacked as {Path(root) / FOLDER / LISTS}/)")


# ------------------------------------------------------------------------------------- the lists


class ListError(DataNotFound):
    """A missing or malformed image list (the message names the file and how to get it)."""


def parse_line(line: str) -> tuple[str, int]:
    """``(image name, label)`` of one list line, as OpenOOD reads it
    (``openood/datasets/imglist_dataset.py`` lines 59-63 and 86-93): the name is everything before
    the first space, the rest is ``ast.literal_eval``-ed: a dict of extras gives label 0 (OpenOOD
    sets it so), anything else ``int(rest)``. A name starting with ``/`` is refused, as OpenOOD
    refuses it under a ``data_dir``. Raises ``ValueError`` on a line OpenOOD cannot read."""
    tokens = line.strip("\n").split(" ", 1)
    if len(tokens) < 2:
        raise ValueError("no label after the image name")
    image_name, extra_str = tokens[0], tokens[1]
    if image_name.startswith("/"):
        raise ValueError('image_name starts with "/"')
    try:
        extras = ast.literal_eval(extra_str)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise ValueError(f"label {extra_str.strip()!r} is not a Python literal ({type(exc).__name__})") from None
    try:
        extras.items()
        return image_name, 0
    except AttributeError:
        return image_name, int(extra_str)


@dataclass(frozen=True)
class Lists:
    """The three parsed lists of one benchmark seed, with their files' digests."""

    names: dict[str, tuple[str, ...]]  # part -> image names (relative to images_classic/)
    labels: dict[str, tuple[int, ...]]  # part -> the lists' labels
    classes: dict[str, tuple[str, ...]]  # part -> class folder of each image
    digests: tuple[tuple[str, str], ...]  # (list file, sha256) per part


def _read_list(base: Path, rel: str, hint: str) -> tuple[list[str], list[int], str]:
    path = base / rel
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ListError(f"missing OpenOOD image list {rel} in {base} ({hint})") from None
    except OSError as exc:
        raise ListError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ListError(f"{path} is not a text file (damaged download? {hint})") from None
    names, labels = [], []
    # OpenOOD: open(imglist_pth).readlines() (text mode: universal newlines)
    for number, line in enumerate(io.StringIO(text, newline=None).readlines(), 1):
        try:
            name, label = parse_line(line)
        except ValueError as exc:
            raise ListError(f"{path}, line {number}: {exc} (OpenOOD's lines are 'PATH LABEL'; damaged file?)") from None
        names.append(name)
        labels.append(label)
    if not names:
        raise ListError(f"{path} lists no images (damaged download? {hint})")
    return names, labels, hashlib.sha256(raw).hexdigest()


def _class_of(name: str, path: Path, number: int) -> str:
    parts = name.split("/")
    if len(parts) < 4 or not parts[2]:
        raise ListError(f"{path}, line {number}: {name!r} is not IMAGESET/PART/CLASS/FILE, so its class "
                        "cannot be told (OpenOOD's images_classic layout is expected)")
    return parts[2]


def _benchmark(dataset: str) -> Benchmark:
    if dataset in BENCHMARKS:
        return BENCHMARKS[dataset]
    if dataset == "cifar+50":
        raise UserError("OpenOOD's osr_cifar50 is CIFAR-100 with 50 known / 50 unknown classes, not CIFAR+50: "
                        "use --dataset cifar50 with --protocol openood")
    raise UserError(f"protocol 'openood' has no benchmark for dataset {dataset!r} "
                    f"(valid: {', '.join(BENCHMARKS)})")


def _seed(dataset: str, index: int) -> int:
    if not isinstance(index, int) or not 0 <= index < len(SEEDS):
        raise UserError(f"split {index} out of range for {dataset}/openood (valid: 0-{len(SEEDS) - 1}, "
                        "OpenOOD's seeds 1-5)")
    return SEEDS[index]


def default_root() -> Path:
    from osrbench.session import default_data_root

    return default_data_root()


def read_lists(root: Path | None, dataset: str, index: int) -> tuple[Benchmark, Lists]:
    """The parsed lists of split ``index`` of ``dataset``; :class:`ListError` naming a missing or
    malformed file."""
    bench = _benchmark(dataset)
    seed = _seed(dataset, index)
    base = Path(root or default_root()) / FOLDER
    hint = download_hint(base.parent, bench)
    names, labels, classes, digests = {}, {}, {}, []
    for part, rel in bench.lists(seed).items():
        part_names, part_labels, digest = _read_list(base, rel, hint)
        names[part], labels[part] = tuple(part_names), tuple(part_labels)
        classes[part] = tuple(_class_of(n, base / rel, i) for i, n in enumerate(part_names, 1))
        digests.append((rel, digest))
    return bench, Lists(names, labels, classes, tuple(digests))


def _class_ids(bench: Benchmark, lists: Lists) -> tuple[list[str], list[str]]:
    """Class names in id order, and the class name of each known label 0..K-1 (checked against
    the lists: every label in 0..K-1, each label one class folder, the unknowns none of them)."""
    k = bench.num_known
    of_label: dict[int, set[str]] = {}
    for part in ("train", "known"):
        for label, cls in zip(lists.labels[part], lists.classes[part]):
            if not 0 <= label < k:
                raise BadData(f"{bench.name}: the {part} list holds label {label}; OpenOOD trains labels 0..{k - 1}")
            of_label.setdefault(label, set()).add(cls)
    absent = sorted(set(range(k)) - set(lists.labels["train"]))
    if absent:
        raise BadData(f"{bench.name}: known label(s) {absent} have no training images (incomplete list?)")
    mixed = {label: sorted(c) for label, c in of_label.items() if len(c) > 1}
    if mixed:
        label, found = next(iter(sorted(mixed.items())))
        raise BadData(f"{bench.name}: label {label} is given to images of class folders {found}; "
                      "the lists and the images do not agree")
    known_names = [next(iter(of_label[label])) for label in range(k)]
    if len(set(known_names)) != k:
        raise BadData(f"{bench.name}: two known labels share one class folder ({known_names})")
    leaked = sorted(set(lists.classes["unknown"]) & set(known_names))
    if leaked:
        raise BadData(f"{bench.name}: the ood list holds images of known class(es) {leaked}")
    names = set(known_names) | set(lists.classes["unknown"])
    numbered = all(n.isdigit() for n in names)  # folders named by class number: 2 before 10
    return sorted(names, key=int if numbered else None), known_names


def read_split(dataset: str, index: int, root: Path | None = None
               ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[str, str], ...]]:
    """``(known ids in label order, unknown ids, (list file, sha256) of each list)`` of split
    ``index`` (OpenOOD seed ``index + 1``); the reader interface of ``protocols.reader_of``."""
    bench, lists = read_lists(root, dataset, index)
    names, known_names = _class_ids(bench, lists)
    position = {n: i for i, n in enumerate(names)}
    known = tuple(position[n] for n in known_names)
    unknown = tuple(sorted({position[n] for n in lists.classes["unknown"]}))
    return known, unknown, lists.digests


def num_splits(dataset: str) -> int:
    _benchmark(dataset)
    return len(SEEDS)


# ------------------------------------------------------------------------------------ the images


def decode(path: Path, pre_size: int, image_size: int) -> np.ndarray:
    """One image as OpenOOD's test preprocessor sees it before ``ToTensor``: PIL, ``convert('RGB')``
    (``imglist_dataset.py`` line 83), ``Resize(pre_size)`` bilinear, ``CenterCrop(image_size)``
    (``test_preprocessor.py``; the identity at the configs' native sizes); (3, S, S) uint8."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    if rgb.size != (pre_size, pre_size) or pre_size != image_size:  # torchvision returns such an image as it is
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        rgb = TF.center_crop(TF.resize(rgb, pre_size, interpolation=InterpolationMode.BILINEAR), image_size)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _decode_all(base: Path, names: Sequence[str], bench: Benchmark, hint: str) -> Any:
    """The images ``names`` (under ``base``) as (N, 3, S, S) uint8, decoded on up to 8 threads (PIL
    releases the GIL while it decodes)."""
    import numpy as np
    import torch
    from PIL import ImageFile, UnidentifiedImageError

    def one(name: str) -> np.ndarray:
        path = base / name
        try:
            return decode(path, bench.size, bench.size)
        except FileNotFoundError:
            raise DataNotFound(f"missing image {name} in {base} ({hint})") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataNotFound(f"cannot decode {path}: {type(exc).__name__}: {exc} (damaged file? {hint})") from None

    out = np.empty((len(names), 3, bench.size, bench.size), dtype=np.uint8)
    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as OpenOOD sets it (imglist_dataset.py line 12), for this read only
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
            for i, image in enumerate(pool.map(one, names)):
                out[i] = image
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated
    return torch.from_numpy(out)


def load(root: Path, split: Any, image_size: int) -> OpenSetData:
    """The images of ``split`` (a split of protocol ``openood``) as uint8 (N, 3, S, S) tensors."""
    import torch

    from osrbench.datasets import OpenSetData

    bench, lists = read_lists(root, split.dataset, split.index)
    if lists.digests != tuple(getattr(split, "sources", ())):
        raise UserError(f"the OpenOOD lists of {bench.name} seed {split.index + 1} under {root} are not the ones "
                        "this split was read from (changed since, or another --data-root)")
    names, _ = _class_ids(bench, lists)
    position = {n: i for i, n in enumerate(names)}
    base = Path(root) / FOLDER / IMAGES
    hint = download_hint(root, bench)
    for folder in sorted({n.split("/")[0] for part in lists.names.values() for n in part}):
        if not (base / folder).is_dir():  # one line for a whole image set not downloaded
            raise DataNotFound(f"missing OpenOOD images {folder}/ in {base} ({hint})")
    return OpenSetData(
        train_x=_decode_all(base, lists.names["train"], bench, hint),
        train_y=torch.tensor(lists.labels["train"], dtype=torch.int64),
        known_x=_decode_all(base, lists.names["known"], bench, hint),
        known_y=torch.tensor(lists.labels["known"], dtype=torch.int64),
        unknown_x=_decode_all(base, lists.names["unknown"], bench, hint),
        unknown_ids=torch.tensor([position[c] for c in lists.classes["unknown"]], dtype=torch.int64),
    ).resized(image_size)


# ------------------------------------------------------------------------- the cifar50 dataset


def check_cifar50(root: Path) -> list[str]:
    """``osrbench data check cifar50``: the osr_cifar50 lists of every seed and the image folder."""
    return _check(root, BENCHMARKS["cifar50"])


def _check(root: Path, bench: Benchmark) -> list[str]:
    base = Path(root) / FOLDER
    hint = download_hint(root, bench)
    if not (base / LISTS / bench.name).is_dir():
        return [f"missing OpenOOD image lists {LISTS}/{bench.name}/ in {base} ({hint})"]
    problems = [f"missing OpenOOD image list {rel} in {base} ({hint})"
                for seed in SEEDS for rel in bench.lists(seed).values() if not (base / rel).is_file()]
    if not (base / IMAGES / bench.images).is_dir():
        problems.append(f"missing OpenOOD images {IMAGES}/{bench.images}/ in {base} ({hint})")
    return problems


def load_cifar50(root: Path, split: Any, image_size: int) -> OpenSetData:
    """``cifar50`` exists only as OpenOOD's osr_cifar50 (its splits say so before this is reached)."""
    if getattr(split, "protocol", None) != "openood":
        raise UserError("dataset cifar50 (OpenOOD's osr_cifar50) runs only under --protocol openood")
    return load(root, split, image_size)
