"""The oVirt API upload end to end: the wrapper drives real virt-v2v 2.2 ``-o rhv-upload``.

Everything is real except the engine: the wrapper (with its pre-flight) runs virt-v2v as an
unprivileged run-as user (as ``vdsm:kvm`` on an oVirt host), reading the guest from the fake
ESXi host over ssh through the wrapper's agent; virt-v2v's helper scripts talk to the stand-in
engine (tests/ovirt_standin) with the real oVirt SDK, from the ``python3`` first on its PATH
(a venv of Debian's Python, tests/ovirt_standin/v2vpython.py); its nbdkit python plugin writes
the disks to a real ovirt-imageio daemon. The tests watch only the state file, as a client does,
then look at what the engine and imageio were left with.

Six conversions (~1.5 min each under TCG); the pre-flight refusals start none and take about a
second each. ``-s`` shows the timings and the engine's request counts.
"""
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from tests import wrapperrun as wr
from tests.integration.fake_esxi import known_hosts_line
from tests.integration.guestimage import default_cache_dir
from tests.ovirt_standin.engine import parse_ovf
from tests.ovirt_standin.v2vpython import ensure_v2v_python
from tests.ovirt_standin.fixtures import standin_world
from wrapper.users import RunUser

pytestmark = pytest.mark.integration

CONVERSION_TIMEOUT = 1200
WRITE_LIMIT = 64 * 1024 * 1024       # imageio's file backend fails writes past this (RLIMIT_FSIZE)
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


RUN_AS = "v2vw-vdsm"       # a vdsm:kvm look-alike, with the home OpenSSH reads known_hosts from


@pytest.fixture(scope="module")
def run_as(fake_esxi):
    """The run-as user: group kvm, like vdsm; its ~/.ssh/known_hosts trusts the fake ESXi
    host (OpenSSH and libssh read the passwd home's, whatever $HOME says)."""
    if os.geteuid() != 0:
        pytest.skip("creates a user")
    home = "/var/tmp/%s-home" % RUN_AS
    try:
        pwd.getpwnam(RUN_AS)                 # left by an interrupted session: made again
        subprocess.run(["userdel", "-r", "-f", RUN_AS], capture_output=True)
    except KeyError:
        pass
    subprocess.run(["useradd", "-m", "-d", home, "-g", "kvm", "-s", "/bin/sh", RUN_AS],
                   check=True, capture_output=True, text=True)
    try:
        user = pwd.getpwnam(RUN_AS)
        ssh_dir = os.path.join(home, ".ssh")
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
        with open(os.path.join(ssh_dir, "known_hosts"), "w") as f:
            f.write(known_hosts_line(fake_esxi.port, fake_esxi.host_public_key, os.getpid(),
                                     fake_esxi.base) + "\n")
        for path in (ssh_dir, os.path.join(ssh_dir, "known_hosts")):
            os.chown(path, user.pw_uid, user.pw_gid)
        yield RunUser(user.pw_uid, user.pw_gid, RUN_AS, home)
    finally:
        subprocess.run(["userdel", "-r", "-f", RUN_AS], capture_output=True)


@pytest.fixture(scope="module")
def v2v_bin():
    """The bin/ of a python3 with the SDK that the run-as user can run."""
    return str(ensure_v2v_python(default_cache_dir()))


class Conversion:
    """One wrapper run in its own directories (0755: the run-as user reaches them)."""

    def __init__(self, w, fake_esxi, user, v2v_bin, vm="testvm2", path=None, **job):
        self.root = tempfile.mkdtemp(prefix="v2vw-rhvu-", dir="/var/tmp")
        os.chmod(self.root, 0o755)
        self.state_dir = os.path.join(self.root, "state")
        self.log_dir = os.path.join(self.root, "logs")
        os.makedirs(self.state_dir)
        os.makedirs(self.log_dir)
        self.cafile = os.path.join(self.root, "ca.pem")
        shutil.copyfile(w.pki.ca, self.cafile)
        os.chmod(self.cafile, 0o644)
        self.world, self.user, self.vm = w, user, vm
        # the order virt-v2v does not use: the wrapper must place each disk by its path
        self.source_disks = [fake_esxi.vddk_style_path(vm, d) for d in fake_esxi.disk_files(vm)][::-1]
        self.job = {"vm_name": fake_esxi.vm_uri(vm), "transport_method": "ssh",
                    "ssh_key": fake_esxi.client_private_key_text,
                    "rhv_url": w.engine.api_url, "rhv_password": w.engine.password,
                    "rhv_cluster": w.cluster.name, "rhv_storage": w.storage_domain.name,
                    "rhv_cafile": self.cafile, "source_disks": self.source_disks,
                    "daemonize": False}
        self.job.update(job)
        self.path = path or v2v_bin + ":" + SYSTEM_PATH
        self.states = []
        self.proc = None

    def env(self, v2v_env):
        return wr.env(PATH=self.path, LIBGUESTFS_BACKEND=v2v_env["LIBGUESTFS_BACKEND"],
                      LIBGUESTFS_BACKEND_SETTINGS=v2v_env["LIBGUESTFS_BACKEND_SETTINGS"])

    def argv(self):
        return wr.wrapper_cmd("--state-dir", self.state_dir, "--log-dir", self.log_dir,
                              "--run-as", self.user.name)

    def refused(self, v2v_env):
        """Run a job that must be refused: (seconds, stderr)."""
        t0 = time.monotonic()
        r = subprocess.run(self.argv(), input=json.dumps(self.job), capture_output=True,
                           text=True, timeout=120, cwd=wr.ROOT, env=self.env(v2v_env))
        took = time.monotonic() - t0
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr and self.world.engine.password not in r.stderr
        assert os.listdir(self.state_dir) == []
        return took, r.stderr.strip()

    def start(self, v2v_env):
        self.t0 = time.monotonic()
        self.stderr = open(os.path.join(self.root, "stderr.txt"), "w")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, cwd=wr.ROOT,
                                     env=self.env(v2v_env))
        self.proc.stdin.write(json.dumps(self.job))
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        assert line, "the wrapper printed nothing: %s" % self.read("stderr.txt")
        self.paths = json.loads(line)
        self.answered = time.monotonic() - self.t0
        return self.paths

    def read(self, name):
        with open(os.path.join(self.root, name), errors="replace") as f:
            return f.read()

    def follow(self, until=lambda s: s.get("finished"), timeout=CONVERSION_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = wr.read_state(self.paths["state_file"])
            except (FileNotFoundError, ValueError):
                state = None
            if state and (not self.states or state != self.states[-1][1]):
                self.states.append((time.monotonic() - self.t0, state))
            if state and until(state):
                return state
            time.sleep(0.2)
        raise AssertionError("no such state within %d s; last: %s; stderr: %s" % (
            timeout, self.states[-1][1] if self.states else None, self.read("stderr.txt")[-3000:]))

    def finish(self):
        state = self.follow()
        self.proc.wait(timeout=60)
        self.seconds = time.monotonic() - self.t0
        self.stderr.close()
        return state

    def v2v_log(self):
        with open(self.paths["v2v_log"], errors="replace") as f:
            return f.read()

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def conversions():
    made = []
    yield made
    for c in made:
        c.cleanup()


def progress_runs(conv):
    """Per disk path, the progress values the client saw, in order."""
    seen = {}
    for _t, state in conv.states:
        for d in state.get("disks", []):
            seq = seen.setdefault(d["path"], [])
            if not seq or seq[-1] != d["progress"]:
                seq.append(d["progress"])
    return seen


def assert_nothing_left(w, conv):
    """No disk, no unfinished transfer, no VM of this conversion; no secret file."""
    engine = w.engine
    assert engine.disks == {}, engine.disks
    assert engine.unfinished_transfers() == []
    assert engine.vms == {}
    assert wr.secret_dirs(conv.state_dir) == []


def report(conv, what):
    counts = conv.world.engine.counts()
    served = conv.world.imageio.served()
    print("\n%s: answered in %.2f s, finished in %.0f s; imageio %s; engine %s" % (
        what, conv.answered, conv.seconds, json.dumps(served, sort_keys=True),
        json.dumps(counts, sort_keys=True)))


# ---------------------------------------------------------------- success

@pytest.mark.parametrize("vm,storage_type", [("testvm2", "nfs"), ("testvm", "iscsi")])
def test_upload_succeeds(ovirt_pki, fake_esxi, run_as, v2v_bin, v2v_env,
                         conversions, vm, storage_type):
    with standin_world(ovirt_pki, storage_type=storage_type) as w:
        conv = Conversion(w, fake_esxi, run_as, v2v_bin, vm=vm)
        conversions.append(conv)
        conv.start(v2v_env)
        state = conv.finish()
        report(conv, "%s to %s" % (vm, storage_type))
        assert conv.proc.returncode == 0, conv.read("stderr.txt")[-3000:]
        assert state["finished"] and "failed" not in state and state["return_code"] == 0

        engine, imageio = w.engine, w.imageio
        (vm_obj,) = engine.vms.values()
        assert state["vm_id"] == vm_obj.id           # the VM the engine created
        ovf_vm_id, name, ovf_disks = parse_ovf(vm_obj.ovf)
        assert (ovf_vm_id, name) == (vm_obj.id, vm) and vm_obj.cluster_id == w.cluster.id
        assert sorted(ovf_disks) == sorted(engine.disks) and len(ovf_disks) == len(conv.source_disks)
        # allocation follows the storage domain's type (the job gives none): virt-v2v gets
        # -oa; 2.2's transfer script asks the engine for a sparse disk either way, and with
        # preallocated it writes zeroes as data instead of zero requests
        preallocated = storage_type == "iscsi"
        assert ("-oa preallocated" if preallocated else "-oa sparse") in _command_line(conv)
        for disk in engine.disks.values():
            assert disk.status() == "ok" and disk.sparse is True
            assert disk.storage_domain_id == w.storage_domain.id
        assert all(t.phase == "finished_success" for t in engine.transfers.values())
        assert engine.locked_disks() == [] and engine.unfinished_transfers() == []

        # every disk, placed by its path, went 0 -> 100 without going back
        assert sorted(d["path"] for d in state["disks"]) == sorted(conv.source_disks)
        runs = progress_runs(conv)
        for path in conv.source_disks:
            seq = runs[path]
            assert seq[0] == 0 and seq[-1] == 100 and seq == sorted(seq), (path, seq)
        assert state["progress"] == 100

        # what reached imageio covers exactly the disks' virtual sizes
        served = imageio.served()
        sizes = sum(d.provisioned_size for d in engine.disks.values())
        assert served["WRITE bytes"] + served.get("ZERO bytes", 0) == sizes
        allocated = sum(os.stat(t.path).st_blocks * 512 for t in imageio.tickets.values())
        print("imageio wrote %d bytes and zeroed %d of %d; the files allocate %d bytes" % (
            served["WRITE bytes"], served.get("ZERO bytes", 0), sizes, allocated))
        assert imageio.errors() == [] and wr.secret_dirs(conv.state_dir) == []


def _command_line(conv):
    with open(conv.paths["wrapper_log"], errors="replace") as f:
        text = f.read()
    return " ".join(line for line in text.splitlines() if "virt-v2v" in line and " -o rhv-upload" in line)


# ---------------------------------------------------------------- failures

def _failed(conv, v2v_env):
    conv.start(v2v_env)
    state = conv.finish()
    assert conv.proc.returncode == 2, conv.read("stderr.txt")[-3000:]
    assert state["failed"] and state["finished"] and state["return_code"] != 0
    message = state["last_message"]["message"]
    assert "\n" not in message and conv.world.engine.password not in message
    assert "see earlier" not in message, message
    return state, message


def test_imageio_refusing_writes_part_way(ovirt_pki, fake_esxi, run_as, v2v_bin,
                                          v2v_env, conversions):
    """...and the cancelled disk stays locked a while, as on a real engine: virt-v2v's own
    cancel script gets 409 for its DELETE and gives up; the wrapper waits and removes it,
    and its cleanup does not replace the reported cause."""
    with standin_world(ovirt_pki, write_limit=WRITE_LIMIT) as w:
        w.engine.cancel_locked_polls = 3
        conv = Conversion(w, fake_esxi, run_as, v2v_bin, vm="testvm")
        conversions.append(conv)
        state, message = _failed(conv, v2v_env)
        report(conv, "imageio 500")
        assert message.startswith("nbdcopy command failed: imageio answered 500 Internal "
                                  "Server Error to: could not write sector offset "), message
        assert state["last_message"]["code"] == "imageio_write_failed", state["last_message"]
        assert w.imageio.errors() != []
        deletes = w.engine.calls("DELETE", "/ovirt-engine/api/disks/")
        assert len(deletes) >= 2, deletes       # refused while locked, then done
        assert_nothing_left(w, conv)


@pytest.mark.parametrize("knob,expected,code", [
    ("finalize_fails", "failed to finalize the transfers: RuntimeError: transfer ",
     "finalize_failed"),
    ("import_job_fails", "failed to create virtual machine: RuntimeError: Failed to create a VM!",
     "vm_creation_failed"),
])
def test_engine_failing_after_the_copy(ovirt_pki, fake_esxi, run_as, v2v_bin,
                                       v2v_env, conversions, knob, expected, code):
    with standin_world(ovirt_pki) as w:
        setattr(w.engine, knob, True)
        conv = Conversion(w, fake_esxi, run_as, v2v_bin, vm="testvm")
        conversions.append(conv)
        state, message = _failed(conv, v2v_env)
        report(conv, knob)
        assert message.startswith(expected), message
        assert state["last_message"]["code"] == code, state["last_message"]
        assert_nothing_left(w, conv)


def test_sigterm_to_virt_v2v_during_the_upload(ovirt_pki, fake_esxi, run_as, v2v_bin,
                                               v2v_env, conversions):
    with standin_world(ovirt_pki) as w:
        conv = Conversion(w, fake_esxi, run_as, v2v_bin, vm="testvm")
        conversions.append(conv)
        conv.start(v2v_env)
        state = conv.follow(lambda s: s.get("finished") or (
            str(s.get("stage", "")).startswith("Copying disk") and
            any(0 < d["progress"] < 100 for d in s.get("disks", []))))
        assert not state.get("finished"), state
        assert w.engine.transfers, "no image transfer while copying"
        os.kill(state["pid"], signal.SIGTERM)
        state = conv.finish()
        report(conv, "SIGTERM")
        assert conv.proc.returncode == 2
        assert state["failed"] and "SIGTERM" in state["last_message"]["message"], state
        assert_nothing_left(w, conv)


# ---------------------------------------------------------------- pre-flight refusals

REFUSALS = {
    "wrong password": (dict(rhv_password="Not-The-Pa55word"),
                       "rhv_password: the oVirt engine at"),
    "vm name taken": ({}, "vm_name: a VM named 'testvm2' already exists"),
    "unknown storage domain": (dict(rhv_storage="no-such-sd"),
                               "rhv_storage: no storage domain named 'no-such-sd'"),
    "cluster elsewhere": (dict(rhv_cluster="Far"), "rhv_cluster: no cluster named 'Far'"),
    "python3 without the SDK": ({}, "cannot import ovirtsdk4"),
}
# (A CA file the job names that the run-as user cannot read is no refusal any more: the
# wrapper reads it with the caller's rights and hands everyone a private copy.  The
# pre-flight still refuses the administrator's default CA unreadable by the run-as user:
# tests/test_preflight.py.)


@pytest.mark.parametrize("allocation", [None, "sparse"])
def test_preflight_refusals_take_seconds(ovirt_pki, fake_esxi, run_as, v2v_bin,
                                         v2v_env, conversions, allocation):
    rows = []
    with standin_world(ovirt_pki) as w:
        w.engine.add_cluster("Far", w.engine.add_data_center("Elsewhere"))
        for name, (job, expected) in REFUSALS.items():
            if allocation:
                job = dict(job, allocation=allocation)
            path = SYSTEM_PATH if name == "python3 without the SDK" else None
            conv = Conversion(w, fake_esxi, run_as, v2v_bin, path=path, **job)
            conversions.append(conv)
            vm = None
            if name == "vm name taken":
                vm = w.engine.add_vm("testvm2", cluster=w.cluster)
            try:
                took, err = conv.refused(v2v_env)
            finally:
                if vm is not None:
                    del w.engine.vms[vm.id]
            assert expected in err, (name, err)
            rows.append((name, took, err))
        assert w.engine.disks == {} and w.engine.transfers == {}
        assert "POST /ovirt-engine/api/disks" not in w.engine.counts()
    print("\npre-flight refusals (allocation %s):" % (allocation or "not given"))
    for name, took, err in rows:
        print("  %-34s %5.2f s  %s" % (name, took, err[:160]))
    # the bound that matters: seconds, not the minutes virt-v2v needs to get there
    assert max(took for _n, took, _e in rows) < 30
