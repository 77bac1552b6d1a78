"""Hostile inputs (issue 15, items 4, 7 and 8): each ends with exit code 2 and one line
``osrbench: error: ...`` (``data check``: exit 2 and the problem in its table), never a traceback,
and nothing the input asks for is allocated before its bounds are checked.

Every case goes through ``osrbench.cli.main`` in this process. :data:`CASES` is the table; one
test per case, and :func:`test_the_whole_table_ends_in_no_traceback` runs it all and counts.
"""

from __future__ import annotations

import errno
import gzip
import importlib
import json
import os
import pickle
import re
import struct
import sys
import textwrap
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from osrbench import cli, plugins

PREFIX = "osrbench: error: "
DIGITS = ("--dataset", "digits", "--epochs", "1", "--device", "cpu", "--quiet", "--out", "{tmp}/runs")
RUN = ("run", "--method", "softmax", *DIGITS)
CMP = ("compare", "softmax", "--splits", "0", *DIGITS)
SWEEP = ("sweep", "--methods", "softmax", "--datasets", "digits", "--splits", "0", "--out", "{tmp}/runs",
         "--epochs", "1", "--device", "cpu", "--quiet")
#: The classic "billion laughs", 9 levels deep, as a list (so it passes the type check of milestones):
#: 9**9 elements once expanded; a few hundred characters of text.
ALIAS_BOMB = "[&a0 [1,1,1,1,1,1,1,1,1], " + ", ".join(
    f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)) + "]"


@dataclass(frozen=True)
class Hostile:
    id: str
    argv: tuple[str, ...]  # "{tmp}" is this case's own folder
    expect: str  # a regular expression the error line (data check: the output) must contain
    setup: Callable[[Path, pytest.MonkeyPatch], None] | None = None
    stream: str = "err"  # "err": one error line on stderr; "out": data check's table on stdout
    seconds: float = 15.0  # it must fail within this (an input that allocates first takes minutes)


# ------------------------------------------------------------------------------------- set-ups


def _file(name: str, content: bytes = b"x") -> Callable[[Path, pytest.MonkeyPatch], None]:
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        (tmp / name).write_bytes(content)
    return setup


def _fifo(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    os.mkfifo(tmp / "pipe")


def _disk_full(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    mp.setattr(os, "fsync", fsync)


def _no_matplotlib(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        mp.delitem(sys.modules, name)
    mp.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError


def _grid(text: str | bytes) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        data = text.encode() if isinstance(text, str) else text
        (tmp / "grid.yaml").write_bytes(data)
    return setup


def _bundle(doc: object | str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        (tmp / "bundle.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return setup


_GOOD_METHOD = {"config_hash": "abc", "metrics": {"auroc": {"mean": 0.5, "std": 0.0, "per_split": {"0": 0.5}}},
                "split_hashes": {"0": "h"}, "versions": {}, "plugin": {"distribution": "d", "version": "1"}}


def _export(**changes: object) -> dict:
    doc = {"osrbench_export": 1, "dataset": "digits", "protocol": "auroc", "splits": [0], "seeds": [0],
           "methods": {"softmax": dict(_GOOD_METHOD)}, "created": "now", "paired": []}
    for key, value in changes.items():
        if key.startswith("m_"):
            doc["methods"]["softmax"][key[2:]] = value
        else:
            doc[key] = value
    return doc


def _write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> None:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    data = struct.pack(">I", 0x0800 | arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _mnist(folder: str, damage: str = "", labels: Callable[[int], np.ndarray] | None = None):
    """Four small idx files (40 train, 20 test images of 28x28) under ``{tmp}/data/<folder>``."""
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        mp.setenv("OSRBENCH_FASHION_MNIST_DIR", str(tmp / "no-system-copy"))
        root = tmp / "data" / folder
        gz = damage == "gz-truncated"
        for (images, lab), n in zip(((names[0], names[1]), (names[2], names[3])), (40, 20)):
            y = labels(n) if labels else np.arange(n) % 10
            _write_idx(root / images, np.full((n, 28, 28), 7), gz)
            _write_idx(root / lab, y, gz)
        if damage == "truncated":
            p = root / names[0]
            p.write_bytes(p.read_bytes()[:-500])
        elif damage == "gz-truncated":
            p = root / (names[0] + ".gz")
            p.write_bytes(p.read_bytes()[:-30])
        elif damage == "bad-label":
            p = root / names[3]
            p.write_bytes(p.read_bytes()[:-1] + b"\x2a")
    return setup


def _cifar(damage: str):
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        def dump(path: Path, obj: object) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps(obj, protocol=2))

        labels = list(range(10)) * 2
        batch = {b"labels": labels, b"data": np.zeros((20, 3072), np.uint8)}
        folder = tmp / "data" / "cifar-10-batches-py"
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            dump(folder / name, batch)
        dump(tmp / "data" / "cifar-100-python" / "test",
             {b"fine_labels": list(range(100)), b"data": np.zeros((100, 3072), np.uint8)})
        if damage == "garbage":
            (folder / "data_batch_3").write_bytes(b"\x80\x02 this is not a pickle at all")
        elif damage == "truncated-100":
            p = tmp / "data" / "cifar-100-python" / "test"
            p.write_bytes(p.read_bytes()[:5000])
        elif damage == "wrong-size":
            dump(folder / "test_batch", {b"labels": labels, b"data": np.zeros((20, 100), np.uint8)})
    return setup


def _svhn(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    import scipy.io

    folder = tmp / "data" / "svhn"
    folder.mkdir(parents=True)
    for name, n in (("train_32x32.mat", 30), ("test_32x32.mat", 20)):
        scipy.io.savemat(str(folder / name), {"X": np.zeros((32, 32, 3, n), np.uint8),
                                              "y": (np.arange(n) % 10 + 1).astype(np.uint8)[:, None]})
    p = folder / "test_32x32.mat"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _tiny_imagenet(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    from PIL import Image

    base = tmp / "data" / "tiny-imagenet-200"
    lines = []
    for i, wnid in enumerate(("n01000000", "n02000000")):
        d = base / "train" / wnid / "images"
        d.mkdir(parents=True)
        Image.new("RGB", (64, 64), (10 * i, 0, 0)).save(d / f"{wnid}_0.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t1\t1")
    (base / "val" / "images").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (64, 64)).save(base / "val" / "images" / f"val_{i}.JPEG")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (base / "train" / "n02000000" / "images" / "n02000000_0.JPEG").write_bytes(b"")  # emptied by a crash


_PLUGIN = """
import osrbench
from osrbench_softmax.plugin import DEFAULTS, Softmax

@osrbench.hookimpl
def osrbench_register_methods(register):
    register(osrbench.MethodSpec(name="{method}", factory=Softmax, defaults=DEFAULTS))
"""


def _plugins(*dists: tuple[str, str]):
    """Fake third-party distributions ``(name, method it registers)`` on sys.path."""
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        site = tmp / "site"
        site.mkdir()
        for dist, method in dists:
            module = dist.replace("-", "_") + "_mod"
            (site / f"{module}.py").write_text(textwrap.dedent(_PLUGIN.format(method=method)))
            info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
            (info / "entry_points.txt").write_text(f"[osrbench]\n{dist} = {module}\n")
        mp.syspath_prepend(str(site))
        importlib.invalidate_caches()
        plugins.reset()
    return setup


# ---------------------------------------------------------------------------------------- table

CASES: tuple[Hostile, ...] = (
    # item 4: a name two third-party plugins register (neither built in) is unusable, both named
    Hostile("plugin-name-clash", ("run", "--method", "toy-msp", *DIGITS),
            r"method 'toy-msp' is registered by 2 plugins, 'copy-a' and 'copy-b'",
            _plugins(("copy-a", "toy-msp"), ("copy-b", "toy-msp"))),
    # item 7: bounds before allocation
    Hostile("seeds-2e9", ("compare", "softmax", "--seeds", "0-2000000000", *DIGITS), r"at most 10,000 are allowed"),
    Hostile("splits-1e11", ("compare", "softmax", "--splits", "0-99999999999", *DIGITS),
            r"split 99999999999 out of range \(valid: 0-4\)"),
    Hostile("seed-negative", (*RUN, "--seed", "-1"), r"seed -1 out of range \(valid: 0-2147483647\)"),
    Hostile("seed-2**64", (*RUN, "--seed", str(2**64)), r"seed 18446744073709551616 out of range"),
    Hostile("seed-2**31", (*RUN, "--seed", str(2**31)), r"seed 2147483648 out of range"),
    Hostile("image-size-4096", (*RUN, "--set", "image_size=4096"), r"'image_size': 4096 is out of range \(at most 512"),
    Hostile("set-alias-bomb", (*RUN, "--set", f"milestones={ALIAS_BOMB}"), r"anchors and aliases .* are not allowed",
            seconds=5),
    Hostile("set-anchor", (*RUN, "--set", "milestones=&a [1, 2]"), r"anchors and aliases"),
    Hostile("set-huge", (*RUN, "--set", "milestones=[" + ", ".join(["30"] * 3000) + "]"),
            r"--set milestones: 12,000 characters of YAML; at most 4,096 are allowed"),
    Hostile("set-deep", (*RUN, "--set", "milestones=" + "[" * 200 + "]" * 200), r"nested deeper than 32 levels"),
    Hostile("set-lr-empty", (*RUN, "--set", "lr="), r"config key 'lr': None"),
    Hostile("set-lr-null", (*RUN, "--set", "lr=null"), r"config key 'lr': None"),
    Hostile("set-gamma-nan", (*RUN, "--set", "gamma=.nan"), r"config key 'gamma' must be a finite number"),
    Hostile("set-lr-inf-text", (*RUN, "--set", "lr=inf"), r"config key 'lr' must be a finite number"),
    Hostile("set-bool-empty", (*RUN, "--set", "cuda_graphs="), r"config key 'cuda_graphs': None .* needs a bool"),
    Hostile("set-bool-null", (*RUN, "--set", "cuda_graphs=null"), r"config key 'cuda_graphs': None"),
    Hostile("grid-alias-bomb", (*SWEEP, "--grid", "{tmp}/grid.yaml", "--out", "{tmp}/runs"), r"anchors and aliases",
            _grid(f"set:\n  milestones: {ALIAS_BOMB}\n"), seconds=5),
    # item 8: one line instead of a traceback
    Hostile("device-meta", (*RUN, "--device", "meta"), r"unknown device 'meta' \(valid: auto, cpu, cuda, cuda:N\)"),
    Hostile("device-mps", (*RUN, "--device", "mps"), r"unknown device 'mps'"),
    Hostile("device-xla", (*RUN, "--device", "xla"), r"unknown device 'xla'"),
    Hostile("device-cpu:1", (*RUN, "--device", "cpu:1"), r"unknown device 'cpu:1'"),
    Hostile("compare-device-meta", (*CMP, "--device", "meta"), r"unknown device 'meta'"),
    Hostile("randaugment-negative", (*RUN, "--set", "randaugment=-3"), r"'randaugment': -3 is out of range"),
    Hostile("out-is-a-file", (*RUN, "--out", "{tmp}/afile"), r"--out .*afile is not a folder", _file("afile")),
    Hostile("out-dev-null", (*RUN, "--out", "/dev/null"), r"--out /dev/null is not a folder"),
    Hostile("out-below-a-file", (*RUN, "--out", "{tmp}/afile/runs"), r"cannot be created: .*afile is not a folder",
            _file("afile")),
    Hostile("out-unwritable", (*RUN, "--out", "/sys/osrbench-runs"), r"--out /sys/osrbench-runs is not writable"),
    Hostile("out-disk-full", RUN, r"cannot write .*: No space left on device", _disk_full, seconds=60),
    Hostile("compare-out-is-a-file", (*CMP, "--out", "{tmp}/afile"), r"not a folder", _file("afile")),
    Hostile("sweep-out-is-a-file", (*SWEEP, "--out", "{tmp}/afile"), r"--out .*afile is not a folder", _file("afile")),
    Hostile("plot-without-matplotlib", (*CMP, "--plot", "{tmp}/plots"),
            r"--plot needs matplotlib.*pip install 'osrbench\[plot\]'", _no_matplotlib),
    Hostile("plot-at-a-file", (*CMP, "--plot", "{tmp}/afile"), r"--plot folder .*afile is not a folder", _file("afile")),
    Hostile("export-at-a-folder", (*CMP, "--export", "{tmp}"), r"--export .* is a folder"),
    # a device or pipe is never renamed over (as root, that would replace /dev/null with a file); a pipe
    # stands in for /dev/null here so that a regression cannot damage the machine running the tests
    Hostile("export-at-a-pipe", (*CMP, "--export", "{tmp}/pipe"), r"--export .*pipe is not a regular file", _fifo),
    Hostile("export-output-folder", ("export", "softmax", "--dataset", "digits", "--output", "{tmp}"),
            r"--output .* is a folder"),
    Hostile("report-output-folder", ("report", "--runs", "{tmp}/runs", "--output", "{tmp}"), r"--output .* is a folder"),
    Hostile("grid-list-protocol", (*SWEEP, "--grid", "{tmp}/grid.yaml"), r"'protocol' must be one protocol name",
            _grid("protocol: [auroc]\n")),
    Hostile("grid-binary", (*SWEEP, "--grid", "{tmp}/grid.yaml"), r"is not UTF-8 text", _grid(bytes(range(256)) * 4)),
    Hostile("grid-nul", (*SWEEP, "--grid", "{tmp}/grid.yaml"), r"holds NUL bytes", _grid("methods: softmax\0\n")),
    Hostile("grid-set-list", (*SWEEP, "--grid", "{tmp}/grid.yaml"), r"'set' must be a mapping", _grid("set: [1, 2]\n")),
    Hostile("grid-epochs-text", (*SWEEP[:-5], "--grid", "{tmp}/grid.yaml"), r"'epochs' must be a positive integer",
            _grid("epochs: many\n")),
    Hostile("export-validate-metrics-list", ("export", "--validate", "{tmp}/bundle.json"), r"invalid export",
            _bundle(_export(m_metrics=[1, 2]))),
    Hostile("export-validate-split-hashes-list", ("export", "--validate", "{tmp}/bundle.json"), r"invalid export",
            _bundle(_export(m_split_hashes=["h"]))),
    Hostile("export-validate-paired-diff-list", ("export", "--validate", "{tmp}/bundle.json"), r"invalid export",
            _bundle(_export(paired=[{"a": "softmax", "b": "softmax", "metric": "auroc", "per_split_diff": [0]}]))),
    Hostile("export-validate-paired-number", ("export", "--validate", "{tmp}/bundle.json"), r"invalid export",
            _bundle(_export(paired=7))),
    Hostile("export-validate-metrics-text", ("export", "--validate", "{tmp}/bundle.json"), r"invalid export",
            _bundle(_export(m_metrics="auroc"))),
    Hostile("export-validate-deep-json", ("export", "--validate", "{tmp}/bundle.json"), r"cannot read an export bundle",
            _bundle("[" * 100_000 + "]" * 100_000)),
    Hostile("single-class-data", ("run", "--method", "softmax", "--dataset", "mnist", "--data-root", "{tmp}/data",
                                  *DIGITS[2:]), r"known class\(es\) \[.*\] have no training images \(the training data holds only class\(es\) \[0\]\)",
            _mnist("MNIST/raw", labels=lambda n: np.zeros(n))),
    Hostile("new-plugin-long-name", ("new-plugin", "a" * 300, "--dir", "{tmp}"), r"too long: at most 40"),
    Hostile("new-plugin-dir-is-a-file", ("new-plugin", "hostile-x", "--dir", "{tmp}/afile"),
            r"cannot write .*afile/osrbench-hostile-x: Not a directory", _file("afile")),
    Hostile("jobs-0", (*CMP, "--jobs", "0"), r"--jobs must be at least 1, got 0"),
    Hostile("jobs-negative", (*CMP, "--jobs", "-4"), r"--jobs must be at least 1"),
    Hostile("format-nosuch", (*CMP, "--format", "nosuch"), r"unknown table format 'nosuch' \(valid: .*github"),
    Hostile("rescore-format-nosuch", ("rescore", "--runs", "{tmp}/runs", "--score", "msp", "--format", "nosuch"),
            r"unknown table format 'nosuch'"),
    Hostile("tie-tol-nan", (*CMP, "--tie-tol", "nan"), r"--tie-tol must be a number of % points in \[0, 100\], got nan"),
    Hostile("tie-tol-negative", (*CMP, "--tie-tol", "-1"), r"--tie-tol must be"),
    Hostile("export-tie-tol-inf", ("export", "softmax", "--dataset", "digits", "--output", "{tmp}/b.json",
                                   "--tie-tol", "inf"), r"--tie-tol must be"),
    Hostile("splits-open-range", ("compare", "softmax", "--splits", "1-", *DIGITS), r"cannot read split list '1-'"),
    Hostile("splits-backwards", ("compare", "softmax", "--splits", "3-1", *DIGITS), r"split range '3-1' runs backwards"),
    Hostile("seeds-open-range", ("compare", "softmax", "--seeds", "0-", *DIGITS), r"cannot read seed list '0-'"),
    Hostile("sweep-seeds-2e9", (*SWEEP, "--seeds", "0-2000000000"), r"at most 10,000 are allowed"),
    # item 8: data check parses the files, not only their names
    Hostile("data-check-mnist-truncated", ("data", "check", "mnist", "--data-root", "{tmp}/data"),
            r"header announces \(40, 28, 28\)", _mnist("MNIST/raw", "truncated"), stream="out"),
    Hostile("data-check-mnist-gz-truncated", ("data", "check", "mnist", "--data-root", "{tmp}/data"),
            r"train-images-idx3-ubyte\.gz", _mnist("MNIST/raw", "gz-truncated"), stream="out"),
    Hostile("data-check-mnist-bad-label", ("data", "check", "mnist", "--data-root", "{tmp}/data"),
            r"labels outside 0\.\.9", _mnist("MNIST/raw", "bad-label"), stream="out"),
    Hostile("data-check-fashion-truncated", ("data", "check", "fashion-mnist", "--data-root", "{tmp}/data"),
            r"FashionMNIST/raw/train-images-idx3-ubyte is not a valid idx file", _mnist("FashionMNIST/raw", "truncated"),
            stream="out"),
    Hostile("data-check-cifar10-garbage", ("data", "check", "cifar10", "--data-root", "{tmp}/data"),
            r"cannot unpickle .*data_batch_3", _cifar("garbage"), stream="out"),
    Hostile("data-check-cifar10-wrong-size", ("data", "check", "cifar10", "--data-root", "{tmp}/data"),
            r"test_batch: malformed CIFAR batch", _cifar("wrong-size"), stream="out"),
    Hostile("data-check-cifar+10-truncated", ("data", "check", "cifar+10", "--data-root", "{tmp}/data"),
            r"cannot unpickle .*cifar-100-python/test", _cifar("truncated-100"), stream="out"),
    Hostile("data-check-svhn-truncated", ("data", "check", "svhn", "--data-root", "{tmp}/data"),
            r"test_32x32\.mat is truncated", _svhn, stream="out"),
    Hostile("data-check-tiny-imagenet-empty-jpeg", ("data", "check", "tiny_imagenet", "--data-root", "{tmp}/data"),
            r"1 image file\(s\) .* are damaged: train/n02000000/images/n02000000_0\.JPEG \(empty\)", _tiny_imagenet,
            stream="out"),
)


# --------------------------------------------------------------------------------------- runner


@dataclass
class Result:
    code: int | None
    out: str
    err: str
    traceback: str | None
    seconds: float


def attempt(case: Hostile, tmp: Path, mp: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> Result:
    tmp.mkdir(parents=True, exist_ok=True)
    if case.setup:
        case.setup(tmp, mp)
    argv = [a.replace("{tmp}", str(tmp)) for a in case.argv]
    capsys.readouterr()
    t0 = time.perf_counter()
    tb = None
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - what this file exists to count
        code, tb = None, traceback.format_exc()
    seconds = time.perf_counter() - t0
    out, err = capsys.readouterr()
    return Result(code, out, err, tb, seconds)


def problems(case: Hostile, r: Result) -> list[str]:
    """What is wrong with the outcome of a hostile input (empty: it ended as it should)."""
    if r.traceback:
        return [f"traceback:\n{r.traceback}"]
    found = []
    if r.code != 2:
        found.append(f"exit code {r.code}, expected 2")
    if case.stream == "err":
        lines = r.err.splitlines()
        if len(lines) != 1 or not lines[0].startswith(PREFIX):
            found.append(f"stderr is not one line starting {PREFIX!r}: {r.err!r}")
        elif not re.search(case.expect, lines[0]):
            found.append(f"error line does not match {case.expect!r}: {lines[0]!r}")
    else:
        if any(re.match(r"^\S+\s+ready\s", line) for line in r.out.splitlines()):
            found.append("data check calls the damaged dataset ready")
        if not re.search(case.expect, r.out):
            found.append(f"data check output does not match {case.expect!r}: {r.out!r}")
    if "Traceback" in r.err:
        found.append("a traceback on stderr")
    if r.seconds > case.seconds:
        found.append(f"took {r.seconds:.1f} s (limit {case.seconds} s): something was built before the check")
    return found


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_ends_in_one_line_and_exit_2(case, tmp_path, monkeypatch, capsys):
    r = attempt(case, tmp_path / "case", monkeypatch, capsys)
    assert problems(case, r) == []


def test_the_whole_table_ends_in_no_traceback(tmp_path, capsys):
    tracebacks, wrong = [], []
    for case in CASES:
        with pytest.MonkeyPatch.context() as mp:
            plugins.reset()
            r = attempt(case, tmp_path / case.id, mp, capsys)
        plugins.reset()
        importlib.invalidate_caches()
        if r.traceback:
            tracebacks.append(case.id)
        elif problems(case, r):
            wrong.append(case.id)
    with capsys.disabled():
        print(f"\nhostile inputs tried: {len(CASES)}; ending in a traceback: {len(tracebacks)}; "
              f"otherwise not one line + exit 2: {len(wrong)}")
    assert len(CASES) >= 60
    assert tracebacks == []
    assert wrong == []


# ------------------------------------------------------------------------- the inputs that work


def test_lr_in_exponent_notation_is_a_float():
    """YAML 1.1 reads ``1e-3`` (no dot) as text; a float key takes what ``float()`` reads."""
    from osrbench import config

    spec = plugins.get().method("softmax")
    _, cfg = config.resolve(spec, plugins.get().dataset("digits"), overrides=config.parse_overrides(["lr=1e-3"]))
    assert cfg["lr"] == 0.001 and isinstance(cfg["lr"], float)
    _, cfg = config.resolve(spec, plugins.get().dataset("digits"), overrides=config.parse_overrides(["gamma=5E-1"]))
    assert cfg["gamma"] == 0.5
    with pytest.raises(config.ConfigError, match=r"'lr' expects float, got 'fast'"):
        config.resolve(spec, plugins.get().dataset("digits"), overrides=config.parse_overrides(["lr=fast"]))


def test_index_lists_within_bounds_still_parse():
    from osrbench import protocols

    assert protocols.parse_indices("0-2,4", 5) == [0, 1, 2, 4]
    assert protocols.parse_indices("3, 0-1, 1", 5) == [0, 1, 3]
    assert protocols.parse_indices("0-9999", 2**31, "seed") == list(range(10_000))
    assert protocols.check_seed(2**31 - 1) == 2**31 - 1


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from osrbench import results

    target = tmp_path / "result.json"
    target.write_text("old")

    def full(fh):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(results.OutputError, match=r"cannot write .*result\.json: No space left on device"):
        results.atomic_write(target, full)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_atomic_write_makes_files_readable_by_the_group_as_the_umask_allows(tmp_path):
    from osrbench import results

    old = os.umask(0o022)
    try:
        results.atomic_write(tmp_path / "a.json", lambda fh: fh.write(b"{}"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_data_check_still_calls_intact_files_ready(tmp_path, monkeypatch, capsys):
    for setup in (_mnist("MNIST/raw"), _cifar("")):
        setup(tmp_path, monkeypatch)
    assert cli.main(["data", "check", "mnist", "--data-root", str(tmp_path / "data")]) == 0
    assert cli.main(["data", "check", "cifar10", "--data-root", str(tmp_path / "data")]) == 0
    assert cli.main(["data", "check", "cifar+10", "--data-root", str(tmp_path / "data")]) == 0
    assert capsys.readouterr().out.count(" ready ") == 3


def test_atomic_write_never_replaces_a_device_or_a_pipe(tmp_path):
    import stat

    from osrbench import results

    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(results.OutputError, match="not a regular file"):
        results.atomic_write(tmp_path / "pipe", lambda fh: fh.write(b"x"))
    assert stat.S_ISFIFO((tmp_path / "pipe").stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
