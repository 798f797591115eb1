"""Pieces of wrapper.job that need no conversion around them."""
from types import SimpleNamespace

from wrapper.job import Job
from wrapper.state import State
from wrapper.throttling.limits import NetworkRate


class Network:
    """A fake wrapper.throttling.network.NetworkLimit."""

    def __init__(self):
        self.calls = []

    def set(self, rate, conversion):
        self.calls.append((rate, conversion))


def test_network_values_go_to_the_jobs_network_limit_with_its_conversion():
    """The job's initial limit and the throttling file's both reach the one
    NetworkLimit, with the running conversion (whose processes it classifies)."""
    process = SimpleNamespace(set_cpu_quota=lambda value: None)
    job = SimpleNamespace(process=process, network=Network(), state=State(),
                          reserved=SimpleNamespace(throttle_dir_fd=-1, throttle_name="throttle"),
                          allowed_uids={0}, config=SimpleNamespace(throttling={"network": NetworkRate(5)}))
    throttler = Job._throttler(job)
    assert job.network.calls == [(NetworkRate(5), process)]
    assert job.state["throttling"]["network"] == "5"
    throttler.apply({"network": None})
    assert job.network.calls[-1] == (None, process) and job.state["throttling"]["network"] is None
