"""Issue 21: the wrapper against three virt-v2v releases -- 2.2 (this host, Debian 12),
2.6 (Debian trixie) and 2.10 (Debian sid) -- through its CLI, in the worlds of
``tests/integration/worlds.py`` (built by ``.ci/worlds.sh``; a world not built is skipped).

Per world, two real conversions serve every assertion (TCG: a few minutes each):

* **two disks, shuffled** (``testvm2``, ``source_disks`` = [data, OS]): finished, not
  failed, each disk credited 0..100 in copy order (the OS disk reaches 100 before the data
  disk moves, neither goes back), both 100 at the end;
* **limit, then cancel** (``bwvm``: 320 MiB of random data, then the OS disk): once the first
  disk is being copied a throttling file sets the network limit ``LIMIT``; the rate the fake
  host's ``sftp-server`` processes read (``rchar``, like test_source_bandwidth.py) is 80-105 %
  of it; then SIGTERM to the state file's ``pid``: finished + failed, a cancel message,
  nothing of the run left.

And fast failures of the ssh source (about 2 s each, run twice to compare): a missing
``.vmx``, a refused key, an unknown host key; and once, a ``.vmx`` whose ``-flat.vmdk`` is
missing (~70 s on 2.6+: the appliance boots before the disk is opened).  The real cause must
be in ``last_message`` (docs/contract.md §5): one sentence, no temporary paths, no nbdcopy
echo, not cut mid-word, the same on every run, with its failure code (wrapper/causes.py).

Inside a tree, the wrapper (this checkout, bound read-only) runs as root with the tree's
python3 and starts virt-v2v as ``vdsm`` (uid 36), never as root.  Outbound limits are kept
off the host (``VIRT_V2V_WRAPPER_CGROUP_ROOT`` = an empty dir), as in test_source_bandwidth.py.

``V2VW_CAPTURE_DIR=DIR`` copies each run's ``-v -x`` and machine-readable logs there (as
``WORLD-SCENARIO.vx.log``), for tools/trim_v2v_log.py to turn into tests/data fixtures.
Run with ``-s`` for the state sequences and the measured rates.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from tests import wrapperrun as wr

try:
    from . import fake_esxi as fx
    from . import worldrun, worlds
    from .test_real_conversions import comm, descendants, ssh_job, v2v_tmpdirs
    from .test_source_bandwidth import SourceMeter, random_image, write_throttling
except ImportError:  # pragma: no cover - depends on how pytest was started
    import fake_esxi as fx
    import worldrun
    import worlds
    from test_real_conversions import comm, descendants, ssh_job, v2v_tmpdirs
    from test_source_bandwidth import SourceMeter, random_image, write_throttling

pytestmark = pytest.mark.integration

MiB = 1 << 20
JOB_LIMIT = 16 * MiB      # from the job: keeps inspection quick
LIMIT = 4 * MiB           # from a throttling file once disk 1 is copied: measured
SKIP = 3.0                # nbdkit's token bucket starts full: skip the burst
HOLD = 10.0               # seconds measured at LIMIT
LO, HI = 0.80, 1.05
BUILD_WAIT = 1800         # a background .ci/worlds.sh (tests/run-all.sh) may still run
WORLD_NAMES = ("host", "trixie", "sid")
# only what the wrapper passes on to virt-v2v; each world supplies the rest
V2V_ENV = {"LIBGUESTFS_BACKEND": "direct",
           "LIBGUESTFS_BACKEND_SETTINGS": os.environ.get("LIBGUESTFS_BACKEND_SETTINGS",
                                                         "force_tcg"),
           # the matrix checks the serial copy order on every release; --parallel (2.8+,
           # on by default) has its own real test: test_parallel_real.py
           "VIRT_V2V_WRAPPER_PARALLEL": "1"}
VMS = (fx.VmSpec("testvm2", ("os", "data")), fx.VmSpec("bwvm", ("random", "os")),
       fx.VmSpec("brokenvm", ("os",), flat_present=False))


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def mx_esxi(guest_images):
    images = {"os": guest_images.os_disk, "data": guest_images.data_disk,
              "random": random_image(guest_images.os_disk.parent)}
    with fx.FakeEsxi(images, vms=VMS) as host:
        yield host


@pytest.fixture(scope="module", params=WORLD_NAMES)
def world(request, mx_esxi):
    w = worlds.get(request.param, wait=BUILD_WAIT)
    if w is None:
        if os.environ.get("CI") and request.param != "host":
            pytest.fail(worlds.not_ready_reason(request.param))   # CI builds them: a failure
        pytest.skip(worlds.not_ready_reason(request.param))
    known = worlds.known_hosts(w)
    if known is not None:
        known.add(trust_line(mx_esxi))
    yield w
    if known is not None:
        known.remove(trust_line(mx_esxi))


class WorldRun(worldrun.WorldRun):
    """A world run (tests/integration/worldrun.py) whose logs can be kept for the replay
    fixtures (``V2VW_CAPTURE_DIR``)."""

    def __init__(self, name, world):
        super().__init__(name, world)
        self.scenario = name

    def capture(self):
        dest = os.environ.get("V2VW_CAPTURE_DIR")
        if not dest or not self.announced:
            return
        os.makedirs(dest, exist_ok=True)
        v2v_log = self.announced["v2v_log"]
        for src, suffix in ((v2v_log, ".vx.log"), (v2v_log[:-4] + "-mr.log", ".mr.log"),
                            (self.announced["wrapper_log"], ".wrapper.log")):
            if os.path.exists(src):
                shutil.copy(src, os.path.join(dest, "%s-%s%s" % (
                    self.world.version, self.scenario, suffix)))

    def cleanup(self):
        self.capture()
        super().cleanup()


def convert(world, name, job_for, v2v_env, during=None, timeout=1200):
    """Run one job to its end: (run, final state, whatever ``during`` returned)."""
    run = WorldRun(name, world)
    try:
        run.start(job_for(run), v2v_env)
        assert run.proc.wait(timeout=60) == 0, run.stderr()
        seen = during(run) if during else None
        state = run.wait_finished(timeout=timeout)
        run.print_sequence()
        return run, state, seen
    except BaseException:
        run.cleanup()
        raise


# ---------------------------------------------------------------- (a) two disks

@pytest.fixture(scope="module")
def two_disks(world, mx_esxi):
    os_disk = mx_esxi.vddk_style_path("testvm2", "testvm2")
    data_disk = mx_esxi.vddk_style_path("testvm2", "testvm2_1")
    t0 = time.monotonic()
    run, state, _ = convert(world, "two-disk", lambda r: ssh_job(
        mx_esxi, "testvm2", output_dir=r.out, source_disks=[data_disk, os_disk]), V2V_ENV)
    print("%s: two-disk conversion took %.0f s" % (world.name, time.monotonic() - t0))
    yield run, state, os_disk, data_disk
    run.cleanup()


def progress_of(run, path):
    out = []
    for _, s in run.states:
        match = [d["progress"] for d in s.get("disks", []) if d["path"] == path]
        out.append(match[0] if match else None)
    return out


def test_two_disks_finish_without_failure(two_disks):
    run, state, os_disk, data_disk = two_disks
    assert "failed" not in state, "%s\n%s" % (state, run.tail("wrapper_log"))
    assert state["finished"] is True and state["return_code"] == 0
    assert "last_message" not in state
    assert state["disk_count"] == 2
    assert sorted(d["path"] for d in state["disks"]) == sorted([os_disk, data_disk])
    assert all(d["progress"] == 100 for d in state["disks"])
    assert wr.secret_dirs(run.state_dir) == []
    assert run.wait_no_leftovers() == {}


def test_two_disks_credited_in_copy_order(two_disks):
    run, _, os_disk, data_disk = two_disks
    first, second = progress_of(run, os_disk), progress_of(run, data_disk)
    for values in (first, second):
        seen = [v for v in values if v is not None]
        assert seen[0] == 0 and seen[-1] == 100, seen
        assert seen == sorted(seen), "progress went backwards: %s" % seen
    # virt-v2v copies in the .vmx's order (OS disk first): the data disk does not move
    # before the OS disk is done, whatever order source_disks named them in
    for a, b in zip(first, second):
        if b is not None and b > 0:
            assert a == 100, "data disk at %s while the OS disk was at %s" % (b, a)
    assert any(0 < v < 100 for v in first if v is not None), first


def test_two_disks_ran_the_worlds_virt_v2v_as_its_run_as_user(two_disks, world):
    run, _, _, _ = two_disks
    head = run.tail("v2v_log", None)[:300]
    # 2.6+ prefix the banner with "info: "
    assert re.match(r"(?:info: )?virt-v2v: virt-v2v %s\." % re.escape(world.version), head), head
    wlog = run.tail("wrapper_log", None)
    # in a tree, never root: the tree's vdsm (the host's tests run virt-v2v as root)
    who = "root (0:0)" if world.is_host else "vdsm (%d:" % worlds.RUN_AS[1]
    assert "virt-v2v runs as %s" % who in wlog, wlog[:2000]
    assert os.path.getsize(os.path.join(run.out, "testvm2-sda")) == 512 * MiB


# ---------------------------------------------------------------- (b) limit, then SIGTERM

@pytest.fixture(scope="module")
def limited_then_cancelled(world, mx_esxi):
    facts = {}

    def during(run):
        with SourceMeter(mx_esxi.proc.pid) as meter:
            s = run.wait(lambda s: s.get("finished") or (
                s.get("stage") == "Copying disk 1/2" and
                "nbdcopy" in map(comm, descendants(s["pid"]))))
            assert not s.get("finished"), run.tail("wrapper_log")
            t_set = write_throttling(run.announced["throttling_file"], str(LIMIT))
            facts["state_limited"] = run.wait(
                lambda s: (s.get("throttling") or {}).get("network") == str(LIMIT), timeout=15)
            # nbdcopy may start reading a moment after it appears; the limit counts from
            # when bytes flow, after the token bucket's initial burst
            t_flow = meter.flowing(t_set, LIMIT)
            meter.wait_until(t_flow + SKIP + HOLD)
            facts["rate"] = meter.rate(t_flow + SKIP, t_flow + SKIP + HOLD)
            facts["windows"] = meter.windows(t_set, t_flow + SKIP + HOLD)
            facts["flow_after"] = t_flow - t_set
        s = wr.read_state(run.state_file)
        assert not s.get("finished"), "the copy ended before the cancel: %r" % s
        pid = s["pid"]
        facts["tree"] = [pid] + descendants(pid)
        facts["tmpdirs"] = v2v_tmpdirs(run.announced["v2v_log"])
        os.kill(pid, signal.SIGTERM)
        return facts

    run, state, facts = convert(world, "sigterm", lambda r: ssh_job(
        mx_esxi, "bwvm", output_dir=r.out, throttling={"network": str(JOB_LIMIT)}), V2V_ENV,
        during=during, timeout=300)
    print("%s: source read at %.2f MiB/s: %.3f MiB/s (%.1f %%) over %.0f s; reading began "
          "%.1f s after the limit was set; 1 s windows from then: %s" % (
              world.name, LIMIT / MiB, facts["rate"] / MiB, 100.0 * facts["rate"] / LIMIT, HOLD,
              facts["flow_after"], facts["windows"]))
    yield run, state, facts
    run.cleanup()


def test_network_limit_holds_at_the_source(limited_then_cancelled):
    run, _, facts = limited_then_cancelled
    assert facts["state_limited"]["throttling"]["network_directions"] == ["source-read"]
    assert LO * LIMIT <= facts["rate"] <= HI * LIMIT, \
        "%.0f B/s is %.1f %% of %d" % (facts["rate"], 100.0 * facts["rate"] / LIMIT, LIMIT)
    assert "rate-file=" in run.tail("v2v_log", None)


def test_sigterm_cancels_and_leaves_nothing(limited_then_cancelled):
    run, state, facts = limited_then_cancelled
    assert state["finished"] is True and state["failed"] is True
    assert state["return_code"] != 0
    assert state["last_message"]["type"] == "error"
    msg = state["last_message"]["message"]
    assert re.search(r"cancel", msg, re.I) and "SIGTERM" in msg, msg
    assert wr.wait_gone(state["wrapper_pid"], timeout=30), "the wrapper did not exit"
    assert run.wait_no_leftovers(facts["tmpdirs"]) == {}
    for p in facts["tree"]:
        assert wr.wait_gone(p, timeout=10), "pid %d (%s) is still alive" % (p, comm(p))
    assert wr.secret_dirs(run.state_dir) == []


# ---------------------------------------------------------------- (c) fast failures

def missing_vmx(host, run):
    job = ssh_job(host, "testvm2", output_dir=run.out)
    job["vm_name"] = job["vm_name"].replace("testvm2/testvm2.vmx", "nosuchvm/nosuchvm.vmx")
    return job


def refused_key(host, run):
    keydir = tempfile.mkdtemp(prefix="v2vw-mx-key-", dir="/var/tmp")
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keydir + "/k"],
                       check=True, timeout=30)
        with open(keydir + "/k") as f:
            key = f.read()
    finally:
        shutil.rmtree(keydir)
    return ssh_job(host, "testvm2", output_dir=run.out, ssh_key=key)


def unknown_host_key(host, run):
    return ssh_job(host, "testvm2", output_dir=run.out)   # run while the key is not trusted


@contextlib.contextmanager
def distrusted(world, host):
    """The fake host's key is not in the run-as user's known_hosts for a while."""
    line = trust_line(host)
    known = host.known_hosts if world.is_host else worlds.known_hosts(world)
    known.remove(line)
    try:
        yield
    finally:
        known.add(line)


def trust_line(host):
    return fx.known_hosts_line(host.port, host.host_public_key, os.getpid(), host.base)


def missing_flat(host, run):
    return ssh_job(host, "brokenvm", output_dir=run.out)


# the cause each release names (2.2: OpenSSH's scp/ssh; 2.6+: libssh through nbdkit)
FAILURES = {
    "missing-vmx": (missing_vmx, r"No such file", "vmx_missing"),
    "refused-key": (refused_key, r"Permission denied|authentication methods failed", "ssh_key_refused"),
    "unknown-hostkey": (unknown_host_key, r"Host key verification failed|host key is unknown",
                        "host_key_unknown"),
}


def failed_twice(world, host, scenario):
    make = FAILURES[scenario][0]
    out = []
    for i in range(2):
        with distrusted(world, host) if scenario == "unknown-hostkey" else contextlib.nullcontext():
            run, state, _ = convert(world, scenario if i == 0 else scenario + "-again",
                                    lambda r: make(host, r), V2V_ENV, timeout=300)
        try:
            assert run.wait_no_leftovers() == {}
            assert wr.secret_dirs(run.state_dir) == []
            out.append((state, run.tail("v2v_log", None)))
        finally:
            run.cleanup()
    return out


@pytest.fixture(scope="module")
def failures(world, mx_esxi):
    return {name: failed_twice(world, mx_esxi, name) for name in FAILURES}


def clean_cause_problems(msg, v2v_log):
    """What keeps ``msg`` from being the contract's clean cause (empty: none)."""
    problems = []
    if "\n" in msg:
        problems.append("more than one line")
    if "/tmp/" in msg:
        problems.append("a temporary path")
    if "no export named" in msg or "nbdcopy:" in msg or "nbd_connect_uri" in msg:
        problems.append("nbdcopy's echo")
    tail = msg[-24:]
    at = v2v_log.find(tail)
    if at >= 0 and v2v_log[at + len(tail):at + len(tail) + 1].isalnum():
        problems.append("cut mid-word")
    return problems


@pytest.mark.parametrize("scenario", sorted(FAILURES))
def test_failure_names_its_real_cause(failures, scenario):
    for state, _ in failures[scenario]:
        assert state["finished"] is True and state["failed"] is True
        assert state["return_code"] == 1
        assert state["last_message"]["type"] == "error"
        assert re.search(FAILURES[scenario][1], state["last_message"]["message"]), \
            state["last_message"]
        assert state["last_message"]["code"] == FAILURES[scenario][2], state["last_message"]


@pytest.mark.parametrize("scenario", sorted(FAILURES))
def test_failure_cause_is_one_clean_sentence(failures, scenario):
    (first, log1), (second, log2) = failures[scenario]
    msg = first["last_message"]["message"]
    assert clean_cause_problems(msg, log1) == [], msg
    assert clean_cause_problems(second["last_message"]["message"], log2) == [], log2[-3000:]
    assert msg == second["last_message"]["message"], ("the same failure read differently", log2[-3000:])


def test_missing_flat_file_fails_with_its_cause(world, mx_esxi):
    run, state, _ = convert(world, "missing-flat", lambda r: missing_flat(mx_esxi, r), V2V_ENV,
                            timeout=600)
    try:
        assert state["finished"] is True and state["failed"] is True
        assert state["return_code"] == 1
        msg = state["last_message"]["message"]
        if world.version == "2.2":
            # 2.2 checks the flat file with `ssh test -f` and reports it as a snapshot
            assert "snapshots" in msg, msg
        else:
            assert "brokenvm-flat.vmdk" in msg and "No such file" in msg, msg
        assert run.wait_no_leftovers() == {}
    finally:
        run.cleanup()
