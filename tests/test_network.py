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
from wrapper.throttling.inbound import InboundPolicer
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
    assert limit.open_source_read(CAPS2, "secrets", open_file) == SourceRead.path
    assert opened == ["secrets"] and limit.source_read_path == SourceRead.path
    assert limit.inbound is None, "virt-v2v limits the read: no inbound policer on top"
    limit = NetworkLimit(State(), Outbound())
    with caplog.at_level(logging.INFO):
        assert limit.open_source_read(CAPS1, "secrets", open_file) is None
    assert opened == ["secrets"] and limit.source_read is None and limit.source_read_path is None
    assert "does not report bandwidth-option" in caplog.text
    assert "policing what the conversion receives" in caplog.text
    assert isinstance(limit.inbound, InboundPolicer) and limit.inbound.limiter is limit.outbound


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


# ---- the inbound policer: where virt-v2v has no bandwidth-option ---------------------------
class Inbound:
    """A fake InboundPolicer: records every set; ``fail`` is raised instead."""

    def __init__(self, fail=None):
        self.fail = fail
        self.values = []

    def set(self, value):
        if self.fail:
            raise self.fail
        self.values.append(value)


def test_without_bandwidth_option_the_limit_goes_out_and_in():
    out, inb = Outbound(), Inbound()
    limit = NetworkLimit(State(), out)
    assert limit.open_source_read(CAPS1, "secrets", open_inbound=lambda o: inb) is None
    limit.set(MiB, CONVERSION)
    assert out.starts == [([4242, 4243], True)] and out.rates == [MiB] and inb.values == [MiB]
    assert directions(limit) == ["outbound", "inbound"]
    limit.set(TWO, CONVERSION)
    limit.set(None, CONVERSION)
    assert inb.values == [MiB, TWO, None] and len(out.starts) == 1
    assert directions(limit) == [] and "last_message" not in limit.state.data


def test_with_bandwidth_option_nothing_is_policed_inbound():
    opened = []
    limit = NetworkLimit(State(), Outbound())
    limit.open_source_read(CAPS2, "secrets", lambda d: SourceRead(),
                           open_inbound=lambda o: opened.append(o))
    limit.set(MiB, CONVERSION)
    assert opened == [] and limit.inbound is None
    assert directions(limit) == ["outbound", "source-read"]


def test_inbound_alone_when_no_interface_can_be_shaped():
    limit = NetworkLimit(State(), Outbound(ThrottleError("no interface can carry the limit")),
                         inbound=Inbound())
    limit.set(TWO, CONVERSION)
    assert directions(limit) == ["inbound"]
    assert "does not cover the outbound traffic: no interface" in \
        limit.state["last_message"]["message"]


def test_outbound_alone_when_the_policer_fails():
    limit = NetworkLimit(State(), Outbound(), inbound=Inbound(ThrottleError(
        "inbound traffic is matched by cgroup v2 only (this host classifies by net_cls)")))
    limit.set(TWO, CONVERSION)
    assert directions(limit) == ["outbound"]
    assert "does not cover the inbound traffic: inbound traffic is matched by cgroup v2" in \
        limit.state["last_message"]["message"]


def test_neither_direction_is_a_limit_not_applied():
    limit = NetworkLimit(State(), Outbound(ThrottleError("no nft")),
                         inbound=Inbound(CommandError(["nft"], 1, "", "Error: No such file")))
    with pytest.raises(ThrottleError, match="no nft"):
        limit.set(MiB, CONVERSION)
    assert directions(limit) == []


def test_the_policer_waits_for_the_classification():
    """The inbound rule lives in the outbound limiter's table: the conversion is classified
    (once) before the policer is asked, even when the outbound class then fails."""
    order = []
    out = Outbound(ThrottleError("tc failed"))
    out.start = lambda pids, dedicated: (order.append("start"), setattr(out, "started", True))
    inb = Inbound()
    inb.set = lambda v: order.append(("inbound", v))
    limit = NetworkLimit(State(), out, inbound=inb)
    limit.set(MiB, CONVERSION)
    assert order == ["start", ("inbound", MiB)]


def test_a_start_failure_fails_both_directions():
    fail = PermissionError(13, "Permission denied", "/run/lock/x")
    inb = Inbound()
    limit = NetworkLimit(State(), Outbound(fail_start=fail), inbound=inb)
    with pytest.raises(ThrottleError, match="Permission denied"):
        limit.set(MiB, CONVERSION)
    assert inb.values == [] and directions(limit) == []


def test_the_real_policer_through_the_limit():
    """NetworkLimit + the real InboundPolicer + a started limiter stand-in: the nft text."""
    runs = []
    out = Outbound()
    out.runner = lambda argv, **kw: runs.append((argv, kw.get("input")))

    def start(pids, dedicated):
        out.started, out.minor, out.table = True, 1, "v2vw_1_job"
        out.mechanism = SimpleNamespace(name="cgroup2", available=True, reason="")
        out.match = 'socket cgroupv2 level 1 "unified/x"'
    out.start = start
    limit = NetworkLimit(State(), out)
    limit.open_source_read(CAPS1, "secrets")
    limit.set(MiB, CONVERSION)
    assert [a for a, _ in runs] == [["nft", "-f", "-"]]
    assert 'socket cgroupv2 level 1 "unified/x" limit rate over 1048576 bytes/second' in runs[0][1]
    assert directions(limit) == ["outbound", "inbound"]
    limit.set(None, CONVERSION)
    assert "delete chain inet v2vw_1_job in" in runs[1][1] and directions(limit) == []
