"""Issue 21: a network limit holds on the source read where virt-v2v has no ``bandwidth-option``.

One real virt-v2v 2.2 conversion through the CLI (``-i vmx -it ssh`` from the fake ESXi host,
output_dir), with its capability hidden: ``--virt-v2v`` names a root-owned script that drops
``bandwidth-option`` from ``--machine-readable`` and otherwise execs the real virt-v2v, as a
virt-v2v after 2.13.3 would answer.  So the wrapper passes no ``--bandwidth-file`` and polices
what the conversion receives instead (wrapper.throttling.inbound).

Layout: the fake ESXi host's sshd and the wrapper both run in the network namespace ``a`` of
fx_netns (``nsenter --net``), the source on that namespace's 127.0.0.1: the wrapper's nft
table and its HTB class are made there, never in the host's namespace (checked unchanged).
Without systemd the wrapper moves the conversion into a cgroup v2 of its own at the gate,
before virt-v2v runs, and the input rule matches it.

Measured as tests/integration/test_source_bandwidth.py does: the ``rchar`` of the fake host's
``sftp-server`` processes, the job's ``L1`` then ``L2`` from a throttling file, then
``"unlimited"``; the aim is 80-105 % of each limit.  Run with ``-s`` for the rates.
"""
import os
import stat
import time

import pytest

from tests import wrapperrun as wr
from tests.integration import timings
from wrapper.throttling import tcnft

try:
    from . import fake_esxi as fx
    from . import fx_esxi
    from . import netns as netns_mod
    from .test_netlimit_real import lock_dir  # noqa: F401 (fixture)
    from .test_network_throttling import host_state
    from .test_real_conversions import Run, ssh_job
    from .test_source_bandwidth import SourceMeter, random_image, write_throttling
except ImportError:  # pragma: no cover - depends on how pytest was started
    import fake_esxi as fx
    import fx_esxi
    import netns as netns_mod
    from test_netlimit_real import lock_dir  # noqa: F401
    from test_network_throttling import host_state
    from test_real_conversions import Run, ssh_job
    from test_source_bandwidth import SourceMeter, random_image, write_throttling

pytestmark = pytest.mark.integration

MiB = 1 << 20
L1 = 4 * MiB             # from the job
L2 = 2 * MiB             # from a throttling file, mid-copy
HOLD1 = 12.0
HOLD2 = 14.0           # a 256 KiB sftp read is 1.6 % of 8 s at 2 MiB/s: a longer window
SKIP = 3.0               # a new rule starts with a full bucket, and TCP needs a moment
LO, HI = 0.80, 1.05
VM = "inbvm"
REAL_V2V = "/usr/bin/virt-v2v"

HIDE_BANDWIDTH = """#!/bin/sh
# virt-v2v as a release without --bandwidth/--bandwidth-file answers (after 2.13.3)
if [ "$#" -eq 1 ] && [ "$1" = --machine-readable ]; then
    out=$(%(real)s --machine-readable) || exit $?
    printf '%%s\\n' "$out" | grep -vx bandwidth-option
    exit 0
fi
exec %(real)s "$@"
"""


class NetnsRun(Run):
    """A conversion whose wrapper runs in ``netns``, with the capability-hiding virt-v2v."""

    def __init__(self, name, netns, lock_dir):
        super().__init__(name)
        self.netns, self.lock_dir = netns, lock_dir
        bindir = os.path.join(self.root, "bin")
        os.mkdir(bindir, 0o755)
        self.virt_v2v = os.path.join(bindir, "virt-v2v")
        fd = os.open(self.virt_v2v, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
        with os.fdopen(fd, "w") as f:
            f.write(HIDE_BANDWIDTH % {"real": REAL_V2V})
        os.chmod(self.virt_v2v, 0o755)

    def args(self):
        return super().args() + ["--virt-v2v", self.virt_v2v]

    def command(self):
        return netns_mod.prefix(self.netns) + super().command()

    def env(self, v2v_env):
        return dict(super().env(v2v_env), VIRT_V2V_WRAPPER_LOCK_DIR=self.lock_dir)


@pytest.fixture
def netns_esxi(guest_images, netns_pair):
    fx_esxi.require(fx_esxi.ESXI_PROGRAMS + fx_esxi.V2V_PROGRAMS, "the fake ESXi host")
    if not os.access(REAL_V2V, os.X_OK):
        pytest.skip("no %s" % REAL_V2V)
    rand = random_image(guest_images.os_disk.parent)
    images = {"os": guest_images.os_disk, "random": rand}
    with fx.FakeEsxi(images, vms=(fx.VmSpec(VM, ("random", "os")),),
                     argv_prefix=netns_mod.prefix(netns_pair.a)) as host:
        yield host


def test_the_hiding_script_hides_only_the_capability(tmp_path, lock_dir):  # noqa: F811
    """The stand-in for a newer virt-v2v answers like the real one, less bandwidth-option."""
    if not os.access(REAL_V2V, os.X_OK):
        pytest.skip("no %s" % REAL_V2V)
    run = NetnsRun("hide", "unused", lock_dir)
    try:
        import subprocess
        real = subprocess.run([REAL_V2V, "--machine-readable"], capture_output=True, text=True)
        hidden = subprocess.run([run.virt_v2v, "--machine-readable"], capture_output=True,
                                text=True)
        version = subprocess.run([run.virt_v2v, "--version"], capture_output=True, text=True)
        st = os.stat(run.virt_v2v)
    finally:
        run.cleanup()
    assert "bandwidth-option" in real.stdout.split()
    assert hidden.returncode == 0
    assert hidden.stdout.split() == [c for c in real.stdout.split() if c != "bandwidth-option"]
    assert version.stdout.startswith("virt-v2v ")
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755


def test_inbound_limit_holds_on_the_source_read_without_bandwidth_option(
        netns_esxi, netns_pair, lock_dir, v2v_env):  # noqa: F811 (fixture)
    run = NetnsRun("inbound", netns_pair.a, lock_dir)
    try:
        _conversion(run, netns_esxi, netns_pair, v2v_env)
    finally:
        run.cleanup()


def _tables(pair):
    return tcnft.parse_nft_tables(pair.runner()(["nft", "-j", "list", "tables"]).out)


def _conversion(run, host, pair, v2v_env):
    host_before = host_state()
    with SourceMeter(host.proc.pid) as meter:
        announced = run.start(ssh_job(host, VM, output_dir=run.out,
                                      throttling={"network": str(L1)}), v2v_env)
        assert run.proc.wait(timeout=60) == 0
        state = run.wait(lambda s: s.get("stage") == "Copying disk 1/2" or s.get("finished"))
        assert not state.get("finished"), run.tail("wrapper_log")
        t_copy = meter.flowing(time.monotonic(), L1)
        assert state["throttling"]["network"] == str(L1)
        assert state["throttling"]["network_directions"] == ["outbound", "inbound"]
        tables = _tables(pair)
        assert len(tables) == 1 and tables[0][1].startswith(tcnft.TABLE_PREFIX), tables
        ruleset = pair.runner()(["nft", "list", "table", "inet", tables[0][1]]).out
        assert "hook input" in ruleset and "limit rate over 4 mbytes/second" in ruleset
        assert host_state() == host_before
        dirs = wr.secret_dirs(run.state_dir)
        assert len(dirs) == 1 and "bandwidth" not in os.listdir(dirs[0])

        meter.wait_until(t_copy + HOLD1)
        r1 = meter.rate(t_copy + SKIP, t_copy + HOLD1)
        t2 = write_throttling(announced["throttling_file"], str(L2))
        run.wait(lambda s: s["throttling"]["network"] == str(L2), timeout=10)
        picked2 = time.monotonic() - t2
        meter.wait_until(t2 + HOLD2)
        r2 = meter.rate(t2 + SKIP, t2 + HOLD2)
        effect2 = meter.effect(t2, L1, L2, t2 + HOLD2)

        t3 = write_throttling(announced["throttling_file"], "unlimited")
        s = run.wait(lambda s: s["throttling"]["network"] is None, timeout=10)
        assert s["throttling"]["network_directions"] == []
        ruleset = pair.runner()(["nft", "list", "table", "inet", tables[0][1]]).out
        assert "hook input" not in ruleset, "unlimited did not lift the inbound rule"
        s = run.wait(lambda s: s.get("stage") != "Copying disk 1/2", timeout=300)
        t_end = time.monotonic()
        moving = [ts for (ts, n), (_, m) in zip(meter.samples, meter.samples[1:])
                  if t3 + 0.5 <= ts <= t_end and m > n]
        assert len(moving) >= 3, "the unlimited phase was too short to measure"
        r3 = meter.rate(t3 + 0.5, moving[-1])
        state = run.wait_finished()

    print("\ninbound policer, source read (sftp-server rchar), MiB/s:")
    print("  L1 %.2f from the job:  measured %.3f = %.1f %%   1 s windows: %s" % (
        L1 / MiB, r1 / MiB, 100.0 * r1 / L1, meter.windows(t_copy, t_copy + HOLD1)))
    print("  L2 %.2f from the file: measured %.3f = %.1f %%   1 s windows: %s" % (
        L2 / MiB, r2 / MiB, 100.0 * r2 / L2, meter.windows(t2, t2 + HOLD2)))
    print("  L2 file -> state %.2f s, -> reading at the new rate %s" % (
        picked2, "%.2f s" % effect2 if effect2 is not None else "never"))
    print("  unlimited: %.1f MiB/s = %.1fx L1" % (r3 / MiB, r3 / L1))
    log = run.tail("wrapper_log", None)
    v2v_log = run.tail("v2v_log", None)
    assert "failed" not in state and state["return_code"] == 0, run.tail("wrapper_log")
    assert state["disk_count"] == 2
    assert "inbound policed at %d B/s" % L1 in log and "inbound policed at %d B/s" % L2 in log
    assert "--bandwidth" not in log and "rate-file=" not in v2v_log
    assert wr.secret_dirs(run.state_dir) == []
    assert run.wait_no_leftovers() == {}
    assert _tables(pair) == [], "the nft table (and its inbound chain) stayed"
    assert host_state() == host_before
    timings.record("inbound source read L2", "file -> reading at the new rate", effect2)
    assert LO * L1 <= r1 <= HI * L1, "L1: %.0f B/s is %.1f %%" % (r1, 100.0 * r1 / L1)
    assert LO * L2 <= r2 <= HI * L2, "L2: %.0f B/s is %.1f %%" % (r2, 100.0 * r2 / L2)
    assert effect2 is not None, "L2 never took effect"
    assert r3 >= 5 * L1, "unlimited %.0f B/s is not 5x the limit %d" % (r3, L1)
