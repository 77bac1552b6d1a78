"""Checks ``features`` and ``fit``: the optional penultimate features / head and the fit stage."""

from __future__ import annotations

import io
from typing import Any, Iterator

import torch

from osrbench import session
from osrbench.data.stream import to_input
from osrbench.method import Features, implements
from osrbench.testing.runs import _calling, _calls, _check_state_types, _fail, _Session


def _check_features(s: _Session) -> str:
    sess: session.Session = s.part("features", "session")
    method = sess.method
    if not implements(method, "features"):
        return "no features(): post-hoc scorers needing features or input gradients do not apply"
    x = to_input(s.data().known_x.to(s.device), sess.config["normalize"])
    with torch.no_grad(), _calling("features", "features(images)"):
        out = method.features(x)
    with torch.no_grad(), _calling("features", "predict(images)"):
        logits = method.predict(x).logits
    if not isinstance(out, Features):
        raise _fail("features", f"features() returned {type(out).__name__}, expected an osrbench.Features")
    n = len(x)
    if not (torch.is_tensor(out.penultimate) and out.penultimate.dim() == 2 and len(out.penultimate) == n):
        raise _fail("features", f"penultimate features have shape {getattr(out.penultimate, 'shape', None)}, "
                                f"expected ({n}, D)")
    if not (torch.is_tensor(out.logits) and out.logits.shape == logits.shape
            and torch.allclose(out.logits.float(), logits.float(), rtol=1e-5, atol=1e-5)):
        raise _fail("features", "features().logits differ from predict().logits on the same images")
    if implements(method, "head"):
        with torch.no_grad(), _calling("features", "head(penultimate)"):
            back = method.head(out.penultimate)
        if not (torch.is_tensor(back) and back.shape == logits.shape
                and torch.allclose(back.float(), logits.float(), rtol=1e-5, atol=1e-5)):
            raise _fail("features", "head(features().penultimate) does not give the logits back")
    xg = x.clone().requires_grad_(True)
    with _calling("features", "features(images) under torch.enable_grad()"), torch.enable_grad():
        z = method.features(xg).logits
    if not z.requires_grad:
        raise _fail("features", "features() returned logits without a graph back to the images: do not decorate "
                                "it with torch.no_grad() (input-gradient scorers such as ODIN differentiate it)")
    (grad,) = torch.autograd.grad(z.max(1).values.sum(), xg, allow_unused=True)  # leaves the parameters' .grad alone
    if grad is None or not torch.isfinite(grad).all():
        raise _fail("features", "the logits of features() have no finite gradient with respect to the images")
    return (f"penultimate {tuple(out.penultimate.shape)}, logits equal predict's"
            + (", head gives them back" if implements(method, "head") else ", no head()") + ", differentiable")


def _check_fit(s: _Session) -> str:
    s.part("fit", "session")  # it needs a method that trains
    sess = s.fresh("fit")
    if not sess.fits:
        return "no fit stage"
    s.epoch("fit", sess, 0)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    fit = sess.method.fit

    def spy(batches: Any) -> Any:  # what the host passes, recorded on the way to the method's own fit
        def recorded() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, y in batches:
                seen.append((x.detach().clone(), y.detach().clone()))
                yield x, y
        return fit(recorded())

    sess.method.fit = spy  # type: ignore[method-assign]
    sess.call = _calls("fit")
    sess.fit()
    del sess.method.fit
    d = s.data()
    want = to_input(d.train_x.to(s.device), sess.config["normalize"])
    got_x = torch.cat([x for x, _ in seen]) if seen else want[:0]
    got_y = torch.cat([y for _, y in seen]) if seen else d.train_y[:0]
    if len(got_x) != len(want) or not torch.equal(got_x.float(), want) or not torch.equal(got_y.cpu(), d.train_y):
        raise _fail("fit", f"fit received {len(got_x)} images, not the {len(want)} training images in file order, "
                           "unaugmented (the host's fit pass is broken)")
    fitted = s.predict_all("fit", sess)
    with _calling("fit", "state_dict() after fit"):
        fitted_state = sess.method.state_dict()
    _check_state_types("fit", fitted_state)
    with _calling("fit", "torch.save(state_dict()) after fit"):
        buf = io.BytesIO()
        torch.save(fitted_state, buf)
    state = torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)
    again = s.fresh("fit")
    again.restore({"state": state, "rng": sess.rng_state()})
    restored = s.predict_all("fit", again)
    for part, a, b in (("known", fitted[0], restored[0]), ("unknown", fitted[1], restored[1])):
        diff = a.differs(b)
        if diff:
            raise _fail("fit", f"a fresh setup + load_state_dict of the fitted state predicts different {diff} on the "
                               f"{part} images: state_dict misses what fit learned")
    return f"fit saw {len(want)} training images in file order, unaugmented; exact predictions from the fitted state"
