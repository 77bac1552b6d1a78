"""The method interface every plugin implements, and its small value types.

The engine owns the data, the loop, the clock, checkpoints and the metrics; a method owns its
networks, losses, optimisers and schedules. One epoch is ``for phase in method.phases: for each
batch of the phase's shuffled pass: method.train_step(phase, x, y)``, then ``end_epoch(epoch)``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch


@dataclass(frozen=True)
class Context:
    """What a method learns about its run before training starts.

    :param num_classes: K, the number of known classes (labels are 0..K-1).
    :param image_shape: (C, H, W) of the float images the method receives, in [0, 1]
        (or normalised when the recipe sets ``normalize``).
    :param device: where the images arrive and where the networks must live.
    :param config: the resolved configuration (engine keys and the method's own keys).
    :param generator: a seeded ``torch.Generator`` on ``device``, for the method's own draws
        (GAN noise); its state is checkpointed by the engine.
    :param epochs: the number of epochs of the run.
    :param dataset: the dataset name (methods may branch on it only where the reference does).
    :param steps_per_epoch: batches in one pass over the training stream (the last, partial
        batch included).
    :param channels_last: the run's precision policy asks for channels-last tensors; networks
        built with :meth:`place` follow it.
    :param train_size: training images in one pass: each phase of an epoch sees every one of them
        once, so a phase's batches hold ``train_size`` images in all. The engine always sets it;
        the default 0 only keeps Contexts built by hand (in a plugin's own tests) working.
    """

    num_classes: int
    image_shape: tuple[int, int, int]
    device: torch.device
    config: Mapping[str, Any]
    generator: torch.Generator
    epochs: int
    dataset: str = "digits"
    steps_per_epoch: int = 1
    channels_last: bool = False
    train_size: int = 0

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move a network to the run's device (and memory format, under the precision policy)."""
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        return module.to(self.device, memory_format=fmt)


@dataclass
class Prediction:
    """Output of :meth:`Method.predict` for a batch of N images.

    :param logits: (N, K) closed-set logits; the prediction is ``logits.argmax(1)``.
    :param score: (N,) open-set score, **higher = more likely known**.
    :param scores: optional further named scores of the same sign convention (for example
        ``{"msp": ..., "mls": ...}``); the engine stores them so runs can be rescored.
    """

    logits: torch.Tensor
    score: torch.Tensor
    scores: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Features:
    """Output of :meth:`Method.features` for a batch of N images.

    :param penultimate: (N, D) the features the logits are computed from (classifier32: the pooled
        feature ``f``); ``Method.head(penultimate)`` gives ``logits`` back.
    :param logits: (N, K) the same logits :meth:`Method.predict` returns.
    """

    penultimate: torch.Tensor
    logits: torch.Tensor


class Method(abc.ABC):
    """Base class of an open-set recognition method.

    Subclasses set :attr:`phases` and implement the abstract methods. ``train_step`` returns its
    loss terms as 0-d tensors, detached; the engine sums them on the device and reads them once
    per epoch, so a step never forces a host synchronisation.
    """

    #: Names of the passes over the training stream in one epoch, in order.
    phases: tuple[str, ...] = ("train",)

    #: The method keeps the promises that let the engine replay ``train_step`` from a CUDA graph
    #: (``--set cuda_graphs=true``); see :mod:`osrbench.graphs`. The conformance suite checks them.
    graph_safe: bool = False

    #: Named scores (keys of ``Prediction.scores``) that keep the sign convention but are not
    #: expected to rank the conformance suite's toy unknowns below its knowns, each with the reason;
    #: the ``sign`` check skips them and says so. Every other score must pass it.
    sign_check_exempt: Mapping[str, str] = {}

    @abc.abstractmethod
    def setup(self, ctx: Context) -> None:
        """Build networks, optimisers and schedules for ``ctx``."""

    @abc.abstractmethod
    def train_step(self, phase: str, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimisation step on a batch; returns named loss terms (detached 0-d tensors)."""

    def end_epoch(self, epoch: int) -> None:
        """Called after every phase of ``epoch`` (0-based) ran: step schedules here."""

    @abc.abstractmethod
    def predict(self, images: torch.Tensor) -> Prediction:
        """Evaluate a batch in inference mode (networks in eval mode, no gradients)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed for an exact resume: weights, optimiser and schedule states."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # ----------------------------------------------------------------- optional, after training
    # A method implements these by overriding them; :func:`implements` says which it did.

    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Optional fit stage, called once after the last epoch (before evaluation).

        ``batches`` is one pass over the split's training images in file order, unaugmented and
        unshuffled, as ``(images, labels)`` prepared exactly like :meth:`predict`'s images (float,
        normalised as the run's ``normalize``). Whatever it learns (class means, Weibull models)
        must go into :meth:`state_dict`: the engine checkpoints the fitted state, and a resume or a
        rescore loads it instead of fitting again. Set networks to eval mode and use
        ``torch.no_grad()`` as in ``predict``.
        """
        raise NotImplementedError

    def features(self, images: torch.Tensor) -> Features:
        """Optional: penultimate features and logits of a batch, networks in eval mode.

        Post-hoc scorers that need features (Mahalanobis, KNN, ViM, ReAct) or input gradients
        (ODIN) call it. Do **not** decorate it with ``torch.no_grad()``: the host calls it under
        ``no_grad`` itself, except for input-gradient scorers, which need a graph back to ``images``.
        """
        raise NotImplementedError

    def head(self, penultimate: torch.Tensor) -> torch.Tensor:
        """Optional, with :meth:`features`: the map from penultimate features to logits.

        ReAct clips features and applies it; ViM needs it to be affine (``W f + b``) and reads W
        and b from it. Like ``features``, it must stay differentiable.
        """
        raise NotImplementedError

    #: The release layouts :meth:`load_external` reads (names from :data:`osrbench.layouts.LAYOUTS`;
    #: ``"osrbench"`` is the host's own and never listed here).
    external_layouts: tuple[str, ...] = ()

    def load_external(self, layout: str, weights: Mapping[str, torch.Tensor]) -> None:
        """Optional: load weights trained elsewhere (``osrbench evaluate --layout LAYOUT``), after :meth:`setup`.

        ``layout`` is one of :attr:`external_layouts`; ``weights`` holds every tensor of the files
        the user gave, under the names they have in those files (nested dicts joined with ``.``).
        Map them with :mod:`osrbench.layouts` (``module.`` prefixes, the releases' classifier32
        and criterion layouts) and load them strictly: a missing, unexpected or misshapen key is a
        :class:`osrbench.layouts.LayoutError` (one line naming them), never a partial load. Keys a
        release saves but never uses are dropped with :func:`osrbench.layouts.drop`, so the record
        says so; the host refuses files with keys that were neither read nor dropped. What the
        files do not hold (optimiser states, networks only training uses) keeps its :meth:`setup`
        value. The loaded state must be what :meth:`state_dict` then returns: the host checkpoints
        it, so ``rescore --from-checkpoint`` rebuilds the run unchanged. The ``osrbench`` layout
        (a ``checkpoint.pt`` or a ``state_dict()`` file) is the host's: it calls
        :meth:`load_state_dict` for every method.
        """
        raise NotImplementedError

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The method's optimisers; default: those held directly as attributes of the method.

        CUDA graphs need them: Adam-style optimisers are made ``capturable`` and a learning-rate
        change re-records the graphs. Override it if optimisers live elsewhere (a list, a dict).
        """
        return [v for v in vars(self).values() if isinstance(v, torch.optim.Optimizer)]

    def networks(self) -> list[torch.nn.Module]:
        """The method's networks; default: the ``torch.nn.Module`` objects held directly as attributes.

        ``--set compile=true`` compiles each in place (``module.compile()``: its forward, or what
        the module's own ``compile`` covers; state-dict keys unchanged). Override it if networks
        live elsewhere (a list, a dict) or some must stay eager.
        """
        return [v for v in vars(self).values() if isinstance(v, torch.nn.Module)]

    def f1_rule(self) -> tuple[str, float] | None:
        """The method's macro-F1 rule: ``(score name, threshold)``; accept as known iff score > it.

        The score name is ``"score"`` (the main score) or a key of ``Prediction.scores``.
        ``None`` means the method has no such rule and macro-F1 is not reported.
        """
        return None

    def adaptations(self) -> dict[str, Any]:
        """Choices this run made that no release covers (recorded in the result record)."""
        return {}


def implements(method: Method, name: str) -> bool:
    """Whether ``method`` overrides the optional :class:`Method` hook ``name`` (fit, features, head,
    load_external)."""
    return getattr(type(method), name) is not getattr(Method, name)


@dataclass(frozen=True)
class Option:
    """The values a config key allows; checked by config resolution before any run starts.

    A value breaking its option (``--set score=mxp``) is a usage error (one line, exit code 2),
    never a failed run. Every bound is optional; for a list value each element is checked.

    :param choices: the allowed values (a closed set, e.g. ``("msp", "mls")``).
    :param minimum: the smallest allowed number (inclusive).
    :param maximum: the largest allowed number (inclusive).
    :param exclusive_minimum: the value must be greater than this (``lr`` > 0).
    :param exclusive_maximum: the value must be smaller than this (Adam's betas < 1).
    :param help: one line for ``osrbench list --options METHOD``.
    :param span: the value is an interval ``[low, high]`` (or ``[]``, off): two numbers, low <= high.
    """

    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    help: str = ""
    span: bool = False

    def __post_init__(self) -> None:
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))

    @property
    def has_range(self) -> bool:
        return any(b is not None for b in (self.minimum, self.maximum, self.exclusive_minimum, self.exclusive_maximum))

    def allowed(self) -> str:
        """The allowed values in words: ``msp, mls``, ``> 0``, ``in [0, 30]``, ``in [0, 1)``; ``""``: any."""
        if self.choices is not None:  # bools as --set reads them (YAML)
            return ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices)
        lo = (f"[{self.minimum:g}" if self.minimum is not None
              else f"({self.exclusive_minimum:g}" if self.exclusive_minimum is not None else None)
        hi = (f"{self.maximum:g}]" if self.maximum is not None
              else f"{self.exclusive_maximum:g})" if self.exclusive_maximum is not None else None)
        if lo and hi:
            return f"in {lo}, {hi}"
        if lo:
            return (">= " if lo[0] == "[" else "> ") + lo[1:]
        if hi:
            return ("<= " if hi[-1] == "]" else "< ") + hi[:-1]
        return ""

    def allowed_span(self) -> str:
        """What a :attr:`span` value must be, in words."""
        bounds = self.allowed()
        return "[low, high] with low <= high" + (f", each {bounds}" if bounds else "") + ", or []"

    def violation(self, value: Any) -> str | None:
        """Why ``value`` (a scalar, or a list checked element by element) breaks the option; None if it does not."""
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if self.choices is not None and item not in self.choices:
                return "choices"
            if self.has_range:
                if not isinstance(item, (int, float)) or isinstance(item, bool):
                    return "range"
                if ((self.minimum is not None and item < self.minimum)
                        or (self.maximum is not None and item > self.maximum)
                        or (self.exclusive_minimum is not None and item <= self.exclusive_minimum)
                        or (self.exclusive_maximum is not None and item >= self.exclusive_maximum)):
                    return "range"
        if self.span and items:  # an interval: two numbers, the low end first
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items)
            if not isinstance(value, (list, tuple)) or len(items) != 2 or not numbers or items[0] > items[1]:
                return "span"
        return None


#: A recipe maps a dataset name (or ``"*"`` for every dataset) to config overrides.
Recipe = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class MethodSpec:
    """How a plugin announces a method.

    :param name: the name users type (``osrbench run --method NAME``).
    :param factory: called with no arguments to make a fresh :class:`Method`.
    :param defaults: every config key of the method with its default value; ``--set key=value``
        may only name these keys or the engine's keys, and the value is parsed as YAML and must
        match the default's type.
    :param recipes: named recipes; each maps ``"*"`` and/or dataset names to overrides applied
        on top of ``defaults`` (``"*"`` first, then the dataset's own entry).
    :param default_recipe: the recipe used when ``--recipe`` is not given.
    :param description: one line shown by ``osrbench list``.
    :param citation: the paper the method reproduces.
    :param options: :class:`Option` (allowed choices or numeric range, and a help line) of the
        method's own config keys; a key without one accepts any value of its default's type. The
        engine's keys have theirs in ``osrbench.config.ENGINE_OPTIONS``. Config resolution checks
        every resolved value (defaults, recipes, ``--set``) against them before a run starts and
        names the key, the bad value and the allowed ones; an option for a key that is not in
        ``defaults`` (or an engine key), or a default that breaks its own option, is a plugin bug
        and an error too. ``osrbench list --options NAME`` shows them.
    """

    name: str
    factory: Callable[[], Method]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    recipes: Mapping[str, Recipe] = field(default_factory=dict)
    default_recipe: str | None = None
    description: str = ""
    citation: str = ""
    options: Mapping[str, Option] = field(default_factory=dict)
