"""Issue 12: a network limit caps the read from the source, measured at the fake ESXi host.

One real virt-v2v 2.2 conversion through the CLI (``-i vmx -it ssh`` from our own fake ESXi
host, output_dir).  The VM's first disk is random data (nothing for virt-v2v to trim, nothing
for nbdcopy to skip as zero: every byte crosses), its second the test guest's OS disk.  The
job starts at ``L1``; mid-copy a throttling file sets ``L2``, then ``"unlimited"``.

The wrapper runs in the host's network namespace (the fake host listens on its 127.0.0.1),
so its outbound limiter is kept off the host's interfaces: ``VIRT_V2V_WRAPPER_CGROUP_ROOT``
names an empty directory, outbound limits are unavailable (a notice, checked), and what is
measured is the source-read limit alone; the host's qdiscs and firewall are checked unchanged.
tests/integration/test_network_throttling.py measures the outbound half in a netns.

The rate is measured where the source serves it: the ``rchar`` counters (bytes returned by
read(2)) of the fake host's ``sftp-server`` processes, which read the flat extents for
nbdkit's ssh plugin, sampled every 0.1 s.  nbdkit's rate filter counts NBD payload, which is
what sftp-server reads; the aim is 85-105 % of each limit.  Requests are 256 KiB, so a 1 s
window at 2 MiB/s holds only ~8 of them: rates are taken over 9 s, and a change's effect is
when a 0.5 s window is past the midpoint between the old and the new rate.  Run with ``-s``
for the rates and the time each change took to take effect.
"""

import bisect
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from tests import wrapperrun as wr
from tests.integration import timings

try:
    from . import fake_esxi as fx
    from . import fx_esxi
    from .test_network_throttling import host_state
    from .test_real_conversions import Run, ssh_job
except ImportError:  # pragma: no cover - depends on how pytest was started
    import fake_esxi as fx
    import fx_esxi
    from test_network_throttling import host_state
    from test_real_conversions import Run, ssh_job

pytestmark = pytest.mark.integration

MiB = 1 << 20
L1 = 4 * MiB             # from the job
L2 = 2 * MiB             # from a throttling file, mid-copy
HOLD1 = 12.0             # seconds of copy at L1 ...
HOLD2 = 11.0             # ... and at L2: > 20 s at a limit
SKIP = 3.0               # nbdkit's bucket starts full (2 s worth): skip the burst
LO, HI = 0.85, 1.05
RANDOM_MIB = 320         # 70 MiB at the limits, the rest unlimited
VM = "bwvm"


def random_image(cache_dir, mib=RANDOM_MIB):
    """A raw disk of random bytes, made once in the guest image cache."""
    path = Path(cache_dir) / ("guest-random-%dM.img" % mib)
    if path.is_file() and path.stat().st_size == mib * MiB:
        return path
    tmp = path.with_name(".%s.%d.tmp" % (path.name, os.getpid()))
    with open(str(tmp), "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MiB))
    os.replace(str(tmp), str(path))
    return path


class SourceMeter:
    """Bytes the fake host's sftp-server processes have read, sampled in a thread."""

    def __init__(self, sshd_pid, interval=0.1):
        self.sshd_pid = sshd_pid
        self.interval = interval
        self.samples = []            # (monotonic time, total bytes)
        self._seen = {}              # pid -> last rchar (an exited process keeps its bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def _descendants(self):
        parents = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open("/proc/%s/stat" % name) as f:
                        fields = f.read().rpartition(")")[2].split()
                    parents[int(name)] = int(fields[1])
                except (OSError, ValueError, IndexError):
                    continue
        out = []
        for pid in parents:
            p, hops = pid, 0
            while p in parents and p != self.sshd_pid and hops < 50:
                p, hops = parents[p], hops + 1
            if p == self.sshd_pid and pid != self.sshd_pid:
                out.append(pid)
        return out

    def _loop(self):
        while not self._stop.is_set():
            for pid in self._descendants():
                try:
                    with open("/proc/%d/comm" % pid) as f:
                        if f.read().strip() != "sftp-server":
                            continue
                    with open("/proc/%d/io" % pid) as f:
                        io = dict(line.split(": ") for line in f.read().splitlines())
                    self._seen[pid] = int(io["rchar"])
                except (OSError, ValueError, KeyError):
                    continue
            self.samples.append((time.monotonic(), sum(self._seen.values())))
            self._stop.wait(self.interval)

    def flowing(self, since, limit, timeout=60):
        """The time from which the copy reads: the first 0.5 s after ``since`` with a quarter
        of ``limit``'s bytes (the stage is announced a moment before nbdcopy reads)."""
        deadline = since + timeout
        while time.monotonic() < deadline:
            samples = self.samples[:]
            start = bisect.bisect_left(samples, (since, -1))
            for ts, _ in samples[start:]:
                if ts + 0.5 <= self.samples[-1][0] and \
                        self.rate(ts, ts + 0.5) >= limit / 4:
                    return ts
            time.sleep(0.1)
        raise AssertionError("the copy of disk 1 never started reading")

    def total_at(self, t):
        samples = self.samples[:]
        i = bisect.bisect_right(samples, (t, float("inf")))
        return samples[i - 1][1] if i else 0

    def rate(self, t0, t1):
        return (self.total_at(t1) - self.total_at(t0)) / (t1 - t0)

    def wait_until(self, t):
        while time.monotonic() < t:
            time.sleep(0.05)

    def effect(self, t, old, new, until, window=0.5, step=0.05):
        """Seconds after ``t`` until the first ``window`` of reading whose rate is past the
        midpoint between the ``old`` and the ``new`` rate (None: never before ``until``)."""
        mid = (old + new) / 2.0
        for x in frange(0.0, until - t - window, step):
            r = self.rate(t + x, t + x + window)
            if (r <= mid) if new < old else (r >= mid):
                return x
        return None

    def windows(self, t0, t1, width=1.0):
        return " ".join("%.2f" % (self.rate(a, a + width) / MiB)
                        for a in frange(t0, t1 - width, width))


def frange(a, b, step):
    out, x = [], a
    while x <= b + 1e-9:
        out.append(x)
        x += step
    return out


def write_throttling(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"network": value}, f)
    t = time.monotonic()
    os.rename(tmp, path)
    return t


def bandwidth_file(run):
    """(path, stat, content) of the job's bandwidth file in its private directory."""
    dirs = wr.secret_dirs(run.state_dir)
    assert len(dirs) == 1, dirs
    path = os.path.join(dirs[0], "bandwidth")
    with open(path) as f:
        return path, os.stat(path), f.read()


@pytest.fixture(scope="module")
def bw_esxi(guest_images):
    fx_esxi.require(fx_esxi.ESXI_PROGRAMS, "the fake ESXi host")
    rand = random_image(guest_images.os_disk.parent)
    images = {"os": guest_images.os_disk, "random": rand}
    with fx.FakeEsxi(images, vms=(fx.VmSpec(VM, ("random", "os")),)) as host:
        yield host


class HostSafeRun(Run):
    """A conversion whose outbound limiter finds no cgroup hierarchy (see the module doc)."""

    def env(self, v2v_env):
        no_cgroups = os.path.join(self.root, "no-cgroups")
        os.makedirs(no_cgroups, exist_ok=True)
        return dict(super().env(v2v_env), VIRT_V2V_WRAPPER_CGROUP_ROOT=no_cgroups)


def test_limit_holds_on_the_source_read_and_follows_the_throttling_file(bw_esxi, v2v_env):
    run = HostSafeRun("bandwidth")
    try:
        _conversion(run, bw_esxi, v2v_env)
    finally:
        run.cleanup()


def _conversion(run, host, v2v_env):
    host_before = host_state()
    with SourceMeter(host.proc.pid) as meter:
        announced = run.start(ssh_job(host, VM, output_dir=run.out,
                                      throttling={"network": str(L1)}), v2v_env)
        assert run.proc.wait(timeout=60) == 0
        state = run.wait(lambda s: s.get("stage") == "Copying disk 1/2" or s.get("finished"))
        assert not state.get("finished"), run.tail("wrapper_log")
        t_copy = meter.flowing(time.monotonic(), L1)
        assert state["throttling"]["network"] == str(L1)
        assert state["throttling"]["network_directions"] == ["source-read"]
        assert "does not cover the outbound traffic" in state["last_message"]["message"]
        assert host_state() == host_before
        path, st, text = bandwidth_file(run)
        assert text == str(L1 * 8)
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 0

        meter.wait_until(t_copy + HOLD1)
        r1 = meter.rate(t_copy + SKIP, t_copy + HOLD1)
        t2 = write_throttling(announced["throttling_file"], str(L2))
        s = run.wait(lambda s: s["throttling"]["network"] == str(L2), timeout=10)
        picked2 = time.monotonic() - t2
        assert bandwidth_file(run)[2] == str(L2 * 8)
        meter.wait_until(t2 + HOLD2)
        r2 = meter.rate(t2 + SKIP, t2 + HOLD2)
        effect2 = meter.effect(t2, L1, L2, t2 + HOLD2)

        t3 = write_throttling(announced["throttling_file"], "unlimited")
        s = run.wait(lambda s: s["throttling"]["network"] is None, timeout=10)
        picked3 = time.monotonic() - t3
        assert s["throttling"]["network_directions"] == []
        assert bandwidth_file(run)[2] == "0"
        s = run.wait(lambda s: s.get("stage") != "Copying disk 1/2", timeout=300)
        t_end = time.monotonic()
        # the last 0.1 s samples before the next stage may already be idle: take the span
        # in which the copy of disk 1 really moved
        moving = [ts for (ts, n), (_, m) in zip(meter.samples, meter.samples[1:])
                  if t3 + 0.5 <= ts <= t_end and m > n]
        assert len(moving) >= 3, "the unlimited phase was too short to measure"
        r3 = meter.rate(t3 + 0.5, moving[-1])
        state = run.wait_finished()

    print("\nsource read (sftp-server rchar), MiB/s:")
    print("  L1 %.2f MiB/s from the job:   measured %.3f MiB/s = %.1f %%   1 s windows: %s" % (
        L1 / MiB, r1 / MiB, 100.0 * r1 / L1, meter.windows(t_copy, t_copy + HOLD1)))
    print("  L2 %.2f MiB/s from the file:  measured %.3f MiB/s = %.1f %%   1 s windows: %s" % (
        L2 / MiB, r2 / MiB, 100.0 * r2 / L2, meter.windows(t2, t2 + HOLD2)))
    print("  L2 file -> state %.2f s, file -> reading at the new rate (0.5 s window past the "
          "midpoint) %s" % (picked2, "%.2f s" % effect2 if effect2 is not None else "never"))
    print("  0.5 s windows around the change: %s" % meter.windows(t2 - 2, t2 + 4, 0.5))
    print("  unlimited: measured %.1f MiB/s = %.1fx L1 (file -> state %.2f s), %.1f s of copy" % (
        r3 / MiB, r3 / L1, picked3, moving[-1] - t3))
    log = run.tail("wrapper_log", None)
    v2v_log = run.tail("v2v_log", None)
    assert_succeeded_quietly(run, state)
    assert "--bandwidth-file %s" % path in log
    assert "rate-file=%s" % path in v2v_log, "virt-v2v did not pass the file to nbdkit"
    command = [line for line in log.splitlines() if "virt-v2v command:" in line]
    assert command and str(L1) not in command[0] and str(L1 * 8) not in command[0]
    assert LO * L1 <= r1 <= HI * L1, "L1: %.0f B/s is %.1f %%" % (r1, 100.0 * r1 / L1)
    assert LO * L2 <= r2 <= HI * L2, "L2: %.0f B/s is %.1f %%" % (r2, 100.0 * r2 / L2)
    timings.record("source read L2", "file -> reading at the new rate", effect2)
    timings.record("source read L2", "file -> state", picked2)
    assert effect2 is not None, "L2 never took effect"     # how soon: recorded, not asserted
    assert r3 >= 5 * L1, "unlimited %.0f B/s is not 5x the limit %d" % (r3, L1)


def assert_succeeded_quietly(run, state):
    assert "failed" not in state, "%s\n%s" % (state, run.tail("wrapper_log"))
    assert state["return_code"] == 0
    assert state["disk_count"] == 2
    assert wr.secret_dirs(run.state_dir) == [], "the private directory (bandwidth file) stayed"
    assert run.wait_no_leftovers() == {}
