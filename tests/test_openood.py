"""``--protocol openood``: OpenOOD v1.5's OSR benchmarks read from its image lists (osrbench/data/openood.py).

Every test writes a stand-in of OpenOOD's download in its exact layout into tmp_path
(``ROOT/openood/benchmark_imglist/osr_<b>/{train,test}/...seedN.txt`` and the images under
``ROOT/openood/images_classic/<set>/<part>/<class>/``): PNGs for osr_cifar6, grey JPEGs for
osr_mnist6. Pixel values encode each image's class and index, so the tests can tell exactly which
image landed in which part with which label.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from osrbench import cli, plugins, protocols, records
from osrbench.data import openood
from osrbench.datasets import BadData, DataNotFound

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: Seed 1 of the stand-in osr_cifar6: label i is KNOWN[i] (OpenOOD relabels the known classes 0..5).
KNOWN = ("cat", "airplane", "ship", "truck", "bird", "frog")
UNKNOWN = ("automobile", "deer", "dog", "horse")
DIGITS = tuple(str(d) for d in range(10))
NUMBERED = tuple(str(d) for d in range(100))  # class folders named by number


# ------------------------------------------------------------------------ OpenOOD's line parsing


def openood_label(line: str) -> tuple[str, int]:
    """A replica of OpenOOD's ``ImglistDataset.getitem`` line parsing, copied from
    Jingkang50/OpenOOD (MIT) openood/datasets/imglist_dataset.py:59-63 and :86-93 (the image I/O
    between them left out)."""
    sample = dict()
    line = line.strip('\n')
    tokens = line.split(' ', 1)
    image_name, extra_str = tokens[0], tokens[1]
    if '.' != '' and image_name.startswith('/'):  # data_dir is never '' in the OSR configs
        raise RuntimeError('image_name starts with "/"')
    extras = ast.literal_eval(extra_str)
    try:
        for key, value in extras.items():
            sample[key] = value
        # if you use dic the code below will need ['label']
        sample['label'] = 0
    except AttributeError:
        sample['label'] = int(extra_str)
    return image_name, sample['label']


@pytest.mark.parametrize("line", [
    "cifar10/test/cat/0001.png 3\n",
    "cifar10/test/dog/0002.png -1\n",
    "tin/train/n01443537/images/n01443537_0.JPEG 17",  # a last line without a newline
    "mnist/test/7/0042.jpg  5\n",  # two spaces: the label text starts with one
    "cifar100/test/apple/0001.png {'label': 4, 'sc_label': 2}\n",  # extras: OpenOOD's label is 0
])
def test_a_line_parses_as_openood_parses_it(line):
    assert openood.parse_line(line) == openood_label(line)


@pytest.mark.parametrize("line", ["cifar10/test/cat/0001.png\n", "/abs/cifar10/x/y.png 1\n",
                                  "cifar10/test/cat/0001.png three\n", "cifar10/test/cat/0001.png 2.5\n",
                                  "a/b/c d/e.png 2\n"])  # a space in a path: OpenOOD ends the name there
def test_a_line_openood_cannot_read_is_refused(line):
    with pytest.raises(Exception):
        openood_label(line)
    with pytest.raises(ValueError):
        openood.parse_line(line)


# ---------------------------------------------------------------------------- the stand-in files


def pixel(cls: int, i: int) -> int:
    return (10 * cls + i + 1) % 251  # distinct for the 10-class sets


def write_image(path: Path, value: int, size: int, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        a = np.zeros((size, size, 3), np.uint8)
        a[..., 0], a[..., 1], a[..., 2] = value, 255 - value, np.arange(size, dtype=np.uint8)[None, :]
        Image.fromarray(a, "RGB").save(path)
    else:  # a grey JPEG, as MNIST images are
        a = np.full((size, size), value, np.uint8)
        a[: size // 2] = 255 - value
        Image.fromarray(a, "L").save(path, quality=90)


def write_benchmark(root: Path, bench: str = "osr_cifar6", seed: int = 1, train_per_class: int = 2,
                    known: tuple[str, ...] = KNOWN, unknown: tuple[str, ...] = UNKNOWN) -> dict[str, list[str]]:
    """OpenOOD's files for one seed of ``bench`` under ``root/openood``; returns each list's lines."""
    b = next(b for b in openood.BENCHMARKS.values() if b.name == bench)
    names = {"cifar10": CIFAR10, "mnist": DIGITS}.get(b.images, NUMBERED)
    mode, ext = ("L", "jpg") if b.images == "mnist" else ("RGB", "png")
    images = root / "openood" / "images_classic"
    lines: dict[str, list[str]] = {"train": [], "known": [], "unknown": []}
    for label, cls in enumerate(known):
        for i in range(train_per_class):
            name = f"{b.images}/train/{cls}/{i:04d}.{ext}"
            write_image(images / name, pixel(names.index(cls), i), b.size, mode)
            lines["train"].append(f"{name} {label}\n")
        name = f"{b.images}/test/{cls}/0000.{ext}"
        write_image(images / name, pixel(names.index(cls), 5), b.size, mode)
        lines["known"].append(f"{name} {label}\n")
    for cls in unknown:
        for i in range(2):
            name = f"{b.images}/test/{cls}/{i:04d}.{ext}"
            write_image(images / name, pixel(names.index(cls), 5 + i), b.size, mode)
            lines["unknown"].append(f"{name} -1\n")
    for part, rel in b.lists(seed).items():
        path = root / "openood" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines[part]))
    return lines


def split_of(dataset: str, root: Path, index: int = 0) -> protocols.OpenSetSplit:
    return protocols.get_split(plugins.get().dataset(dataset), "openood", index, root=root)


# --------------------------------------------------------------------------- splits and images


def test_cifar6_split_ids_labels_and_images(tmp_path):
    lines = write_benchmark(tmp_path)
    split = split_of("cifar10", tmp_path)
    # class ids: CIFAR-10's own (its class names are in alphabetical order), known in label order
    assert split.known == (3, 0, 8, 9, 2, 6)
    assert split.unknown == (1, 4, 5, 7)
    assert split.protocol == "openood" and split.index == 0 and split.num_known == 6
    files = [rel for rel, _ in split.sources]
    assert files == ["benchmark_imglist/osr_cifar6/train/train_cifar10_6_seed1.txt",
                     "benchmark_imglist/osr_cifar6/test/test_cifar10_6_id_seed1.txt",
                     "benchmark_imglist/osr_cifar6/test/test_cifar10_4_ood_seed1.txt"]

    data = openood.load(tmp_path, split, 32)
    replica = {part: [openood_label(line) for line in part_lines] for part, part_lines in lines.items()}
    assert data.train_y.tolist() == [label for _, label in replica["train"]]
    assert data.known_y.tolist() == [label for _, label in replica["known"]]
    assert {label for _, label in replica["unknown"]} == {-1}
    assert data.train_x.shape == (12, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.train_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]  # the list's labels, in its order
    assert data.train_x[:, 0, 0, 0].tolist() == [pixel(CIFAR10.index(c), i) for c in KNOWN for i in range(2)]
    assert data.known_y.tolist() == list(range(6))
    assert data.known_x[:, 0, 0, 0].tolist() == [pixel(CIFAR10.index(c), 5) for c in KNOWN]
    assert data.unknown_ids.tolist() == [1, 1, 4, 4, 5, 5, 7, 7]  # from the paths (the list says -1)
    assert data.unknown_x[:, 1, 0, 0].tolist() == [255 - pixel(CIFAR10.index(c), 5 + i)
                                                   for c in UNKNOWN for i in range(2)]
    assert torch.equal(data.train_x[0, 2, 0], torch.arange(32, dtype=torch.uint8))  # PNG pixels exactly
    assert openood.load(tmp_path, split, 16).train_x.shape == (12, 3, 16, 16)  # the run's image size


def test_mnist6_grey_jpegs_decode_as_openood_decodes_them(tmp_path):
    from torchvision import transforms as tvs_trans

    known, unknown = ("7", "1", "0", "9", "4", "6"), ("2", "3", "5", "8")
    write_benchmark(tmp_path, "osr_mnist6", known=known, unknown=unknown)
    odd = tmp_path / "openood" / "images_classic" / "mnist" / "train" / "6" / "0001.jpg"
    Image.fromarray(np.arange(30 * 37, dtype=np.uint8).reshape(30, 37) % 251, "L").save(odd)  # not 28 px
    split = split_of("mnist", tmp_path)
    assert split.known == (7, 1, 0, 9, 4, 6) and split.unknown == (2, 3, 5, 8)
    data = openood.load(tmp_path, split, 28)
    # OpenOOD's test path: PIL open, convert('RGB'), Resize(28) bilinear, CenterCrop(28) (osr_mnist6 configs,
    # openood/preprocessors/test_preprocessor.py), before ToTensor / Normalize
    replica = tvs_trans.Compose([tvs_trans.Resize(28, interpolation=tvs_trans.InterpolationMode.BILINEAR),
                                 tvs_trans.CenterCrop(28)])
    base = tmp_path / "openood" / "images_classic"
    for row, name in [(0, "mnist/train/7/0000.jpg"), (11, "mnist/train/6/0001.jpg")]:
        with Image.open(base / name) as im:
            want = np.asarray(replica(im.convert("RGB"))).transpose(2, 0, 1)
        assert np.array_equal(data.train_x[row].numpy(), want)
    assert data.image_shape == (3, 28, 28)
    assert torch.equal(data.train_x[:, 0], data.train_x[:, 2])  # grey replicated to RGB, as convert('RGB') does
    assert data.unknown_ids.tolist() == [2, 2, 3, 3, 5, 5, 8, 8]


def test_cifar50_with_numbered_class_folders(tmp_path):
    order = [(37 * i + 11) % 100 for i in range(100)]  # a permutation of 0..99
    known, unknown = order[:50], order[50:]
    write_benchmark(tmp_path, "osr_cifar50", train_per_class=1, known=tuple(map(str, known)),
                    unknown=tuple(map(str, unknown)))
    split = split_of("cifar50", tmp_path)
    assert split.known == tuple(known)  # numbers sort as numbers: folder "10" is class 10
    assert split.unknown == tuple(sorted(unknown))
    assert [rel.rsplit("/", 1)[1] for rel, _ in split.sources] == [
        "train_cifar100_50_seed1.txt", "test_cifar100_50_id_seed1.txt", "test_cifar100_50_ood_seed1.txt"]


def test_without_a_data_root_the_lists_are_read_under_the_default_one(tmp_path, monkeypatch):
    write_benchmark(tmp_path)
    monkeypatch.setenv("OSRBENCH_DATA", str(tmp_path))
    default = protocols.get_split(plugins.get().dataset("cifar10"), "openood", 0)
    assert default == split_of("cifar10", tmp_path) and default.hash == split_of("cifar10", tmp_path).hash


def test_split_i_is_openood_seed_i_plus_1(tmp_path):
    write_benchmark(tmp_path, seed=3, known=("dog", "cat", "ship", "truck", "bird", "frog"),
                    unknown=("automobile", "deer", "airplane", "horse"))
    assert split_of("cifar10", tmp_path, 2).known == (5, 3, 8, 9, 2, 6)
    with pytest.raises(protocols.SplitError, match="train_cifar10_6_seed1.txt"):
        split_of("cifar10", tmp_path, 0)
    with pytest.raises(protocols.SplitError, match="split 5 out of range .*valid: 0-4"):
        split_of("cifar10", tmp_path, 5)
    assert protocols.num_splits(plugins.get().dataset("tiny_imagenet"), "openood") == 5


def test_the_split_hash_covers_the_lists(tmp_path):
    lines = write_benchmark(tmp_path / "a")
    write_benchmark(tmp_path / "b")
    a, b = split_of("cifar10", tmp_path / "a"), split_of("cifar10", tmp_path / "b")
    assert a.hash == b.hash  # the same lists anywhere: the same split
    table = protocols.get_split(plugins.get().dataset("cifar10"), "auroc", 0)
    assert table.hash == protocols.OpenSetSplit(*[getattr(table, f) for f in
                                                  ("dataset", "protocol", "index", "known", "unknown")]).hash
    # another version of the lists with the same classes (one image fewer, lines reordered): another split
    ood = tmp_path / "b" / "openood" / a.sources[2][0]
    ood.write_text("".join(reversed(lines["unknown"])))
    changed = split_of("cifar10", tmp_path / "b")
    assert changed.class_set_key == a.class_set_key and changed.hash != a.hash
    train = tmp_path / "b" / "openood" / a.sources[0][0]
    train.write_text("".join(lines["train"][1:]))
    assert split_of("cifar10", tmp_path / "b").hash not in (a.hash, changed.hash)
    # images read under another root than the split's lists are refused
    with pytest.raises(Exception, match="not the ones this split was read from"):
        openood.load(tmp_path / "b", a, 32)


# ----------------------------------------------------------------------------- bad or missing files


def test_missing_lists_name_the_file_and_openood_download(tmp_path, capsys):
    assert cli.main(["splits", "cifar10", "--protocol", "openood", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "missing OpenOOD image list benchmark_imglist/osr_cifar6/train/train_cifar10_6_seed1.txt" in err[0]
    assert "scripts/download/download.py" in err[0] and "--datasets cifar10" in err[0]
    assert openood.LISTS_URL in err[0] and str(tmp_path / "openood") in err[0]
    problems = openood.check_cifar50(tmp_path)
    assert len(problems) == 1 and "osr_cifar50" in problems[0] and "--datasets cifar100" in problems[0]


def test_missing_images_name_the_folder_or_the_file(tmp_path):
    write_benchmark(tmp_path)
    split = split_of("cifar10", tmp_path)
    (tmp_path / "openood" / "images_classic" / "cifar10" / "test" / "dog" / "0001.png").unlink()
    with pytest.raises(DataNotFound, match=r"missing image cifar10/test/dog/0001.png in .*download.py"):
        openood.load(tmp_path, split, 32)
    import shutil

    shutil.rmtree(tmp_path / "openood" / "images_classic" / "cifar10")
    with pytest.raises(DataNotFound, match=r"missing OpenOOD images cifar10/ in .*--datasets cifar10"):
        openood.load(tmp_path, split, 32)


def test_malformed_lists_are_one_line_naming_the_file_and_line(tmp_path):
    lines = write_benchmark(tmp_path)
    train = tmp_path / "openood" / "benchmark_imglist" / "osr_cifar6" / "train" / "train_cifar10_6_seed1.txt"
    train.write_text("".join(lines["train"][:3]) + "cifar10/train/cat/0009.png\n")
    with pytest.raises(protocols.SplitError, match=r"train_cifar10_6_seed1.txt, line 4: no label"):
        split_of("cifar10", tmp_path)
    train.write_text("".join(lines["train"]) + "cifar10/train/cat/0000.png 6\n")
    with pytest.raises(protocols.SplitError, match="holds label 6; OpenOOD trains labels 0..5"):
        split_of("cifar10", tmp_path)
    train.write_text("".join(lines["train"]) + "cifar10/train/dog/0000.png 0\n")
    with pytest.raises(protocols.SplitError, match=r"label 0 is given to images of class folders \['cat', 'dog'\]"):
        split_of("cifar10", tmp_path)
    train.write_text("".join(lines["train"]) + "flat/0000.png 0\n")
    with pytest.raises(protocols.SplitError, match="is not IMAGESET/PART/CLASS/FILE"):
        split_of("cifar10", tmp_path)
    train.write_text("".join(lines["train"]))
    ood = tmp_path / "openood" / "benchmark_imglist" / "osr_cifar6" / "test" / "test_cifar10_4_ood_seed1.txt"
    ood.write_text("".join(lines["unknown"]) + "cifar10/test/cat/0000.png -1\n")
    with pytest.raises(protocols.SplitError, match=r"the ood list holds images of known class\(es\) \['cat'\]"):
        split_of("cifar10", tmp_path)
    assert issubclass(protocols.SplitError, Exception) and issubclass(BadData, DataNotFound)


def test_datasets_without_an_openood_benchmark(tmp_path, capsys):
    with pytest.raises(protocols.SplitError, match="osr_cifar50 is CIFAR-100 .*not CIFAR\\+50: use --dataset cifar50"):
        split_of("cifar+50", tmp_path)
    with pytest.raises(protocols.SplitError, match="no benchmark for dataset 'svhn'"):
        split_of("svhn", tmp_path)
    with pytest.raises(protocols.SplitError, match="^cifar50 has no splits under protocol 'auroc'; use --protocol openood$"):
        protocols.get_split(plugins.get().dataset("cifar50"), "auroc", 0)


# ---------------------------------------------------------------------------- through the CLI


def test_splits_command_and_a_softmax_run_write_a_record(tmp_path, capsys):
    write_benchmark(tmp_path / "data")
    split = split_of("cifar10", tmp_path / "data")
    assert cli.main(["splits", "cifar10", "--protocol", "openood", "--data-root", str(tmp_path / "data")]) == 2
    assert "train_cifar10_6_seed2.txt" in capsys.readouterr().err  # splits lists all five seeds
    for seed in range(2, 6):
        write_benchmark(tmp_path / "data", seed=seed)
    assert cli.main(["splits", "cifar10", "--protocol", "openood", "--data-root", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^0\s+3 0 8 9 2 6\s+1 4 5 7\s+{split.hash}", out, re.M), out

    argv = ["run", "--method", "softmax", "--dataset", "cifar10", "--protocol", "openood", "--epochs", "1",
            "--device", "cpu", "--quiet", "--out", str(tmp_path / "runs"), "--data-root", str(tmp_path / "data"),
            "--set", "batch_size=4"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    path = next((tmp_path / "runs").rglob(records.RESULT))
    rec = json.loads(path.read_text())
    assert (rec["dataset"], rec["protocol"], rec["split"], rec["split_hash"]) == ("cifar10", "openood", 0, split.hash)
    assert 0.0 <= rec["metrics"]["auroc"] <= 1.0
    # another version of the lists: the stored record belongs to another split and is not reused
    ood = tmp_path / "data" / "openood" / split.sources[2][0]
    ood.write_text("".join(reversed(ood.read_text().splitlines(keepends=True))))
    changed = split_of("cifar10", tmp_path / "data")
    assert changed.hash != split.hash
    assert cli.main(argv) == 0
    assert "belongs to another run (split_hash" in capsys.readouterr().err
    assert json.loads(path.read_text())["split_hash"] == changed.hash


def test_the_registry_names_the_reader_and_list_shows_the_protocol(tmp_path, capsys):
    import yaml

    from osrbench import registry

    assert registry.load().protocols["openood"]["reader"] == "osrbench.data.openood"
    assert protocols.reader_of("openood") is openood and protocols.reader_of("auroc") is None
    doc = yaml.safe_load(registry.REGISTRY_PATH.read_text())
    doc["protocols"]["openood"]["reader"] = 3
    (tmp_path / "splits.yaml").write_text(registry.REGISTRY_PATH.with_name("splits.yaml").read_text())
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(registry.RegistryError, match=r"protocols\.openood\.reader: expected str"):
        registry.load.__wrapped__(tmp_path / "registry.yaml")
    del doc["protocols"]["openood"]["reader"]  # without a reader it needs a split table
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(registry.RegistryError, match=r"protocols\.openood: no split table"):
        registry.load.__wrapped__(tmp_path / "registry.yaml")
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^openood\s+OpenOOD v1\.5 OSR benchmarks", out, re.M)
    assert re.search(r"^cifar50\s+32\s+crop_flip\s+CIFAR-100, 50 known / 50 unknown", out, re.M)
