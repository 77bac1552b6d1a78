"""Tests for the fine-grained Semantic Shift Benchmark readers (osrbench/data/{cub,aircraft,scars}.py).

Every test writes a tiny stand-in in the exact layout the official archive unpacks to (CUB's three
lists and class folders of JPEGs, FGVC-Aircraft's variant lists, Stanford Cars' devkit .mat files
written with scipy in the devkit's struct layout) and checks the paths, labels, unknown ids and
train/test partition the readers return, the class ids against replicas of the MLS release's own
parsing (sgvaze/osr_closed_set_all_you_need, MIT; each replica cites its file:line), and the
one-line messages for missing or damaged files. No image is decoded by the readers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from osrbench import cli, registry
from osrbench.data import aircraft, cub, scars
from osrbench.data.imagefiles import OpenSetFiles
from osrbench.datasets import DataNotFound


@dataclass(frozen=True)
class Split:
    """Stands in for protocols.ClassSplit (the ssb tables land on another branch)."""

    known: tuple[int, ...]
    unknown: tuple[int, ...]


def save_jpeg(path: Path, colour=(90, 120, 150)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 9), colour).save(path, "JPEG", quality=90)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


def parts(data: OpenSetFiles) -> dict[str, list]:
    return {"train": list(data.train.paths), "train_y": data.train_y.tolist(),
            "known": list(data.known.paths), "known_y": data.known_y.tolist(),
            "unknown": list(data.unknown.paths), "unknown_ids": data.unknown_ids.tolist()}


def release_selection(paths: list[str], ids_1based: list[int],
                      include_classes: list[int]) -> tuple[list[str], list[int]]:
    """Replica of the release's class selection for CUB and Stanford Cars (MIT):
    data/cub.py:107-118 and data/stanford_cars.py:73-86 (``include_classes + 1`` against the file's
    1-based targets, label = position in ``include_classes``), then ``__getitem__``'s
    ``target - 1`` and target_transform (cub.py:84, 91; stanford_cars.py:48, 54)."""
    include_classes_1 = np.array(include_classes) + 1
    cls_idxs = [x for x, t in enumerate(ids_1based) if t in include_classes_1]
    target_xform_dict = {}
    for i, k in enumerate(include_classes):
        target_xform_dict[k] = i
    return [paths[x] for x in cls_idxs], [target_xform_dict[ids_1based[x] - 1] for x in cls_idxs]


# ================================================================================================
# CUB-200-2011

CUB_FOLDERS = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
               "004.Groove_billed_Ani", "005.Crested_Auklet"]
# (image_id, class 1..5, is_training_img) in images.txt order: ids not sorted by class, mixed flags
CUB_ROWS = [(1, 1, 1), (2, 3, 0), (3, 2, 1), (4, 5, 1), (5, 1, 0), (6, 4, 1), (7, 2, 0),
            (8, 3, 1), (9, 5, 0), (10, 4, 0), (11, 1, 1), (12, 3, 1), (13, 2, 0), (14, 5, 1), (15, 4, 0)]


def cub_rel(image_id: int, cls: int) -> str:
    return f"{CUB_FOLDERS[cls - 1]}/{CUB_FOLDERS[cls - 1].split('.')[1]}_{image_id:04d}_{image_id}.jpg"


def write_cub(root: Path) -> Path:
    base = root / "CUB_200_2011"
    for image_id, cls, _ in CUB_ROWS:
        save_jpeg(base / "images" / cub_rel(image_id, cls))
    (base / "images.txt").write_text("".join(f"{i} {cub_rel(i, c)}\n" for i, c, _ in CUB_ROWS))
    # the labels and split lists in another order: the join is on the id
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c, _ in reversed(CUB_ROWS)))
    (base / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, t in CUB_ROWS))
    (base / "classes.txt").write_text("".join(f"{k + 1} {f}\n" for k, f in enumerate(CUB_FOLDERS)))
    return base


def test_cub_paths_labels_partition(tmp_path):
    base = write_cub(tmp_path)
    split = Split(known=(3, 0, 4), unknown=(1,))  # 0-based ids: classes 4, 1, 5 of the files; 2 unknown
    data = cub.load(tmp_path, split, 448)
    got = parts(data)
    img = lambda i, c: str(base / "images" / cub_rel(i, c))  # noqa: E731
    # training images of classes 4, 1, 5 (ids 3, 0, 4) in images.txt order, label = position in known
    assert got["train"] == [img(1, 1), img(4, 5), img(6, 4), img(11, 1), img(14, 5)]
    assert got["train_y"] == [1, 2, 0, 1, 2]
    assert got["known"] == [img(5, 1), img(9, 5), img(10, 4), img(15, 4)]
    assert got["known_y"] == [1, 2, 0, 0]
    assert got["unknown"] == [img(7, 2), img(13, 2)]  # test images of file class 2 = id 1
    assert got["unknown_ids"] == [1, 1]
    assert data.image_size == 448 and data.image_shape == (3, 448, 448)
    assert data.train_y.dtype == torch.int64 and data.unknown_ids.dtype == torch.int64
    # the release's selection gives the same files and labels
    rows = {"train": [r for r in CUB_ROWS if r[2] == 1], "test": [r for r in CUB_ROWS if r[2] == 0]}
    for part, known_part in (("train", "train"), ("test", "known")):
        paths = [img(i, c) for i, c, _ in rows[part]]
        want_paths, want_y = release_selection(paths, [c for _, c, _ in rows[part]], list(split.known))
        assert (got[known_part], got[f"{known_part}_y"]) == (want_paths, want_y)


def test_cub_scan_gives_zero_based_ids_in_images_txt_order(tmp_path):
    write_cub(tmp_path)
    files = cub.scan(tmp_path)
    assert files.train_y == tuple(c - 1 for _, c, t in CUB_ROWS if t == 1)
    assert files.test_y == tuple(c - 1 for _, c, t in CUB_ROWS if t == 0)
    assert len(files.train_paths) + len(files.test_paths) == len(CUB_ROWS)
    assert cub.check(tmp_path) == []


@pytest.mark.parametrize("name", ["images.txt", "image_class_labels.txt", "train_test_split.txt"])
def test_cub_missing_list_is_one_line(tmp_path, name):
    base = write_cub(tmp_path)
    (base / name).unlink()
    with pytest.raises(DataNotFound) as err:
        cub.load(tmp_path, Split((0, 1), (2,)), 448)
    message = one_line(err)
    assert message.startswith(f"missing {name} in {base}") and "osrbench data download cub" in message
    assert "data.caltech.edu" in message
    assert cub.check(tmp_path) == [message]


def test_cub_missing_folder_and_image(tmp_path):
    with pytest.raises(DataNotFound, match=r"^missing folder CUB_200_2011/ in ") as err:
        cub.load(tmp_path, Split((0, 1), (2,)), 448)
    one_line(err)
    base = write_cub(tmp_path)
    gone = base / "images" / cub_rel(8, 3)
    gone.unlink()
    with pytest.raises(DataNotFound) as err:
        cub.load(tmp_path, Split((0, 1), (2,)), 448)
    message = one_line(err)
    assert "1 image file(s) listed in" in message and str(gone) in message
    assert cub.check(tmp_path) == [message]


@pytest.mark.parametrize("damage, match", [
    (lambda b: (b / "image_class_labels.txt").write_text("1 1\n2 3\n"), "list different image ids"),
    (lambda b: (b / "image_class_labels.txt").write_text(
        "".join(f"{i} {201 if i == 4 else c}\n" for i, c, _ in CUB_ROWS)), "image 4 has class '201'"),
    (lambda b: (b / "train_test_split.txt").write_text(
        "".join(f"{i} {2 if i == 3 else t}\n" for i, _, t in CUB_ROWS)), "image 3 has is_training_img '2'"),
    (lambda b: (b / "images.txt").write_text("1 a.jpg\n1 b.jpg\n"), "line 2 is malformed"),
])
def test_cub_damaged_lists(tmp_path, damage, match):
    damage(write_cub(tmp_path))
    with pytest.raises(DataNotFound, match=match) as err:
        cub.scan(tmp_path)
    one_line(err)


def test_cub_check_finds_damaged_images(tmp_path):
    base = write_cub(tmp_path)
    (base / "images" / cub_rel(2, 3)).write_bytes(b"")
    (base / "images" / cub_rel(6, 4)).write_bytes(b"<html>not found</html>")
    problems = cub.check(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("2 image file(s) are damaged")
    assert "(empty)" in problems[0] and "(not a JPEG or PNG)" in problems[0]
    # the first image starts like a JPEG but cannot be decoded: the one decode finds it
    base = write_cub(tmp_path / "b")
    first = base / "images" / cub_rel(1, 1)
    first.write_bytes(first.read_bytes()[:40])
    problems = cub.check(tmp_path / "b")
    assert len(problems) == 1 and problems[0].startswith(f"cannot decode {first}")


def test_cub_split_classes_absent_from_the_files_are_refused(tmp_path):
    write_cub(tmp_path)
    with pytest.raises(DataNotFound, match=r"known class\(es\) \[7\] have no training images"):
        cub.load(tmp_path, Split((0, 7), (2,)), 448)  # the 5-class stand-in has no class 7
    with pytest.raises(DataNotFound, match="no unknown test images"):
        cub.load(tmp_path, Split((0, 1), (104,)), 448)


# ================================================================================================
# FGVC-Aircraft


# Names whose sorted order is not their length or case order: '-' < '/' < uppercase < lowercase.
AIR_VARIANTS = sorted(["737-200", "A340-600", "An-12", "ATR-42", "BAE 146-200", "BAE-125",
                       "F-16A/B", "F/A-18", "Falcon 2000", "Yak-42"])
AIR_IMAGES_PER = {"trainval": 2, "test": 1}


def release_find_classes(classes_file):
    """Verbatim from the MLS release, data/fgvc_aircraft.py:21-38 (MIT)."""
    # read classes file, separating out image IDs and class names
    image_ids = []
    targets = []
    f = open(classes_file, 'r')
    for line in f:
        split_line = line.split(' ')
        image_ids.append(split_line[0])
        targets.append(' '.join(split_line[1:]))
    f.close()

    # index class names
    classes = np.unique(targets)
    class_to_idx = {classes[i]: i for i in range(len(classes))}
    targets = [class_to_idx[c] for c in targets]

    return (image_ids, targets, classes, class_to_idx)


def release_make_dataset(dir, image_ids, targets):
    """Verbatim from the MLS release, data/fgvc_aircraft.py:10-18 (MIT)."""
    assert(len(image_ids) == len(targets))
    images = []
    dir = os.path.expanduser(dir)
    for i in range(len(image_ids)):
        item = (os.path.join(dir, 'data', 'images',
                             '%s.jpg' % image_ids[i]), targets[i])
        images.append(item)
    return images


def write_aircraft(root: Path, variants_order: list[str] | None = None) -> Path:
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("".join(v + "\n" for v in (variants_order or AIR_VARIANTS)))
    image_id = 1000000
    for part, per in AIR_IMAGES_PER.items():
        lines = []
        # list order is not class order: walk the variants backwards, then interleave
        for v in reversed(AIR_VARIANTS):
            for _ in range(per):
                lines.append(f"{image_id} {v}\n")
                save_jpeg(data / "images" / f"{image_id}.jpg")
                image_id += 1
        (data / f"images_variant_{part}.txt").write_text("".join(lines[1::2] + lines[0::2]))
    return data


def test_aircraft_class_ids_equal_the_release(tmp_path):
    data_dir = write_aircraft(tmp_path)
    files = aircraft.scan(tmp_path)
    for part, paths, ids in (("trainval", files.train_paths, files.train_y), ("test", files.test_paths, files.test_y)):
        image_ids, targets, classes, _ = release_find_classes(str(data_dir / f"images_variant_{part}.txt"))
        release = release_make_dataset(str(data_dir.parent), image_ids, targets)
        assert list(paths) == [p for p, _ in release]
        assert list(ids) == [t for _, t in release]
        assert [c.rstrip("\n") for c in classes] == AIR_VARIANTS
    # by hand: ' ' (0x20) < '-' (0x2d) < '/' (0x2f) < digits < 'A'..'Z' < 'a'..'z'
    assert AIR_VARIANTS[:7] == ["737-200", "A340-600", "ATR-42", "An-12", "BAE 146-200", "BAE-125", "F-16A/B"]
    assert aircraft.check(tmp_path) == []


def test_aircraft_ids_follow_the_release_not_variants_txt_order(tmp_path):
    """The release indexes sorted names; a variants.txt in another order (the official one is sorted)
    changes nothing, as long as it names the same variants."""
    write_aircraft(tmp_path, variants_order=list(reversed(AIR_VARIANTS)))
    files = aircraft.scan(tmp_path)
    assert sorted(set(files.train_y)) == list(range(len(AIR_VARIANTS)))
    by_id = {}
    for line in (tmp_path / "fgvc-aircraft-2013b/data/images_variant_trainval.txt").read_text().splitlines():
        image_id, name = line.split(" ", 1)
        by_id[image_id] = AIR_VARIANTS.index(name)
    assert list(files.train_y) == [by_id[Path(p).stem] for p in files.train_paths]


def test_aircraft_load_parts(tmp_path):
    write_aircraft(tmp_path)
    known = (AIR_VARIANTS.index("F/A-18"), AIR_VARIANTS.index("737-200"), AIR_VARIANTS.index("BAE 146-200"))
    unknown = (AIR_VARIANTS.index("BAE-125"), AIR_VARIANTS.index("Yak-42"))
    data = aircraft.load(tmp_path, Split(known, unknown), 448)
    assert len(data.train) == 3 * AIR_IMAGES_PER["trainval"] and len(data.known) == 3 and len(data.unknown) == 2
    files = aircraft.scan(tmp_path)
    truth = dict(zip(files.train_paths + files.test_paths, files.train_y + files.test_y))
    assert all(known[label] == truth[p] for p, label in zip(data.train.paths, data.train_y.tolist()))
    assert all(known[label] == truth[p] for p, label in zip(data.known.paths, data.known_y.tolist()))
    assert set(data.train.paths) <= set(files.train_paths) and set(data.known.paths) <= set(files.test_paths)
    assert sorted(data.unknown_ids.tolist()) == sorted(unknown)
    assert [truth[p] for p in data.unknown.paths] == data.unknown_ids.tolist()


# variants.txt of fgvc-aircraft-2013b, in its order (the 100 variant names)
OFFICIAL_VARIANTS = [
    "707-320", "727-200", "737-200", "737-300", "737-400", "737-500", "737-600", "737-700", "737-800",
    "737-900", "747-100", "747-200", "747-300", "747-400", "757-200", "757-300", "767-200", "767-300",
    "767-400", "777-200", "777-300", "A300B4", "A310", "A318", "A319", "A320", "A321", "A330-200",
    "A330-300", "A340-200", "A340-300", "A340-500", "A340-600", "A380", "ATR-42", "ATR-72", "An-12",
    "BAE 146-200", "BAE 146-300", "BAE-125", "Beechcraft 1900", "Boeing 717", "C-130", "C-47", "CRJ-200",
    "CRJ-700", "CRJ-900", "Cessna 172", "Cessna 208", "Cessna 525", "Cessna 560", "Challenger 600", "DC-10",
    "DC-3", "DC-6", "DC-8", "DC-9-30", "DH-82", "DHC-1", "DHC-6", "DHC-8-100", "DHC-8-300", "DR-400",
    "Dornier 328", "E-170", "E-190", "E-195", "EMB-120", "ERJ 135", "ERJ 145", "Embraer Legacy 600",
    "Eurofighter Typhoon", "F-16A/B", "F/A-18", "Falcon 2000", "Falcon 900", "Fokker 100", "Fokker 50",
    "Fokker 70", "Global Express", "Gulfstream IV", "Gulfstream V", "Hawk T1", "Il-76", "L-1011", "MD-11",
    "MD-80", "MD-87", "MD-90", "Metroliner", "Model B200", "PA-28", "SR-20", "Saab 2000", "Saab 340",
    "Spitfire", "Tornado", "Tu-134", "Tu-154", "Yak-42",
]
# closed_set_open_set_pairs of the release's data/open_set_splits/aircraft_osr_splits.pkl (MIT):
# known classes and the Hard / Medium unknowns of the same family (name prefix); others by name below
RELEASE_AIRCRAFT_PAIRS = [
    ([2, 3, 4, 5], [6, 7, 8, 9], "737-"), ([10, 11], [12, 13], "747-"), ([29, 30], [31, 32], "A340-"),
    ([16, 17], [18], "767-"), ([19], [20], "777-"), ([14], [15], "757-"), ([76, 77], [78], "Fokker "),
    ([47, 48], [49, 50], "Cessna "),
]


def test_aircraft_official_names_give_the_release_pickles_ids(tmp_path):
    """On the 100 official names the release's ids (sorted names) are variants.txt's order, and the
    release pickle's family pairs land on one family each."""
    assert len(set(OFFICIAL_VARIANTS)) == 100 and sorted(OFFICIAL_VARIANTS) == OFFICIAL_VARIANTS
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("".join(v + "\n" for v in OFFICIAL_VARIANTS))
    for part, offset in (("trainval", 1000000), ("test", 2000000)):
        (data / f"images_variant_{part}.txt").write_text(
            "".join(f"{offset + k} {v}\n" for k, v in enumerate(reversed(OFFICIAL_VARIANTS))))
    files = aircraft.scan(tmp_path)
    name_of = {int(Path(p).stem) - 1000000: c for p, c in zip(files.train_paths, files.train_y)}
    assert [name_of[k] for k in range(100)] == list(range(99, -1, -1))  # reversed list -> ids 99..0
    for known, unknown, prefix in RELEASE_AIRCRAFT_PAIRS:
        names = [OFFICIAL_VARIANTS[c] for c in known + unknown]
        assert all(n.startswith(prefix) for n in names), names
    assert [OFFICIAL_VARIANTS[c] for c in (37, 38, 39, 82)] == ["BAE 146-200", "BAE 146-300", "BAE-125", "Hawk T1"]
    assert [OFFICIAL_VARIANTS[c] for c in (43, 53, 54, 55)] == ["C-47", "DC-3", "DC-6", "DC-8"]  # Douglas
    assert [OFFICIAL_VARIANTS[c] for c in (44, 45, 46, 51)] == ["CRJ-200", "CRJ-700", "CRJ-900", "Challenger 600"]
    assert [OFFICIAL_VARIANTS[c] for c in (52, 56, 73, 85, 88)] == ["DC-10", "DC-9-30", "F/A-18", "MD-11", "MD-90"]


@pytest.mark.parametrize("name", ["variants.txt", "images_variant_trainval.txt", "images_variant_test.txt"])
def test_aircraft_missing_list_is_one_line(tmp_path, name):
    data_dir = write_aircraft(tmp_path)
    (data_dir / name).unlink()
    with pytest.raises(DataNotFound) as err:
        aircraft.load(tmp_path, Split((0, 1), (2,)), 448)
    message = one_line(err)
    assert message.startswith(f"missing {name} in {data_dir}")
    assert "osrbench data download aircraft" in message and "fgvc-aircraft-2013b.tar.gz" in message
    assert aircraft.check(tmp_path) == [message]


def test_aircraft_missing_folder_image_and_mismatched_lists(tmp_path):
    with pytest.raises(DataNotFound, match=r"^missing folder fgvc-aircraft-2013b/data/ in "):
        aircraft.scan(tmp_path)
    data_dir = write_aircraft(tmp_path)
    first_test = (data_dir / "images_variant_test.txt").read_text().split()[0]
    (data_dir / "images" / f"{first_test}.jpg").unlink()
    with pytest.raises(DataNotFound) as err:
        aircraft.load(tmp_path, Split((0, 1), (2,)), 448)
    assert f"{first_test}.jpg" in one_line(err) and "1 image file(s) listed in" in str(err.value)
    # a test list that lacks a variant would shift the release's indices: refused
    lines = (data_dir / "images_variant_test.txt").read_text().splitlines(keepends=True)
    (data_dir / "images_variant_test.txt").write_text("".join(l for l in lines if not l.endswith(" Yak-42\n")))
    with pytest.raises(DataNotFound, match="name different variants: Yak-42") as err:
        aircraft.scan(tmp_path)
    one_line(err)
    (data_dir / "images_variant_test.txt").write_text("1000000\n")
    with pytest.raises(DataNotFound, match="line 1 is malformed"):
        aircraft.scan(tmp_path)


# ================================================================================================
# Stanford Cars

CARS_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012",
                "Acura TL Type-S 2008", "Acura TSX Sedan 2012", "Acura Integra Type R 2001"]
# (fname, class 1..6) in annotation order
CARS_TRAIN = [("00001.jpg", 3), ("00002.jpg", 1), ("00003.jpg", 6), ("00004.jpg", 3), ("00005.jpg", 2),
              ("00006.jpg", 5), ("00007.jpg", 4), ("00008.jpg", 6), ("00009.jpg", 1)]
CARS_TEST = [("00001.jpg", 6), ("00002.jpg", 2), ("00003.jpg", 3), ("00004.jpg", 1), ("00005.jpg", 4),
             ("00006.jpg", 5), ("00007.jpg", 2)]
# the devkit's field order (class and fname are the release's img_[4] and img_[5])
CARS_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


def annotations_mat(path: Path, rows, with_class: bool = True) -> None:
    """An annotations .mat in the devkit's layout: a 1xN struct array of uint8/uint16 scalars and
    a char fname (what scipy.io.loadmat returns for the official files)."""
    fields = [f for f in CARS_FIELDS if with_class or f != "class"]
    ann = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for n, (fname, cls) in enumerate(rows):
        values = {"bbox_x1": np.array([[5 + n]], np.uint16), "bbox_y1": np.array([[7]], np.uint8),
                  "bbox_x2": np.array([[300]], np.uint16), "bbox_y2": np.array([[200]], np.uint8),
                  "class": np.array([[cls]], np.uint8), "fname": np.array([fname])}
        ann[0, n] = tuple(values[f] for f in fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"annotations": ann})


def write_cars(root: Path, test_annos_in_devkit: bool = True) -> Path:
    base = root / "stanford_cars"
    for folder, rows in (("cars_train", CARS_TRAIN), ("cars_test", CARS_TEST)):
        for fname, _ in rows:
            save_jpeg(base / folder / fname)
    devkit = base / "devkit"
    devkit.mkdir(parents=True)
    scipy.io.savemat(str(devkit / "cars_meta.mat"), {"class_names": np.array([CARS_CLASSES], dtype=object)})
    annotations_mat(devkit / "cars_train_annos.mat", CARS_TRAIN)
    annotations_mat(devkit / "cars_test_annos.mat", [(f, 0) for f, _ in CARS_TEST], with_class=False)
    annotations_mat((devkit if test_annos_in_devkit else base) / "cars_test_annos_withlabels.mat", CARS_TEST)
    return base


def release_cars(data_dir: str, metas: str) -> tuple[list[str], list[int]]:
    """Replica of the release's CarsDataset parsing, data/stanford_cars.py:30-40 (MIT): paths and the
    file's 1-based targets."""
    data, target = [], []
    labels_meta = scipy.io.loadmat(metas)
    for idx, img_ in enumerate(labels_meta['annotations'][0]):
        data.append(data_dir + img_[5][0])
        target.append(img_[4][0][0])
    return data, target


@pytest.mark.parametrize("in_devkit", [True, False], ids=["release-layout", "torchvision-layout"])
def test_cars_ids_and_parts_equal_the_release(tmp_path, in_devkit):
    base = write_cars(tmp_path, test_annos_in_devkit=in_devkit)
    files = scars.scan(tmp_path)
    assert files.train_y == tuple(c - 1 for _, c in CARS_TRAIN)  # 0-based, cars_meta.mat order
    assert files.test_y == tuple(c - 1 for _, c in CARS_TEST)
    split = Split(known=(5, 2, 0), unknown=(3, 1))
    data = scars.load(tmp_path, split, 448)
    got = parts(data)
    test_annos = base / ("devkit" if in_devkit else "") / "cars_test_annos_withlabels.mat"
    for folder, metas, part in (("cars_train", base / "devkit" / "cars_train_annos.mat", "train"),
                                ("cars_test", test_annos, "known")):
        paths, targets = release_cars(f"{base / folder}/", str(metas))
        assert (got[part], got[f"{part}_y"]) == release_selection(paths, targets, list(split.known))
    paths, targets = release_cars(f"{base / 'cars_test'}/", str(test_annos))
    want_unknown = [(p, t - 1) for p, t in zip(paths, targets) if t - 1 in split.unknown]
    assert list(zip(got["unknown"], got["unknown_ids"])) == want_unknown
    # hand-checked: train files of classes 6, 3, 1 (ids 5, 2, 0)
    assert [Path(p).name for p in got["train"]] == ["00001.jpg", "00002.jpg", "00003.jpg", "00004.jpg",
                                                   "00008.jpg", "00009.jpg"]
    assert got["train_y"] == [1, 2, 0, 1, 0, 2]
    assert got["unknown_ids"] == [1, 3, 1]
    assert scars.check(tmp_path) == []


def test_cars_labels_equal_torchvision_stanford_cars(tmp_path):
    """torchvision's StanfordCars (its layout) gives the same paths and labels as this reader."""
    from torchvision.datasets import StanfordCars

    write_cars(tmp_path, test_annos_in_devkit=False)
    files = scars.scan(tmp_path)
    for split, paths, ids in (("train", files.train_paths, files.train_y), ("test", files.test_paths, files.test_y)):
        tv = StanfordCars(str(tmp_path), split=split)
        assert [(p, int(c)) for p, c in tv._samples] == list(zip(paths, ids))
        assert tv.classes == CARS_CLASSES


@pytest.mark.parametrize("gone, named", [
    ("devkit/cars_meta.mat", "missing cars_meta.mat in {base}/devkit"),
    ("devkit/cars_train_annos.mat", "missing cars_train_annos.mat in {base}/devkit"),
    ("devkit/cars_test_annos_withlabels.mat", "missing cars_test_annos_withlabels.mat in {base}/devkit (or in {base})"),
    ("cars_train", "missing folder cars_train/ in {base}"),
    ("cars_test", "missing folder cars_test/ in {base}"),
])
def test_cars_missing_piece_is_one_line(tmp_path, gone, named):
    base = write_cars(tmp_path)
    target = base / gone
    if target.is_dir():
        for f in target.iterdir():
            f.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(DataNotFound) as err:
        scars.load(tmp_path, Split((0, 1), (2,)), 448)
    message = one_line(err)
    assert message.startswith(named.format(base=base)), message
    assert "ai.stanford.edu" in message and "car_devkit.tgz" in message
    assert scars.check(tmp_path) == [message]
    with pytest.raises(DataNotFound, match="cannot be downloaded automatically"):
        scars.download(tmp_path)


def test_cars_missing_tree_image_and_damaged_mats(tmp_path):
    with pytest.raises(DataNotFound, match=r"^missing folder stanford_cars/ in "):
        scars.scan(tmp_path)
    assert scars.check(tmp_path)[0].startswith("missing folder stanford_cars/")
    base = write_cars(tmp_path)
    scars.download(tmp_path)  # a ready tree: nothing to do
    (base / "cars_test" / "00005.jpg").unlink()
    with pytest.raises(DataNotFound) as err:
        scars.load(tmp_path, Split((0, 1), (2,)), 448)
    assert "cars_test/00005.jpg" in one_line(err)
    # the devkit's label-less test file in the withlabels file's place
    annotations_mat(base / "devkit" / "cars_test_annos_withlabels.mat", [(f, 0) for f, _ in CARS_TEST],
                    with_class=False)
    with pytest.raises(DataNotFound, match="not the devkit's cars_test_annos.mat") as err:
        scars.scan(tmp_path)
    one_line(err)
    # a class outside cars_meta.mat's 6
    annotations_mat(base / "devkit" / "cars_test_annos_withlabels.mat", CARS_TEST + [("00001.jpg", 7)])
    with pytest.raises(DataNotFound, match="has class 7, expected 1..6"):
        scars.scan(tmp_path)
    # a truncated .mat
    meta = base / "devkit" / "cars_train_annos.mat"
    meta.write_bytes(meta.read_bytes()[:200])
    with pytest.raises(DataNotFound, match="cars_train_annos.mat is truncated") as err:
        scars.scan(tmp_path)
    one_line(err)


# ================================================================================================
# registry and CLI


def test_registry_has_the_three_datasets(capsys, tmp_path):
    reg = registry.load()
    want = {"cub": ("cub", 200), "aircraft": ("aircraft", 100), "scars": ("scars", 196)}
    specs = {s.name: s for s in registry.builtin_datasets(reg)}
    for name, (table, classes) in want.items():
        entry = reg.datasets[name]
        shape = (entry["table"], entry["num_classes"], entry["image_size"], entry["augment"])
        assert shape == (table, classes, 448, "crop_flip")
        assert specs[name].check(tmp_path)  # wired to the module's check: an empty root is not ready
    assert "non-commercial research purposes only" in reg.datasets["aircraft"]["licence"]
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{name} " in out for name in want)
    assert cli.main(["data", "check", "aircraft", "--data-root", str(tmp_path)]) == 2
    assert "fgvc-aircraft-2013b" in capsys.readouterr().out
