"""The host's own hook implementations: the datasets described by ``registry.yaml`` and the
built-in post-hoc scorers (:mod:`osrbench.scorers`) and training loggers (:mod:`osrbench.loggers`)."""

from osrbench import hookimpl
from osrbench.registry import builtin_datasets


@hookimpl
def osrbench_register_datasets(register):
    for spec in builtin_datasets():
        register(spec)


@hookimpl
def osrbench_register_scores(register):
    from osrbench.scorers import BUILTIN_SCORERS

    for spec in BUILTIN_SCORERS:
        register(spec)


@hookimpl
def osrbench_register_loggers(register):
    from osrbench.loggers import builtin_specs

    for spec in builtin_specs():
        register(spec)
