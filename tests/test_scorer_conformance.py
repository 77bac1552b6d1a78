"""osrbench.testing.scorers: the built-in scorers pass; a broken scorer fails the check of its contract."""

from __future__ import annotations

import pytest
import torch

import osrbench
from osrbench import plugins
from osrbench.testing.__main__ import _main
from osrbench.testing.scorers import SCORER_CHECKS, check_scorer

BUILTIN = ["msp", "mls", "energy", "gen", "odin", "mahalanobis", "knn", "vim", "react", "openmax"]


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_scorer_passes(name):
    report = check_scorer(name)
    assert [r.name for r in report.results] == list(SCORER_CHECKS) and report.ok
    if name == "vim":  # the toy's non-affine head: ViM says so instead of failing
        assert "not applicable: vim: the method's head is not affine" in report["not_affine"].message


def _spec(score, **kw):
    return osrbench.ScoreSpec(name="broken", score=score, **kw)


@pytest.mark.parametrize("score, kw, check, message", [
    (lambda v, f, p: -v.logits.max(1).values, {}, "direction", "inverted? higher must mean more likely known"),
    (lambda v, f, p: torch.where(v.logits[:, 0] > 100, v.logits[:, 0], torch.nan) + v.logits.max(1).values, {},
     "finite", "non-finite score"),
    (lambda v, f, p: v.logits.max(1, keepdim=True).values, {}, "shape", "returned shape (60, 1), expected (60,)"),
    (lambda v, f, p: v.logits.max(1).values + 1e-3 * torch.rand(len(v.logits)), {}, "deterministic",
     "different scores"),
    (lambda v, f, p: v.logits.max(1).values if p["t"] < 3 else v.logits[:5, 0], {"params": {"t": 1}, "grid": {"t": [1, 5]}},
     "grid", "candidate {'t': 5}"),
])
def test_a_broken_scorer_fails_the_check_of_its_contract(score, kw, check, message):
    report = check_scorer(_spec(score, **kw), raise_on_failure=False)
    assert not report[check].ok and report[check].message.startswith(f"{check}: ") and message in report[check].message
    with pytest.raises(AssertionError, match=f"(?s)scorer 'broken' broke .*{check}: "):
        check_scorer(_spec(score, **kw))


def test_a_scorer_that_applies_to_no_network_fails_and_not_applicable_on_a_curved_head_passes():
    from osrbench.scorers.posthoc import affine_head

    def affine_only(view, fitted, params):  # the maximum logit recomputed from the head's W and b
        w, b = affine_head(view.network.head64, view.penultimate.shape[1], scorer="broken")
        return (view.penultimate @ w.T + b).max(1).values

    report = check_scorer(_spec(affine_only, needs={"features", "head"}))
    assert "not applicable: broken: the method's head is not affine" in report["not_affine"].message

    def never(view, fitted, params):
        raise osrbench.NotApplicable("broken: never")

    report = check_scorer(_spec(never), raise_on_failure=False)
    assert not report["grid"].ok and "the defaults {} do not apply to the toy: broken: never" in report["grid"].message


def test_the_command_line(capsys):
    assert _main(["--scorer", "msp", "--scorer", "energy"]) == 0
    out = capsys.readouterr().out
    assert "osrbench conformance of scorer 'msp' on cpu" in out and out.count("all checks passed") == 2
    assert _main(["--scorer", "no-such-scorer"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("osrbench: error: ") and "no-such-scorer" in err and err.count("\n") == 1
    assert plugins.get().scorer("msp").name == "msp"
