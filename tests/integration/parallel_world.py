"""A real two-disk conversion through the wrapper inside a world (tests/integration/worlds.py,
virt-v2v 2.10 in Debian sid), with ``status --json`` and the metrics sampled while the
disks copy: what test_parallel_real.py asserts on and bench/parallel_copy.py times.

The wrapper (this checkout, bound read-only at the same path) runs as root with the tree's
python3 and starts virt-v2v as the tree's ``vdsm``; outbound limits find no cgroup
hierarchy (``VIRT_V2V_WRAPPER_CGROUP_ROOT`` = an empty directory), as in the version matrix.
"""
import contextlib
import json
import os
import re
import subprocess
import time

from tests import wrapperrun as wr

try:
    from . import fake_esxi as fx
    from . import worldrun, worlds
    from .test_real_conversions import ssh_job
except ImportError:  # pragma: no cover - depends on how pytest was started
    import fake_esxi as fx
    import worldrun
    import worlds
    from test_real_conversions import ssh_job

V2V_ENV = {"LIBGUESTFS_BACKEND": "direct",
           "LIBGUESTFS_BACKEND_SETTINGS": os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")}
TAGGED = re.compile(rb"^virt-v2v-wrapper: nbdcopy in(\d+) progress (\d+)/100$", re.M)
_METRIC = re.compile(r'^(v2v_disk_(?:copy_rate_bytes_per_second|remaining_seconds|progress_ratio))'
                     r'\{[^}]*disk="([^"]*)"[^}]*\} (\S+)$', re.M)


class WorldRun(worldrun.WorldRun):
    """A world run that also samples ``status`` and the metrics while disks are copied."""

    def __init__(self, name, world):
        super().__init__(name, world)
        self.samples = []      # (seconds, status --json summary, {metric: {disk: value}})

    def sample(self):
        """What ``status --json`` and ``metrics`` (the host's own wrapper, reading the
        state file from outside the world) say now."""
        status = subprocess.run(wr.wrapper_cmd("status", "--json", self.state_file),
                                capture_output=True, text=True, env=wr.env(), timeout=30)
        metrics = subprocess.run(wr.wrapper_cmd("metrics", "--state-dir", self.state_dir),
                                 capture_output=True, text=True, env=wr.env(), timeout=30)
        figures = {}
        for name, disk, value in _METRIC.findall(metrics.stdout):
            figures.setdefault(name, {})[disk] = float(value)
        conversions = json.loads(status.stdout).get("conversions") or [{}]
        summary = conversions[0]
        self.samples.append((time.monotonic() - self.t0, summary, figures))

    def copy_until_done(self, every=2.0, timeout=1200):
        """Poll the state (every distinct state recorded) until finished; while a disk is
        being copied, sample status and metrics every ``every`` seconds."""
        deadline = time.monotonic() + timeout
        next_sample = 0.0
        while time.monotonic() < deadline:
            state = self.wait(lambda s: True, timeout=30)
            if state.get("finished"):
                return state
            copying = str(state.get("stage", "")).startswith("Copying disk")
            if copying and time.monotonic() >= next_sample:
                self.sample()
                next_sample = time.monotonic() + every
            time.sleep(0.05)
        raise AssertionError("%s: not finished within %d s" % (self.name, timeout))



@contextlib.contextmanager
def trusted(world, fake_esxi):
    """Trust the fake host's key in ``world`` for this run (worlds.known_hosts: one marked
    line in both files libssh reads in a tree, added and removed by itself, since other
    sessions share the tree); nothing on the host, where the fake host adds its own."""
    line = fx.known_hosts_line(fake_esxi.port, fake_esxi.host_public_key, os.getpid(),
                               fake_esxi.base)
    files = worlds.known_hosts(world)
    if files is not None:
        files.add(line)
    try:
        yield
    finally:
        if files is not None:
            files.remove(line)


def two_disk_job(fake_esxi, run):
    """testvm2 (512 MiB OS disk, 64 MiB data disk), ``source_disks`` reversed."""
    os_disk = fake_esxi.vddk_style_path("testvm2", "testvm2")
    data_disk = fake_esxi.vddk_style_path("testvm2", "testvm2_1")
    return ssh_job(fake_esxi, "testvm2", output_dir=run.out, source_disks=[data_disk, os_disk])


def convert(world, fake_esxi, name, env=None, every=2.0):
    """One two-disk conversion to its end: (run, final state).  The caller cleans up."""
    run = WorldRun(name, world)
    try:
        run.start(two_disk_job(fake_esxi, run), dict(V2V_ENV, **(env or {})))
        assert run.proc.wait(timeout=60) == 0, run.stderr()
        state = run.copy_until_done(every=every)
        return run, state
    except BaseException:
        run.cleanup()
        raise


def tagged_progress(v2v_log_bytes):
    """{K: [percent, ...]} of the shim's lines for input socket inK, in log order."""
    out = {}
    for k, pct in TAGGED.findall(v2v_log_bytes):
        out.setdefault(int(k), []).append(int(pct))
    return out


def tagged_order(v2v_log_bytes):
    """[(K, percent), ...] of the shim's lines in log order."""
    return [(int(k), int(pct)) for k, pct in TAGGED.findall(v2v_log_bytes)]


def copy_phase(state):
    """Seconds from the first disk's copy start to the last one's end (the state's own
    ``copy`` record), or None."""
    disks = (state.get("copy") or {}).get("disks") or []
    starts = [d["started_at"] for d in disks if d.get("started_at")]
    ends = [d["finished_at"] for d in disks if d.get("finished_at")]
    return (max(ends) - min(starts)) if starts and len(ends) == len(disks) else None
