"""``osrbench score`` and ``compare --score``: every built-in scorer on real digits runs, stored and bound."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from osrbench import cli, engine, plugins, records, scoring
from osrbench.method import implements

SCORERS = ("msp", "mls", "energy", "gen", "odin", "mahalanobis", "knn", "vim", "react", "openmax")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """softmax and arpl on digits, splits 0 and 1, one epoch each."""
    out = tmp_path_factory.mktemp("runs")
    recs = {}
    for method in ("softmax", "arpl"):
        for split in (0, 1):
            req = engine.RunRequest(method=method, dataset="digits", split=split, epochs=1, out=out, device="cpu",
                                    progress=False)
            recs[method, split] = engine.run(req).record
    return out, recs


def _score(capsys, *argv):
    code = cli.main(["score", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_builtin_scorer_is_registered():
    assert tuple(plugins.get().scorers) == SCORERS


def test_score_applies_every_scorer_stores_them_and_prints_the_matrix(runs, capsys):
    out, recs = runs
    code, text, err = _score(capsys, "--runs", str(out))
    assert code == 0, err
    assert "AUROC (higher is better)" in text and "FPR95 (lower is better)" in text
    header = next(line for line in text.splitlines() if line.startswith("method (recipe, run folder hash)"))
    assert header.split()[-11:] == ["own", *SCORERS]
    # the hash shown is the one in the run folders' names, which a user can search for
    assert f"softmax (arpl-release, {Path(recs['softmax', 0].dir).name.rsplit('-', 1)[-1]})" in text
    softmax = records.read_posthoc(recs["softmax", 0].dir, recs["softmax", 0])
    arpl = records.read_posthoc(recs["arpl", 0].dir, recs["arpl", 0])
    assert set(softmax.info) == set(SCORERS) and set(softmax.names) <= set(SCORERS)
    # ARPL's logits are distances to reciprocal points: not affine in the features, so ViM does not apply
    assert "not affine" in arpl.not_applicable("vim") and "vim" not in arpl.names
    assert "the method's head is not affine" in text
    # independent of the scorer code: softmax's own float64 MSP and the maximum of its stored logits
    stored = records.read_scores(recs["softmax", 0].dir, recs["softmax", 0])
    assert np.array_equal(softmax.known["msp"], stored.known["msp"])
    assert np.array_equal(softmax.unknown["mls"], stored.unknown_logits.max(1))
    for name in softmax.names:
        assert softmax.known[name].shape == stored.known["score"].shape
        assert np.isfinite(softmax.known[name]).all() and np.isfinite(softmax.unknown[name]).all()
    # the default policy: tuned only where README's table says tuning earned it (test_score_params.py)
    for name in softmax.names:
        spec = plugins.get().scorer(name)
        assert softmax.info[name]["tuned"] == scoring.will_tune(spec, None), name
        if not softmax.info[name]["tuned"]:
            assert softmax.info[name]["params"] == dict(spec.params)
    # the chosen values are printed, one row per method and scorer when every split used the same
    assert "parameters each scorer used" in text
    assert re.search(r"^softmax\s+energy\s+temperature=1\s+all splits$", text, re.M)


def test_tune_tunes_every_grid_and_prints_what_it_chose(runs, capsys):
    out, recs = runs
    code, text, err = _score(capsys, "--runs", str(out), "--method", "softmax", "--scorer", "energy", "--tune")
    assert code == 0, err
    chosen = []
    for split in (0, 1):
        info = records.read_posthoc(recs["softmax", split].dir, recs["softmax", split]).info["energy"]
        assert info["tuned"] and info["params"]["temperature"] in (1, 10, 100, 1000)
        assert [c["params"]["temperature"] for c in info["tuning"]["candidates"]] == [1, 10, 100, 1000]
        chosen.append(scoring.describe_params(info))
    for text_of_split in chosen:
        assert text_of_split in text
    # asked without --tune again: the stored tuned scores are not what the default asks, so recomputed
    code, text, _ = _score(capsys, "--runs", str(out), "--method", "softmax", "--scorer", "energy")
    info = records.read_posthoc(recs["softmax", 0].dir, recs["softmax", 0]).info["energy"]
    assert code == 0 and info["tuned"] == scoring.will_tune(plugins.get().scorer("energy"), None)


def test_a_hand_set_parameter_reaches_the_scorer_is_recorded_and_never_tuned(runs, capsys):
    out, recs = runs
    code, text, err = _score(capsys, "--runs", str(out), "--method", "softmax", "--scorer",
                             "energy:temperature=10,gen:m=5", "--tune")
    assert code == 0, err
    rec = recs["softmax", 0]
    ph = records.read_posthoc(rec.dir, rec)
    info = ph.info["energy"]
    assert info["params"] == {"temperature": 10} and info["hand_set"] == {"temperature": 10} and not info["tuned"]
    # independent of the scorer code: 10 * logsumexp(logits / 10) of the stored test logits
    stored = records.read_scores(rec.dir, rec)
    want = 10 * torch.logsumexp(torch.as_tensor(stored.unknown_logits, dtype=torch.float64) / 10, dim=1)
    assert np.allclose(ph.unknown["energy"], want.numpy(), rtol=1e-12, atol=1e-12)
    # gen: m set by hand, gamma still tuned (--tune) over its grid with m fixed
    gen = ph.info["gen"]
    assert gen["hand_set"] == {"m": 5} and gen["tuned"] and gen["params"]["m"] == 5
    assert {c["params"]["m"] for c in gen["tuning"]["candidates"]} == {5}
    assert re.search(r"^softmax\s+energy\s+temperature=10 \(hand-set\)\s+all splits$", text, re.M)
    assert "m=5 (hand-set)" in text


def test_scores_are_reused_and_recomputed_identically_with_force(runs, capsys):
    out, recs = runs
    _score(capsys, "--runs", str(out), "--method", "softmax", "--scorer", "knn,odin")
    path = recs["softmax", 1].dir / records.POSTHOC
    before, stamp = records.read_posthoc(path.parent, recs["softmax", 1]), path.stat().st_mtime_ns
    code, text, _ = _score(capsys, "--runs", str(out), "--method", "softmax", "--scorer", "knn,odin")
    assert code == 0 and path.stat().st_mtime_ns == stamp  # nothing to compute
    code, _, _ = _score(capsys, "--runs", str(out), "--method", "softmax", "--scorer", "knn,odin", "--force")
    again = records.read_posthoc(path.parent, recs["softmax", 1])
    assert code == 0 and path.stat().st_mtime_ns != stamp
    for name in ("knn", "odin"):
        assert np.array_equal(before.known[name], again.known[name]) and before.info[name] == again.info[name]


def test_no_tune_uses_the_defaults(runs, capsys):
    out, recs = runs
    code, _, _ = _score(capsys, "--runs", str(out), "--method", "arpl", "--scorer", "react", "--no-tune", "--force")
    info = records.read_posthoc(recs["arpl", 0].dir, recs["arpl", 0]).info["react"]
    assert code == 0 and info["params"] == {"percentile": 90} and info["tuning"] is None and not info["tuned"]


def test_a_foreign_or_edited_posthoc_file_is_refused_in_one_line(runs, capsys, tmp_path):
    out, recs = runs
    copy = tmp_path / "runs"
    shutil.copytree(out, copy)
    _score(capsys, "--runs", str(out), "--method", "softmax", "--scorer", "msp")
    a, b = recs["softmax", 0], recs["softmax", 1]
    target = copy / b.dir.relative_to(out) / records.POSTHOC
    shutil.copy(a.dir / records.POSTHOC, target)
    code, _, err = _score(capsys, "--runs", str(copy), "--method", "softmax", "--scorer", "msp")
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("osrbench: error: ") and "belongs to another run (split 0 (expected 1)" in last
    assert "Traceback" not in err
    with np.load(target) as z:
        arrays = dict(z)
    arrays["known/msp"] = arrays["known/msp"] * 0.5
    np.savez(target, **arrays)
    code, _, err = _score(capsys, "--runs", str(copy), "--method", "softmax", "--scorer", "msp")
    assert code == 2 and "content hash mismatch" in err


def test_an_unknown_scorer_is_one_line_with_a_hint(runs, capsys):
    code, _, err = _score(capsys, "--runs", str(runs[0]), "--scorer", "enrgy")
    assert code == 2 and "unknown scorer 'enrgy'" in err and "did you mean 'energy'?" in err


@pytest.mark.parametrize("scorer", ["knn:k=0", "react:percentile=101", "energy:temperature=-1", "openmax:distance=foo"])
def test_a_value_the_scorer_cannot_use_is_refused_before_anything_is_scored(runs, capsys, tmp_path, scorer):
    copy = tmp_path / "runs"
    shutil.copytree(runs[0], copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    code, _, err = _score(capsys, "--runs", str(copy), "--scorer", scorer)
    assert code == 2 and "must be" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before  # nothing written


def test_compare_under_one_scorer(runs, capsys):
    out, recs = runs
    code = cli.main(["compare", "softmax", "arpl", "--dataset", "digits", "--splits", "0-1", "--epochs", "1",
                     "--out", str(out), "--no-run", "--score", "mahalanobis", "--metrics", "auroc,macro_f1"])
    text = capsys.readouterr().out
    assert code == 0 and "post-hoc scorer 'mahalanobis'" in text
    assert "note: parameters of 'mahalanobis': no parameters (4 runs)" in text
    ph = records.read_posthoc(recs["arpl", 1].dir, recs["arpl", 1])
    stored = records.read_scores(recs["arpl", 1].dir, recs["arpl", 1])
    value = ph.metrics("mahalanobis", stored)["auroc"]
    assert f"{100 * value:.2f}" in text
    assert "(no macro-F1: a scorer has no threshold rule)" in text
    assert "macro-F1, higher" not in text and "macro-F1 (" not in text.split("threshold rule)")[1]


def test_tuning_holds_out_known_training_classes_only():
    labels = np.repeat(np.arange(6), 50)
    h = scoring.holdout(labels, 6, seed=0)
    assert len(h.held_out_classes) == 2 and set(h.known_classes) | set(h.held_out_classes) == set(range(6))
    assert set(labels[h.unknown_idx]) == set(h.held_out_classes)
    assert not set(labels[h.fit_idx]) & set(h.held_out_classes) and not set(h.fit_idx) & set(h.val_idx)
    assert len(h.val_idx) == 4 * 10  # 20 % of each remaining class
    assert scoring.holdout(labels, 6, seed=0).held_out_classes == h.held_out_classes
    assert scoring.holdout(labels, 4, seed=0).held_out_classes.__len__() == 1


def test_tuning_keeps_the_defaults_unless_a_candidate_clearly_beats_them():
    """On a toy set where the held-out classes are far away, every temperature separates them
    perfectly: the defaults stay. A scorer whose default is useless is replaced."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(40)
    logits = torch.randn(120, 3, generator=g, dtype=torch.float64) + 8 * torch.nn.functional.one_hot(labels, 3)
    view = scoring.View(logits, None, labels)
    images = torch.zeros(120, 1, 1, 1, dtype=torch.uint8)
    spec = plugins.get().scorer("energy")
    tuned = scoring.tune(spec, view, images, None, lambda x: x, seed=0)
    assert tuned.params == spec.params and len(tuned.report["candidates"]) == 4
    flat = scoring.ScoreSpec("flat", lambda v, f, p: v.logits.max(1).values * p["w"], params={"w": 0.0},
                             grid={"w": [0.0, 1.0]})
    assert scoring.tune(flat, view, images, None, lambda x: x, seed=0).params == {"w": 1.0}


def test_builtin_methods_expose_features_and_head():
    for name in ("softmax", "openmax", "gcpl", "rpl", "arpl", "arpl-cs", "dias"):
        method = plugins.get().method(name).factory()
        assert implements(method, "features") and implements(method, "head")
        assert implements(method, "fit") == (name == "openmax")  # only OpenMax learns after training


def test_the_guide_s_third_party_scorer_works_as_written(tmp_path, monkeypatch):
    """The scorer plugin of docs/PLUGINS.md, installed as written (module and entry point): the
    host registers it and it scores a toy problem's knowns above its unknowns."""
    import importlib
    import re
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[1] / "docs" / "PLUGINS.md").read_text()
    code = re.search(r"```python\n(# my_package/scores\.py.*?)```", guide, re.S).group(1)
    (tmp_path / "my_package").mkdir()
    (tmp_path / "my_package" / "__init__.py").write_text("")
    (tmp_path / "my_package" / "scores.py").write_text(code)
    info = tmp_path / "my_package-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-package\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[osrbench]\nmaxcos = my_package.scores\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    reg = plugins.Plugins()
    assert reg.infos["maxcos"].error is None and reg.infos["maxcos"].scorers == ["maxcos"]
    maxcos = reg.scorer("maxcos")
    g = torch.Generator().manual_seed(0)
    means = torch.eye(3, 8, dtype=torch.float64) * 5
    labels = torch.arange(3).repeat_interleave(20)
    train = scoring.View(torch.zeros(60, 3, dtype=torch.float64), means[labels] + torch.randn(60, 8, generator=g), labels)
    fitted = scoring.fit(maxcos, maxcos.params, train)
    known = scoring.View(torch.zeros(30, 3, dtype=torch.float64), means[labels[:30]] + torch.randn(30, 8, generator=g))
    unknown = scoring.View(torch.zeros(30, 3, dtype=torch.float64), -means[labels[:30]] + torch.randn(30, 8, generator=g))
    from osrbench.metrics import auroc

    k = scoring.apply(maxcos, fitted, {}, known, None, lambda x: x)
    u = scoring.apply(maxcos, fitted, {}, unknown, None, lambda x: x)
    assert auroc(k, u) == 1.0
    for name in ("my_package.scores", "my_package"):
        monkeypatch.delitem(sys.modules, name, raising=False)
