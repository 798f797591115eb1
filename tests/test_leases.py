"""wrapper.leases: what a SIGKILLed wrapper left is reclaimed, what a live one
holds is never touched.  Real processes (a fake wrapper that takes its own
lease, a plain-child process group, an ssh-agent), real directories; each
test ends only the processes it started, by PID, and reaps them."""
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import types

import pytest

from tests.fakes import RecordingRunner
from tests import test_procinfo as pt
from wrapper import causes, leases, procinfo
from wrapper.security import fsafe
from wrapper import reclaim as reclaiming

# process fixtures and helpers shared with test_procinfo
spawn, subreaper, group, reap, wait_until = pt.spawn, pt.subreaper, pt.group, pt.reap, pt.wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOW = 1767225600.5

# A wrapper that takes its lease and waits to be killed.  With "fork" it
# hands the lease to a daemon child (which updates the pid) and exits.
FAKE_WRAPPER = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from wrapper import leases, procinfo
book = leases.LeaseBook.open(sys.argv[2])
lease = book.create(sys.argv[3], json.loads(sys.argv[4]))
book.close()
if sys.argv[5] == "fork":
    if os.fork():
        lease.forget()
        os._exit(0)
    lease.update(wrapper_pid=os.getpid(), wrapper_start=procinfo.start_time(os.getpid()))
print(os.getpid(), flush=True)
time.sleep(60)
"""


def read_line(stream, timeout=30):
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "the fake wrapper did not start within %ss" % timeout
    return stream.readline()


@pytest.fixture
def job(tmp_path, spawn, group):
    """Everything a running conversion holds, as a wrapper would record it."""
    tag = "20270115T110000-4242"
    state = tmp_path / "state"
    agents = tmp_path / "agents"
    state.mkdir()
    agents.mkdir()
    secret = make_private(state, "v2v-wrapper-secrets-")
    (state / secret / "vmware_password").write_text("hunter2")
    agent_dir = make_private(agents, "v2v-agent-")
    sock = str(agents / agent_dir / "agent.sock")
    if shutil.which("ssh-agent"):
        agent = spawn(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(sock))
    else:
        agent = spawn(["sleep", "600"])
    leader, member = group()
    state_name = "v2v-import-%s.state" % tag
    (state / state_name).write_text(json.dumps({
        "disks": [{"path": "[ds] vm/vm.vmdk", "progress": 42}], "disk_count": 1, "started": True,
        "pid": leader.pid, "last_message": {"message": "earlier trouble", "type": "error"}}))
    (state / (".%s.0123abcd.tmp" % state_name)).write_bytes(b"\0" * 100)
    throttle_dir = "v2v-import-%s.throttle.d" % tag          # the caller's, filled by the caller
    os.makedirs(state / throttle_dir / os.path.join(*["n"] * 40))
    os.symlink(str(agents), state / throttle_dir / "throttle")
    record = {"state_dir": str(state), "state_name": state_name,
              "secret_dir": secret, "secret_ident": ident(state / secret),
              "agent_dir": str(agents / agent_dir), "agent_ident": ident(agents / agent_dir),
              "agent_pid": agent.pid, "agent_start": procinfo.start_time(agent.pid),
              "unit": None, "child_pid": leader.pid, "child_start": procinfo.start_time(leader.pid),
              "throttle_dir": throttle_dir, "throttle_ident": ident(state / throttle_dir),
              "run_uid": os.geteuid()}
    return types.SimpleNamespace(tag=tag, state=state, agents=agents, secret=secret,
                                 throttle_dir=throttle_dir,
                                 agent_dir=agent_dir, agent=agent, leader=leader, member=member,
                                 state_file=state / state_name, record=record,
                                 lock=tmp_path / "lock", jobs=tmp_path / "lock" / "jobs")


def make_private(parent, prefix):
    fd = fsafe.open_dir(str(parent))
    try:
        name, dfd = fsafe.mkdir_private(fd, prefix)
        os.close(dfd)
        return name
    finally:
        os.close(fd)


def ident(path):
    return list(fsafe.ident(os.lstat(str(path))))


def fake_wrapper(spawn, job, mode="stay"):
    p = spawn([sys.executable, "-c", FAKE_WRAPPER, ROOT, str(job.lock), job.tag,
               json.dumps(job.record), mode], stdout=subprocess.PIPE, text=True)
    return p, int(read_line(p.stdout))


def dead_lease(job, **fields):
    """A lease whose wrapper is gone: written by us, its lock let go."""
    with leases.LeaseBook.open(str(job.lock)) as book:
        book.create(job.tag, dict(job.record, **fields)).forget()


def reclaim(job, runner=None, systemd=False, log=logging.getLogger("test.reclaim")):
    with leases.LeaseBook.open(str(job.lock)) as book:
        return reclaiming.reclaim(book, runner or RecordingRunner(), systemd, log, now=lambda: NOW)


def state(job):
    return json.loads(job.state_file.read_text())


def intact(job):
    assert (job.state / job.secret / "vmware_password").exists()
    assert (job.agents / job.agent_dir).is_dir()
    assert (job.state / job.throttle_dir / "n").is_dir()
    assert job.leader.poll() is None and job.agent.poll() is None
    assert procinfo.alive(job.member, procinfo.start_time(job.member))
    assert "finished" not in state(job)
    assert (job.jobs / (job.tag + ".lease")).exists()


def test_sigkilled_wrapper_is_reclaimed(job, spawn, caplog):
    caplog.set_level(logging.INFO)
    wrapper, pid = fake_wrapper(spawn, job)
    runner = RecordingRunner()
    assert reclaim(job, runner) == []                    # alive: nothing happens
    intact(job)
    wrapper.send_signal(signal.SIGKILL)
    assert wrapper.wait(timeout=10) == -signal.SIGKILL
    assert reclaim(job, runner) == [job.tag]
    assert job.leader.wait(timeout=10) == -signal.SIGKILL
    assert os.WTERMSIG(reap(job.member)) == signal.SIGKILL
    assert job.agent.wait(timeout=10) is not None
    assert not (job.state / job.secret).exists() and not (job.agents / job.agent_dir).exists()
    s = state(job)
    assert s["failed"] is True and s["finished"] is True and s["finished_at"] == NOW
    assert s["last_message"] == {"type": "error", "message": reclaiming.DIED % pid
                                 + "; before that: earlier trouble", "code": "wrapper_died",
                                 "hint": causes.CATALOGUE["wrapper_died"].hint}
    assert "died before the conversion finished" in s["last_message"]["message"]
    assert s["disks"] == [{"path": "[ds] vm/vm.vmdk", "progress": 42}]
    assert sorted(os.listdir(job.state)) == [job.state_file.name]     # temporary file gone
    assert os.stat(job.state_file).st_mode & 0o777 == 0o644
    assert os.listdir(job.jobs) == [] and runner.calls == []
    assert (job.agents / job.agent_dir).exists() is False and job.agents.is_dir()   # link not followed
    for words in ("is dead", "process group", "ssh-agent", "secret directory", "throttling directory",
                  "marked failed",
                  "temporary file", "released"):
        assert words in caplog.text
    assert reclaim(job, runner) == []                    # nothing left to do


def test_lease_survives_the_fork_into_the_daemon(job, spawn, subreaper):
    caller, daemon = fake_wrapper(spawn, job, "fork")
    assert caller.wait(timeout=10) == 0 and daemon != caller.pid
    start = procinfo.start_time(daemon)
    try:
        with leases.LeaseBook.open(str(job.lock)) as book:
            assert book.read(job.tag)[0]["wrapper_pid"] == daemon
        assert reclaim(job) == []                        # the caller is gone, the daemon lives
        intact(job)
    finally:
        procinfo.signal_checked(daemon, signal.SIGKILL, lambda s: s == start)
        reap(daemon)
    assert reclaim(job) == [job.tag]
    assert not (job.state / job.secret).exists()


def test_held_lock_means_alive_even_with_a_dead_pid(job):
    """E.g. the daemon has not recorded its pid yet: the lock still says alive."""
    with leases.LeaseBook.open(str(job.lock)) as book:
        lease = book.create(job.tag, dict(job.record, wrapper_pid=999999999, wrapper_start=1))
        assert reclaim(job) == []
        intact(job)
        lease.release()
        lease.release()                                  # idempotent
    assert os.listdir(job.jobs) == []


def test_live_pid_without_lock_is_alive(job, spawn):
    p = spawn(["sleep", "60"])
    dead_lease(job, wrapper_pid=p.pid, wrapper_start=procinfo.start_time(p.pid))
    assert reclaim(job) == []
    intact(job)


def test_reused_pid_is_dead_but_the_process_is_spared(job, spawn):
    other = spawn(["sleep", "60"])
    wrong = procinfo.start_time(other.pid) - 1
    dead_lease(job, wrapper_pid=other.pid, wrapper_start=wrong, child_pid=other.pid,
               child_start=wrong, agent_pid=other.pid, agent_start=wrong)
    assert reclaim(job) == [job.tag]
    assert other.poll() is None and procinfo.alive(other.pid, wrong + 1)
    assert not (job.state / job.secret).exists() and state(job)["finished"] is True


def test_swapped_secret_dir_is_left_alone(job, caplog):
    caplog.set_level(logging.INFO)
    dead_lease(job, wrapper_pid=999999999)
    os.rename(job.state / job.secret, job.state / "moved")
    (job.state / job.secret).mkdir()
    (job.state / job.secret / "precious").write_text("keep")
    assert reclaim(job) == [job.tag]
    assert (job.state / job.secret / "precious").read_text() == "keep"
    assert (job.state / "moved" / "vmware_password").exists()
    assert "left alone: it is not the one the wrapper made" in caplog.text


def test_finished_state_file_is_not_rewritten(job):
    job.state_file.write_text('{"finished": true, "disks": []}\n')
    before = os.stat(job.state_file)
    dead_lease(job, wrapper_pid=999999999)
    assert reclaim(job) == [job.tag]
    after = os.stat(job.state_file)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert job.state_file.read_text() == '{"finished": true, "disks": []}\n'


def test_foreign_state_file_is_left_alone(job, caplog):
    os.chown(job.state_file, 65534, 65534)
    dead_lease(job, wrapper_pid=999999999)
    assert reclaim(job) == [job.tag]
    assert "finished" not in state(job) and "left alone" in caplog.text


def test_other_boot_means_dead(job):
    me = os.getpid()
    dead_lease(job, wrapper_pid=me, wrapper_start=procinfo.start_time(me), boot_id="another-boot",
               child_pid=None, agent_pid=None)
    assert reclaim(job) == [job.tag]
    assert not (job.state / job.secret).exists() and state(job)["failed"] is True


def test_unusable_leases_are_removed(job, caplog):
    dead_lease(job, wrapper_pid=999999999)
    jobs = job.jobs
    (jobs / "garbage.lease").write_bytes(b"\xff{not json")
    (jobs / "partial.lease").write_text(json.dumps({"tag": "partial", "wrapper_pid": 1}))
    (jobs / "other.lease").write_text(json.dumps(dict(job.record, tag="x", wrapper_pid=1,
                                                      wrapper_start=1, boot_id="b")))
    (jobs / "list.lease").write_text("[]")
    (jobs / "orphan.lock").write_text("")
    (jobs / ".orphan.lease.0123abcd.tmp").write_text("")
    assert reclaim(job) == [job.tag]
    assert os.listdir(jobs) == []
    assert caplog.text.count("is unusable") == 4
    assert not (job.agents / job.agent_dir).exists()        # the good lease was reclaimed


def test_unit_is_stopped_and_reset_through_the_runner(job):
    dead_lease(job, wrapper_pid=999999999, unit="v2v-import-x.service", child_pid=None)
    recording, options = RecordingRunner(), []

    def runner(argv, **kw):
        options.append(kw)
        return recording(argv, **kw)
    assert reclaim(job, runner, systemd=True) == [job.tag]
    assert recording.calls == [["systemctl", "stop", "v2v-import-x.service"],
                               ["systemctl", "reset-failed", "v2v-import-x.service"]]
    assert options == [{"check": False, "timeout": 60}, {"check": False}]


def test_unit_without_systemd_runs_nothing(job):
    dead_lease(job, wrapper_pid=999999999, unit="v2v-import-x.service", child_pid=None)
    runner = RecordingRunner()
    assert reclaim(job, runner, systemd=False) == [job.tag] and runner.calls == []


def test_failing_step_does_not_stop_the_others_and_keeps_the_lease(job, caplog):
    dead_lease(job, wrapper_pid=999999999, unit="v2v-import-x.service")
    bad = RecordingRunner({("systemctl", "stop"): (1, "", "Failed to stop unit\n")})
    assert reclaim(job, bad, systemd=True) == []
    assert "stop_unit failed" in caplog.text
    assert job.leader.wait(timeout=10) == -signal.SIGKILL          # the other steps ran
    assert not (job.state / job.secret).exists() and state(job)["finished"] is True
    assert (job.jobs / (job.tag + ".lease")).exists()              # kept for another try
    assert reclaim(job, RecordingRunner(), systemd=True) == [job.tag]
    assert os.listdir(job.jobs) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="a tree of another owner needs root")
def test_what_the_owner_left_and_cannot_remove_does_not_keep_the_lease(job, caplog):
    """The caller's throttling directory holds what its owner cannot remove
    (here a directory of root's): emptied with the owner's rights, it stays,
    is logged -- and the lease goes, or every later start would retry it
    (and wait on a child the owner may stop) for ever (second review)."""
    top = job.state / job.throttle_dir
    (top / "x").mkdir()
    (top / "x" / "f").write_text("root's")                 # root's directory in the owner's tree
    for p in [top, *[q for q in top.rglob("*") if not str(q).startswith(str(top / "x"))]]:
        os.lchown(p, 65534, 65534)
    dead_lease(job, wrapper_pid=999999999)
    assert reclaim(job) == [job.tag]
    assert "remove_throttle_dir failed" in caplog.text
    # left where the owner put it (its directory moved aside to a hidden name first)
    (left,) = [p for p in job.state.glob(".rm-*/x/f")] or [top / "x" / "f"]
    assert left.read_text() == "root's"
    assert os.listdir(job.jobs) == [] and state(job)["finished"] is True


def test_create_update_release(tmp_path):
    with leases.LeaseBook.open(str(tmp_path / "lock")) as book:
        lease = book.create("t1", {"state_dir": "/x", "wrapper_pid": 5})
        path = tmp_path / "lock" / "jobs" / "t1.lease"
        me = os.getpid()
        assert json.loads(path.read_text()) == {
            "tag": "t1", "state_dir": "/x", "wrapper_pid": 5, "wrapper_start": procinfo.start_time(me),
            "boot_id": procinfo.boot_id()}
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert os.stat(tmp_path / "lock" / "jobs").st_mode & 0o777 == 0o700
        lease.update(wrapper_pid=me, unit="u.service")
        assert book.read("t1")[0]["unit"] == "u.service" and book.read("t1")[0]["wrapper_pid"] == me
        with pytest.raises(FileExistsError):
            book.create("t1", {})                       # held: another open file's flock
        for bad in ("", ".x", "a/b", ".."):
            with pytest.raises(ValueError):
                book.create(bad, {})
        assert sorted(os.listdir(tmp_path / "lock" / "jobs")) == ["t1.lease", "t1.lock"]
        lease.release()
        with pytest.raises(ValueError):
            lease.update(unit=None)
        assert os.listdir(tmp_path / "lock" / "jobs") == [] and book.read("t1") == (None, None)


def test_open_without_create_makes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        leases.LeaseBook.open(str(tmp_path / "lock"), create=False)
    assert not (tmp_path / "lock").exists()


@pytest.mark.parametrize("where", ["lock", "jobs"])
def test_directory_of_another_user_is_refused(tmp_path, where):
    (tmp_path / "lock" / "jobs").mkdir(parents=True, mode=0o700)
    os.chown(tmp_path / where if where == "lock" else tmp_path / "lock" / "jobs", 65534, 65534)
    with pytest.raises(fsafe.Refused, match="must be owned by uid"):
        leases.LeaseBook.open(str(tmp_path / "lock"))


def test_directory_writable_by_others_or_a_symlink_is_refused(tmp_path):
    (tmp_path / "lock").mkdir()
    os.chmod(tmp_path / "lock", 0o777)
    with pytest.raises(fsafe.Refused):
        leases.LeaseBook.open(str(tmp_path / "lock"))
    os.chmod(tmp_path / "lock", 0o700)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    os.symlink(tmp_path / "elsewhere", tmp_path / "lock" / "jobs")
    with pytest.raises(OSError):
        leases.LeaseBook.open(str(tmp_path / "lock"))
    assert os.listdir(tmp_path / "elsewhere") == []
