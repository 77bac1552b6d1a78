"""Conformance suite for method plugins: does a method keep the contracts the engine relies on?

A plugin author runs it against an installed method, either in one call::

    from osrbench.testing import check_method

    report = check_method("mine")          # raises ConformanceError naming the broken contract
    print(report)

or as one pytest test per check (the file ``osrbench new-plugin`` writes)::

    import pytest
    from osrbench.testing import CHECKS, run_check

    @pytest.mark.parametrize("check", CHECKS)
    def test_conformance(check):
        run_check("mine", check)

The checks (:data:`CHECKS`, contracts in :data:`CHECK_DOCS`) train the method for two short epochs
on a separable synthetic open-set problem held in memory (:func:`toy_data`: bright coloured
patterns as known classes, dim noise as unknowns, 8×8 px), driving it exactly as the engine does
(seeded global RNG and ``ctx.generator``, the engine's training stream, ``setup`` →
``train_step`` per phase and batch → ``end_epoch`` → ``predict``). The ``engine`` check then runs it
once through :func:`osrbench.engine.run` on the same toy problem registered as a dataset. Trained
methods are cached per (method, registry, device, overrides) so the checks share the training.

Every failure is a :class:`ConformanceError` (an ``AssertionError``) whose message starts with the
check's name and says which contract was broken, for example ``predict: score has shape (10, 1),
expected (10,)`` or ``determinism: two runs with seed 0 gave different logits``.
"""

from __future__ import annotations

from osrbench.testing.check_graphs import HOST_OPS, MASK_INDEXING_OPS, trace_ops
from osrbench.testing.contracts import CHECK_DOCS, CHECKS, MIN_AUROC, CheckResult, ConformanceError, ConformanceReport
from osrbench.testing.docs import hook_reference, hook_specs
from osrbench.testing.runner import check_method, run_check
from osrbench.testing.runs import clear_cache
from osrbench.testing.toy import TOY_BATCH, TOY_CLASSES, TOY_DATASET, TOY_TRAIN_PER_CLASS, toy_data, toy_dataset_spec

__all__ = [
    "CHECKS",
    "CHECK_DOCS",
    "CheckResult",
    "ConformanceError",
    "ConformanceReport",
    "HOST_OPS",
    "MASK_INDEXING_OPS",
    "MIN_AUROC",
    "TOY_BATCH",
    "TOY_CLASSES",
    "TOY_DATASET",
    "TOY_TRAIN_PER_CLASS",
    "check_method",
    "clear_cache",
    "hook_reference",
    "hook_specs",
    "run_check",
    "toy_data",
    "toy_dataset_spec",
    "trace_ops",
]
