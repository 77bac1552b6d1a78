"""The softmax plugin (METHODS.md §4) on the embedded digits dataset."""

from osrbench import engine


def _req(tmp_path, method="softmax", **kw):
    kw.setdefault("epochs", 2)
    return engine.RunRequest(method=method, dataset="digits", out=tmp_path, device="cpu", progress=False,
                             checkpoint_every=1, **kw)


def test_softmax_on_digits_scores_knowns_higher(tmp_path):
    rec = engine.run(_req(tmp_path, epochs=3)).record
    assert rec.metrics["acc"] > 0.8
    assert rec.metrics["auroc"] > 0.7  # an inverted score would sit far below 0.5
