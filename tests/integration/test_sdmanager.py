"""The test systemd fixture itself: units run, PIDs map to the host, CPUQuota is enforced,
failed units can be reset, and the host is left as it was."""
import contextlib
import os
import pathlib
import time

import pytest

pytestmark = pytest.mark.integration

CGFS = "/sys/fs/cgroup"



def cpu_usage_usec(cgdir):
    """cgroup2 ``cpu.stat`` usage_usec: present in every cgroup2 cgroup, controller or not."""
    with open(os.path.join(cgdir, "cpu.stat")) as f:
        return int(dict(line.split() for line in f)["usage_usec"])


def cpu_percent(cgdir, seconds):
    a, t0 = cpu_usage_usec(cgdir), time.monotonic()
    time.sleep(seconds)
    b, t1 = cpu_usage_usec(cgdir), time.monotonic()
    return (b - a) / 1e4 / (t1 - t0)


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


@pytest.fixture
def world_dir():
    """A scratch dir an unprivileged unit (uid 65534) can write to (pytest's tmp_path is 0700)."""
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="v2vw-sdtest-", dir="/tmp")
    os.chmod(d, 0o777)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


def test_transient_unit_runs_with_uid_and_host_pids(test_systemd, world_dir):
    log = world_dir / "out.log"
    unit = test_systemd.systemd_run("--unit=v2vw-life", "--uid=65534", "--gid=65534", "--setenv=K=V",
                                    "/bin/sh", "-c", 'echo "K=$K uid=$(id -u)" > %s; exec sleep 30' % log)
    assert unit == "v2vw-life.service"
    assert wait_for(lambda: log.exists() and log.read_text().strip())
    assert log.read_text().split() == ["K=V", "uid=65534"]
    ns_pid = int(test_systemd.prop(unit, "ExecMainPID"))
    host_pid = test_systemd.host_pid(ns_pid)
    assert host_pid != ns_pid
    assert wait_for(lambda: open("/proc/%d/cmdline" % host_pid).read().split("\0")[0].endswith("sleep"))
    assert test_systemd.host_pids(unit) == [host_pid]
    assert test_systemd.run("systemctl", "is-active", "--quiet", unit, check=False).rc == 0
    # host tools through the PATH wrappers see the same manager
    import subprocess
    out = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", unit], env=test_systemd.env(),
                         capture_output=True, text=True, check=True).stdout.strip()
    assert int(out) == ns_pid
    os.kill(host_pid, 15)               # a host PID signal ends the unit
    assert wait_for(lambda: test_systemd.run("systemctl", "is-active", "--quiet", unit, check=False).rc == 3)


def test_cpuquota_is_enforced(test_systemd):
    unit = test_systemd.systemd_run("--unit=v2vw-busy", "/bin/sh", "-c",
                                    "while :; do :; done & while :; do :; done")
    with contextlib.ExitStack() as stack:
        stack.enter_context(test_systemd.cpu_priority())
        stack.callback(test_systemd.run, "systemctl", "stop", unit, check=False)
        v2 = test_systemd.cgroup_dir(unit)
        free = cpu_percent(v2, 2.0)
        test_systemd.run("systemctl", "set-property", "--runtime", unit, "CPUQuota=50%")
        assert test_systemd.prop(unit, "CPUQuotaPerSecUSec") == "500ms"
        if os.path.exists(os.path.join(v2, "cpu.max")):            # pure cgroup2 host
            assert open(os.path.join(v2, "cpu.max")).read().split() == ["50000", "100000"]
            stat_dir = v2
        else:                                                       # hybrid: v1 cpu controller
            stat_dir = test_systemd.cgroup_dir(unit, "cpu")
            assert open(os.path.join(stat_dir, "cpu.cfs_quota_us")).read().strip() == "50000"
        time.sleep(0.3)                 # let the first throttled period pass before measuring
        limited = cpu_percent(v2, 3.0)
        with open(os.path.join(stat_dir, "cpu.stat")) as f:
            throttled = int(dict(line.split() for line in f)["nr_throttled"])
        test_systemd.run("systemctl", "set-property", "--runtime", unit, "CPUQuota=")
        assert test_systemd.prop(unit, "CPUQuotaPerSecUSec") == "infinity"
        print("cpu: unthrottled=%.1f%% quota50=%.1f%% nr_throttled=%d" % (free, limited, throttled))
        assert throttled > 0
        assert limited <= 60
        assert limited < 0.85 * free, "quota did not lower CPU use (%.1f%% vs %.1f%%)" % (limited, free)


def test_failed_unit_and_reset_failed(test_systemd):
    unit = test_systemd.systemd_run("--unit=v2vw-fail", "/bin/sh", "-c", "exit 3")
    assert wait_for(lambda: test_systemd.prop(unit, "ActiveState") == "failed")
    assert test_systemd.prop(unit, "ExecMainStatus") == "3"
    assert test_systemd.run("systemctl", "is-failed", "--quiet", unit, check=False).rc == 0
    test_systemd.run("systemctl", "reset-failed", unit)
    assert test_systemd.prop(unit, "LoadState") == "not-found"


def _host_snapshot():
    with open("/proc/1/cgroup") as f:      # PID 1 stays in the root of every hierarchy
        pid1 = all(line.rstrip().endswith(":/") for line in f)
    with open("/proc/self/mountinfo") as f:
        cg_mounts = sorted(line.split()[4:6][0] + " " + line.split()[5] for line in f
                           if " /sys/fs/cgroup" in line)
    return pid1, cg_mounts, sorted(os.listdir("/sys/fs/cgroup"))


def test_manager_in_netns_with_net_cls_leaves_host_alone(make_test_systemd, netns_pair):
    before = _host_snapshot()
    m = make_test_systemd(netns=netns_pair.a, net_cls=True)
    unit = m.systemd_run("--unit=v2vw-ns", "sleep", "30")
    host_pid = m.host_pids(unit)[0]
    assert os.readlink("/proc/%d/ns/net" % host_pid) == os.readlink("/proc/%d/ns/net" % m.pid)
    assert os.stat("/run/netns/" + netns_pair.a).st_ino == os.stat("/proc/%d/ns/net" % host_pid).st_ino
    # the net_cls hierarchy exists only in the manager's mount namespace
    assert os.path.exists(m.cgroup_root + "/net_cls/net_cls.classid")
    assert not os.path.exists("/sys/fs/cgroup/net_cls/net_cls.classid") or \
        os.path.ismount("/sys/fs/cgroup/net_cls")          # (unless the host had one already)
    assert _host_snapshot() == before
    name = m.name
    m.stop()
    assert not any(os.path.exists(os.path.join("/sys/fs/cgroup", h, name)) for h in os.listdir("/sys/fs/cgroup"))
    assert not os.path.exists("/tmp/" + name)
    assert _host_snapshot() == before
    with pytest.raises(ProcessLookupError):
        os.kill(host_pid, 0)
