"""NetworkLimit: one network value, both directions, network_directions in the state.

Fakes for both limiters: an outbound limiter that records (or fails) and a source-read
file that records (or fails).  The real ones are tested in test_netlimit.py /
test_bandwidth.py and, on a real host, in tests/integration/."""
import errno
import logging
from types import SimpleNamespace

import pytest

from wrapper.errors import CommandError, ThrottleError
from wrapper.state import State
from wrapper.throttling import bandwidth
from wrapper.throttling.limits import NetworkRate
from wrapper.throttling.network import NetworkLimit
from wrapper.security.secrets import SecretDir
from tests.fakes import Limiter
from tests.test_v2v import CAPS1, CAPS2

MiB = NetworkRate(1048576)
TWO = NetworkRate(2097152)


def Outbound(fail=None, fail_start=None):
    """The shared fake NetLimiter; ``fail`` is raised by set_rate."""
    return Limiter(fail_rate=fail, fail_start=fail_start)


class SourceRead:
    """A fake BandwidthFile: ``fail`` raised by set (and close when ``fail_close``)."""

    path = "/private/bandwidth"

    def __init__(self, fail=None, fail_close=None):
        self.fail = fail
        self.fail_close = fail_close
        self.values = []
        self.closed = 0

    def set(self, value):
        if self.fail:
            raise self.fail
        self.values.append(value)

    def close(self):
        self.closed += 1
        if self.fail_close:
            raise self.fail_close


CONVERSION = SimpleNamespace(pids=lambda: [4242, 4243], dedicated_cgroup=True)


def directions(limit):
    return limit.state["throttling"]["network_directions"]


def test_a_new_limit_starts_with_no_directions():
    state = State()
    state["throttling"]["network_directions"] = ["stale"]
    limit = NetworkLimit(state, Outbound())
    assert directions(limit) == [] and limit.source_read_path is None


def test_a_limit_goes_both_ways():
    out, src = Outbound(), SourceRead()
    limit = NetworkLimit(State(), out, src)
    limit.set(MiB, CONVERSION)
    assert out.rates == [MiB] and src.values == [MiB]
    assert out.starts == [([4242, 4243], True)]         # classified at the first limit
    assert directions(limit) == ["outbound", "source-read"]
    limit.set(TWO, CONVERSION)
    assert out.rates == [MiB, TWO] and len(out.starts) == 1    # started once only
    limit.set(None, CONVERSION)
    assert out.rates == [MiB, TWO, None] and src.values == [MiB, TWO, None]
    assert directions(limit) == []
    assert "last_message" not in limit.state.data


def test_no_limit_before_any_leaves_the_host_alone():
    out = Outbound()
    limit = NetworkLimit(State(), out)
    limit.set(None, CONVERSION)
    assert out.starts == [] and out.rates == [None] and directions(limit) == []


def test_outbound_unavailable_still_limits_the_source_read(caplog):
    limit = NetworkLimit(State(), Outbound(ThrottleError("network limits are unavailable: no nft")),
                         SourceRead())
    with caplog.at_level(logging.WARNING):
        limit.set(TWO, CONVERSION)
    assert limit.source_read.values == [TWO]
    assert directions(limit) == ["source-read"]
    assert "does not cover the outbound traffic" in limit.state["last_message"]["message"]
    assert "network outbound traffic not limited" in caplog.text


def test_source_read_failure_still_limits_outbound():
    limit = NetworkLimit(State(), Outbound(),
                         SourceRead(OSError(errno.ENOSPC, "No space left on device")))
    limit.set(TWO, CONVERSION)
    assert directions(limit) == ["outbound"]
    assert "source read: cannot write the bandwidth file: No space left on device" in \
        limit.state["last_message"]["message"]


def test_nothing_applied_is_a_limit_not_applied():
    fail = CommandError(["tc"], 2, "", "RTNETLINK answers: No such device")
    limit = NetworkLimit(State(), Outbound(fail), SourceRead(OSError(errno.EIO, "I/O error")))
    with pytest.raises(ThrottleError, match="RTNETLINK"):
        limit.set(MiB, CONVERSION)
    assert directions(limit) == []


@pytest.mark.parametrize("fail", [PermissionError(13, "Permission denied", "/run/lock/x"),
                                  CommandError(["tc"], 2, "", "RTNETLINK answers: No such device")])
def test_limiter_start_failure_is_a_limit_not_applied(fail):
    """docs/contract.md §6: logged and ignored (the throttler reports a ThrottleError),
    never an exception that ends the conversion."""
    out = Outbound(fail_start=fail)
    limit = NetworkLimit(State(), out)
    with pytest.raises(ThrottleError):
        limit.set(MiB, CONVERSION)
    assert out.rates == [] and directions(limit) == []


def test_without_the_file_outbound_errors_are_as_before():
    limit = NetworkLimit(State(), Outbound(ThrottleError("no nft")))
    with pytest.raises(ThrottleError, match="no nft"):
        limit.set(NetworkRate(1), CONVERSION)
    limit.outbound = Outbound()
    limit.set(NetworkRate(1), CONVERSION)
    assert directions(limit) == ["outbound"]


def test_a_failed_limit_keeps_the_directions_of_the_one_in_force():
    out = Outbound()
    limit = NetworkLimit(State(), out, SourceRead())
    limit.set(MiB, CONVERSION)
    out.fail_rate = ThrottleError("tc went away")
    limit.source_read.fail = OSError(errno.EIO, "I/O error")
    with pytest.raises(ThrottleError):
        limit.set(TWO, CONVERSION)
    assert directions(limit) == ["outbound", "source-read"]


def test_close_closes_both_even_when_one_fails():
    out, src = Outbound(), SourceRead(fail_close=OSError(errno.EIO, "I/O error"))
    limit = NetworkLimit(State(), out, src)
    with pytest.raises(OSError):
        limit.close()
    assert out.closed == 1 and src.closed == 1
    out2 = Outbound()
    NetworkLimit(State(), out2).close()          # no source read: the outbound still goes
    assert out2.closed == 1


def test_source_read_only_when_virt_v2v_has_the_option(caplog):
    opened = []

    def open_file(secret_dir):
        opened.append(secret_dir)
        return SourceRead()
    limit = NetworkLimit(State(), Outbound())
    with caplog.at_level(logging.INFO):
        assert limit.open_source_read(CAPS1, "secrets", open_file) is None
    assert opened == [] and limit.source_read is None and limit.source_read_path is None
    assert "does not report bandwidth-option" in caplog.text
    assert limit.open_source_read(CAPS2, "secrets", open_file) == SourceRead.path
    assert opened == ["secrets"] and limit.source_read_path == SourceRead.path


def test_the_real_source_read_file_follows_the_limit(tmp_path):
    """With the real BandwidthFile: bits per second, 0 when the limit goes."""
    with SecretDir(str(tmp_path)) as d:
        limit = NetworkLimit(State(), Outbound())
        path = limit.open_source_read(CAPS2, d)
        assert path == limit.source_read_path and open(path).read() == "0"
        limit.set(MiB, CONVERSION)
        assert open(path).read() == str(8 * 1048576)
        limit.set(None, CONVERSION)
        assert open(path).read() == bandwidth.UNLIMITED
        limit.close()
