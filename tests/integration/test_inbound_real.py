"""The inbound policer (wrapper.throttling.inbound) against the real kernel: what a process in
a real cgroup v2 receives from a sender in another network namespace, measured by the receiver.

Layout: a veth pair between two namespaces the test makes (fx_netns).  The receiver
(scripts/netmeter.py recv) runs in the namespace ``a`` in a cgroup of its own, joined before
its socket exists (like a conversion's unit); the sender runs in ``b``.  The limiter and the
policer run their commands in ``a`` (``nsenter --net``), through NetworkLimit, as a job does
where virt-v2v has no ``bandwidth-option``: the host's namespace is never touched (checked).

The limit is on IP packet bytes; TCP payload is ~95-97 % of that, so the bounds are 80-105 %
of the limit.  A changed limit is waited for until it is in force (how long: recorded, not
asserted), then measured over 5 s after a 2 s settling time (a new rule starts with a
full bucket).  Run with ``-s`` for the rates.
"""
import logging
import os
import subprocess
import time
import uuid
from types import SimpleNamespace

import pytest

from tests.integration import timings
from wrapper.state import State
from wrapper.throttling import host, inbound, netlimit, tcnft
from wrapper.throttling.limits import NetworkRate
from wrapper.throttling.network import NetworkLimit

try:
    from . import netns as netns_mod
    from .test_netlimit_real import host_untouched, lock_dir, ours_left  # noqa: F401 (fixtures)
except ImportError:  # pragma: no cover - depends on how pytest was started
    import netns as netns_mod
    from test_netlimit_real import host_untouched, lock_dir, ours_left  # noqa: F401

pytestmark = pytest.mark.integration

MiB = 1 << 20
LO, HI = 0.80, 1.05
SETTLE, HOLD = 2.0, 5.0        # a changed rule starts with a full bucket: let it drain first
NETMETER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts", "netmeter.py")


@pytest.fixture
def cgroup():
    """A real cgroup v2 directory of our own, removed at teardown (its processes gone)."""
    root = host.find_cgroup2("/sys/fs/cgroup")
    if root is None:
        pytest.skip("no cgroup v2 hierarchy under /sys/fs/cgroup")
    path = os.path.join(root, "v2vw-inbound-" + uuid.uuid4().hex[:8])
    os.mkdir(path)
    yield path
    deadline = time.monotonic() + 5
    while True:
        try:
            os.rmdir(path)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Sender:
    """Bulk TCP from the namespace ``b`` to the receiver, until stopped."""

    def __init__(self, pair, port, seconds):
        self.proc = subprocess.Popen(netns_mod.prefix(pair.b) + [
            "python3", NETMETER, "send", netns_mod.SENDER_IP, str(port), str(seconds)])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


def measure(rx, limit, t_change, label):
    """(rate once in force, seconds until in force); prints both."""
    effect = rx.took_effect(t_change, limit)
    timings.record("inbound " + label, "in force (2 x 0.25 s windows 0.5-1.5x)", effect)
    assert effect is not None, "%s never in force" % label
    t = t_change + effect + SETTLE
    rx.wait_until(t + HOLD)
    rate = rx.rate(t, t + HOLD)
    print("%-22s limit=%9d measured=%9.0f B/s = %5.1f %%  in force after %.2f s"
          % (label, limit, rate, 100.0 * rate / limit, effect))
    return rate


def test_inbound_policer_limits_follows_lifts_and_leaves_nothing(
        netns_pair, lock_dir, cgroup, host_untouched, caplog):   # noqa: F811 (fixtures)
    caplog.set_level(logging.INFO)
    run = netns_pair.runner()
    rx = netns_mod.Receiver(netns_pair.a, 5351, cgroup=cgroup).start()
    free_rx = None
    lim = netlimit.NetLimiter("inb", runner=run, lock_dir=lock_dir,
                              log=logging.getLogger("test.inbound"))
    state = State()
    limit = NetworkLimit(state, lim)
    limit.open_source_read(SimpleNamespace(has=lambda cap: False), None)   # no bandwidth-option
    conversion = SimpleNamespace(pids=lambda: [rx.proc.pid], dedicated_cgroup=True)
    sender = None
    try:
        limit.set(NetworkRate(1 * MiB), conversion)          # before the first byte
        assert lim.mechanism.name == "cgroup2", lim.mechanism
        assert state["throttling"]["network_directions"] == ["outbound", "inbound"]
        table = run(["nft", "list", "table", "inet", lim.table]).out
        assert "hook input" in table and "limit rate over 1 mbytes/second burst 256 kbytes" in table
        t0 = time.monotonic()
        sender = Sender(netns_pair, rx.port, 60)
        r1 = measure(rx, 1 * MiB, t0, "1 MiB/s from the start")
        first = rx.rate(t0, t0 + 1.5)
        t1 = time.monotonic()
        limit.set(NetworkRate(8 * MiB), conversion)
        r8 = measure(rx, 8 * MiB, t1, "8 MiB/s")
        t2 = time.monotonic()
        limit.set(None, conversion)
        assert state["throttling"]["network_directions"] == []
        assert "chain in" not in run(["nft", "list", "table", "inet", lim.table]).out
        rx.wait_until(t2 + 2.5)
        free = rx.rate(t2 + 0.5, t2 + 2.5)
        print("%-22s measured=%9.0f B/s (%.1f MiB/s)" % ("unlimited", free, free / MiB))
        t3 = time.monotonic()
        limit.set(NetworkRate(2 * MiB), conversion)          # the chain is made again
        r2 = measure(rx, 2 * MiB, t3, "2 MiB/s again")
        # a process outside the cgroup is not policed
        free_rx = netns_mod.Receiver(netns_pair.a, 5352).start()
        other = Sender(netns_pair, free_rx.port, 3)
        t4 = time.monotonic()
        free_rx.wait_until(t4 + 2.5)
        other.stop()
        outside = free_rx.rate(t4 + 0.5, t4 + 2.5)
        print("%-22s measured=%9.0f B/s while the cgroup's limit is 2 MiB/s" % ("outside", outside))
        dropped = run(["nft", "list", "table", "inet", lim.table]).out
    finally:
        if sender:
            sender.stop()
        limit.close()
        rx.stop()
        if free_rx:
            free_rx.stop()
    assert ours_left(run, lock_dir) == []
    assert LO * MiB <= r1 <= HI * MiB, "1 MiB/s: %.1f %%" % (100.0 * r1 / MiB)
    assert first <= 2.2 * MiB, "the start escaped the limit: %.0f B/s" % first
    assert LO * 8 * MiB <= r8 <= HI * 8 * MiB, "8 MiB/s: %.1f %%" % (100.0 * r8 / (8 * MiB))
    assert free > 3 * 8 * MiB, "lifting the limit did not lift it: %.0f B/s" % free
    assert LO * 2 * MiB <= r2 <= HI * 2 * MiB, "2 MiB/s: %.1f %%" % (100.0 * r2 / (2 * MiB))
    assert outside > 4 * 2 * MiB, "traffic of another cgroup was policed: %.0f B/s" % outside
    assert "over 2 mbytes/second" in dropped and "packets 0 " not in dropped.split("limit rate")[1]
    assert "inbound policed at 2097152 B/s" in caplog.text


def test_inbound_rule_goes_with_the_table_of_a_dead_wrapper(netns_pair, lock_dir, cgroup,
                                                            host_untouched):  # noqa: F811
    """A wrapper killed outright leaves its table (with the inbound chain); the next limiter
    reclaims the reservation and deletes both."""
    run = netns_pair.runner()
    rx = netns_mod.Receiver(netns_pair.a, 5353, cgroup=cgroup).start()
    try:
        dead = netlimit.NetLimiter("dead", runner=run, lock_dir=lock_dir)
        dead.start(rx.proc.pid, dedicated_cgroup=True)
        inbound.InboundPolicer(dead, run).set(NetworkRate(MiB))
        assert "hook input" in run(["nft", "list", "table", "inet", dead.table]).out
        with open(os.path.join(lock_dir, "netlimit-%x.owner" % dead.minor), "w") as f:
            f.write('{"pid": 999999999, "start": 1, "tag": "dead", "table": "%s", "cgroup": null}'
                    % dead.table)
        heir = netlimit.NetLimiter("heir", runner=run, lock_dir=lock_dir)
        heir.start(rx.proc.pid, dedicated_cgroup=True)
        tables = [t for _, t in tcnft.parse_nft_tables(run(["nft", "-j", "list", "tables"]).out)]
        assert dead.table not in tables and heir.table in tables
        heir.close()
    finally:
        rx.stop()
    assert ours_left(run, lock_dir) == []
