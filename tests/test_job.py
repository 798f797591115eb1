"""Pieces of wrapper.job that need no conversion around them."""
from types import SimpleNamespace

import pytest

from wrapper.errors import CommandError, ThrottleError
from wrapper.job import Job


class Limiter:
    started = False

    def __init__(self, fail):
        self.fail = fail

    def start(self, pids, dedicated):
        raise self.fail

    def set_rate(self, rate):
        raise AssertionError("not reached")


@pytest.mark.parametrize("fail", [PermissionError(13, "Permission denied", "/run/lock/x"),
                                  CommandError(["tc"], 2, "", "RTNETLINK answers: No such device")])
def test_network_limiter_failure_is_a_limit_not_applied(fail):
    """docs/contract.md §6: logged and ignored (the throttler reports a ThrottleError),
    never an exception that ends the conversion."""
    job = SimpleNamespace(process=SimpleNamespace(pids=lambda: [1], dedicated_cgroup=False))
    with pytest.raises(ThrottleError):
        Job._set_outbound(job, Limiter(fail), "1048576")
