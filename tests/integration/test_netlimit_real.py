"""wrapper.throttling.netlimit against the real kernel: a unit of the test systemd (running in the sender's
network namespace) sends bulk TCP; the rate is measured at the receiver in the other namespace.

Limits are bytes/s on the wire; TCP payload is ~95.6 % of that at MTU 1500, so the assertions
use 85-102 % of the limit.  Rates are taken over 2 s after a 1 s settling time, counted from
when a changed limit is in force (waited for, generously); how long that took, and until every
later 0.5 s window is within bounds, is recorded (tests/integration/timings.py), not asserted.
"""
import logging
import os
import subprocess
import tempfile
import time

import pytest

from tests.integration import timings
from wrapper.throttling import netlimit, tcnft
from wrapper.throttling.limits import NetworkRate
from wrapper.errors import ThrottleError

pytestmark = pytest.mark.integration


MiB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
NETMETER = os.path.join(HERE, "scripts", "netmeter.py")
LO, HI = 0.85, 1.02


def host_state():
    """What the host's own network namespace looks like (must be unchanged by the tests)."""
    def out(*argv):
        return subprocess.run(argv, capture_output=True, text=True).stdout
    return out("tc", "qdisc", "show"), out("tc", "class", "show", "dev", "lo"), out("nft", "list", "ruleset")


@pytest.fixture
def lock_dir():
    # a lock directory must not sit in a directory others can write (/tmp): a private parent
    d = tempfile.mkdtemp(prefix="v2vw-netlock-", dir="/tmp")
    os.mkdir(os.path.join(d, "lock"), 0o700)
    yield os.path.join(d, "lock")
    import shutil
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def host_untouched():
    before = host_state()
    yield
    assert host_state() == before


class Gated:
    """A unit whose main process waits on a FIFO (the launcher's gate), then execs the sender."""

    def __init__(self, manager, name, port, seconds, child=False):
        """``child``: the sender is a child of the gated process (like virt-v2v's nbdkit),
        not the gated process itself."""
        self.m, self.unit = manager, name + ".service"
        self.fifo = os.path.join(manager.rundir, name + ".gate")
        os.mkfifo(self.fifo)
        manager.systemd_run("--unit=" + name, "/bin/sh", "-c",
                            'read _ < %s && %s python3 %s send 198.18.0.2 %d %d %s'
                            % (self.fifo, "" if child else "exec", NETMETER, port, seconds,
                               "; true" if child else ""))
        end = time.monotonic() + 5
        while True:
            pids = manager.host_pids(self.unit)
            if pids or time.monotonic() > end:
                break
            time.sleep(0.01)
        assert len(pids) == 1, pids
        self.host_pid = pids[0]

    def release(self):
        end = time.monotonic() + 5
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:             # ENXIO until the shell has opened it for reading
                if time.monotonic() > end:
                    raise
                time.sleep(0.005)
        os.write(fd, b"go\n")
        os.close(fd)
        return time.monotonic()

    def stop(self):
        self.m.run("systemctl", "stop", self.unit, check=False)


def ours_left(runner, lock_dir, cgroup_dirs=()):
    """Everything of ours that still exists: classes, root qdisc, nft tables, cgroups, files."""
    left = []
    for dev in tcnft.candidate_devices(tcnft.parse_links(runner(["ip", "-j", "link", "show"]).out)):
        root = tcnft.parse_root_qdisc(runner(["tc", "-j", "qdisc", "show", "dev", dev]).out)
        if tcnft.root_owner(root) == "ours":
            left.append("%s root %s" % (dev, root))
        classes = tcnft.parse_classes(runner(["tc", "class", "show", "dev", dev]).out)
        left += ["%s class %x" % (dev, c) for c in classes]
    tables = tcnft.parse_nft_tables(runner(["nft", "-j", "list", "tables"]).out)
    left += ["nft %s" % (t,) for t in tables if t[1].startswith(tcnft.TABLE_PREFIX)]
    left += [d for d in cgroup_dirs if os.path.exists(d)]
    left += [f for f in os.listdir(lock_dir) if f.endswith(".owner")]
    return left


def phase(rx, limit, t_change, label, hold=3.0):
    """Wait ``hold`` s after ``t_change``; the rate over [t+1, t+hold] and the settle time."""
    rx.wait_until(t_change + hold)
    rate = rx.rate(t_change + 1.0, t_change + hold)
    settle = rx.settle_time(t_change, limit * 0.956, lo=LO / 0.956, hi=HI / 0.956, until=t_change + hold) \
        if limit else None
    print("%-28s limit=%-9s measured=%9.0f B/s (%.3f MiB/s, %s) settle=%s" % (
        label, limit, rate, rate / MiB, "%.1f%%" % (100.0 * rate / limit) if limit else "-",
        "%.2fs" % settle if settle is not None else "-"))
    return rate, settle


def in_force(rx, limit, t_change, label):
    """Wait (generously) until the new limit is in force, then measure as :func:`phase` from
    there; (rate, seconds until in force) or (None, None).  How long the change took is
    recorded, not asserted (bench/throttle_latency.py)."""
    effect = rx.took_effect(t_change, limit)
    timings.record("netlimit " + label, "in force (2 x 0.25 s windows 0.5-1.5x)", effect)
    if effect is None:
        return None, None
    rate, settle = phase(rx, limit, t_change + effect, label)
    timings.record("netlimit " + label, "settled (0.5 s windows 85-102 %)",
                   None if settle is None else effect + settle)
    return rate, effect


def run_limits(manager, pair, rx, limiter, dedicated=True, child=False):
    """1 MiB/s from the first byte, then 8 MiB/s, then unlimited, then 2 MiB/s; asserts each."""
    sender = Gated(manager, "v2vw-send-" + limiter.tag, rx.port, 16, child=child)
    try:
        limiter.set_rate(NetworkRate(1 * MiB))      # before start(): applied at the gate
        limiter.start(sender.host_pid, dedicated_cgroup=dedicated)
        assert limiter.mechanism.available, limiter.mechanism
        t0 = sender.release()
        r1, _ = phase(rx, 1 * MiB, t0, "%s 1 MiB/s" % limiter.mechanism.name)
        first = rx.rate(t0, t0 + 1.0)
        name = limiter.mechanism.name
        t1 = time.monotonic()
        limiter.set_rate(NetworkRate(8 * MiB))
        timings.record("netlimit " + name, "set_rate(8 MiB/s) call", time.monotonic() - t1)
        r8, e8 = in_force(rx, 8 * MiB, t1, "%s 8 MiB/s" % name)
        t2 = time.monotonic()
        limiter.set_rate(None)
        rx.wait_until(t2 + 1.5)
        free = rx.rate(t2 + 0.5, t2 + 1.5)
        print("%-28s measured=%9.0f B/s (%.1f MiB/s); first second %.3f MiB/s"
              % (limiter.mechanism.name + " unlimited", free, free / MiB, first / MiB))
        t3 = time.monotonic()
        limiter.set_rate(NetworkRate(2 * MiB))                   # class and root are made again
        r2, e2 = in_force(rx, 2 * MiB, t3, "%s 2 MiB/s again" % name)
        assert first <= HI * MiB, "traffic escaped the limit at the start"
        assert LO * MiB <= r1 <= HI * MiB
        assert LO * 8 * MiB <= r8 <= HI * 8 * MiB
        assert e8 is not None, "8 MiB/s never in force"
        assert e2 is not None, "2 MiB/s never in force again"
        assert free > 3 * 8 * MiB
        assert LO * 2 * MiB <= r2 <= HI * 2 * MiB
    finally:
        sender.stop()


def test_cgroup2_limits_and_cleanup(make_test_systemd, netns_pair, receiver, lock_dir, host_untouched,
                                   caplog):
    caplog.set_level(logging.INFO)
    run = netns_pair.runner()
    # an interface whose root qdisc someone else configured must be left alone
    run(["ip", "link", "add", "vx", "type", "veth", "peer", "name", "vxp"])
    run(["ip", "link", "set", "vx", "up"])
    run(["ip", "link", "set", "vxp", "up"])
    run(["tc", "qdisc", "add", "dev", "vx", "root", "handle", "1:", "pfifo", "limit", "100"])
    foreign = run(["tc", "-j", "qdisc", "show", "dev", "vx"]).out
    m = make_test_systemd(netns=netns_pair.a)
    rx = receiver()
    lim = netlimit.NetLimiter("v2", runner=run, lock_dir=lock_dir, log=logging.getLogger("test.v2"))
    try:
        run_limits(m, netns_pair, rx, lim)
        assert lim.mechanism.name == "cgroup2"
        assert "network limit 1048576 B/s on va, vxp" in caplog.text       # vx skipped, lo never
        assert lim.devices == ["va", "vxp"]
        assert "not shaping vx: its root qdisc is not ours" in caplog.text
    finally:
        lim.close()
    lim.close()                                 # idempotent
    assert ours_left(run, lock_dir) == []
    assert run(["tc", "-j", "qdisc", "show", "dev", "vx"]).out == foreign
    assert tcnft.parse_root_qdisc(run(["tc", "-j", "qdisc", "show", "dev", "va"]).out)[1] == "0:"
    with pytest.raises(ThrottleError, match="closed"):
        lim.set_rate(NetworkRate(MiB))


def test_net_cls_v1_limits_and_cleanup(make_test_systemd, netns_pair, receiver, lock_dir, host_untouched):
    run = netns_pair.runner()
    m = make_test_systemd(netns=netns_pair.a, net_cls=True)
    rx = receiver()
    # the net_cls hierarchy exists only in the manager's mount namespace: look at it through
    # /proc/PID/root; cgroup.procs takes host PIDs because we write from the host pid namespace
    lim = netlimit.NetLimiter("v1", runner=run, cgroup_root=m.cgroup_root, lock_dir=lock_dir,
                              log=logging.getLogger("test.v1"))
    cg = os.path.join(m.cgroup_root, "net_cls", tcnft.cgroup_name("v1"))
    try:
        run_limits(m, netns_pair, rx, lim, child=True)      # only the parent was moved: children follow
        assert lim.mechanism.name == "net_cls"
    finally:
        lim.close()
    assert ours_left(run, lock_dir, [cg]) == []


def test_two_concurrent_limiters(make_test_systemd, netns_pair, receiver, lock_dir, host_untouched):
    run = netns_pair.runner()
    m = make_test_systemd(netns=netns_pair.a)
    rx_a, rx_b = receiver(), receiver()
    a = netlimit.NetLimiter("ca", runner=run, lock_dir=lock_dir, log=logging.getLogger("test.a"))
    b = netlimit.NetLimiter("cb", runner=run, lock_dir=lock_dir, log=logging.getLogger("test.b"))
    sa = Gated(m, "v2vw-ca", rx_a.port, 6)
    sb = Gated(m, "v2vw-cb", rx_b.port, 6)
    own_b = None
    try:
        a.set_rate(NetworkRate(1 * MiB))
        b.set_rate(NetworkRate(3 * MiB))
        a.start(sa.host_pid, dedicated_cgroup=True)
        b.start(sb.host_pid, dedicated_cgroup=False)     # own child cgroup instead of the unit's
        own_b = b._cgroup
        assert a.minor != b.minor
        t0 = max(sa.release(), sb.release())
        ra, _ = phase(rx_a, 1 * MiB, t0, "concurrent a 1 MiB/s")
        rb, _ = phase(rx_b, 3 * MiB, t0, "concurrent b 3 MiB/s")
        assert LO * MiB <= ra <= HI * MiB
        assert LO * 3 * MiB <= rb <= HI * 3 * MiB
        a.close()                                        # b's class keeps the shared root alive
        root = tcnft.parse_root_qdisc(run(["tc", "-j", "qdisc", "show", "dev", "va"]).out)
        assert tcnft.root_owner(root) == "ours"
        assert tcnft.parse_classes(run(["tc", "class", "show", "dev", "va"]).out) == {b.minor}
    finally:
        sa.stop()
        sb.stop()
        a.close()
        b.close()
    assert ours_left(run, lock_dir, [own_b] if own_b else []) == []
