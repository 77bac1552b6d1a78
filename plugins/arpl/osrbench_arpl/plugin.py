"""The osrbench-arpl plugin (its entry point): registers ARPL and ARPL+CS (:mod:`osrbench_arpl.arpl`),
GCPL and RPL (:mod:`osrbench_arpl.gcpl_rpl`). It imports the methods; they never import it."""

from __future__ import annotations

import osrbench
from osrbench_arpl import arpl, gcpl_rpl


@osrbench.hookimpl
def osrbench_register_methods(register):
    for spec in (*arpl.SPECS, *gcpl_rpl.SPECS):
        register(spec)
