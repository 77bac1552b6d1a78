"""The checks the conformance suite runs, the contract each verifies, and the types of its results."""

from __future__ import annotations

from dataclasses import dataclass, field

from osrbench import checkpoints

#: The AUROC (known vs unknown, main score) the ``sign`` check asks for on the separable toy.
MIN_AUROC = 0.8

#: The checks, in the order :func:`check_method` runs them.
CHECKS: tuple[str, ...] = ("register", "spec", "train", "predict", "sign", "determinism", "state", "features",
                           "fit", "graphs", "engine")

#: The contract each check verifies (one line each; shown in reports and in docs/PLUGINS.md).
CHECK_DOCS: dict[str, str] = {
    "register": "an installed plugin registers the method without errors; its factory makes fresh "
                "osrbench.Method objects with a non-empty tuple of distinct phase names",
    "spec": "defaults hold only YAML/JSON-serialisable values of stable types (bool, int, float, str, "
            "None, lists and str-keyed dicts of those), engine keys keep the engine's types, every recipe "
            "scope resolves through osrbench.config.resolve, the default recipe exists",
    "train": "setup(ctx) and two epochs of train_step over every phase's shuffled batches run; each "
             "train_step returns a non-empty dict of named terms, each a detached, finite, 0-d float tensor; "
             "diagnostic terms (an accuracy, a margin) are allowed and logged into the record's history like "
             "the losses (the engine averages every term over the pass and never sums or differentiates them)",
    "predict": "predict returns a Prediction with finite (N, K) float logits, an (N,) score and (N,) named "
               "scores, no autograd graph, results independent of the batch split; f1_rule and "
               "adaptations are well formed",
    "sign": f"on the separable toy problem the main score and every named score rank knowns above unknowns "
            f"(AUROC >= {MIN_AUROC}: higher = more likely known), except named scores the method lists in "
            "sign_check_exempt with a reason, which the report shows; when the toy run's closed-set accuracy is "
            "near chance (below 1.5/K) the failure says so and suggests a learning rate for the toy's few steps "
            "(`--set lr=...`, a tenth of the run's)",
    "determinism": "two fresh runs with the same seed and batches give identical logits and scores",
    "state": f"state_dict holds only {checkpoints.STATE_TYPES} (no numpy values: the engine refuses to checkpoint "
             "them); it survives torch.save / torch.load(weights_only=True); a fresh setup + load_state_dict "
             "predicts identically, and one more epoch from it equals the uninterrupted run",
    "features": "a method with features() returns osrbench.Features: (N, D) penultimate features and the logits "
                "predict returns, differentiable with respect to the images (input-gradient scorers); with "
                "head(), head(penultimate) gives the logits back; methods without features() pass",
    "fit": "a method with a fit stage receives every training image once, in file order, unaugmented, prepared "
           "as predict's images, with its label; the fitted state_dict keeps to the state check's types, and a "
           "fresh setup + load_state_dict of it predicts exactly as the fitted method (the engine resumes and "
           "rescores from it without fitting again); methods without fit() pass",
    "graphs": "a method that declares graph_safe reads no device value on the host, makes no value-dependent "
              "shape (t[mask], nonzero, masked_select, unique) and no tensor from host data in train_step, runs "
              "the same operations in consecutive full batches and in the same full batch of the next epoch "
              "(optimiser steps aside), has all its optimiser state after the first "
              "osrbench.graphs.StepGraphs.WARMUP full batches of each phase (none created later), and trains "
              "identically through osrbench.graphs.StepGraphs (on CUDA: real graphs, close to eager); methods "
              "that do not declare it pass (the engine runs them eagerly)",
    "engine": "one osrbench.engine.run (1 epoch) on the toy dataset completes and writes a record "
              "with finite metrics",
}



class ConformanceError(AssertionError):
    """A method broke a contract of the engine; the message starts with the check's name."""


class _Skip(Exception):
    """A check could not run because one it depends on failed."""


@dataclass
class CheckResult:
    """Outcome of one check: ``status`` is ``passed``, ``failed`` or ``skipped``."""

    name: str
    status: str
    seconds: float
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "passed"


@dataclass
class ConformanceReport:
    """Outcome of :func:`check_method`: one :class:`CheckResult` per check run."""

    method: str
    device: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "failed"]

    def __getitem__(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def __str__(self) -> str:
        lines = [f"osrbench conformance of method {self.method!r} on {self.device}:"]
        for r in self.results:
            lines.append(f"  {r.status.upper():7s} {r.name:12s} {r.seconds:6.2f} s  {r.message}")
        verdict = "all checks passed" if self.ok else f"{len(self.failures)} check(s) failed"
        lines.append(f"  {verdict}")
        return "\n".join(lines)
