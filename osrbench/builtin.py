"""The host's own hook implementations: the datasets described by ``registry.yaml``."""

from osrbench import hookimpl
from osrbench.registry import builtin_datasets


@hookimpl
def osrbench_register_datasets(register):
    for spec in builtin_datasets():
        register(spec)
