"""Conformance suite for post-hoc scorers: does a scorer keep the contracts ``osrbench score`` relies on?

``check_scorer("mine")`` (or ``python -m osrbench.testing --scorer mine``) fits and applies the
scorer as the host does (:func:`osrbench.scoring.fit` and :func:`~osrbench.scoring.apply`) on a
separable toy held in memory: a fixed network whose 12 penultimate features are its flattened
(3, 2, 2) input images and whose head is affine, known images of 3 classes that light up their
class's feature, unknown images of dim noise. The features are signed (noise around 0), not
post-ReLU as a real network's pooled features are (docs/PLUGINS.md says what that means). Each check of :data:`SCORER_CHECKS` says which
contract was broken; a scorer may raise :class:`osrbench.NotApplicable` only in ``not_affine``
(a network whose head is not affine) and for single grid candidates.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from osrbench.method import Features
from osrbench.testing.contracts import CheckResult, ConformanceError, ConformanceReport

#: The checks, in order; each one's contract.
SCORER_CHECK_DOCS = {
    "shape": "score returns one score per image: an (N,) tensor or array, for known and unknown views",
    "finite": "every score is finite",
    "direction": "higher = more likely known: AUROC >= MIN_SCORER_AUROC of known vs unknown on the separable toy",
    "not_affine": "on a network whose head is not affine it scores (finite, (N,)) or raises osrbench.NotApplicable",
    "deterministic": "fitting and scoring twice give identical scores",
    "grid": "every tuning candidate (defaults, then the grid's product) scores finite (N,) or raises NotApplicable, "
            "and the defaults apply",
}
SCORER_CHECKS = tuple(SCORER_CHECK_DOCS)
#: What ``direction`` asks of a scorer on the toy (the built-in scorers reach 1.0 or close).
MIN_SCORER_AUROC = 0.9
K, CHANNELS, SIDE = 3, 3, 2
D = CHANNELS * SIDE * SIDE


class ToyNetwork(torch.nn.Module):
    """A trained method as scorers see it: ``features`` (penultimate = flattened input, logits) and ``head``."""

    def __init__(self, affine: bool = True) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(D, K)
        with torch.no_grad():  # logit k reads feature k: a class's images light up its feature
            self.fc.weight.copy_(torch.eye(K, D) * 3.0)
            self.fc.bias.zero_()
        self.affine = affine

    def head(self, penultimate: torch.Tensor) -> torch.Tensor:
        z = self.fc(penultimate)
        return z if self.affine else 6.0 * torch.tanh(z / 6.0)  # monotone, so still separable

    def features(self, images: torch.Tensor) -> Features:
        f = images.flatten(1)
        return Features(f, self.head(f))


def toy_images(n_per_class: int, unknown: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(known images, their labels, unknown images)``: float32 (N, 3, 2, 2)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(K).repeat_interleave(n_per_class)
    known = 0.3 * torch.randn(len(labels), D, generator=g)
    known[torch.arange(len(labels)), labels] += 4.0
    unk = 0.3 * torch.randn(unknown, D, generator=g)
    shape = (-1, CHANNELS, SIDE, SIDE)
    return known.reshape(shape), labels, unk.reshape(shape)


class _Toy:
    """The views of one toy network: train (with labels), known and unknown test images."""

    def __init__(self, affine: bool = True) -> None:
        from osrbench.scoring import Network, View

        net = ToyNetwork(affine).eval()
        self.network = Network(net, torch.device("cpu"), torch.ones(CHANNELS))
        self.train_x, labels, _ = toy_images(100, 0, seed=0)
        self.known_x, _, self.unknown_x = toy_images(20, 60, seed=1)

        def view(images: torch.Tensor, y: torch.Tensor | None = None) -> View:
            with torch.no_grad():
                out = net.features(images)
            return View(out.logits.double(), out.penultimate.double(), y, None, self.network)

        self.train, self.known, self.unknown = view(self.train_x, labels), view(self.known_x), view(self.unknown_x)

    def scores(self, spec: Any, params: Any) -> tuple[np.ndarray, np.ndarray]:
        """Known and unknown scores as ``osrbench score`` computes them (its shape and finiteness checks included)."""
        from osrbench import scoring

        fitted = scoring.fit(spec, params, self.train)
        prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x.float()  # noqa: E731
        return (scoring.apply(spec, fitted, params, self.known, self.known_x, prepare),
                scoring.apply(spec, fitted, params, self.unknown, self.unknown_x, prepare))


class ScorerReport(ConformanceReport):
    """Outcome of :func:`check_scorer`: one :class:`CheckResult` per check of :data:`SCORER_CHECKS`."""

    def __str__(self) -> str:
        return super().__str__().replace(f"of method {self.method!r}", f"of scorer {self.method!r}", 1)


def _fail(check: str, message: str) -> ConformanceError:
    return ConformanceError(f"{check}: {message}")


def _raw_shape(toy: _Toy, spec: Any, params: Any) -> None:
    """The scorer's own return, before the host's conversion: one score per image."""
    from osrbench import scoring
    from osrbench.scoring import View

    fitted = scoring.fit(spec, params, toy.train)
    for name, v, images in (("known", toy.known, toy.known_x), ("unknown", toy.unknown, toy.unknown_x)):
        view = View(v.logits, v.penultimate, None, images.float(), v.network)
        with torch.enable_grad() if "input_grad" in spec.needs else torch.no_grad():
            out = spec.score(view, fitted, params)
        shape = tuple(getattr(out, "shape", np.shape(out)))
        if shape != (len(v.logits),):
            raise _fail("shape", f"score of the {name} view returned shape {shape}, expected ({len(v.logits)},)")


def _run(check: str, spec: Any, toy: _Toy, bad: _Toy) -> str:
    from osrbench.metrics import auroc
    from osrbench.scoring import NotApplicable, ScorerFailed

    defaults = dict(spec.params)
    if check == "shape":
        _raw_shape(toy, spec, defaults)
        return ""
    if check == "finite":
        try:
            toy.scores(spec, defaults)
        except ScorerFailed as exc:
            raise _fail(check, str(exc)) from None
        return ""
    if check == "direction":
        k, u = toy.scores(spec, defaults)
        a = float(auroc(k, u))
        if a < MIN_SCORER_AUROC:
            hint = " (inverted? higher must mean more likely known)" if a < 0.5 else ""
            raise _fail(check, f"AUROC {a:.3f} of known vs unknown on the separable toy, expected >= "
                               f"{MIN_SCORER_AUROC}{hint}")
        return f"AUROC {a:.3f}"
    if check == "not_affine":
        try:
            bad.scores(spec, defaults)
        except NotApplicable as exc:
            return f"not applicable: {exc}"
        return "scores"
    if check == "deterministic":
        first, second = toy.scores(spec, defaults), toy.scores(spec, defaults)
        if not all(np.array_equal(a, b) for a, b in zip(first, second)):
            raise _fail(check, "two fits and scorings of the same views gave different scores "
                               "(seed any randomness from the data or a fixed torch.Generator)")
        return ""
    if check == "grid":
        cands = spec.candidates()
        skipped = 0
        for i, params in enumerate(cands):
            try:
                toy.scores(spec, params)
            except NotApplicable as exc:
                if i == 0:
                    raise _fail(check, f"the defaults {params} do not apply to the toy: {exc}") from None
                skipped += 1
            except ScorerFailed as exc:
                raise _fail(check, f"candidate {params}: {exc}") from None
        return f"{len(cands)} candidate(s)" + (f", {skipped} not applicable" if skipped else "")
    raise ValueError(check)


def check_scorer(name_or_spec: Any, raise_on_failure: bool = True) -> ConformanceReport:
    """Run :data:`SCORER_CHECKS` on a registered scorer (by name) or a :class:`osrbench.ScoreSpec`.

    Raises :class:`ConformanceError` listing the broken contracts unless ``raise_on_failure`` is false.
    """
    spec = name_or_spec
    if isinstance(name_or_spec, str):
        from osrbench import plugins

        spec = plugins.get().scorer(name_or_spec)
    report = ScorerReport(spec.name, "cpu")
    toy, bad = _Toy(), _Toy(affine=False)
    for check in SCORER_CHECKS:
        t0 = time.perf_counter()
        try:
            message = _run(check, spec, toy, bad)
            status = "passed"
        except ConformanceError as exc:
            status, message = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - the scorer's own code: named, never a traceback
            status, message = "failed", f"{check}: {type(exc).__name__}: {exc}"
        report.results.append(CheckResult(check, status, time.perf_counter() - t0, message))
    if raise_on_failure and not report.ok:
        lines = [r.message for r in report.failures]
        raise ConformanceError(f"scorer {spec.name!r} broke {len(lines)} contract(s):\n  " + "\n  ".join(lines))
    return report
