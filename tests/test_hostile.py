"""Hostile inputs (issue 15, items 4, 7 and 8; issue 27): each ends with exit code 2 and one line
``osrbench: error: ...`` (``data check``: exit 2 and the problem in its table), never a traceback,
and nothing the input asks for is allocated before its bounds are checked.

Issue 27 adds damaged checkpoints of every shape, statistics options out of bounds, inputs that
used to succeed falsely (a scorer list naming nothing, a method without phases), silently wrong
accepts (an edited metric with a recomputed hash, a seed contradicting the weights, a grid key
given twice) and loose inputs (empty strings, ``--jobs 0``, a method compared with itself).

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
from osrbench_softmax.softmax import DEFAULTS, Softmax

@osrbench.hookimpl
def osrbench_register_methods(register):
    register(osrbench.MethodSpec(name="{method}", factory=Softmax, defaults=DEFAULTS))
"""


def _plugins(*dists: tuple[str, str], template: str = _PLUGIN):
    """Fake third-party distributions ``(name, method it registers)`` on sys.path."""
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        site = tmp / "site"
        site.mkdir()
        for dist, method in dists:
            module = dist.replace("-", "_") + "_mod"
            (site / f"{module}.py").write_text(textwrap.dedent(template.format(method=method)))
            info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
            (info / "entry_points.txt").write_text(f"[osrbench]\n{dist} = {module}\n")
        mp.syspath_prepend(str(site))
        importlib.invalidate_caches()
        plugins.reset()
    return setup


_NO_PHASES_PLUGIN = """
import osrbench
from osrbench_softmax.softmax import DEFAULTS, Softmax

class NoPhases(Softmax):
    phases = ()

@osrbench.hookimpl
def osrbench_register_methods(register):
    register(osrbench.MethodSpec(name="{method}", factory=NoPhases, defaults=DEFAULTS))
"""


def _no_phases_plugin(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    _plugins(("no-phases", "no-phases"), template=_NO_PHASES_PLUGIN)(tmp, mp)


_TRAINED: list[Path] = []


def _trained_runs() -> Path:
    """A runs folder holding one finished run (softmax, digits, 1 epoch), trained once per session."""
    if not _TRAINED:
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="osrbench-hostile-")) / "runs"
        assert cli.main(["run", "--method", "softmax", *[a.replace("{tmp}/runs", str(out)) for a in DIGITS]]) == 0
        _TRAINED.append(out)
    return _TRAINED[0]


def _run_dir(tmp: Path) -> Path:
    return next((tmp / "runs").rglob("result.json")).parent


def _trained(damage: Callable[[Path], None] | None = None) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """A copy of the trained runs folder under ``{tmp}/runs``, then ``damage(run folder)``."""
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        import shutil

        shutil.copytree(_trained_runs(), tmp / "runs")
        if damage:
            damage(_run_dir(tmp))
    return setup


def _unfinished(checkpoint: Callable[[Path], None]) -> Callable[[Path], None]:
    """No record (the run looks unfinished), and ``checkpoint(path of checkpoint.pt)``."""
    def damage(run: Path) -> None:
        for name in ("result.json", "scores.npz"):
            (run / name).unlink()
        checkpoint(run / "checkpoint.pt")
    return damage


def _folder_at(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _hashed_checkpoint(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Rewrite checkpoint.pt as ``change(payload)`` with a valid sha256 trailer: it passes the integrity check."""
    def write(path: Path) -> None:
        import hashlib
        import io

        import torch

        from osrbench import checkpoints

        buf = io.BytesIO()
        torch.save(change(checkpoints.read(path)), buf)
        blob = buf.getvalue()
        path.write_bytes(blob + checkpoints._TRAILER + hashlib.sha256(blob).hexdigest().encode())
    return write


def _edit_metric(run: Path) -> None:
    """The AUROC edited and the content hash recomputed with osrbench's own function."""
    from osrbench import results

    doc = results.read_json(run / "result.json")
    doc["metrics"]["auroc"] = 0.99
    results.write_json(run / "result.json", doc)


def _weights_file(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    import shutil

    _trained()(tmp, mp)
    shutil.copy(_run_dir(tmp) / "checkpoint.pt", tmp / "ok.pt")


RESUME = (*RUN, "--resume")
EXPORT = ("export", "softmax", "--dataset", "digits", "--splits", "0", "--epochs", "1", "--out", "{tmp}/runs",
          "--output", "{tmp}/b.json")
CI = (*CMP, "--no-run", "--ci")


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
    Hostile("set-bool-empty", (*RUN, "--set", "cuda_graphs="), r"config key 'cuda_graphs': None"),
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
    Hostile("format-nosuch", (*CMP, "--format", "nosuch"), r"unknown --format 'nosuch' \(valid: text, md, latex, html, json, csv; also .*github = md"),
    Hostile("rescore-format-nosuch", ("rescore", "--runs", "{tmp}/runs", "--score", "msp", "--format", "nosuch"),
            r"unknown --format 'nosuch'"),
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
    # issue 27, class 1: tracebacks. Damaged checkpoints of every shape name the file and what to do.
    Hostile("resume-checkpoint-is-a-folder", RESUME, r"checkpoint\.pt is not a file .* no checkpoint can be saved",
            _trained(_unfinished(_folder_at))),
    Hostile("force-checkpoint-is-a-folder", (*RUN, "--force"), r"checkpoint\.pt is not a file .* no checkpoint can be saved",
            _trained(_unfinished(_folder_at))),
    Hostile("resume-checkpoint-bare-tensor", RESUME,
            r"checkpoint\.pt: not a checkpoint osrbench wrote \(a Tensor, .*--force",
            _trained(_unfinished(_hashed_checkpoint(lambda c: __import__("torch").zeros(3))))),
    Hostile("resume-checkpoint-negative-epoch", RESUME, r"checkpoint\.pt: .*epoch -1 is not a count of epochs.*--force",
            _trained(_unfinished(_hashed_checkpoint(lambda c: {**c, "epoch": -1})))),
    Hostile("resume-checkpoint-string-epoch", RESUME, r"epoch '1' is not a count of epochs",
            _trained(_unfinished(_hashed_checkpoint(lambda c: {**c, "epoch": "1"})))),
    Hostile("resume-checkpoint-no-rng", RESUME, r"its 'rng' is missing or of the wrong type",
            _trained(_unfinished(_hashed_checkpoint(lambda c: {k: v for k, v in c.items() if k != "rng"})))),
    Hostile("ci-resamples-1e20", (*CI, "--resamples", "99999999999999999999"),
            r"--resamples 99,999,999,999,999,999,999 is more than 100,000"),
    Hostile("ci-seed-negative", (*CI, "--ci-seed", "-1"), r"--ci-seed -1 out of range \(valid: 0-2147483647\)"),
    Hostile("export-output-name-too-long", (*EXPORT[:-1], "{tmp}/" + "a" * 300 + ".json"),
            r"--output .* cannot be written: File name too long"),
    Hostile("out-name-too-long", (*RUN, "--out", "{tmp}/" + "a" * 300),
            r"--out .* is not writable \(File name too long\)"),
    Hostile("runs-name-too-long", ("score", "--runs", "{tmp}/" + "a" * 300), r"a{300}: File name too long"),
    Hostile("weights-name-too-long", ("evaluate", "--method", "softmax", "--dataset", "digits", "--weights",
                                      "{tmp}/" + "a" * 300, "--layout", "osrbench"), r"a{300}: File name too long"),
    Hostile("data-root-name-too-long", ("run", "--method", "softmax", "--dataset", "mnist", "--data-root",
                                        "{tmp}/" + "a" * 300, *DIGITS[2:]), r"a{300}.*: File name too long"),
    Hostile("new-plugin-dir-name-too-long", ("new-plugin", "hostile-y", "--dir", "{tmp}/" + "a" * 300),
            r"File name too long"),
    # class 2: hangs
    Hostile("ci-resamples-1e6", (*CI, "--resamples", "1000000"), r"more than 100,000", seconds=5),
    # class 3: false successes
    Hostile("score-scorer-comma", ("score", "--runs", "{tmp}/runs", "--scorer", ","), r"--scorer ',' names no scorer"),
    Hostile("method-without-phases", ("run", "--method", "no-phases", *DIGITS),
            r"method 'no-phases' cannot be trained: phases is \(\); expected a non-empty tuple", _no_phases_plugin),
    # class 4: silently wrong accepts
    Hostile("export-edited-metric", EXPORT,
            r"result\.json: metric 'auroc' is 0\.99, but its scores\.npz gives 0\.\d+ \(the record was edited\)",
            _trained(_edit_metric)),
    Hostile("rescore-edited-metric", ("rescore", "--runs", "{tmp}/runs", "--score", "msp"),
            r"result\.json: metric 'auroc' is 0\.99, but its scores\.npz gives", _trained(_edit_metric)),
    Hostile("evaluate-seed-contradicts-weights",
            ("evaluate", "--method", "softmax", "--dataset", "digits", "--weights", "{tmp}/ok.pt", "--layout",
             "osrbench", "--seed", "5", "--device", "cpu", "--out", "{tmp}/ev"),
            r"ok\.pt was trained with seed 0, not --seed 5; evaluate it with --seed 0", _weights_file),
    Hostile("grid-key-twice", (*SWEEP, "--grid", "{tmp}/grid.yaml"), r"key 'epochs' is given twice",
            _grid("epochs: 100\nmethods: softmax\nepochs: 1\n")),
    Hostile("grid-set-key-twice", (*SWEEP, "--grid", "{tmp}/grid.yaml"), r"key 'set: lr' is given twice",
            _grid("set:\n  lr: 0.1\n  lr: 0.2\n")),
    # class 5: loose inputs
    Hostile("device-empty", (*RUN, "--device", ""), r"--device is empty"),
    Hostile("recipe-empty", (*RUN, "--recipe", ""), r"--recipe is empty"),
    Hostile("out-empty", (*RUN, "--out", ""), r"--out is empty"),
    Hostile("out-empty-equals", (*RUN, "--out="), r"--out is empty"),
    Hostile("scorer-empty", ("score", "--runs", "{tmp}/runs", "--scorer", " "), r"--scorer is empty"),
    Hostile("method-empty", ("run", "--method", "", *DIGITS), r"--method is empty"),
    Hostile("sweep-jobs-0", (*SWEEP, "--jobs", "0"), r"--jobs must be at least 1, got 0"),
    Hostile("resolve-negative", (*CMP, "--resolve", "-1"), r"--resolve must be a difference in % points in \(0, 100\]"),
    Hostile("ci-resamples-1", (*CI, "--resamples", "1"),
            r"--resamples 1 is too few for --level 0\.95: .* each 2\.5 % tail, so at least 40"),
    Hostile("ci-level-beyond-resamples", (*CI, "--level", "0.99999"),
            r"at least 200,000 \(more than the 100,000 allowed: choose a lower --level\)"),
    Hostile("compare-method-twice", ("compare", "softmax", "softmax", "--splits", "0", *DIGITS),
            r"method 'softmax' is given twice"),
    Hostile("export-method-twice", ("export", "softmax", "softmax", *EXPORT[2:]), r"method 'softmax' is given twice"),
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
        if not re.search(case.expect, " ".join(r.out.split())):  # the hints are wrapped at 100 columns
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
    assert len(CASES) >= 90
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


# ------------------------------------------------------------------- issue 27: what the cases rely on


def _copy_trained(tmp_path: Path) -> Path:
    """A copy of the trained runs folder; returns the run folder."""
    _trained()(tmp_path, pytest.MonkeyPatch())
    return _run_dir(tmp_path)


def test_an_edited_metric_is_refused_by_every_reader_and_compare_evaluates_the_run_again(tmp_path, capsys):
    from osrbench import records

    run = _copy_trained(tmp_path)
    true_auroc = records.read_record(run).metrics["auroc"]
    _edit_metric(run)
    with pytest.raises(records.CorruptRecord, match=r"result\.json: metric 'auroc' is 0\.99, but its scores\.npz"):
        records.read_record(run)
    assert records.read_record(run, verify=False).metrics["auroc"] == 0.99  # the hash alone accepts it
    runs = str(tmp_path / "runs")
    capsys.readouterr()
    # report: skipped with the file and the metric named; nothing else to show, so one line and exit 2
    assert cli.main(["report", "--runs", runs]) == 2
    err = capsys.readouterr().err
    assert "metric 'auroc' is 0.99" in err and str(run) in err
    # compare --no-run: the run is missing, and the summary says why
    argv = ["compare", "softmax", "--splits", "0", "--dataset", "digits", "--epochs", "1", "--device", "cpu",
            "--quiet", "--out", runs, "--metrics", "auroc"]
    assert cli.main([*argv, "--no-run"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "metric 'auroc' is 0.99, but its scores.npz gives" in err
    # compare: evaluated again from the final checkpoint; the table shows the scores' AUROC, never 99.00
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "metric 'auroc' is 0.99" in err and f"{100 * true_auroc:.2f}" in out and "99.00" not in out
    assert records.read_record(run).metrics["auroc"] == pytest.approx(true_auroc, abs=1e-12)


def test_a_record_must_agree_with_its_scores_in_counts_names_and_every_metric(tmp_path):
    from osrbench import records, results

    run = _copy_trained(tmp_path)
    good = results.read_json(run / "result.json")
    for change, why in ((lambda d: d["counts"].update(known=1), r"its counts \(1 known"),
                        (lambda d: d.update(scores=["score"]), r"its score names \['score'\]"),
                        (lambda d: d["metrics"].update(made_up=0.5), r"metric 'made_up' is not one its scores give"),
                        (lambda d: d["metrics"].update(acc=None), r"metric 'acc' is None"),
                        (lambda d: d.update(f1_rule=["nosuch", 0.5]), r"cannot be recomputed")):
        doc = json.loads(json.dumps(good))
        change(doc)
        results.write_json(run / "result.json", doc)
        with pytest.raises(records.CorruptRecord, match=why):
            records.read_record(run)
    results.write_json(run / "result.json", good)
    rec = records.read_record(run)  # the untouched record is read: the recomputed metrics agree
    (run / "scores.npz").unlink()
    with pytest.raises(records.CorruptRecord, match=r"its metrics cannot be verified \(.*no scores file\)"):
        records.read_record(run)
    assert records.read_record(run, verify=False) == rec


def test_post_hoc_scores_must_hold_one_score_per_test_image(tmp_path):
    from osrbench import records

    run = _copy_trained(tmp_path)
    rec = records.read_record(run)
    n_known, n_unknown = rec.counts["known"], rec.counts["unknown"]
    ok = records.Posthoc({"energy": np.zeros(n_known)}, {"energy": np.zeros(n_unknown)}, {"energy": {}})
    records.write_posthoc(run, ok, rec)
    assert records.read_posthoc(run, rec).names == ["energy"]
    short = records.Posthoc({"energy": np.zeros(n_known - 1)}, {"energy": np.zeros(n_unknown)}, {"energy": {}})
    records.write_posthoc(run, short, rec)  # a valid content hash, bound to the right run and scores file
    with pytest.raises(records.CorruptRecord, match=r"scorer 'energy' holds .* not one per test image"):
        records.read_posthoc(run, rec)


def test_a_checkpoint_in_a_folder_that_refuses_the_rotation_is_one_line_and_keeps_the_old_one(tmp_path, monkeypatch):
    from osrbench import checkpoints, results

    run = _copy_trained(tmp_path)
    ckpt = checkpoints.read(run / "checkpoint.pt")
    before = (run / "checkpoint.pt").read_bytes()

    def refused(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as mp:  # the folder made read-only mid-run (root ignores chmod, so simulated)
        mp.setattr(os, "replace", refused)
        with pytest.raises(results.OutputError, match=r"cannot write .*checkpoint\.prev\.pt: Permission denied"):
            checkpoints.save(run, ckpt)
    assert (run / "checkpoint.pt").read_bytes() == before
    (run / "checkpoint.prev.pt").mkdir()  # a folder where the previous checkpoint goes
    with pytest.raises(results.OutputError, match=r"checkpoint\.prev\.pt is not a file"):
        checkpoints.save(run, ckpt)
    with pytest.raises(results.OutputError, match=r"checkpoint\.prev\.pt is not a file"):
        checkpoints.load_latest(run)  # a resume stops before training, not at its first save
    assert (run / "checkpoint.pt").read_bytes() == before


def test_payload_problems_name_what_is_missing_and_accept_what_osrbench_writes(tmp_path):
    from osrbench import checkpoints

    run = _copy_trained(tmp_path)
    ckpt = checkpoints.read(run / "checkpoint.pt")
    assert checkpoints.payload_problem(ckpt) is None
    assert checkpoints.payload_problem([1]) == "a list, not a checkpoint's mapping"
    assert "epoch True" in checkpoints.payload_problem({**ckpt, "epoch": True})
    assert "format 2" in checkpoints.payload_problem({**ckpt, "format": 2})
    for key in ("identity", "state", "history", "elapsed", "rng"):
        assert checkpoints.payload_problem({k: v for k, v in ckpt.items() if k != key}) == (
            f"its {key!r} is missing or of the wrong type")
    assert checkpoints.payload_problem({**ckpt, "elapsed": -1.0}) == "its 'elapsed' is missing or of the wrong type"


def test_a_damaged_checkpoint_falls_back_to_the_previous_one_when_that_is_intact(tmp_path, capsys):
    from osrbench import checkpoints

    run = _copy_trained(tmp_path)
    (run / "result.json").unlink()
    (run / "scores.npz").unlink()
    good = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.prev.pt").write_bytes(good)
    _hashed_checkpoint(lambda c: {**c, "epoch": "1"})(run / "checkpoint.pt")
    ckpt, problems = checkpoints.load_latest(run)
    assert ckpt is not None and ckpt["epoch"] == 1 and len(problems) == 1
    assert "epoch '1' is not a count of epochs" in problems[0] and "--force" in problems[0]
    assert cli.main([a.replace("{tmp}", str(tmp_path)) for a in RESUME]) == 0  # evaluated from the intact one
    assert "epoch '1'" in capsys.readouterr().err
    assert (run / "result.json").exists()


def test_a_method_without_phases_writes_nothing(tmp_path, monkeypatch, capsys):
    _no_phases_plugin(tmp_path, monkeypatch)
    try:
        assert cli.main(["run", "--method", "no-phases", *[a.replace("{tmp}", str(tmp_path)) for a in DIGITS]]) == 2
    finally:
        plugins.reset()
    assert "phases is ()" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_long_bootstrap_shows_progress(tmp_path, capsys):
    from osrbench import analysis, compare, records

    run = _copy_trained(tmp_path)
    c = compare.build([records.read_record(run)], ["softmax"], ["auroc"])
    analysis.bootstrap(c, 50, progress=True)
    assert "bootstrap" in capsys.readouterr().err
    analysis.bootstrap(c, 50)
    assert capsys.readouterr().err == ""


def test_statistics_bounds_follow_the_level():
    from osrbench import stats

    assert stats.min_resamples(0.95) == 40 and stats.min_resamples(0.9) == 20 and stats.min_resamples(0.99) == 200
    with pytest.raises(ValueError, match=r"1\.\.100,000"):
        stats.bootstrap_mean([1.0, 2.0], stats.MAX_RESAMPLES + 1)


def test_empty_arguments_are_named():
    assert cli.empty_argument(["run", "--out", "x"]) is None
    assert cli.empty_argument(["run", "--set", "lr="]) is None  # a key set to null: the config check's business
    assert cli.empty_argument(["run", "--out", ""]) == "--out is empty"
    assert cli.empty_argument(["run", "--device="]) == "--device is empty"
    assert cli.empty_argument(["compare", "", "dias"]) == "argument 2 is empty"


def test_the_grid_may_give_a_key_once_at_every_depth():
    from osrbench.commands.sweep import _duplicate_key

    assert _duplicate_key("methods: [softmax, dias]\nset: {lr: 0.1, gamma: 0.5}\n") is None
    assert _duplicate_key("set:\n  lr: 0.1\nsplits: 0-4\nset:\n  gamma: 0.5\n") == "set"
    assert _duplicate_key("set: {lr: 0.1, lr: 0.2}\n") == "set: lr"
