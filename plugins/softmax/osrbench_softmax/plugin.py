"""The osrbench-softmax plugin (its entry point): registers Softmax (:mod:`osrbench_softmax.softmax`) and
OpenMax (:mod:`osrbench_softmax.openmax`, which builds on it). It imports the methods; they never import it."""

from __future__ import annotations

import osrbench
from osrbench_softmax import openmax, softmax


@osrbench.hookimpl
def osrbench_register_methods(register):
    register(softmax.SPEC)
    register(openmax.OPENMAX_SPEC)
