"""The Semantic Shift Benchmark end to end, as a researcher types it: softmax on a ResNet-50 with the
MLS release's fine-grained recipe (mls-ssb) on CUB files in the official archive's layout, split Easy
and split Hard (which evaluates Easy's training on the Hard unknowns, as the release evaluates one
network on both), then compare and report show Easy and Hard side by side with AUROC and OSCR.

The images are a few pixels and the network is trained one epoch at 32 px: what is checked is the
path (reader, protocol, file feed, backbone, recipe, shared training, tables), not the numbers."""

import json

from osrbench import cli, records
from osrbench.testing.standins import write_cub

RUN = ["run", "--method", "softmax", "--dataset", "cub", "--recipe", "mls-ssb", "--epochs", "1",
       "--set", "image_size=32", "--device", "cpu", "--quiet"]


def test_softmax_resnet50_mls_ssb_on_cub_files_reports_easy_and_hard(tmp_path, capsys):
    write_cub(tmp_path)
    where = ["--data-root", str(tmp_path), "--out", str(tmp_path / "runs")]
    assert cli.main([*RUN, "--split", "easy", *where]) == 0
    assert cli.main([*RUN, "--split", "hard", *where]) == 0
    capsys.readouterr()

    found = {}
    for path in sorted((tmp_path / "runs").rglob(records.RESULT)):
        doc = json.loads(path.read_text())
        found[doc["split"]] = doc
    assert set(found) == {0, 2}  # easy = 0, hard = 2 (Hard + Medium, as the release evaluates it)
    easy, hard = found[0], found[2]
    for doc in (easy, hard):
        assert doc["protocol"] == "ssb" and doc["config"]["backbone"] == "resnet50"
        assert (doc["config"]["randaugment"], doc["config"]["randaugment_n"], doc["config"]["label_smoothing"]) == (30, 2, 0.3)
        assert doc["counts"]["train"] == 100 and doc["counts"]["known"] == 100
    # The SSB lists: 32 Easy classes, 34 Medium + 34 Hard; one test image per class in the stand-in.
    assert (easy["counts"]["unknown"], hard["counts"]["unknown"]) == (32, 68)
    assert hard["shared_training"]["split"] == 0 and "shared_training" not in easy
    assert easy["metrics"]["acc"] == hard["metrics"]["acc"]  # one network, the same known test images

    assert cli.main(["compare", "softmax", "--dataset", "cub", "--recipe", "mls-ssb", "--splits", "easy,hard",
                     "--epochs", "1", "--set", "image_size=32", "--no-run", "--metrics", "auroc,oscr",
                     *where]) == 0
    table = capsys.readouterr().out
    assert "Easy" in table and "Hard" in table and "OSCR" in table.upper()
    assert f"{100 * easy['metrics']['auroc']:.2f}" in table and f"{100 * hard['metrics']['auroc']:.2f}" in table

    assert cli.main(["report", "--runs", str(tmp_path / "runs")]) == 0
    report = capsys.readouterr().out
    assert "Easy" in report and "Hard" in report
