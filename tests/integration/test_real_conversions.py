"""Real conversions end to end: real virt-v2v 2.2 driven only through the wrapper CLI.

Each test feeds ``python3 -m wrapper`` a JSON job on stdin (like an SSH client does), reads
the one JSON line it prints and then only watches the state file, the way orchestrators do.
The source is the session's fake ESXi host (sshd on 127.0.0.1, see fake_esxi.py); the job's
``ssh_key`` carries its client key, so the wrapper's own ssh-agent authenticates.

A conversion of the test guest takes ~1 min under TCG (more on a busy machine). Run with
``-s`` or ``-rA`` to see the state-file sequences the tests print. Set V2VW_KEEP_LOGS=<dir>
to keep the wrapper's logs of every run.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest

from tests import wrapperrun as wr
from tests.integration.guestimage import ext4_cat

pytestmark = pytest.mark.integration

CONVERSION_TIMEOUT = 1200  # ~60-90 s measured; TCG on a loaded CI machine is several times slower
ESD_UUID = "12345678-1234-1234-1234-123456789abc"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Env var handed to virt-v2v (the wrapper passes LIBGUESTFS_* on) and so inherited by every
# process it starts: lets us find this run's leftovers without matching other runs' processes.
MARKER_VAR = "LIBGUESTFS_V2VW_TEST_RUN"


# ---------------------------------------------------------------- helpers

class Run:
    """One wrapper invocation with its own short-pathed directories (the ssh-agent socket
    lives in the state dir, and AF_UNIX paths must stay under 108 bytes)."""

    def __init__(self, name):
        self.name = name
        self.root = tempfile.mkdtemp(prefix="v2vw-rc-", dir="/var/tmp")
        # 0755: virt-v2v writes an export domain as vdsm (36:36), which must reach it
        os.chmod(self.root, 0o755)
        self.state_dir = os.path.join(self.root, "state")
        self.log_dir = os.path.join(self.root, "logs")
        self.out = os.path.join(self.root, "out")
        for d in (self.state_dir, self.log_dir, self.out):
            os.makedirs(d)
        self.marker = "%s-%s" % (name, uuid.uuid4().hex)
        self.announced = None
        self.states = []     # (seconds since start, state) for every distinct state seen
        self.t0 = None
        self.proc = None

    def args(self):
        return ["--state-dir", self.state_dir, "--log-dir", self.log_dir]

    def env(self, v2v_env):
        return wr.env(LIBGUESTFS_BACKEND=v2v_env["LIBGUESTFS_BACKEND"],
                      LIBGUESTFS_BACKEND_SETTINGS=v2v_env["LIBGUESTFS_BACKEND_SETTINGS"],
                      **{MARKER_VAR: self.marker})

    def command(self):
        return wr.wrapper_cmd(*self.args())

    def start(self, job, v2v_env):
        """Start the CLI like an SSH client; return the announced paths."""
        self.t0 = time.monotonic()
        # stderr to a file: in the foreground the wrapper logs there, and a pipe nobody
        # drains while we poll the state file could fill up and block it
        self.stderr_path = os.path.join(self.root, "stderr.txt")
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=err, universal_newlines=True, cwd=wr.ROOT, env=self.env(v2v_env))
        self.proc.stdin.write(json.dumps(job))
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        assert line, "wrapper printed nothing; stderr: %s" % self.stderr()
        self.announced = json.loads(line)
        assert sorted(self.announced) == ["state_file", "throttling_file", "v2v_log",
                                          "wrapper_log"]
        return self.announced

    @property
    def state_file(self):
        return self.announced["state_file"]

    def wait(self, predicate, timeout=CONVERSION_TIMEOUT):
        """Poll the state file every 50 ms (recording each distinct state) until predicate."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = wr.read_state(self.state_file)
            except FileNotFoundError:
                last = None
            if last is not None:
                if not self.states or self.states[-1][1] != last:
                    self.states.append((time.monotonic() - self.t0, last))
                if predicate(last):
                    return last
            time.sleep(0.05)
        raise AssertionError("%s: state never satisfied the condition within %d s; last: %r\n"
                             "wrapper log tail:\n%s" % (self.name, timeout, last,
                                                        self.tail("wrapper_log")))

    def wait_finished(self, timeout=CONVERSION_TIMEOUT):
        return self.wait(lambda s: s.get("finished"), timeout)

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def wait_no_leftovers(self, extra_markers=(), timeout=30):
        """The wrapper writes ``finished`` last and exits right after: give it a moment."""
        deadline = time.monotonic() + timeout
        found = self.leftover_processes(extra_markers)
        while found and time.monotonic() < deadline:
            time.sleep(0.1)
            found = self.leftover_processes(extra_markers)
        return found

    def tail(self, key, n=4000):
        """The last ``n`` characters (None: all) of an announced file."""
        try:
            with open(self.announced[key], errors="replace") as f:
                text = f.read()
            return text if n is None else text[-n:]
        except (OSError, KeyError, TypeError):
            return "(unreadable)"

    def print_sequence(self):
        """The observed state-file sequence, one line per distinct state."""
        print("\n--- %s: %d distinct states of %s" % (self.name, len(self.states),
                                                       self.announced and self.state_file))
        for t, s in self.states:
            disks = " ".join("%s=%s" % (d["path"], d["progress"]) for d in s.get("disks", []))
            flags = [k for k in ("started", "failed", "finished") if s.get(k)]
            extra = []
            if "return_code" in s:
                extra.append("rc=%s" % s["return_code"])
            if "vm_id" in s:
                extra.append("vm_id=%s" % s["vm_id"])
            if "last_message" in s:
                extra.append("last_message=%r" % s["last_message"]["message"])
            print("%7.2fs  %-40.40s  progress=%-6s disk_count=%s [%s] %s %s" % (
                t, s.get("stage", "-"), s.get("progress", "-"), s.get("disk_count"), disks,
                ",".join(flags), " ".join(extra)))

    # -- leftovers --------------------------------------------------------
    def leftover_processes(self, extra_markers=()):
        """PIDs (other than ours) whose cmdline names this run's paths or whose environment
        carries its marker: virt-v2v, nbdkit, nbdcopy, qemu, ssh-agent of this run only."""
        markers = [self.root.encode()] + [m.encode() for m in extra_markers]
        env_marker = ("%s=%s" % (MARKER_VAR, self.marker)).encode()
        found = {}
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    cmdline = f.read()
                with open("/proc/%s/environ" % name, "rb") as f:
                    environ = f.read()
            except OSError:
                continue  # gone, or a kernel thread
            if not wr.pid_alive(int(name)):
                continue  # a zombie waiting for its parent is not running anything
            if any(m in cmdline for m in markers) or env_marker in environ.split(b"\0"):
                found[int(name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
        return found

    def cleanup(self):
        """Whatever happened: stop a still-running wrapper, kill what is left, remove dirs."""
        keep = os.environ.get("V2VW_KEEP_LOGS")
        if keep and self.announced:
            os.makedirs(keep, exist_ok=True)
            for key in ("v2v_log", "wrapper_log", "state_file"):
                try:
                    shutil.copy(self.announced[key], keep)
                except OSError:
                    pass
        state = None
        if self.announced:
            try:
                state = wr.read_state(self.state_file)
            except (OSError, ValueError):
                state = None
        if state is not None and not state.get("finished"):
            pid = state.get("wrapper_pid")
            if pid and wr.pid_alive(pid):
                os.kill(pid, signal.SIGTERM)   # the wrapper stops virt-v2v and cleans up
                wr.wait_gone(pid, timeout=60)
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc.stdout.close()
        for pid in self.leftover_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def runs():
    started = []

    def make(name):
        r = Run(name)
        started.append(r)
        return r

    yield make
    for r in started:
        r.cleanup()


def ssh_job(fake_esxi, vm, **kw):
    job = {"vm_name": fake_esxi.vm_uri(vm), "transport_method": "ssh",
           "ssh_key": fake_esxi.client_private_key_text}
    job.update(kw)
    return job


def assert_succeeded(run, state):
    assert "failed" not in state, "%s\nwrapper log:\n%s\nvirt-v2v log:\n%s" % (
        state, run.tail("wrapper_log"), run.tail("v2v_log"))
    assert state["finished"] is True and state["return_code"] == 0 and state["started"] is True
    assert "last_message" not in state
    assert wr.secret_dirs(run.state_dir) == []
    assert run.wait_no_leftovers() == {}


def progress_values(run, path):
    """Progress of the disk ``path`` in each recorded state (None where absent)."""
    out = []
    for _, s in run.states:
        match = [d["progress"] for d in s["disks"] if d["path"] == path]
        out.append(match[0] if match else None)
    return out


def assert_progress_moved(run, path, intermediate=True):
    """0 -> 100 without going back; with ``intermediate``, also seen strictly between (the
    512 MiB OS disk: nbdcopy's bar moves in 1/8 steps; the 64 MiB data disk is copied in
    well under a second, so its bar may print only 0 and 100)."""
    values = [v for v in progress_values(run, path) if v is not None]
    assert values[0] == 0 and values[-1] == 100, values
    assert values == sorted(values), "progress of %s went backwards: %s" % (path, values)
    if intermediate:
        assert any(0 < v < 100 for v in values), "no intermediate progress for %s: %s" % (
            path, values)


# ---------------------------------------------------------------- 1. ssh -> output_dir

def test_ssh_to_output_dir_daemonized(fake_esxi, v2v_env, runs):
    run = runs("local-daemon")
    disk = fake_esxi.vddk_style_path("testvm", "testvm")
    announced = run.start(ssh_job(fake_esxi, "testvm", output_dir=run.out,
                                  source_disks=[disk]), v2v_env)
    # daemonized: the caller's process returns at once, with exit status 0
    assert run.proc.wait(timeout=60) == 0
    assert run.proc.stdout.read() == ""  # exactly one line on stdout
    assert all(os.path.isabs(p) for p in announced.values())
    state = run.wait_finished()
    run.print_sequence()
    assert_succeeded(run, state)
    assert state["wrapper_pid"] != run.proc.pid   # it really detached
    assert state["disks"] == [{"path": disk, "progress": 100}] and state["disk_count"] == 1
    assert_progress_moved(run, disk)
    stages = [s.get("stage") for _, s in run.states]
    assert "Copying disk 1/1" in stages
    out_disk = os.path.join(run.out, "testvm-sda")
    assert os.path.getsize(out_disk) == fake_esxi.images["os"].stat().st_size
    assert "<name>testvm</name>" in open(os.path.join(run.out, "testvm.xml")).read()
    assert oct(os.stat(run.state_file).st_mode & 0o777) == "0o644"
    # the v2v log is the real -v -x output; the disk came over ssh from the fake /vmfs
    assert "path=%s" % fake_esxi.flat_path("testvm", "testvm") in open(
        announced["v2v_log"], errors="replace").read()


def test_ssh_to_output_dir_in_a_real_systemd_unit(fake_esxi, v2v_env, runs, test_systemd):
    """Daemon mode as on a host with systemd: the real virt-v2v runs in a
    transient unit of the test systemd 252, gets its machine-readable log as
    descriptor 3 from the gate shell, and writes into an output directory
    whose name systemd would have rewritten without the escaping (issue 20)."""
    run = runs("unit")
    out = os.path.join(run.out, "o $HOME ${PATH} %n")
    os.mkdir(out)
    base_env = run.env
    run.env = lambda v2v: dict(base_env(v2v), PATH=test_systemd.bin + os.pathsep + os.environ["PATH"],
                               VIRT_V2V_WRAPPER_SYSTEMD_MARKER=test_systemd.rundir)
    announced = run.start(ssh_job(fake_esxi, "testvm", output_dir=out), v2v_env)
    assert run.proc.wait(timeout=60) == 0
    state = run.wait_finished()
    run.print_sequence()
    assert_succeeded(run, state)
    log = open(announced["wrapper_log"]).read()
    assert "virt-v2v started in systemd unit v2v-import-%s.service" % state["tag"] in log
    assert "--machine-readable=file:/dev/fd/3" in log
    assert "<name>testvm</name>" in open(os.path.join(out, "testvm.xml")).read()
    mr = announced["v2v_log"][:-4] + "-mr.log"
    assert any(json.loads(line).get("type") == "message" for line in open(mr))


# ---------------------------------------------------------------- 2. two disks, shuffled

def test_two_disks_shuffled_source_disks(fake_esxi, v2v_env, runs):
    run = runs("two-disks")
    os_disk = fake_esxi.vddk_style_path("testvm2", "testvm2")
    data_disk = fake_esxi.vddk_style_path("testvm2", "testvm2_1")
    run.start(ssh_job(fake_esxi, "testvm2", output_dir=run.out,
                      source_disks=[data_disk, os_disk]), v2v_env)
    assert run.proc.wait(timeout=60) == 0
    state = run.wait_finished()
    run.print_sequence()
    assert_succeeded(run, state)
    assert state["disk_count"] == 2
    paths = [d["path"] for d in state["disks"]]
    assert sorted(paths) == sorted([os_disk, data_disk])
    for path in (os_disk, data_disk):
        assert [d["progress"] for d in state["disks"] if d["path"] == path] == [100]
    assert_progress_moved(run, os_disk)
    assert_progress_moved(run, data_disk, intermediate=False)
    # identified, not guessed: while virt-v2v copies disk 1 (the OS disk, scsi0:0) only
    # that entry moves, although the caller listed it second
    copying_1 = [s for _, s in run.states if s.get("stage") == "Copying disk 1/2"]
    assert copying_1
    for s in copying_1:
        by_path = {d["path"]: d["progress"] for d in s["disks"]}
        assert by_path[data_disk] == 0, s
    assert any(0 < {d["path"]: d["progress"] for d in s["disks"]}[os_disk] for s in copying_1)
    out_data = os.path.join(run.out, "testvm2-sdb")
    assert os.path.getsize(out_data) == fake_esxi.images["data"].stat().st_size
    assert os.path.getsize(os.path.join(run.out, "testvm2-sda")) == \
        fake_esxi.images["os"].stat().st_size
    xml = open(os.path.join(run.out, "testvm2.xml")).read()
    assert len(re.findall(r"<disk type=['\"]file['\"] device=['\"]disk['\"]", xml)) == 2
    # both disks really came through nbdkit's ssh plugin from the fake /vmfs ...
    log_text = run.tail("v2v_log", None)
    for disk in ("testvm2", "testvm2_1"):
        assert "path=%s" % fake_esxi.flat_path("testvm2", disk) in log_text
    # ... and the data disk's content arrived (virt-v2v fstrims it, so no byte compare)
    assert ext4_cat(out_data, "/hello.txt") == ext4_cat(fake_esxi.images["data"], "/hello.txt")


# ---------------------------------------------------------------- 3. export domain

def make_export_domain(root):
    """A local directory laid out as an export storage domain, as virt-v2v -o rhv needs it:
    exactly one UUID-named domain dir with dom_md/, images/, master/vms/, all owned 36:36
    (virt-v2v forks and setuid(36:36) to write into it; see lab REPORT fail10/fail11)."""
    esd = os.path.join(root, "esd")
    sd = os.path.join(esd, ESD_UUID)
    for sub in ("dom_md", "images", os.path.join("master", "vms")):
        os.makedirs(os.path.join(sd, sub))
    for dirpath, dirnames, _ in os.walk(esd):
        os.chown(dirpath, 36, 36)
        for d in dirnames:
            os.chown(os.path.join(dirpath, d), 36, 36)
    return esd, sd


def test_ssh_to_export_domain_foreground(fake_esxi, v2v_env, runs):
    run = runs("export-domain")
    esd, sd = make_export_domain(run.root)
    job = ssh_job(fake_esxi, "testvm", export_domain=esd, daemonize=False,
                  source_disks=[fake_esxi.vddk_style_path("testvm", "testvm")])
    run.start(job, v2v_env)
    state = run.wait_finished()
    assert run.proc.wait(timeout=60) == 0, run.stderr()[-3000:]
    out = run.proc.stdout.read()
    err = run.stderr()
    run.print_sequence()
    assert out == ""                         # the one line was already read
    assert "virt-v2v exited with status 0" in err  # foreground: wrapper log on stderr too
    assert_succeeded(run, state)
    vms = os.listdir(os.path.join(sd, "master", "vms"))
    assert len(vms) == 1 and UUID_RE.match(vms[0]), vms
    assert state["vm_id"] == vms[0]
    assert os.path.isfile(os.path.join(sd, "master", "vms", vms[0], vms[0] + ".ovf"))
    images = os.listdir(os.path.join(sd, "images"))
    assert len(images) == 1
    assert os.stat(os.path.join(sd, "images", images[0])).st_uid == 36


# ---------------------------------------------------------------- 4. cancellation

def v2v_tmpdirs(v2v_log):
    """virt-v2v's own /tmp/v2v.XXXXXX dirs as its -v log names them (nbdkit sockets)."""
    with open(v2v_log, errors="replace") as f:
        return sorted(set(re.findall(r"/tmp/v2v\.[A-Za-z0-9]{6}\b", f.read())))


def descendants(pid):
    """All live descendants of ``pid`` (ppid walk over /proc)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                ppid = int(f.read().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return "?"


def test_sigterm_to_state_pid_during_copy_cancels(fake_esxi, v2v_env, runs):
    run = runs("cancel")
    job = ssh_job(fake_esxi, "testvm2", output_dir=run.out,
                  source_disks=[fake_esxi.vddk_style_path("testvm2", "testvm2"),
                                fake_esxi.vddk_style_path("testvm2", "testvm2_1")])
    with open(os.path.join(run.out, "testvm2-sdz"), "w") as f:   # there before: must be kept
        f.write("an earlier run's")
    run.start(job, v2v_env)
    assert run.proc.wait(timeout=60) == 0

    def copying(s):
        # the stage appears while virt-v2v still runs nbdinfo; nbdcopy running = bytes moving
        return s.get("finished") or (str(s.get("stage", "")).startswith("Copying disk") and
                                     "nbdcopy" in map(comm, descendants(s["pid"])))

    state = run.wait(copying)
    assert not state.get("finished"), "finished before the copy was seen: %r" % state
    pid = state["pid"]
    tree = [pid] + descendants(pid)          # virt-v2v, nbdkit (in, out), nbdcopy
    names = sorted(set(comm(p) for p in tree))
    tmpdirs = v2v_tmpdirs(run.announced["v2v_log"])
    agent = [p for p, cmd in run.leftover_processes().items() if "ssh-agent" in cmd]
    assert agent, "the wrapper's ssh-agent should be running during the copy"
    assert wr.secret_dirs(run.state_dir), "secret dir should exist during the copy"
    partial = sorted(os.listdir(run.out))
    assert "testvm2-sda" in partial, partial          # virt-v2v writes it during the copy
    os.kill(pid, signal.SIGTERM)
    killed_at = time.monotonic() - run.t0
    state = run.wait_finished(timeout=300)
    run.print_sequence()
    print("SIGTERM to virt-v2v pid %d at %.2fs; process tree then: %s (%s); v2v tmp dirs: %s"
          % (pid, killed_at, tree, " ".join(names), tmpdirs))
    assert state["failed"] is True and state["finished"] is True
    assert state["return_code"] != 0
    msg = state["last_message"]["message"]
    assert state["last_message"]["type"] == "error"
    assert re.search(r"cancel|kill|signal", msg, re.I), msg
    assert "SIGTERM" in msg, msg
    assert state["last_message"]["code"] == "cancelled", state["last_message"]
    # nothing of this run survives: by path/marker, and by the pids we saw before the kill
    assert wr.wait_gone(state["wrapper_pid"], timeout=30), "the wrapper daemon did not exit"
    assert run.wait_no_leftovers(tmpdirs) == {}
    for p in tree + agent:
        assert wr.wait_gone(p, timeout=10), "pid %d of the cancelled run is still alive" % p
    assert wr.secret_dirs(run.state_dir) == []
    assert not os.path.exists(run.announced["throttling_file"])
    # its partial output is removed, what was there before is kept (docs/contract.md §8)
    assert sorted(os.listdir(run.out)) == ["testvm2-sdz"], partial
    with open(run.announced["wrapper_log"]) as f:
        assert "removed its partial output in %s: testvm2-sda" % run.out in f.read()
    assert "removed" not in msg


# ---------------------------------------------------------------- 5. bad source

def test_missing_vmx_fails_with_virt_v2v_error(fake_esxi, v2v_env, runs):
    run = runs("bad-source")
    job = ssh_job(fake_esxi, "testvm", output_dir=run.out)
    job["vm_name"] = job["vm_name"].replace("testvm/testvm.vmx", "nosuchvm/nosuchvm.vmx")
    run.start(job, v2v_env)
    assert run.proc.wait(timeout=60) == 0     # daemonized: the job was accepted
    state = run.wait_finished(timeout=600)
    run.print_sequence()
    assert state["failed"] is True and state["started"] is True
    assert state["return_code"] == 1
    # virt-v2v's own words (machine-readable error record), not a generic wrapper message
    # with its "see earlier error messages" replaced by that earlier message (scp's)
    # (2.2 quotes scp; 2.6+ the ssh plugin's own line, never nbdcopy's echo of it), and the
    # failure code an orchestrator acts on (wrapper/causes.py)
    last = state["last_message"]
    assert last["type"] == "error" and last["code"] == "vmx_missing", last
    assert last["message"].startswith("could not copy the VMX file from the remote server: ")
    assert "nosuchvm/nosuchvm.vmx" in last["message"] and "No such file" in last["message"]
    assert "nbdcopy" not in last["message"] and "/tmp/" not in last["message"], last
    assert "could not copy the VMX file" in run.tail("v2v_log", 100000)
    assert wr.secret_dirs(run.state_dir) == []
    assert run.wait_no_leftovers() == {}
    assert os.listdir(run.out) == []
