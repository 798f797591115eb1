"""Pieces of wrapper.job that need no conversion around them."""
from types import SimpleNamespace

import pytest

from tests.fakes import Limiter
from wrapper.errors import CommandError, ThrottleError
from wrapper.job import Job


@pytest.mark.parametrize("fail", [PermissionError(13, "Permission denied", "/run/lock/x"),
                                  CommandError(["tc"], 2, "", "RTNETLINK answers: No such device")])
def test_network_limiter_failure_is_a_limit_not_applied(fail):
    """docs/contract.md §6: logged and ignored (the throttler reports a ThrottleError),
    never an exception that ends the conversion."""
    job = SimpleNamespace(process=SimpleNamespace(pids=lambda: [1], dedicated_cgroup=False))
    limiter = Limiter(fail_start=fail)
    with pytest.raises(ThrottleError):
        Job._set_outbound(job, limiter, "1048576")
    assert limiter.rates == []          # no rate without the classification
