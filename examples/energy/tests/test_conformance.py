"""The osrbench conformance suite on the energy method (run: pytest examples/energy/tests)."""

import pytest

from osrbench.testing import CHECKS, run_check


@pytest.mark.parametrize("check", CHECKS)
def test_conformance(check):
    run_check("energy", check)
