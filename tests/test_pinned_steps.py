"""Pinned float64 training steps: a refactor of the engine, the session or a method must keep them.

Each built-in method is trained one float64 epoch by :func:`osrbench.testing.pinned.pinned_epoch`
(48 digits training images, 3 batches of 16, seed 0, one thread, every phase). The loss
terms of every step and the sum of |parameters and optimiser states| are pinned to values taken
from the code that was compared step by step with the releases (and, for this refactor, from the
engine before it: the same numbers). A change in any of them means the math changed.

``data/pinned_states.json`` pins every tensor of the state after that epoch (three float64
digests of each float tensor, a hash of each integer one: BN batch counts, optimiser steps). It
was written by the code before the kernel-count work of issue 20 (foreach zeroing, persistent zero
gradients, batch counts in one kernel, whole-pass augmentation), which had to leave it unchanged.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from osrbench import plugins
from osrbench.testing.pinned import pinned_epoch, state_abs_sum, state_digests

PINNED = {
    "softmax": {
        "losses": [
            {"train/loss": 1.9472554779061964},
            {"train/loss": 1.6627269389127792},
            {"train/loss": 1.1704686634725476},
        ],
        "state_abs_sum": 50136.47719636492,
    },
    "arpl": {
        "losses": [
            {"arpl/loss": 1.9369240689668439},
            {"arpl/loss": 1.8400393249505094},
            {"arpl/loss": 1.8797046949687783},
        ],
        "state_abs_sum": 59285.177145192545,
    },
    # gcpl, rpl: plugins/arpl/tests/test_gcpl_rpl.py checks their steps against replicas of the
    # release's GCPLoss / RPLoss and its optimiser.
    "gcpl": {
        "losses": [
            {"gcpl/loss": 1.8232685179551467},
            {"gcpl/loss": 1.8169929338710626},
            {"gcpl/loss": 1.816676192369448},
        ],
        "state_abs_sum": 42287.904181327525,
    },
    "rpl": {
        "losses": [
            {"rpl/loss": 1.8218513647296513},
            {"rpl/loss": 1.8209148253304805},
            {"rpl/loss": 1.816172919320449},
        ],
        "state_abs_sum": 42274.63788834716,
    },
    "arpl-cs": {
        "losses": [
            {"cs/loss": 2.5283302013444118, "cs/g": 0.4750063884762344, "cs/d": 1.474737286567688},
            {"cs/loss": 2.2792817977210023, "cs/g": 0.4929705515630436, "cs/d": 1.456546425819397},
            {"cs/loss": 1.5225133444778987, "cs/g": 0.5112336370172288, "cs/d": 1.4392659664154053},
            {"arpl/loss": 2.1197699268815073},
            {"arpl/loss": 1.1863901662975502},
            {"arpl/loss": 0.8411076652256685},
        ],
        "state_abs_sum": 76858.23980980348,
    },
    "dias": {
        "losses": [
            {"gan/d": 1.39248526096344, "gan/g": 0.5872270912005749, "gan/g_adv": 0.7742072343826294, "gan/g_cls": 1.869801431820545, "gan/c": 2.21698296836015, "gan/c_ce": 2.030816102945209, "gan/c_gan": 1.8616686541494132},
            {"gan/d": 1.3814334869384766, "gan/g": 0.5734497347535009, "gan/g_adv": 0.7654022574424744, "gan/g_cls": 1.9195252268897347, "gan/c": 1.807289425747886, "gan/c_ce": 1.616781147747451, "gan/c_gan": 1.9050827800043508},
            {"gan/d": 1.3722907304763794, "gan/g": 0.5644418050389144, "gan/g_adv": 0.7587380409240723, "gan/g_cls": 1.9429623588515788, "gan/c": 1.78474439038231, "gan/c_ce": 1.5868009096859508, "gan/c_gan": 1.9794348069635923},
            {"copycat/p": 2.586742405158771, "copycat/p_ce": 2.088122227023396, "copycat/pull": 0.4986201781353753, "copycat/c": 0.9610088369838024, "copycat/c_ce": 0.7738599481992698, "copycat/fake": 1.8714888878453255},
            {"copycat/p": 2.2346964839976913, "copycat/p_ce": 1.7110813800350286, "copycat/pull": 0.5236151039626626, "copycat/c": 1.212118367742209, "copycat/c_ce": 1.0069285146133107, "copycat/fake": 2.0518985312889826},
            {"copycat/p": 1.923372472748892, "copycat/p_ce": 1.3389614531388594, "copycat/pull": 0.5844110196100325, "copycat/c": 0.9553787940183476, "copycat/c_ce": 0.7520648799167985, "copycat/fake": 2.0331391410154906},
        ],
        "state_abs_sum": 121442.12815090537,
    },
}


PINNED_STATES = json.loads((Path(__file__).parent / "data" / "pinned_states.json").read_text())


def pinned_run(name: str) -> dict:
    run = pinned_epoch(name)
    return {"losses": run.losses, "state_abs_sum": state_abs_sum(run.state), "digests": state_digests(run.state)}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_float64_training_steps_are_pinned(name):
    if name not in plugins.get().methods:
        pytest.skip(f"plugin of {name!r} not installed")
    got, want = pinned_run(name), PINNED[name]
    assert [sorted(row) for row in got["losses"]] == [sorted(row) for row in want["losses"]]
    for step, (g, w) in enumerate(zip(got["losses"], want["losses"])):
        for key in w:
            assert math.isclose(g[key], w[key], rel_tol=1e-12, abs_tol=1e-15), (step, key, g[key], w[key])
    assert math.isclose(got["state_abs_sum"], want["state_abs_sum"], rel_tol=1e-12), got["state_abs_sum"]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_float64_state_after_the_pinned_epoch_is_pinned_tensor_by_tensor(name):
    if name not in plugins.get().methods:
        pytest.skip(f"plugin of {name!r} not installed")
    got, want = pinned_run(name)["digests"], PINNED_STATES[name]
    assert sorted(got) == sorted(want)
    for key, w in want.items():
        g = got[key]
        if isinstance(w, str):
            assert g == w, key  # integer state (batch counts, steps): exact
            continue
        scale = max(1.0, w[1])  # |x| summed: the sums' rounding is relative to it
        assert all(abs(a - b) <= 1e-12 * scale for a, b in zip(g, w)), (key, g, w)
