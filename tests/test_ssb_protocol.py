"""Protocol ssb: the Semantic Shift Benchmark's class splits, named splits, the imagenet-ssb reader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from osrbench import cli, plugins, protocols, registry
from osrbench.data import imagenet_ssb
from osrbench.datasets import DataNotFound, DatasetSpec

SSB_YAML = Path(registry.__file__).with_name("ssb_splits.yaml")

# sha256 of the canonical JSON (json.dumps(doc, sort_keys=True, separators=(",", ":"))) of each pickle's
# lists, computed from the MLS release's data/open_set_splits/*.pkl at 3258f05 (sgvaze/osr_closed_set_all_you_need):
#   {"known": known_classes, "unknown": unknown_classes} for cub / aircraft / scars (its {Easy, Medium, Hard} dict),
#   {"unknown": {"Easy": easy_i21k_classes, "Hard": hard_i21k_classes}} of imagenet_osr_splits_winter21.pkl.
RELEASE_DIGESTS = {
    "cub": "5ffba3de134129455b562861e86f1ad72b1a2cf1a15ec03a00d12549303ef22b",
    "aircraft": "3a3a91f470f7db474a6d768624ec2509a89ada92bb00c20acb3e866f30d3d79a",
    "scars": "948b95b6bedb13ac2b09c117dbc08e3cff30856e1322fc9afc36f2521297de1c",
    "imagenet": "1c64c65e0e92dd6a4b04aebf15e3716f60eb84fd12b56411c0fdf430dc8011cd",
}
#: (classes, known, Easy, Medium, Hard) of the release's fine-grained pickles
SIZES = {"cub": (200, 100, 32, 34, 34), "aircraft": (100, 50, 20, 17, 13), "scars": (196, 98, 76, 15, 7)}


def _digest(doc) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fine_grained_spec(name: str) -> DatasetSpec:
    """A stand-in for the cub / aircraft / scars entries (their readers live elsewhere): same table."""
    return DatasetSpec(name=name, load=lambda root, split, size: None, table=name,
                       num_classes=SIZES[name][0], image_size=448)


@pytest.fixture
def with_cub(monkeypatch):
    monkeypatch.setitem(plugins.get().datasets, "cub", fine_grained_spec("cub"))


def test_yaml_lists_equal_the_release_pickles():
    tables = yaml.safe_load(SSB_YAML.read_text())["tables"]
    assert set(tables) == set(RELEASE_DIGESTS)
    for name, digest in RELEASE_DIGESTS.items():
        t = tables[name]
        doc = {"unknown": t["unknown"]} if name == "imagenet" else {"known": t["known"], "unknown": t["unknown"]}
        assert _digest(doc) == digest, f"ssb_splits.yaml {name} differs from the release's pickle"
    assert "Copyright (c) 2022 Sagar Vaze" in SSB_YAML.read_text()  # the MIT notice travels with the lists


def test_digest_catches_one_changed_id():
    t = yaml.safe_load(SSB_YAML.read_text())["tables"]["cub"]
    t["unknown"]["Hard"][0] += 1
    assert _digest({"known": t["known"], "unknown": t["unknown"]}) != RELEASE_DIGESTS["cub"]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_fine_grained_splits_are_the_release_evaluation_sets(name):
    spec = fine_grained_spec(name)
    table = registry.load().named_splits["ssb"][name]
    classes, n_known, n_easy, n_medium, n_hard = SIZES[name]
    assert protocols.split_names(spec, "ssb") == ("easy", "medium", "hard")
    assert protocols.num_splits(spec, "ssb") == 3
    easy, medium, hard = (protocols.get_split(spec, "ssb", i) for i in range(3))
    assert easy.known == medium.known == hard.known == table.known and len(table.known) == n_known
    assert easy.unknown == table.unknown["Easy"] and len(easy.unknown) == n_easy
    assert medium.unknown == table.unknown["Medium"] and len(medium.unknown) == n_medium
    # the release's openset_test_fine_grained.py adds the Medium classes to Hard
    assert hard.unknown == table.unknown["Hard"] + table.unknown["Medium"]
    assert len(hard.unknown) == n_hard + n_medium
    # known and the three lists partition the dataset's classes
    assert sorted(easy.known + easy.unknown + hard.unknown) == list(range(classes))
    assert [s.index for s in (easy, medium, hard)] == [0, 1, 2]


def test_imagenet_ids():
    spec = plugins.get().dataset("imagenet-ssb")
    table = registry.load().named_splits["ssb"]["imagenet"]
    assert protocols.default_protocol(spec) == "ssb"
    assert protocols.split_names(spec, "ssb") == ("easy", "hard")
    easy, hard = protocols.get_split(spec, "ssb", 0), protocols.get_split(spec, "ssb", 1)
    assert easy.known == hard.known == tuple(range(1000))
    ids = protocols.unknown_wnid_ids(table)
    union = sorted(set(table.unknown["Easy"]) | set(table.unknown["Hard"]))
    assert len(union) == 1980 and ids[union[0]] == 1000 and ids[union[-1]] == 2979
    assert easy.unknown == tuple(ids[w] for w in table.unknown["Easy"])
    assert hard.unknown == tuple(ids[w] for w in table.unknown["Hard"])
    assert not set(easy.unknown) & set(hard.unknown)


def test_split_names_and_indices():
    cub = fine_grained_spec("cub")
    assert protocols.parse_split("hard", cub, "ssb") == 2
    assert protocols.parse_split("Easy", cub, "ssb") == 0
    assert protocols.parse_split("1", cub, "ssb") == 1
    assert protocols.parse_splits("easy,hard", cub, "ssb") == [0, 2]
    assert protocols.parse_splits("hard,0", cub, "ssb") == [0, 2]
    assert protocols.parse_splits(None, cub, "ssb") == [0, 1, 2]
    with pytest.raises(protocols.SplitError, match=r"unknown split 'hardest' for cub/ssb \(valid: easy, medium, hard or 0-2\)"):
        protocols.parse_split("hardest", cub, "ssb")
    with pytest.raises(protocols.SplitError, match="out of range"):
        protocols.parse_split("3", cub, "ssb")
    with pytest.raises(protocols.SplitError, match=r"unknown split 'hardest' for cub/ssb \(valid: easy, medium, hard "
                                                   r"or indices 0-2, e.g. easy,medium,hard\)"):
        protocols.parse_splits("easy,hardest", cub, "ssb")
    with pytest.raises(protocols.SplitError, match=r"split 5 out of range \(valid: 0-2\)"):
        protocols.parse_splits("easy,5", cub, "ssb")
    # classic protocols: indices as before, names are an error
    mnist = plugins.get().dataset("mnist")
    assert protocols.parse_splits(None, mnist, "auroc") == [0, 1, 2, 3, 4]
    assert protocols.parse_splits("1,3", mnist, "osrci") == [1, 3]
    assert protocols.parse_split("4", mnist, "auroc") == 4
    with pytest.raises(protocols.SplitError, match="valid: 0-4"):
        protocols.parse_split("easy", mnist, "auroc")


def test_default_protocol_and_wrong_protocol(with_cub):
    cub = plugins.get().dataset("cub")
    assert protocols.default_protocol(cub) == "ssb"
    assert protocols.default_protocol(plugins.get().dataset("cifar10")) == "auroc"
    with pytest.raises(protocols.SplitError, match=r"^cub has no splits under protocol 'auroc'; use --protocol ssb$"):
        protocols.get_split(cub, "auroc", 0)
    with pytest.raises(protocols.SplitError, match="cifar10 has no splits under protocol 'ssb'; use --protocol auroc or f1 or osrci"):
        protocols.get_split(plugins.get().dataset("cifar10"), "ssb", 0)


def test_cli_splits_prints_the_release_lists(with_cub, capsys):
    assert cli.main(["splits", "cub"]) == 0  # ssb is cub's default protocol
    out = capsys.readouterr().out.splitlines()
    table = registry.load().named_splits["ssb"]["cub"]
    assert out[1] == "known (100): " + " ".join(map(str, table.known))
    assert out[2] == "Easy (32): " + " ".join(map(str, table.unknown["Easy"]))
    assert out[3] == "Medium (34): " + " ".join(map(str, table.unknown["Medium"]))
    assert out[4] == "Hard (34): " + " ".join(map(str, table.unknown["Hard"]))
    rows = [line.split() for line in out[8:11]]
    assert [r[:2] for r in rows] == [["0", "easy"], ["1", "medium"], ["2", "hard"]]
    assert rows[2][2:5] == ["Hard", "+", "Medium"] and rows[2][5] == "68"


def test_cli_classic_protocol_for_cub_is_one_line(with_cub, capsys):
    assert cli.main(["splits", "cub", "--protocol", "auroc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cub has no splits under protocol 'auroc'; use --protocol ssb" in err[0]


def test_cli_list_shows_ssb(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "ssb 1000/1000 easy, 980 hard" in out  # imagenet-ssb's row
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert "ssb 100/32 easy, 34 medium, 68 hard" in rows["cub"] and "auroc" not in rows["cub"]
    assert "ssb 50/20 easy, 17 medium, 30 hard" in rows["aircraft"]
    assert "ssb 98/76 easy, 15 medium, 22 hard" in rows["scars"]
    assert any(line.startswith("ssb ") for line in out.splitlines())  # the protocols table


def test_registry_rejects_a_bad_named_table(tmp_path):
    (tmp_path / "splits.yaml").write_text("protocols: {}\n")
    (tmp_path / "named.yaml").write_text(
        "tables:\n  x:\n    known: [0, 1]\n    unknown: {Easy: [2]}\n    splits: {easy: [Easy], hard: [Hard]}\n")
    doc = {"splits": "splits.yaml", "protocols": {"ssb": {"tables": "named.yaml"}}, "datasets": {}}
    with pytest.raises(registry.RegistryError, match=r"protocols.ssb.tables.tables.x.splits.hard: no difficulty 'Hard'"):
        registry.parse(doc, tmp_path)
    (tmp_path / "named.yaml").write_text("tables:\n  x:\n    known: [0, 1]\n    unknown: {Easy: [2, n01]}\n"
                                          "    splits: {easy: [Easy]}\n")
    with pytest.raises(registry.RegistryError, match="unknown.Easy: expected a non-empty list of class ids or of wnids"):
        registry.parse(doc, tmp_path)


# ----------------------------------------------------------------------------- imagenet-ssb reader

def _jpeg_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (6, 5), (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _write_tree(folder: Path, files: dict[str, int], data: bytes) -> None:
    for wnid, n in files.items():
        (folder / wnid).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / wnid / f"{wnid}_{i}.JPEG").write_bytes(data)


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    """1000 ImageNet-1K class folders (2 train, 1 val image each), and some 21K-P val folders: three Easy
    wnids, two Hard ones and one of neither list."""
    root = tmp_path_factory.mktemp("imagenet")
    data = _jpeg_bytes()
    wnids = [f"n{9000000 + i:08d}" for i in range(1000)]
    _write_tree(root / "imagenet" / "train", {w: 2 for w in wnids}, data)
    _write_tree(root / "imagenet" / "val", {w: 1 for w in wnids}, data)
    (root / "imagenet" / "val" / wnids[0] / "notes.txt").write_text("not an image")  # ImageFolder skips it
    table = registry.load().named_splits["ssb"]["imagenet"]
    easy, hard = table.unknown["Easy"][:3], table.unknown["Hard"][:2]
    _write_tree(root / "imagenet21k_resized_new" / "val", {**{w: 2 for w in easy}, **{w: 1 for w in hard},
                                                          "n99999999": 3}, data)
    return root, wnids, easy, hard


def _split(index: int, wnids) -> protocols.OpenSetSplit:
    """The real split's known classes, its unknowns cut to the wnids the tree holds."""
    spec = plugins.get().dataset("imagenet-ssb")
    real = protocols.get_split(spec, "ssb", index)
    ids = protocols.unknown_wnid_ids(registry.load().named_splits["ssb"]["imagenet"])
    return protocols.OpenSetSplit(spec.name, "ssb", index, real.known, tuple(ids[w] for w in wnids))


def test_imagenet_ssb_reads_image_folders(imagenet_root):
    root, wnids, easy, hard = imagenet_root
    ids = protocols.unknown_wnid_ids(registry.load().named_splits["ssb"]["imagenet"])
    files = imagenet_ssb.load(root, _split(0, easy), 224)
    assert files.image_size == 224
    assert len(files.train) == 2000 and files.train_y.tolist() == [i for i in range(1000) for _ in range(2)]
    assert files.train.paths[:2] == tuple(str(root / "imagenet" / "train" / wnids[0] / f"{wnids[0]}_{i}.JPEG")
                                          for i in range(2))
    assert len(files.known) == 1000 and files.known_y.tolist() == list(range(1000))  # notes.txt skipped
    # only the Easy wnids: in sorted wnid order (ImageFolder's), each with its protocol id
    order = sorted(easy)
    assert files.unknown_ids.tolist() == [ids[w] for w in order for _ in range(2)]
    assert [Path(p).parent.name for p in files.unknown.paths] == [w for w in order for _ in range(2)]
    hard_files = imagenet_ssb.load(root, _split(1, hard), 224)
    assert sorted(set(hard_files.unknown_ids.tolist())) == sorted(ids[w] for w in hard)
    assert len(hard_files.unknown) == 2
    assert imagenet_ssb.check(root) == [  # the tiny tree lacks most SSB wnids, nothing else
        f"{root / 'imagenet21k_resized_new' / 'val'} lacks 1975 of the 1980 SSB wnids (e.g. "
        + ", ".join(sorted(set(ids) - set(easy) - set(hard))[:3]) + f") ({imagenet_ssb.HINT_21K})"]


def test_imagenet_ssb_missing_files_are_one_line(imagenet_root, tmp_path):
    root, wnids, easy, hard = imagenet_root
    problems = imagenet_ssb.check(tmp_path)
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert problems[0].startswith(f"missing ImageNet-1K train folder {tmp_path / 'imagenet' / 'train'}")
    assert problems[2].startswith(f"missing ImageNet-21K-P val folder {tmp_path / 'imagenet21k_resized_new' / 'val'}")
    with pytest.raises(DataNotFound, match="missing ImageNet-1K train folder"):
        imagenet_ssb.load(tmp_path, _split(0, easy), 224)
    # a real split needs every one of its wnids
    with pytest.raises(DataNotFound, match=r"lacks 997 of the split's 1000 wnids"):
        imagenet_ssb.load(root, protocols.get_split(plugins.get().dataset("imagenet-ssb"), "ssb", 0), 224)
    # 999 class folders would shift every label after the gap
    (tmp_path / "imagenet" / "train" / "n1").mkdir(parents=True)
    (tmp_path / "imagenet" / "val" / "n1").mkdir(parents=True)
    with pytest.raises(DataNotFound, match="holds 1 class folders, ImageNet-1K has 1000"):
        imagenet_ssb.load(tmp_path, _split(0, easy), 224)


# ----------------------------------------------------------------------------- training once per known set

@pytest.fixture
def twin_protocol(monkeypatch):
    """A test-only protocol with named splits on digits: two splits with the same known classes."""
    import dataclasses

    reg = registry.load()
    twin = registry.NamedSplitTable(known=(3, 1, 4, 0, 5, 9), unknown={"A": (2, 6), "B": (7, 8)},
                                    splits={"a": ("A",), "b": ("B",)})
    patched = dataclasses.replace(reg, named_splits={**reg.named_splits, "twin": {"mnist": twin}})
    monkeypatch.setattr(protocols, "load", lambda: patched)
    return patched


def test_a_second_difficulty_reuses_the_training(twin_protocol, tmp_path, monkeypatch):
    import torch

    from osrbench import checkpoints, engine, session

    def req(split, out=tmp_path, **kw):
        return engine.RunRequest(method="softmax", dataset="digits", protocol="twin", split=split, epochs=1,
                                 out=out, device="cpu", progress=False, **kw)

    first = engine.run(req(0))
    assert first.trained and first.record.shared_training is None
    lines = []
    real_steps = session.Session.epoch_steps
    monkeypatch.setattr(session.Session, "epoch_steps", lambda *a, **k: pytest.fail("trained a step"))
    second = engine.run(req(1), log=lines.append)
    assert second.epochs_trained == 0
    rec = second.record
    assert rec.split == 1 and rec.unknown_classes == (7, 8) and rec.known_classes == first.record.known_classes
    assert rec.shared_training == {"split": 0, "split_hash": first.record.split_hash}
    assert rec.history == first.record.history
    assert any("split b: the known classes and training of split a" in line for line in lines)
    a = checkpoints.read(first.record.dir / checkpoints.CHECKPOINT)
    b = checkpoints.read(rec.dir / checkpoints.CHECKPOINT)
    assert b["identity"]["split"] == 1 and b["epoch"] == 1
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]) if isinstance(a["state"][k], torch.Tensor) else True
    # the reuse is what training would give: split b trained by itself has the same weights and scores
    monkeypatch.setattr(session.Session, "epoch_steps", real_steps)
    alone = engine.run(req(1, out=tmp_path / "alone"))
    assert alone.trained and alone.record.shared_training is None
    c = checkpoints.read(alone.record.dir / checkpoints.CHECKPOINT)
    assert all(torch.equal(c["state"][k], b["state"][k]) for k in b["state"] if isinstance(b["state"][k], torch.Tensor))
    assert alone.record.metrics == rec.metrics
    # another seed or config has no finished run to share: it trains
    assert engine.shared_training(engine.plan(req(1, seed=1))) is None
    assert engine.shared_training(engine.plan(req(1, overrides={"lr": 0.05}))) is None
    assert engine.shared_training(engine.plan(req(0, out=tmp_path / "empty"))) is None  # nothing trained there


def test_numbered_protocols_never_share(tmp_path):
    from osrbench import engine

    # osrci's cifar10 rows 0 and 1 hold the same classes, but the rows are separate trials of the table
    p = engine.plan(engine.RunRequest(method="softmax", dataset="digits", protocol="osrci", split=1, out=tmp_path))
    assert engine.shared_training(p) is None


# ----------------------------------------------------------------------------- compare and report display

def _record(method, split, values, seed=0, dataset="cub", protocol="ssb"):
    from osrbench.config import config_hash
    from osrbench.records import Record

    cfg = {"epochs": 600, "batch_size": 32, "lr": 0.001}
    return Record(method=method, dataset=dataset, protocol=protocol, split=split, seed=seed, recipe="mls-ssb",
                  config=cfg, config_hash=config_hash(method, cfg), split_hash=f"h{split}", metrics=dict(values),
                  plugin={"name": "p", "distribution": "d", "version": "1"}, scores=("score",),
                  counts={"train": 6, "known": 6, "unknown": 4}, wall_time_s={"train": 1.0, "eval": 0.1})


#: method -> split -> (auroc, oscr, acc)
SSB_VALUES = {"softmax": {0: (0.881, 0.802, 0.861), 1: (0.812, 0.741, 0.861), 2: (0.790, 0.720, 0.861)},
              "arpl": {0: (0.901, 0.823, 0.871), 1: (0.835, 0.766, 0.871), 2: (0.801, 0.731, 0.871)}}


def _ssb_records(seeds=(0,)):
    out = []
    for m, by in SSB_VALUES.items():
        for k, (au, os_, acc) in by.items():
            for s in seeds:
                bump = 0.01 * s  # a second seed 1 point higher
                out.append(_record(m, k, {"auroc": au + bump, "oscr": os_ + bump, "acc": acc}, seed=s))
    return out


def test_compare_shows_named_splits_side_by_side(with_cub):
    from osrbench import compare

    c = compare.build(_ssb_records(), ["softmax", "arpl"], ["auroc", "oscr", "acc"], compare.EXACT_TIE)
    text = compare.render_comparison(c)
    assert text.splitlines()[0] == "cub, protocol ssb, splits Easy, Medium, Hard, seeds 0; values in %, one column per split"
    assert "mean +- std" not in text.split("paired")[0]  # no mean over difficulties
    lines = text.splitlines()
    for metric, col in (("AUROC", 0), ("OSCR", 1)):
        at = next(i for i, line in enumerate(lines) if line.startswith(metric))
        assert lines[at + 1].split() == ["method", "Easy", "Medium", "Hard"]
        for row, m in zip(lines[at + 3:at + 5], ("softmax", "arpl")):
            assert row.split() == [m, *(f"{100 * SSB_VALUES[m][k][col]:.2f}" for k in range(3))]
    assert "paired A - B    mean diff +- std    Easy    Medium    Hard" in text


def test_report_puts_each_difficulty_in_a_column(with_cub):
    from osrbench import report

    cells = report.build_report(_ssb_records(), ["auroc", "oscr", "acc"])
    assert [(c.key.method, c.split) for c in cells] == [("arpl", 0), ("arpl", 1), ("arpl", 2),
                                                         ("softmax", 0), ("softmax", 1), ("softmax", 2)]
    md = report.format_md(cells, ["auroc", "oscr"]).splitlines()
    at = md.index("**OSCR, protocol `ssb`**")
    assert md[at + 2] == "| method (recipe) | cub Easy | cub Medium | cub Hard |"
    assert md[at + 4] == "| arpl (mls-ssb) | 82.30 | 76.60 | 73.10 |"
    assert md[at + 5] == "| softmax (mls-ssb) | 80.20 | 74.10 | 72.00 |"
    wide = report.format_md(cells, ["auroc", "oscr"], layout="wide").splitlines()
    assert "| method (recipe) | cub Easy AUROC | cub Easy OSCR | cub Medium AUROC | cub Medium OSCR | cub Hard AUROC" \
        " | cub Hard OSCR |" in wide
    # two seeds: the seed mean, and the std over the seeds (1 point apart: sample std 0.71)
    two = report.build_report(_ssb_records(seeds=(0, 1)), ["auroc"])
    md = report.format_md(two, ["auroc"]).splitlines()
    assert "| softmax (mls-ssb) | 88.60 ± 0.71 | 81.70 ± 0.71 | 79.50 ± 0.71 |" in md
    tex = report.format_latex(cells, ["auroc"])
    assert "Method & cub Easy & cub Medium & cub Hard \\\\" in tex
    assert "softmax (mls-ssb) & 88.10 & 81.20 & 79.00 \\\\" in tex


def test_messages_name_the_split(with_cub):
    from osrbench import engine, sweep

    assert protocols.split_label("cub", "ssb", 2) == "2 (hard)"
    assert protocols.split_label("cifar10", "auroc", 2) == "2"
    assert protocols.split_title("cub", "ssb", 0) == "Easy" and protocols.split_title("cifar10", "auroc", 0) == "split 0"
    req = engine.RunRequest(method="softmax", dataset="cub", protocol="ssb", split=2)
    assert sweep.label(req) == "softmax cub/ssb split 2 (hard) seed 0"


def test_cli_split_names_reach_the_runs(with_cub, tmp_path, capsys):
    # nothing stored: compare --no-run names each missing run with its split's name, and no other split
    code = cli.main(["compare", "softmax", "--dataset", "cub", "--splits", "easy,hard", "--no-run",
                     "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert "softmax split 0 (easy) seed 0: no result in" in err and "softmax split 2 (hard) seed 0" in err
    assert "split 1" not in err
    assert cli.main(["run", "--method", "softmax", "--dataset", "cub", "--split", "hardest", "--out", str(tmp_path)]) == 2
    assert "unknown split 'hardest' for cub/ssb (valid: easy, medium, hard or 0-2)" in capsys.readouterr().err


def test_sweep_takes_split_names(with_cub, tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("methods: [softmax]\ndatasets: [cub, digits]\nsplits: [easy, hard]\nepochs: 1\n")
    argv = ["sweep", "--grid", str(grid), "--device", "cpu", "--out", str(tmp_path / "runs"), "--dry-run"]
    # digits has numbered splits only: one line naming the problem
    assert cli.main(argv) == 2
    assert "grid key 'splits' expects integers, got ['easy', 'hard']" in capsys.readouterr().err
    grid.write_text("methods: [softmax]\ndatasets: [cub, digits]\nsplits: [0, 2]\nepochs: 1\n")
    assert cli.main([*argv, "--splits", "easy,hard", "--datasets", "cub"]) == 0  # each dataset its own default
    out = capsys.readouterr().out
    assert "2 runs: 0 done already, 2 to run" in out
    assert "softmax cub/ssb split 0 (easy) seed 0 ->" in out and "softmax cub/ssb split 2 (hard) seed 0 ->" in out
