"""Keys added later (randaugment_n, backbone, backbone_weights, crop_pct, test_interpolation, DIAS's
label_smoothing) leave the config hash of every earlier run as it was at their earlier value, so a
finished run keeps its record and run folder and an unfinished one still resumes.

The hashes below were computed at commit 83bda01, before any of these keys existed."""

import pytest

from osrbench import config as configmod
from osrbench import plugins

BEFORE = {  # (method, dataset): (config hash, resume key) of the default recipe at 83bda01
    ("softmax", "digits"): ("da85f224e056f675", "1d2924e9c361ef57"),
    ("softmax", "cifar10"): ("31f1791604c3b8b9", "4df5a58380e64ead"),
    ("openmax", "digits"): ("9076b1d42a3a22e2", "4da28337610d0d7d"),
    ("openmax", "cifar10"): ("5d0c40f4fc6787b9", "063528b95a48cda8"),
    ("arpl", "digits"): ("83e60be618a2195f", "899f02ffa1c2e1cf"),
    ("arpl", "cifar10"): ("e623704fc17c4cfa", "ff4ce51e05de7e97"),
    ("arpl-cs", "digits"): ("e686e6235aa28c04", "92b9d41912c75574"),
    ("arpl-cs", "cifar10"): ("8e03709ba1fa173c", "6936bfe99e066b96"),
    ("gcpl", "digits"): ("2880d2537819461b", "95b0f2d2e36bb251"),
    ("gcpl", "cifar10"): ("3bde3441e22faf13", "d9b68d484de655ca"),
    ("rpl", "digits"): ("0b669748e0759d02", "2a8af138d3b7090c"),
    ("rpl", "cifar10"): ("fc3b2b6b3345a032", "4f417a13c1215779"),
    ("cac", "digits"): ("7951e68c518ead4a", "199aae16a76b571d"),
    ("cac", "cifar10"): ("887242bb06950d37", "b01dc60499e7710f"),
    ("dias", "digits"): ("502a3cac10ac34a2", "d0ffbd4ce564d246"),
    ("dias", "cifar10"): ("da92ff6d9855fe75", "a4d815ec8b9422d8"),
    ("medaf", "digits"): ("adab8b40895c127f", "bf7b2b99e7358042"),
    ("medaf", "cifar10"): ("68d650b0f79e0192", "26f47f3eb402c309"),
}


@pytest.mark.parametrize("method,dataset", sorted(BEFORE))
def test_default_runs_keep_their_hashes(method, dataset):
    reg = plugins.get()
    _, cfg = configmod.resolve(reg.method(method), reg.dataset(dataset))
    assert (configmod.config_hash(method, cfg), configmod.resume_key(method, cfg)) == BEFORE[method, dataset]


def test_a_later_key_away_from_its_earlier_value_enters_the_hash():
    reg = plugins.get()
    _, cfg = configmod.resolve(reg.method("softmax"), reg.dataset("cifar10"))
    base = configmod.config_hash("softmax", cfg)
    for key, value in (("randaugment_n", 2), ("backbone", "resnet50")):
        assert configmod.config_hash("softmax", {**cfg, key: value}) != base, key
    # softmax always had label_smoothing: its 0.0 stays in the hash (only DIAS gained the key later)
    assert configmod.config_hash("softmax", {k: v for k, v in cfg.items() if k != "label_smoothing"}) != base
