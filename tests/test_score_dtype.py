"""``score_dtype``: the built-in methods' softmax scores in float64 (default) or as the releases compute them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osrbench import engine, records
from osrbench.metrics import auroc
from osrbench.training import logit_scores


def test_float32_scores_are_the_releases_and_saturate_where_float64_does_not():
    z = torch.tensor([[40.0, 0.0, 0.0], [30.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    release = torch.softmax(z, dim=1).max(1).values  # the releases: float32 logits, float32 softmax
    f32 = logit_scores(z, dtype="float32")["msp"]
    f64 = logit_scores(z)["msp"]
    assert f32.dtype == torch.float32 and torch.equal(f32, release)
    assert f32[:2].tolist() == [1.0, 1.0]  # the two confident images tie at exactly 1.0 ...
    assert f64[0] > f64[1] and f64.dtype == torch.float64  # ... float64 still ranks them
    # ties at 1.0 against an unknown that also saturates: AUROC moves with the dtype
    known, unknown = torch.tensor([[40.0, 0.0, 0.0]]), torch.tensor([[30.0, 1.0, 0.0]])
    assert auroc(logit_scores(known, dtype="float32")["msp"].numpy(), logit_scores(unknown, dtype="float32")["msp"].numpy()) == 0.5
    assert auroc(logit_scores(known)["msp"].numpy(), logit_scores(unknown)["msp"].numpy()) == 1.0


@pytest.mark.parametrize("method", ["softmax", "dias"])
def test_a_run_with_score_dtype_float32_stores_the_releases_msp(tmp_path, method):
    req = engine.RunRequest(method=method, dataset="digits", epochs=1, out=tmp_path, device="cpu", progress=False,
                            overrides={"score_dtype": "float32"})
    rec = engine.run(req).record
    assert rec.config["score_dtype"] == "float32"
    scores = records.read_scores(rec.dir, rec)
    want = torch.softmax(torch.from_numpy(scores.known_logits).float(), dim=1).max(1).values.double().numpy()
    assert np.array_equal(scores.known["msp"], want)
    default = engine.run(engine.RunRequest(method=method, dataset="digits", epochs=1, out=tmp_path, device="cpu",
                                           progress=False)).record
    assert default.config["score_dtype"] == "float64" and default.config_hash != rec.config_hash
    assert np.array_equal(records.read_scores(default.dir, default).known_logits, scores.known_logits)


def test_a_run_recorded_before_score_dtype_existed_is_rebuilt_as_it_ran(tmp_path):
    from osrbench import rescore

    rec = engine.run(engine.RunRequest(method="softmax", dataset="digits", epochs=1, out=tmp_path, device="cpu",
                                       progress=False)).record
    old = records.write_record(rec.dir, rec.replace(config={k: v for k, v in rec.config.items() if k != "score_dtype"}))
    assert "score_dtype" not in old.config
    again = rescore.scores_from_checkpoint(old)
    stored = records.read_scores(old.dir, old)
    assert np.array_equal(again.known["msp"], stored.known["msp"])
    rescore.check_reproduced(old, again, torch.device("cpu"))
