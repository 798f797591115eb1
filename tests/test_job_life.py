"""A job's whole life in-process, through the seams ``cli.main`` offers:
``runner`` (virt-v2v's capabilities), ``launcher_factory`` (virt-v2v itself:
here a stand-in that writes a captured log and exits) and ``detach``.

Each test checks what a client sees afterwards: the exit status, the one
stdout line, the state file, and the files left in the state directory.
"""
import io
import json
import logging
import os
import signal
import subprocess

import pytest

from tests.fakes import RecordingRunner, data
from wrapper import cli, stages
from wrapper.errors import ThrottleError

FP = ":".join(["AB"] * 20)
ANSWER_KEYS = ["state_file", "throttling_file", "v2v_log", "wrapper_log"]
VIRT_V2V = "/nonexistent/bin/virt-v2v"          # never run: the launcher stands in for it


def read(name):
    with open(data(name), "rb") as f:
        return f.read()


class StandInV2v:
    """A process handle (wrapper.launch's interface) for a virt-v2v that has
    already written ``log`` and ``mr`` and exited with ``rc``.  A real
    ``sleep`` stands in for its process, so that the PID in the state file is
    a live process of this conversion until :meth:`close`."""

    kind = "stand-in virt-v2v"
    dedicated_cgroup = False

    def __init__(self, launch, log, mr, rc):
        self.launch, self.log, self.mr, self.rc = launch, log, mr, rc
        self.proc = self.pid = None

    def start(self):
        # virt-v2v writes its machine-readable log to the descriptor it is handed
        assert "--machine-readable=file:/dev/fd/3" in self.launch.argv
        os.write(self.launch.log, self.log)
        os.write(self.launch.machine_log, self.mr)
        self.proc = subprocess.Popen(["sleep", "60"])
        self.pid = self.proc.pid
        return self

    def release(self):
        pass

    def pids(self):
        return [self.pid]

    def poll(self):
        return self.rc

    def terminate(self):
        self.proc.terminate()

    def kill(self):
        self.proc.kill()

    def set_cpu_quota(self, value):
        raise ThrottleError("no CPU limits for the stand-in")

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


class Launcher:
    """launcher_factory: keeps the handles it made (the processes "started")."""

    def __init__(self, log=b"", mr=b"", rc=0):
        self.log, self.mr, self.rc = log, mr, rc
        self.handles = []

    def __call__(self, launch):
        handle = StandInV2v(launch, self.log, self.mr, self.rc)
        self.handles.append(handle)
        return handle


class Host:
    def __init__(self, tmp_path):
        self.root = tmp_path
        self.state = tmp_path / "state"
        self.logs = tmp_path / "logs"
        self.out = tmp_path / "out"
        for d in (self.state, self.logs, self.out):
            d.mkdir()
        self.environ = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path),
            "VIRT_V2V_WRAPPER_LOCK_DIR": str(tmp_path / "lock"),
            "VIRT_V2V_WRAPPER_CGROUP_ROOT": str(tmp_path / "cgroup"),
            "VIRT_V2V_WRAPPER_SYSTEMD_MARKER": str(tmp_path / "no-systemd"),
            "VIRT_V2V_WRAPPER_VDDK_PREFLIGHT": "off",      # no VMware host answers (conftest)
        }
        self.caps = read("virt-v2v--machine-readable.txt").decode()
        self.runner = RecordingRunner({(VIRT_V2V, "--machine-readable"): (0, self.caps, "")})

    def job(self, **kw):
        job = {"vm_name": "testvm", "transport_method": "vddk",
               "vmware_uri": "esx://root@127.0.0.1?no_verify=1", "vmware_password": "s3cret-pw",
               "vmware_fingerprint": FP, "output_dir": str(self.out),
               "source_disks": ["[datastore1] testvm/testvm.vmdk"]}
        job.update(kw)
        return job

    def main(self, job, launcher, detach=None, runner=None):
        stdout, stderr = io.StringIO(), io.StringIO()
        code = cli.main(["--state-dir", str(self.state), "--log-dir", str(self.logs),
                         "--virt-v2v", VIRT_V2V],
                        stdin=io.BytesIO(json.dumps(job).encode()), stdout=stdout, stderr=stderr,
                        environ=self.environ, runner=runner or self.runner,
                        launcher_factory=launcher, detach=detach)
        return code, stdout.getvalue(), stderr.getvalue()

    def left(self):
        """What the state directory holds besides state and throttling files."""
        return sorted(n for n in os.listdir(self.state)
                      if not n.endswith((".state", ".throttle")))

    def state_files(self):
        return sorted(n for n in os.listdir(self.state) if n.endswith(".state"))


@pytest.fixture
def host(tmp_path):
    """In-process runs install signal handlers and log handlers: put them back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    logger = logging.getLogger("wrapper")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield Host(tmp_path)
    for s, h in saved.items():
        signal.signal(s, h)
    for h in list(logger.handlers):
        if h not in handlers:
            logger.removeHandler(h)
            h.close()
    logger.setLevel(level)
    logger.propagate = propagate


def answer_of(stdout):
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    doc = json.loads(lines[0])
    assert sorted(doc) == ANSWER_KEYS
    assert all(os.path.isabs(v) for v in doc.values())
    return doc


def load(path):
    with open(path) as f:
        return json.load(f)


# -- the foreground -----------------------------------------------------------------
def test_foreground_success(host):
    launcher = Launcher(read("run05-vmx-ssh-port-uri.vx.log"), read("run05-vmx-ssh-port-uri.vx.mr.log"))
    code, out, err = host.main(host.job(daemonize=False), launcher)
    assert code == cli.EXIT_OK, err
    doc = answer_of(out)
    state = load(doc["state_file"])
    assert state["finished"] is True and "failed" not in state
    assert state["started"] is True and state["return_code"] == 0
    assert state["vm"] == "testvm" and state["transport"] == "vddk"
    assert state["disks"] == [{"path": "[datastore1] testvm/testvm.vmdk", "progress": 100}]
    assert state["progress"] == 100 and state["pid"] == launcher.handles[0].pid
    assert not stages.is_copying(state["stage"])          # it went past the copy
    assert host.left() == [], "secret directory, agent or probe left behind"
    assert "virt-v2v exited with status 0" in err           # the log goes to stderr too
    assert "s3cret-pw" not in open(doc["wrapper_log"]).read()
    assert launcher.handles[0].proc.poll() is not None      # stopped by the job's cleanup


def test_foreground_failure(host):
    launcher = Launcher(read("fail02-ssh-missing-vmx.vx.log"), read("fail02-ssh-missing-vmx.vx.mr.log"),
                        rc=1)
    code, out, err = host.main(host.job(daemonize=False), launcher)
    assert code == cli.EXIT_FAILED
    state = load(answer_of(out)["state_file"])
    assert state["finished"] is True and state["failed"] is True and state["return_code"] == 1
    assert state["last_message"] == {
        "type": "error", "message": "could not copy the VMX file from the remote server: scp: "
        "/vmfs/volumes/datastore1/nosuchvm/nosuchvm.vmx: No such file or directory",
        "code": "vmx_missing", "hint": "check vm_name: the .vmx path must exist on the datastore"}
    assert host.left() == []


# -- daemon mode: both halves of the fork, each with a stand-in detach ---------------
class CallerSide:
    """detach() as the caller's process sees it: a daemon was started."""

    is_daemon = False
    started = True

    def __init__(self):
        self.outcome = None

    def hand_over(self, status=0):
        self.outcome = ("handed over", status)

    def abandon(self):
        self.outcome = ("abandoned", None)


class DaemonSide:
    """detach() as the daemon sees it; ``go``: the caller gave the answer."""

    is_daemon = True

    def __init__(self, go=True):
        self.go = go

    def wait_for_go(self):
        return self.go

    def done(self):
        pass


def detach_as(role):
    def detach(caller_fds, before_ready=None):
        if role.is_daemon and before_ready is not None:
            before_ready()
        return role
    return detach


def test_daemon_mode_caller_prints_the_answer_once_and_starts_nothing(host):
    launcher, role = Launcher(), CallerSide()
    code, out, err = host.main(host.job(), launcher, detach=detach_as(role))
    assert code == cli.EXIT_OK and err == ""
    doc = answer_of(out)
    assert role.outcome == ("handed over", cli.EXIT_OK)
    assert launcher.handles == []                           # virt-v2v is the daemon's to start
    state = load(doc["state_file"])
    assert "started" not in state and "finished" not in state
    assert host.state_files() == [os.path.basename(doc["state_file"])]


def test_daemon_mode_daemon_runs_the_job_to_the_end(host):
    launcher = Launcher(read("run05-vmx-ssh-port-uri.vx.log"), read("run05-vmx-ssh-port-uri.vx.mr.log"))
    code, out, err = host.main(host.job(), launcher, detach=detach_as(DaemonSide()))
    assert code == cli.EXIT_OK
    assert out == ""                                        # the caller gives the answer
    [name] = host.state_files()
    state = load(os.path.join(host.state, name))
    assert state["finished"] is True and "failed" not in state and state["return_code"] == 0
    assert state["wrapper_pid"] == os.getpid()              # recorded before the caller is told
    assert len(launcher.handles) == 1 and host.left() == []


def test_daemon_whose_caller_lost_the_answer_starts_nothing(host):
    launcher = Launcher()
    code, out, err = host.main(host.job(), launcher, detach=detach_as(DaemonSide(go=False)))
    assert code == cli.EXIT_REFUSED and out == ""
    [name] = host.state_files()
    state = load(os.path.join(host.state, name))
    assert state["finished"] is True and state["failed"] is True
    assert "the caller did not receive the answer" in state["last_message"]["message"]
    assert state["last_message"]["code"] == "not_started"
    assert launcher.handles == [] and host.left() == []


class BrokenV2v(StandInV2v):
    """A monitor step that meets a bug in the wrapper itself."""

    def poll(self):
        raise RuntimeError("a bug in the wrapper")


def test_a_bug_during_the_run_is_an_internal_error(host):
    handles = []

    def factory(launch):
        handles.append(BrokenV2v(launch, b"", b"", None))
        return handles[-1]
    code, out, err = host.main(host.job(daemonize=False), factory)
    assert code == cli.EXIT_FAILED
    state = load(answer_of(out)["state_file"])
    assert state["finished"] is True and state["failed"] is True
    assert state["last_message"]["code"] == "internal_error", state["last_message"]
    assert state["last_message"]["message"] == "virt-v2v-wrapper failed: a bug in the wrapper"
    assert host.left() == []


def test_virt_v2v_killed_outright_is_killed_not_cancelled(host):
    launcher = Launcher(read("kill04-sigkill-during-convert.tail.vx.log"), b"", rc=137)
    code, out, err = host.main(host.job(daemonize=False), launcher)
    assert code == cli.EXIT_FAILED
    last = load(answer_of(out)["state_file"])["last_message"]
    assert (last["code"], last["message"]) == ("killed", "virt-v2v was killed by signal 9")


# -- refused jobs: one line, exit 1, nothing started, nothing left -------------------
def assert_refused(host, code, out, err, launcher, *words):
    assert code == cli.EXIT_REFUSED and out == ""
    assert err.count("\n") == 1 and err.startswith("virt-v2v-wrapper: error: "), err
    for w in words:
        assert w in err
    assert launcher.handles == []
    assert host.state_files() == [] and host.left() == []
    assert not [n for n in os.listdir(host.logs) if not n.endswith("-wrapper.log")]


@pytest.mark.parametrize("change, words", [
    ({"vm_name": None}, ["vm_name"]),
    ({"transport_method": "carrier-pigeon"}, ["transport_method"]),
    ({"vmware_fingerprint": "nope"}, ["vmware_fingerprint"]),
    ({"output_dir": "/nonexistent/out"}, ["output_dir"]),
])
def test_refused_job(host, change, words):
    job = {k: v for k, v in host.job(**change).items() if v is not None}
    launcher = Launcher()
    code, out, err = host.main(job, launcher)
    assert_refused(host, code, out, err, launcher, *words)
    assert "s3cret-pw" not in err


def test_refused_after_the_secrets_were_written(host):
    """A SIGTERM while the job is being prepared: the password file existed
    by then, and is gone with everything else."""
    def probe(argv):
        os.kill(os.getpid(), signal.SIGTERM)          # recorded by the wrapper's handler
        return 0, host.caps, ""
    launcher = Launcher()
    runner = RecordingRunner({(VIRT_V2V, "--machine-readable"): probe})
    code, out, err = host.main(host.job(), launcher, runner=runner)
    assert_refused(host, code, out, err, launcher, "interrupted by SIGTERM")


def test_an_internal_error_is_one_line_not_a_traceback(host):
    def runner(argv, **kw):
        raise RuntimeError("a bug")
    launcher = Launcher()
    code, out, err = host.main(host.job(), launcher, runner=runner)
    assert_refused(host, code, out, err, launcher, "internal error (RuntimeError: a bug)")
    assert "Traceback" not in err


# -- a failure's partial output (docs/contract.md §8) ------------------------------
class WritingV2v(StandInV2v):
    """Writes ``testvm-sda`` into the output directory as it starts; records
    whether the file was still there when it was stopped (the removal must
    come after virt-v2v's stop)."""

    def start(self):
        with open(os.path.join(self.launch_out, "testvm-sda"), "wb") as f:
            f.write(b"partial")
        return super().start()

    def close(self):
        self.there_at_close = os.path.exists(os.path.join(self.launch_out, "testvm-sda"))
        super().close()


def writing(out, rc, cls=WritingV2v, log=b""):
    handles = []

    def factory(launch):
        handle = cls(launch, log, b"", rc)
        handle.launch_out = str(out)
        handles.append(handle)
        return handle
    return factory, handles


class BrokenWritingV2v(WritingV2v, BrokenV2v):
    pass


@pytest.mark.parametrize("rc, cls, kept", [(1, WritingV2v, False), (137, WritingV2v, False),
                                           (None, BrokenWritingV2v, False), (0, WritingV2v, True)])
def test_a_failure_removes_the_partial_output_and_success_keeps_it(host, rc, cls, kept):
    (host.out / "testvm-sdb").write_bytes(b"an earlier run's")     # there before: kept
    factory, handles = writing(host.out, rc, cls,
                               read("run05-vmx-ssh-port-uri.vx.log") if rc == 0 else b"")
    code, out, err = host.main(host.job(daemonize=False), factory)
    assert code == (cli.EXIT_OK if kept else cli.EXIT_FAILED), err
    assert handles[0].there_at_close                  # removed only after virt-v2v stopped
    assert (host.out / "testvm-sda").exists() == kept
    assert (host.out / "testvm-sdb").read_bytes() == b"an earlier run's"
    state = load(answer_of(out)["state_file"])
    if not kept:
        assert "removed its partial output in %s: testvm-sda" % host.out in err
        assert "removed" not in state["last_message"]["message"]


def test_an_output_dir_other_than_the_one_the_caller_checked_is_not_cleaned(host, monkeypatch):
    """The (device, inode) the caller's check saw reaches the watch: when
    the directory under the name is another one, nothing there is removed
    (docs/contract.md §8)."""
    from wrapper import users
    monkeypatch.setattr(users, "check_caller_can_write", lambda boundary, target: (0, 1))
    factory, handles = writing(host.out, 1)
    code, out, err = host.main(host.job(daemonize=False), factory)
    assert code == cli.EXIT_FAILED, err
    assert (host.out / "testvm-sda").exists()
    assert "no longer the directory checked as writable by the caller" in err
    assert "removed its partial output" not in err
