"""Post-hoc scorers: open-set scores computed after training from a method's logits, features or network.

A scorer is a :class:`ScoreSpec` registered through the ``osrbench_register_scores`` hook (the
built-in ones are in :mod:`osrbench.scorers`). ``osrbench score`` applies scorers to finished runs:

1. the run's method is rebuilt from its final checkpoint (:mod:`osrbench.rescore`);
2. one unaugmented pass in file order over the split's training images, and one over its test
   images, give each image's logits and (when a scorer needs them) penultimate features
   (:meth:`Method.features`);
3. the parameters are the scorer's published defaults, with any set by hand
   (``--scorer energy:temperature=10``, :func:`parse_scorers`) in their place. A scorer with a
   ``grid`` is tuned only where that earns it (:data:`TUNED_BY_DEFAULT`, or ``--tune``/``--no-tune``),
   on the training set alone (:func:`tune`): a seeded third of the known classes is held out as
   pseudo-unknowns, the scorer is fitted on 80 % of the other classes' images with their logits
   restricted to those classes, and the candidate with the best AUROC of the remaining 20 %
   against the held-out classes wins (ties: the earliest, the scorer's defaults first). Unknown
   classes and test images are never seen; hand-set parameters are never tuned;
4. the scorer is fitted (``fit``) on the whole training set with the chosen parameters and
   scores the test images; the parameters, and how each was chosen, are recorded
   (:func:`describe_params`).

Scores follow the host's convention: **higher = more likely known**.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from osrbench.data.stream import CIFAR_STD, derive_seed
from osrbench.devices import Precision
from osrbench.errors import MethodFailed, UserError
from osrbench.evaluation import BATCH, model_inputs
from osrbench.method import Method, Option, implements

#: What a scorer may need: ``logits`` (always available), ``features`` (penultimate features,
#: :meth:`Method.features`), ``head`` (:meth:`Method.head`, the features-to-logits map) and
#: ``input_grad`` (gradients with respect to the input images, through :attr:`View.network`).
NEEDS = ("logits", "features", "head", "input_grad")

#: Share of the non-held-out classes' training images the scorer is validated on while tuning.
VAL_FRACTION = 0.2
#: At most this many validation and pseudo-unknown images each while tuning (bounds its cost).
TUNE_CAP = 1000
#: Held-out AUROC by which a candidate must beat the defaults to replace them.
TUNE_MARGIN = 0.01
#: The scorers whose grid is tuned on held-out known classes unless ``--tune``/``--no-tune`` says
#: otherwise; every other scorer keeps its published defaults. Tuning is on only where it beat the
#: defaults in benchmarks/tuning_check.py (paired over methods x splits, README "Tuning post-hoc
#: scorers"): on digits (25 runs, 2 and 15 epochs) and Fashion-MNIST (10 runs) no scorer gained
#: significantly and energy lost 2.77 points on 2-epoch digits runs, so the set is empty.
TUNED_BY_DEFAULT: frozenset[str] = frozenset()


class ScorerFailed(MethodFailed):
    """A scorer raised or returned something other than one finite score per image."""

    stage = "score"


class NotApplicable(UserError):
    """The scorer needs something this method does not provide (features, an affine head, ...)."""


@dataclass(frozen=True)
class View:
    """What a scorer sees of one set of images.

    :param logits: (N, K) float64 logits on the CPU.
    :param penultimate: (N, D) float64 penultimate features on the CPU (scorers needing ``features``).
    :param labels: (N,) int64 class labels 0..K-1 (training views, given to ``fit``; ``None`` for test).
    :param images: (N, C, H, W) the float network inputs on the run's device (scorers needing
        ``input_grad``; they are scored in chunks of :data:`BATCH`).
    :param network: the trained method as a scorer may call it (``head`` / ``input_grad``).
    """

    logits: torch.Tensor
    penultimate: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    images: torch.Tensor | None = None
    network: "Network | None" = None

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def rows(self, index: torch.Tensor | np.ndarray) -> "View":
        """The view of a subset of its images."""
        index = torch.as_tensor(index, dtype=torch.long)
        pick = (lambda t: None if t is None else t[index.to(t.device)])
        return View(self.logits[index], pick(self.penultimate), pick(self.labels), pick(self.images), self.network)


class Network:
    """The trained method as scorers call it: eval-mode features, logits and head, on its device.

    During tuning it is restricted to the classes that are not held out (``columns``): its logits
    then have one column per remaining class, as a network trained on those classes alone would.
    ``input_std`` is the per-channel std the inputs were divided by (1 unless the run normalises),
    which ODIN divides its gradient signs by, as OpenOOD does.
    """

    def __init__(self, method: Method, device: torch.device, input_std: torch.Tensor,
                 columns: Sequence[int] | None = None) -> None:
        self.method = method
        self.device = device
        self.input_std = input_std
        self.columns = None if columns is None else torch.as_tensor(list(columns), dtype=torch.long, device=device)

    @classmethod
    def of_run(cls, method: Method, device: torch.device, normalize: str) -> "Network":
        std = CIFAR_STD if normalize == "cifar" else (1.0, 1.0, 1.0)
        return cls(method, device, torch.tensor(std, device=device))

    def restricted(self, columns: Sequence[int]) -> "Network":
        """The same network seen as a classifier of ``columns`` (class indices) alone."""
        return Network(self.method, self.device, self.input_std, columns)

    def _cols(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.columns is None else logits.index_select(1, self.columns)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(penultimate, logits)`` of float input images (differentiable under ``torch.enable_grad``)."""
        out = self.method.features(images)
        return out.penultimate, self._cols(out.logits)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of float input images (differentiable under ``torch.enable_grad``)."""
        return self.features(images)[1]

    def head(self, penultimate: torch.Tensor) -> torch.Tensor:
        """Logits of (possibly modified) penultimate features on the network's device and dtype."""
        return self._cols(self.method.head(penultimate))

    def head64(self, penultimate: torch.Tensor) -> torch.Tensor:
        """:meth:`head` of features as a :class:`View` holds them (float64, CPU): moved to the
        network's device and parameter dtype, the logits returned float64 on the CPU."""
        dtype = next((p.dtype for v in vars(self.method).values() if isinstance(v, torch.nn.Module)
                      for p in v.parameters()), torch.float32)
        return self.head(penultimate.to(self.device, dtype)).double().cpu()


#: ``score(view, fitted, params) -> (N,) tensor``; ``fit(train_view, params) -> fitted`` (anything).
ScoreFn = Callable[[View, Any, Mapping[str, Any]], torch.Tensor]
FitFn = Callable[[View, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class ScoreSpec:
    """How a plugin announces a post-hoc scorer.

    :param name: the name users type (``osrbench score --scorer NAME``, ``compare --score NAME``).
    :param score: ``score(view, fitted, params)`` returns one score per image of ``view``
        (higher = more likely known); ``fitted`` is what ``fit`` returned (``None`` without one).
    :param needs: a subset of :data:`NEEDS`; the host provides those fields of the view and
        reports the scorer as not applicable to a method that lacks them.
    :param fit: optional ``fit(train_view, params)`` on the training set's logits, features and
        labels (one unaugmented pass in file order); what it returns is passed to ``score``.
    :param params: every hyperparameter with its default value.
    :param grid: candidate values of some of ``params``, tuned on held-out known training classes
        (:func:`tune`); empty: the defaults are used as they are.
    :param description: one line shown by ``osrbench list --scorers``.
    :param citation: the paper (and the implementation it follows).
    :param adaptation: what differs from that reference, recorded with every score it makes.
    :param options: the values a parameter allows (:class:`~osrbench.method.Option`: a range or
        choices), checked when it is set by hand (``--scorer energy:temperature=10``), so that a
        value the scorer cannot use is one usage error before anything is computed.
    """

    name: str
    score: ScoreFn
    needs: frozenset[str] = frozenset({"logits"})
    fit: FitFn | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    description: str = ""
    citation: str = ""
    adaptation: str = ""
    options: Mapping[str, Option] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs", frozenset(self.needs))
        unknown = sorted(self.needs - set(NEEDS))
        if unknown:
            raise ValueError(f"scorer {self.name!r}: unknown needs {unknown} (valid: {', '.join(NEEDS)})")
        for what, names in (("grid", self.grid), ("options", self.options)):
            extra = sorted(set(names) - set(self.params))
            if extra:
                raise ValueError(f"scorer {self.name!r}: {what} names {extra}, which are not in params")
        for key, option in self.options.items():
            bad = [v for v in (self.params[key], *self.grid.get(key, ())) if option.violation(v)]
            if bad:
                raise ValueError(f"scorer {self.name!r}: {key} = {bad[0]!r} (default or grid) is not {option.allowed()}")

    def candidates(self, hand_set: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The parameter sets tuning tries, the defaults first, each once; the parameters in
        ``hand_set`` keep their given values (they are never tuned)."""
        base = {**self.params, **(hand_set or {})}
        out = [base]
        keys = [k for k in self.grid if k not in (hand_set or {})]
        for values in itertools.product(*(self.grid[k] for k in keys)):
            cand = {**base, **dict(zip(keys, values))}
            if cand not in out:
                out.append(cand)
        return out


def tunes_by_default(spec: ScoreSpec) -> bool:
    """Whether ``osrbench score`` tunes ``spec`` when neither ``--tune`` nor ``--no-tune`` is given."""
    return spec.name in TUNED_BY_DEFAULT


def will_tune(spec: ScoreSpec, tune: bool | None, hand_set: Mapping[str, Any] | None = None) -> bool:
    """Whether ``spec`` is tuned: it has grid parameters not set by hand, and ``tune`` (``None``: the
    default policy, :func:`tunes_by_default`) asks for it."""
    free = [k for k in spec.grid if k not in (hand_set or {})]
    return bool(free) and (tunes_by_default(spec) if tune is None else tune)


def _kind(value: Any) -> type:
    return bool if isinstance(value, bool) else int if isinstance(value, int) else \
        float if isinstance(value, float) else str


def parse_param(spec: ScoreSpec, key: str, text: str) -> Any:
    """``text`` as a value of ``spec``'s parameter ``key``, of the type its default and grid declare
    (all integers: an integer; numbers: a finite float; a string with a grid: one of the grid's)."""
    if key not in spec.params:
        have = ", ".join(spec.params) or "none"
        raise UserError(f"scorer {spec.name!r} has no parameter {key!r} (its parameters: {have})")
    declared = [spec.params[key], *spec.grid.get(key, ())]
    kinds = {_kind(v) for v in declared}
    want = f"scorer {spec.name!r} parameter {key!r}"
    value: Any
    if kinds == {bool}:
        if text.lower() not in ("true", "false"):
            raise UserError(f"{want} takes true or false, not {text!r}")
        value = text.lower() == "true"
    elif kinds <= {int, float}:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise UserError(f"{want} takes a finite number, not {text!r}")
        if kinds == {int}:
            if value != int(value):
                raise UserError(f"{want} takes an integer (declared as {declared[0]}"
                                + (f", tuned over {list(spec.grid[key])}" if key in spec.grid else "") + f"), not {text!r}")
            value = int(value)
    elif kinds == {str}:
        if key in spec.grid and text not in spec.grid[key]:
            raise UserError(f"{want} takes one of {', '.join(map(str, spec.grid[key]))}, not {text!r}")
        value = text
    else:
        raise UserError(f"{want} has a value of type {type(spec.params[key]).__name__}, which cannot be set by hand")
    option = spec.options.get(key)
    if option is not None and option.violation(value):
        raise UserError(f"{want} must be {'one of ' if option.choices is not None else ''}{option.allowed()}, "
                        f"not {text!r}")
    return value


def describe_params(info: Mapping[str, Any]) -> str:
    """A scorer's recorded parameters (``Scored.info``) in one line: each ``key=value`` marked
    ``(hand-set)`` or ``(tuned)`` where it was not simply the default, e.g.
    ``temperature=1000 (tuned), noise=0.0014``; ``-`` without parameters."""
    params, hand, defaults = info.get("params") or {}, info.get("hand_set") or {}, info.get("defaults") or {}
    out = []
    for k, v in params.items():
        how = " (hand-set)" if k in hand else " (tuned)" if info.get("tuned") and v != defaults.get(k) else ""
        out.append(f"{k}={v}{how}")
    text = ", ".join(out) or "-"
    if info.get("tuned") and not any(k not in hand and v != defaults.get(k) for k, v in params.items()):
        text += " (tuned: defaults kept)"
    return text


def missing(spec: ScoreSpec, method: Method) -> str | None:
    """What ``method`` lacks for ``spec`` (``None``: the scorer applies)."""
    for need, hook in (("features", "features"), ("head", "head"), ("input_grad", "features")):
        if need in spec.needs and not implements(method, hook):
            return f"needs {need}, and the method has no {hook}()"
    return None


# ------------------------------------------------------------------------------- extraction
def extract(method: Method, images: Any, device: torch.device, normalize: str,
            precision: Precision, features: bool, labels: torch.Tensor | None = None) -> View:
    """Logits (and penultimate features) of every image, one unaugmented pass in order, float64 on the CPU.
    ``images``: uint8, or a file-backed split's :class:`~osrbench.data.feed.ImageSet` (as evaluation's)."""
    logits, pen = [], []
    with torch.no_grad():
        for chunk in images.split(BATCH):
            x = model_inputs(chunk, device, normalize, precision)
            with precision.autocast():
                if features:
                    out = method.features(x)
                    pen.append(out.penultimate.detach().double().cpu())
                    z = out.logits
                else:
                    z = method.predict(x).logits
            logits.append(z.detach().double().cpu())
    return View(torch.cat(logits), torch.cat(pen) if features else None,
                None if labels is None else labels.long().cpu())


def _checked(spec: ScoreSpec, out: Any, n: int) -> np.ndarray:
    if not torch.is_tensor(out):
        out = torch.as_tensor(np.asarray(out))
    if out.shape != (n,):
        raise ScorerFailed(f"scorer {spec.name!r} returned shape {tuple(out.shape)}, expected ({n},)")
    out = out.detach().double().cpu().numpy()
    if not np.isfinite(out).all():
        raise ScorerFailed(f"scorer {spec.name!r} returned {int((~np.isfinite(out)).sum())} non-finite score(s)")
    return out


def _guard(spec: ScoreSpec, what: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except (KeyboardInterrupt, MethodFailed, UserError):
        raise
    except Exception as exc:  # noqa: BLE001 - the scorer's own code: one line, never a traceback
        raise ScorerFailed(f"scorer {spec.name!r} raised in {what}: {type(exc).__name__}: {exc}") from exc


def apply(spec: ScoreSpec, fitted: Any, params: Mapping[str, Any], view: View,
          images: Any, prepare: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """One score per image of ``view``; input-gradient scorers run in chunks of their images."""
    if "input_grad" not in spec.needs:
        with torch.no_grad():
            return _checked(spec, _guard(spec, "score", spec.score, view, fitted, params), len(view.logits))
    assert images is not None
    out = []
    for start in range(0, len(view.logits), BATCH):
        idx = torch.arange(start, min(start + BATCH, len(view.logits)))
        chunk = view.rows(idx)
        chunk = View(chunk.logits, chunk.penultimate, chunk.labels, prepare(images[start:start + BATCH]), view.network)
        with torch.enable_grad():
            out.append(_checked(spec, _guard(spec, "score", spec.score, chunk, fitted, params), len(idx)))
    return np.concatenate(out) if out else np.zeros(0)


def fit(spec: ScoreSpec, params: Mapping[str, Any], train: View) -> Any:
    if spec.fit is None:
        return None
    with torch.no_grad():
        return _guard(spec, "fit", spec.fit, train, params)


# ----------------------------------------------------------------------------------- tuning
@dataclass(frozen=True)
class Holdout:
    """The training-set split tuning uses: pseudo-known classes, their fit and validation images,
    and the images of the held-out (pseudo-unknown) classes; indices into the training set."""

    known_classes: tuple[int, ...]
    held_out_classes: tuple[int, ...]
    fit_idx: np.ndarray
    val_idx: np.ndarray
    unknown_idx: np.ndarray


def holdout(labels: np.ndarray, num_classes: int, seed: int) -> Holdout:
    """Hold out ``max(1, K // 3)`` seeded known classes; 20 % of the others' images (per class) validate."""
    rng = np.random.default_rng(derive_seed(seed, 0x5C0E))
    held = np.sort(rng.permutation(num_classes)[:max(1, num_classes // 3)])
    kept = np.array([c for c in range(num_classes) if c not in set(held.tolist())])
    fit_idx, val_idx = [], []
    for c in kept:
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(math.ceil(VAL_FRACTION * len(idx)))
        val_idx.append(idx[:n_val])
        fit_idx.append(idx[n_val:])
    unknown = np.flatnonzero(np.isin(labels, held))
    val = np.concatenate(val_idx)
    val = np.sort(rng.permutation(val)[:TUNE_CAP])
    unknown = np.sort(rng.permutation(unknown)[:TUNE_CAP])
    return Holdout(tuple(int(c) for c in kept), tuple(int(c) for c in held), np.sort(np.concatenate(fit_idx)), val, unknown)


def _restrict(view: View, classes: Sequence[int], network: Network | None) -> View:
    """The view as a network of ``classes`` alone would give it: their logit columns, labels renumbered."""
    cols = torch.as_tensor(list(classes), dtype=torch.long)
    labels = None
    if view.labels is not None:
        remap = torch.full((view.num_classes,), -1, dtype=torch.long)
        remap[cols] = torch.arange(len(cols))
        labels = remap[view.labels]
    return View(view.logits.index_select(1, cols), view.penultimate, labels, None,
                network.restricted(classes) if network is not None else None)


@dataclass(frozen=True)
class Tuned:
    params: dict[str, Any]
    report: dict[str, Any] | None  # None: nothing to tune


def tune(spec: ScoreSpec, train: View, train_images: Any, network: Network,
         prepare: Callable[[torch.Tensor], torch.Tensor], seed: int,
         hand_set: Mapping[str, Any] | None = None) -> Tuned:
    """The best of :meth:`ScoreSpec.candidates` on held-out known training classes (module doc, step 3)."""
    cands = spec.candidates(hand_set)
    if len(cands) == 1:
        return Tuned(cands[0], None)
    from osrbench.metrics import auroc

    assert train.labels is not None
    h = holdout(train.labels.numpy(), train.num_classes, seed)
    view = _restrict(train, h.known_classes, network)
    fit_view, val, unk = view.rows(h.fit_idx), view.rows(h.val_idx), view.rows(h.unknown_idx)
    tried: list[dict[str, Any]] = []
    for params in cands:
        try:
            fitted = fit(spec, params, fit_view)
            s_val = apply(spec, fitted, params, val, train_images[torch.as_tensor(h.val_idx)], prepare)
            s_unk = apply(spec, fitted, params, unk, train_images[torch.as_tensor(h.unknown_idx)], prepare)
        except NotApplicable as exc:  # e.g. k > the held-out fit set: that candidate only
            tried.append({"params": params, "not_applicable": str(exc)})
            continue
        tried.append({"params": params, "auroc": float(auroc(s_val, s_unk))})
    ok = [t for t in tried if "auroc" in t]
    if not ok:
        raise NotApplicable(tried[0]["not_applicable"])  # the defaults' reason
    # The defaults stay unless a candidate beats them by more than TUNE_MARGIN: the held-out classes
    # were trained on, so the proxy saturates near 1.0 and small gains there are noise.
    best = max(ok, key=lambda t: t["auroc"])
    default = tried[0]
    chosen = default if "auroc" in default and best["auroc"] - default["auroc"] <= TUNE_MARGIN else best
    report = {"held_out_classes": list(h.held_out_classes), "fit_images": len(h.fit_idx),
              "val_images": len(h.val_idx), "pseudo_unknown_images": len(h.unknown_idx), "margin": TUNE_MARGIN,
              "candidates": tried}
    return Tuned(chosen["params"], report)


# ------------------------------------------------------------------------------ score a run
@dataclass(frozen=True)
class Scored:
    """One scorer's test scores on a run, with what it used (stored in ``posthoc.npz``)."""

    known: np.ndarray
    unknown: np.ndarray
    info: dict[str, Any]


def score_run(specs: Iterable[ScoreSpec], method: Method, data: Any, device: torch.device, normalize: str,
              precision: Precision, seed: int, tune_params: bool | None = None,
              plugin_of: Callable[[str], Mapping[str, str]] = lambda name: {},
              hand_set: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Scored | str]:
    """Apply each scorer to a trained method on a split: name -> :class:`Scored`, or why it does not apply.

    ``tune_params``: tune every scorer with a grid (``True``), none (``False``), or those of
    :data:`TUNED_BY_DEFAULT` (``None``); ``hand_set``: scorer name -> parameters set by hand (never tuned).
    """
    hand_set = hand_set or {}
    specs = list(specs)
    out: dict[str, Scored | str] = {}
    usable = []
    for spec in specs:
        why = missing(spec, method)
        if why:
            out[spec.name] = why
        else:
            usable.append(spec)
    if not usable:
        return out
    want_features = implements(method, "features")
    train = extract(method, data.train_x, device, normalize, precision, want_features, data.train_y)
    known = extract(method, data.known_x, device, normalize, precision, want_features)
    unknown = extract(method, data.unknown_x, device, normalize, precision, want_features)
    network = Network.of_run(method, device, normalize)
    train, known, unknown = (View(v.logits, v.penultimate, v.labels, None, network) for v in (train, known, unknown))

    def prepare(images: torch.Tensor) -> torch.Tensor:
        return model_inputs(images, device, normalize, precision)

    for spec in usable:
        try:
            hand = dict(hand_set.get(spec.name, {}))
            tuned = (tune(spec, train, data.train_x, network, prepare, seed, hand) if will_tune(spec, tune_params, hand)
                     else Tuned({**spec.params, **hand}, None))
            fitted = fit(spec, tuned.params, train)
            k = apply(spec, fitted, tuned.params, known, data.known_x, prepare)
            u = apply(spec, fitted, tuned.params, unknown, data.unknown_x, prepare)
        except NotApplicable as exc:
            out[spec.name] = str(exc)
            continue
        info = {"params": tuned.params, "defaults": dict(spec.params), "hand_set": hand, "tuning": tuned.report,
                "tuned": tuned.report is not None, "needs": sorted(spec.needs),
                "plugin": dict(plugin_of(spec.name)), "adaptation": spec.adaptation}
        out[spec.name] = Scored(k, u, info)
    return out
