"""ImageNet-SSB: ImageNet-1K's 1000 classes known, ImageNet-21K-P (winter 21) classes unknown.

The Semantic Shift Benchmark's ImageNet split as the MLS release reads it (``data/imagenet.py``):
every tree is a torchvision ``ImageFolder``::

    ROOT/imagenet/train/<wnid>/*.JPEG                  known training (ImageNet-1K train)
    ROOT/imagenet/val/<wnid>/*.JPEG                    known test (ImageNet-1K val, foldered by class)
    ROOT/imagenet21k_resized_new/val/<wnid>/*.JPEG     unknown test (ImageNet-21K-P val)

The release's ``config.py`` names the two roots ``imagenet_root`` (``.../ILSVRC12``, holding train/ and
val/) and ``imagenet21k_root`` (``.../imagenet21k_resized_new``, of which it reads ``val``). The
ImageNet-21K-P processing scripts (Ridnik et al. 2021) write ``imagenet21k_resized/imagenet21k_val``;
that folder is read when the release's is absent.

Class ids: a known class is its position in the sorted wnid folder names of ``train/`` (ImageFolder's
order, the release's labels), so the split's known ids are 0..999. An unknown wnid's id is 1000 + its
position in the sorted union of the protocol's Easy and Hard wnids (:func:`osrbench.protocols.unknown_wnid_ids`),
the same in both splits; only the wnids of the split's difficulty are read, the rest of the 21K-P val
tree is ignored (the release's ``get_imagenet_osr_class_splits``). Files are listed in ImageFolder's
order (classes sorted, then a sorted walk of each class folder).

Size: the release evaluates ImageNet with each pretrained timm model's own test transform
(``methods/tests/openset_test_imagenet.py``: its ``default_cfg`` input size, crop_pct and
interpolation; Resize(size / crop_pct), CenterCrop(size)). For the model it runs, ``resnet50``, that is
224 px, crop_pct 0.875, bicubic (``timm_pretrained_accs.csv``): the registry's 224, and the config keys
``crop_pct`` / ``test_interpolation`` / ``normalize: imagenet`` that softmax's ``imagenet-eval`` recipe sets
(``osrbench evaluate --layout torchvision``). Nothing is trained on ImageNet there; the known training
tree is read for the split's shape (and for a run that trains).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from osrbench.data.imagefiles import OpenSetFiles, select_files
from osrbench.datasets import DataNotFound

if TYPE_CHECKING:
    from osrbench.protocols import OpenSetSplit

KNOWN_FOLDER = "imagenet"
#: The ImageNet-21K-P val folder: the release's layout first, then the 21K-P scripts' own.
UNKNOWN_FOLDERS = ("imagenet21k_resized_new/val", "imagenet21k_resized/imagenet21k_val")
NUM_KNOWN = 1000
#: torchvision's ImageFolder extensions (``torchvision.datasets.folder.IMG_EXTENSIONS``), matched case-blind.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
HINT_1K = "ILSVRC2012 train and val from https://image-net.org, val sorted into <wnid> folders"
HINT_21K = "ImageNet-21K-P winter-21, processed as https://github.com/Alibaba-MIIL/ImageNet21K does"


def _classes(folder: Path) -> list[str]:
    """ImageFolder's classes: the sorted names of the sub-folders."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir())


def _files(folder: Path, wnids: list[str]) -> list[tuple[str, str]]:
    """(path, wnid) of every image under ``folder/<wnid>``, in ImageFolder's order."""
    out = []
    for wnid in sorted(wnids):
        for where, _, names in sorted(os.walk(folder / wnid, followlinks=True)):
            out += [(os.path.join(where, n), wnid) for n in sorted(names) if n.lower().endswith(IMG_EXTENSIONS)]
    return out


def _unknown_folder(root: Path) -> Path | None:
    return next((root / f for f in UNKNOWN_FOLDERS if (root / f).is_dir()), None)


def check(root: Path) -> list[str]:
    """One line per problem with the trees under ``root`` (empty = ready)."""
    root = Path(root)
    problems = []
    known = {}
    for part in ("train", "val"):
        folder = root / KNOWN_FOLDER / part
        if not folder.is_dir():
            problems.append(f"missing ImageNet-1K {part} folder {folder} ({HINT_1K})")
            continue
        known[part] = _classes(folder)
        if len(known[part]) != NUM_KNOWN:
            problems.append(f"{folder} holds {len(known[part])} class folders, ImageNet-1K has {NUM_KNOWN} ({HINT_1K})")
    if len(known) == 2 and known["train"] != known["val"] and len(known["train"]) == len(known["val"]) == NUM_KNOWN:
        odd = sorted(set(known["train"]) ^ set(known["val"]))[:3]
        problems.append(f"{root / KNOWN_FOLDER}: train and val class folders differ (e.g. {', '.join(odd)})")
    folder = _unknown_folder(root)
    if folder is None:
        problems.append(f"missing ImageNet-21K-P val folder {root / UNKNOWN_FOLDERS[0]} "
                        f"(or {root / UNKNOWN_FOLDERS[1]}) ({HINT_21K})")
    else:
        wanted = set(_unknown_ids())
        have = wanted & set(_classes(folder))
        if len(have) < len(wanted):
            absent = sorted(wanted - have)
            problems.append(f"{folder} lacks {len(absent)} of the {len(wanted)} SSB wnids (e.g. {', '.join(absent[:3])}) "
                            f"({HINT_21K})")
    return problems


def _unknown_ids() -> dict[str, int]:
    """wnid -> class id of every unknown wnid of the protocol's ImageNet table."""
    from osrbench import protocols, registry

    return protocols.unknown_wnid_ids(registry.load().named_splits["ssb"]["imagenet"])


def load(root: Path, split: OpenSetSplit, image_size: int) -> OpenSetFiles:
    """The files of one ImageNet-SSB split at ``image_size`` (224 in the registry)."""
    root = Path(root)
    known_root = root / KNOWN_FOLDER
    for part in ("train", "val"):
        if not (known_root / part).is_dir():
            raise DataNotFound(f"missing ImageNet-1K {part} folder {known_root / part} ({HINT_1K})")
    wnids = _classes(known_root / "train")
    if _classes(known_root / "val") != wnids:
        raise DataNotFound(f"{known_root}: the class folders of train and val differ; both must hold the same "
                           f"{NUM_KNOWN} ImageNet-1K wnids")
    if len(wnids) != NUM_KNOWN:
        raise DataNotFound(f"{known_root / 'train'} holds {len(wnids)} class folders, ImageNet-1K has {NUM_KNOWN}: "
                           f"a class id is a position in the sorted folders, so every class must be there ({HINT_1K})")
    unknown_root = _unknown_folder(root)
    if unknown_root is None:
        raise DataNotFound(f"missing ImageNet-21K-P val folder {root / UNKNOWN_FOLDERS[0]} ({HINT_21K})")
    index = {w: i for i, w in enumerate(wnids)}
    train = _files(known_root / "train", wnids)
    val = _files(known_root / "val", wnids)
    ids = _unknown_ids()
    of_split = set(split.unknown)
    wanted = {w for w, i in ids.items() if i in of_split}
    present = sorted(wanted & set(_classes(unknown_root)))
    if len(present) < len(wanted):
        absent = sorted(wanted - set(present))
        raise DataNotFound(f"{unknown_root} lacks {len(absent)} of the split's {len(wanted)} wnids "
                           f"(e.g. {', '.join(absent[:3])}) ({HINT_21K})")
    unknown = _files(unknown_root, present)
    return select_files(
        [p for p, _ in train], [index[w] for _, w in train],
        [p for p, _ in val], [index[w] for _, w in val],
        split.known, split.unknown, image_size,
        unknown_paths=[p for p, _ in unknown], unknown_y=[ids[w] for _, w in unknown],
    )
