"""The plugin API: hook specifications of the ``osrbench`` plugin manager.

A plugin is a module (or object) whose functions are marked with :data:`osrbench.hookimpl` and
named after these specifications. Plugins are found through the ``osrbench`` entry-point group
and each is loaded and called in isolation: one that fails to import or to register is skipped
and reported by ``osrbench plugins``, never fatal. Hooks are called once, at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    from osrbench.datasets import DatasetSpec
    from osrbench.loggers import LoggerSpec
    from osrbench.method import MethodSpec
    from osrbench.scoring import ScoreSpec

hookspec = pluggy.HookspecMarker("osrbench")


@hookspec
def osrbench_register_methods(register: Callable[["MethodSpec"], None]) -> None:
    """Register open-set recognition methods.

    :param register: call it once per method with an :class:`osrbench.MethodSpec`. A name that
        another plugin also registers makes that name unusable until one of the two plugins is
        disabled (``OSRBENCH_DISABLE_PLUGINS``); the error names both plugins.

    Use in a plugin::

        @osrbench.hookimpl
        def osrbench_register_methods(register):
            register(MethodSpec(name="energy", factory=Energy, defaults={"epochs": 100, ...}))
    """


@hookspec
def osrbench_register_datasets(register: Callable[["DatasetSpec"], None]) -> None:
    """Register datasets usable with ``--dataset``.

    :param register: call it once per dataset with an :class:`osrbench.DatasetSpec`. Its
        ``table`` names the split table of ``splits.yaml`` it uses (``mnist`` for any 10-class
        set) and its ``load(root, split, image_size)`` returns uint8 tensors. The built-in
        datasets of ``registry.yaml`` are registered through this hook by ``osrbench.builtin``.
    """


@hookspec
def osrbench_register_scores(register: Callable[["ScoreSpec"], None]) -> None:
    """Register post-hoc scorers usable with ``osrbench score --scorer`` and ``compare --score``.

    :param register: call it once per scorer with an :class:`osrbench.ScoreSpec`: a name, what it
        needs (logits, features, head, input gradients), an optional fit on training-set
        statistics, its parameters with an optional tuning grid, and a score function (higher =
        more likely known). Names clash as method names do. The built-in scorers (MSP, MLS,
        energy, ODIN, Mahalanobis, KNN, ViM, ReAct, GEN, OpenMax) are registered through this hook
        by ``osrbench.scorers``.

    Use in a plugin::

        @osrbench.hookimpl
        def osrbench_register_scores(register):
            register(ScoreSpec(name="maxcos", needs={"features"}, fit=class_means, score=max_cosine))
    """


@hookspec
def osrbench_register_loggers(register: Callable[["LoggerSpec"], None]) -> None:
    """Register training loggers usable with ``--log NAME`` on run, compare and sweep.

    :param register: call it once per logger with an :class:`osrbench.loggers.LoggerSpec`: a
        name, a factory that makes one :class:`osrbench.loggers.Logger` per run, the modules it
        needs (checked before any training) and the extra that installs them. The engine sends
        each run's events to it: run start, the end of every epoch (loss terms, learning rates),
        the evaluation, the run's end or its failure. A logger that raises is warned about once
        and never stops the run. Names clash as method names do. The built-in loggers
        (tensorboard, mlflow, wandb) are registered through this hook by ``osrbench.builtin``.

    Use in a plugin::

        @osrbench.hookimpl
        def osrbench_register_loggers(register):
            register(LoggerSpec(name="csv", factory=CsvLogger))
    """
