"""Split tables, relabelling by position, validation and the registry schema."""

from pathlib import Path

import pytest
import torch
import yaml

from osrbench import plugins, protocols, registry
from osrbench.data import digits

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "splits.yaml"

EXPECTED = {  # dataset -> (known per row, unknown per row)
    "digits": (6, 4), "mnist": (6, 4), "fashion-mnist": (6, 4), "svhn": (6, 4), "cifar10": (6, 4),
    "cifar+10": (4, 10), "cifar+50": (4, 50), "tiny_imagenet": (20, 180),
}


def test_split_tables_are_the_official_ones():
    # tests/data/reference_splits.yaml is a byte-for-byte copy of the shared reference splits.yaml.
    copy = Path(__file__).with_name("data") / "reference_splits.yaml"
    official = yaml.safe_load(copy.read_text())["protocols"]
    assert registry.load().splits == official  # the tables osrbench reads (osrbench/splits.yaml)
    for name in EXPECTED:  # and the splits it builds from them
        spec = plugins.get().dataset(name)
        for protocol, tables in official.items():
            for i, row in enumerate(tables[spec.table]):
                split = protocols.get_split(spec, protocol, i)
                assert split.known == tuple(row), (name, protocol, i)
                if spec.unknown_table is not None:
                    assert split.unknown == tuple(tables[spec.unknown_table][i]), (name, protocol, i)
    if REFERENCE.exists():  # in the workspace: the copy must still be the reference
        assert copy.read_bytes() == REFERENCE.read_bytes(), f"{copy} differs from {REFERENCE}; copy it again"


@pytest.mark.parametrize("protocol", ["auroc", "f1", "osrci"])
@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_every_dataset_has_five_valid_splits(dataset, protocol):
    spec = plugins.get().dataset(dataset)
    assert protocols.num_splits(spec, protocol) == 5
    for i in range(5):
        s = protocols.get_split(spec, protocol, i)
        assert (len(s.known), len(s.unknown)) == EXPECTED[dataset]
        if spec.unknown_table is None:
            assert set(s.known) | set(s.unknown) == set(range(spec.num_classes))
            assert not set(s.known) & set(s.unknown)


def test_cifar_plus_unknowns_come_from_the_cifar100_rows():
    spec = plugins.get().dataset("cifar+10")
    s = protocols.get_split(spec, "auroc", 0)
    assert s.known == (0, 1, 8, 9)
    assert s.unknown == (26, 31, 34, 44, 45, 63, 65, 77, 93, 98)


def test_known_classes_are_labelled_by_their_position_in_the_row():
    spec = plugins.get().dataset("digits")
    split = protocols.get_split(spec, "f1", 0)
    assert split.known == (3, 7, 8, 2, 4, 6)
    data = spec.load(Path("."), split, 8)
    train_x, train_y, test_x, test_y = digits.arrays()
    for label, cls in enumerate(split.known):
        want = train_x[train_y == cls]
        assert torch.equal(data.train_x[data.train_y == label], want)
        assert torch.equal(data.known_x[data.known_y == label], test_x[test_y == cls])
    assert set(data.unknown_ids.tolist()) == {0, 1, 5, 9}
    assert len(data.unknown_x) == int(torch.isin(test_y, torch.tensor([0, 1, 5, 9])).sum())


def test_digits_partition_is_stratified_and_fixed():
    train_x, train_y, test_x, test_y = digits.arrays()
    assert (len(train_x), len(test_x)) == (1201, 596)
    assert train_x.dtype == torch.uint8 and train_x.shape[1:] == (1, 8, 8) and int(train_x.max()) == 255
    for c in range(10):
        n_train, n_test = int((train_y == c).sum()), int((test_y == c).sum())
        assert abs(n_train - 2 * n_test) <= 2


def test_split_hash_depends_on_order_and_content():
    spec = plugins.get().dataset("cifar10")
    a, b = protocols.get_split(spec, "osrci", 0), protocols.get_split(spec, "osrci", 1)
    assert a.class_set_key == b.class_set_key  # the known osrci duplicate
    assert a.known != b.known and a.hash != b.hash
    assert protocols.get_split(spec, "osrci", 0).hash == a.hash


def test_bad_split_index_and_protocol_name_the_valid_ones():
    spec = plugins.get().dataset("digits")
    with pytest.raises(protocols.SplitError, match=r"valid: 0-4"):
        protocols.get_split(spec, "auroc", 5)
    with pytest.raises(protocols.SplitError, match=r"valid: auroc, f1, osrci"):
        protocols.get_split(spec, "aroc", 0)
    assert protocols.parse_indices("0-2,4", 5) == [0, 1, 2, 4]
    with pytest.raises(protocols.SplitError, match="out of range"):
        protocols.parse_indices("3-6", 5)


def _write_registry(tmp_path, mutate):
    doc = yaml.safe_load(registry.REGISTRY_PATH.read_text())
    mutate(doc)
    for name in ("splits.yaml", "ssb_splits.yaml"):  # the split files the registry names
        (tmp_path / name).write_text(registry.REGISTRY_PATH.with_name(name).read_text())
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path / "registry.yaml"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["datasets"]["svhn"].update(image_size="big"), r"datasets\.svhn\.image_size: expected int"),
        (lambda d: d["datasets"]["svhn"].pop("table"), r"datasets\.svhn\.table: missing"),
        (lambda d: d["datasets"]["svhn"].update(colour=True), r"datasets\.svhn\.colour: unknown key"),
        (lambda d: d["protocols"].update(extra={}), r"protocols\.extra: no split table"),
        (lambda d: d.pop("datasets"), r"registry\.datasets: missing"),
    ],
)
def test_registry_schema_errors_name_the_key_path(tmp_path, mutate, message):
    path = _write_registry(tmp_path, mutate)
    with pytest.raises(registry.RegistryError, match=message):
        registry.load.__wrapped__(path)


def test_registry_is_read_safely(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(registry.RegistryError, match="not valid YAML"):
        registry.load.__wrapped__(path)
