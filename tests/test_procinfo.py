"""wrapper.procinfo: start times, liveness and process groups, on real processes
(each test ends only the processes it started, by PID)."""
import ctypes
import os
import signal
import subprocess
import time

import pytest

from wrapper import procinfo

PR_SET_CHILD_SUBREAPER = 36


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached within %ss" % timeout)
        time.sleep(0.01)


def reap(pid, timeout=10.0):
    """Wait for a (re)parented child; its wait status, or None if it is not ours."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return status
        if time.monotonic() > deadline:
            pytest.fail("pid %d did not exit within %ss" % (pid, timeout))
        time.sleep(0.01)


@pytest.fixture
def spawn():
    """Popen that kills and reaps what it started, whatever the test did."""
    started = []

    def start(argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, **kw)
        started.append(p)
        return p
    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
        for f in (p.stdout, p.stderr):
            if f:
                f.close()


@pytest.fixture
def subreaper():
    """Make this process a child subreaper meanwhile: an orphaned descendant
    (a group member whose leader died, a daemon whose parent exited) becomes
    ours to reap."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture
def group(spawn, subreaper):
    """Makes plain-child-like process groups: a leader in a new session (our
    child) and a member it started (ours to reap once the leader is gone)."""
    started = []

    def start():
        leader = spawn(["sh", "-c", "sleep 600 & echo $!; exec sleep 600"],
                       start_new_session=True, stdout=subprocess.PIPE)
        member = int(leader.stdout.readline())
        wait_until(lambda: procinfo.start_time(member) is not None and os.getpgid(member) == leader.pid)
        started.append((leader, member, procinfo.start_time(member)))
        return leader, member
    yield start
    for leader, member, start in started:
        procinfo.signal_checked(member, signal.SIGKILL, lambda s: s == start)
        if leader.poll() is None:
            leader.kill()
        leader.wait(timeout=10)
        reap(member)


def test_start_time_and_boot_id():
    me = os.getpid()
    with open("/proc/%d/stat" % me) as f:
        assert procinfo.start_time(me) == int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert procinfo.boot_id() == f.read().strip()


def test_gone_process_and_bad_input(tmp_path, spawn):
    p = spawn(["true"])
    p.wait(timeout=10)
    assert procinfo.start_time(p.pid) is None and not procinfo.alive(p.pid, 1)
    assert procinfo.boot_id(str(tmp_path)) is None
    for bad in (None, True, 0, -1, "1"):
        assert not procinfo.alive(bad, 1)
        assert not procinfo.signal_checked(bad, 0, lambda s: True)
        assert procinfo.process_group_members(bad) == []
    assert not procinfo.alive(os.getpid(), None)


def test_stat_is_parsed_after_the_last_parenthesis(tmp_path):
    """comm is chosen by the process: ``) Z 1 1`` in it must not shift the fields."""
    fields = ["S", "1", "77", "77"] + ["0"] * 15 + ["4242"] + ["0"] * 10
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "stat").write_text("77 (evil) Z 1 1 ) (x) %s\n" % " ".join(fields))
    assert procinfo.start_time(77, str(tmp_path)) == 4242
    assert procinfo.alive(77, 4242, str(tmp_path))
    assert procinfo.process_group_members(77, str(tmp_path)) == [77]
    (tmp_path / "77" / "stat").write_text("77 (evil) S 1 ) (x) Z %s\n" % " ".join(fields[1:]))
    assert not procinfo.alive(77, 4242, str(tmp_path))          # a zombie is not alive
    (tmp_path / "77" / "stat").write_text("77 (cut short) S 1")
    assert procinfo.start_time(77, str(tmp_path)) is None


def test_alive_needs_the_same_start_time(spawn):
    p = spawn(["sleep", "60"])
    start = procinfo.start_time(p.pid)
    assert procinfo.alive(p.pid, start)
    assert not procinfo.alive(p.pid, start - 1)                 # a reused number


def test_zombie_is_not_alive(spawn):
    p = spawn(["true"])
    start = procinfo.start_time(p.pid)

    def zombie():
        with open("/proc/%d/stat" % p.pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    wait_until(zombie)
    assert procinfo.start_time(p.pid) == start                  # still there, but dead
    assert not procinfo.alive(p.pid, start)
    assert not procinfo.running(p.pid)
    assert not procinfo.signal_checked(p.pid, signal.SIGKILL, lambda s: True)


def test_running_needs_no_start_time(spawn, tmp_path):
    p = spawn(["sleep", "60"])
    assert procinfo.running(p.pid) and procinfo.running(1)       # pid 1 is not ours: still running
    for bad in (None, True, 0, -1, "1", 2 ** 40):
        assert not procinfo.running(bad)
    assert not procinfo.running(p.pid, str(tmp_path))           # no such entry under that /proc


def test_signal_checked_spares_another_process(spawn):
    p = spawn(["sleep", "60"])
    start = procinfo.start_time(p.pid)
    assert not procinfo.signal_checked(p.pid, signal.SIGKILL, lambda s: s == start + 1)
    time.sleep(0.1)
    assert p.poll() is None
    assert procinfo.signal_checked(p.pid, signal.SIGKILL, lambda s: s == start)
    assert p.wait(timeout=10) == -signal.SIGKILL


def test_process_group_members(group):
    leader, member = group()
    assert sorted(procinfo.process_group_members(leader.pid)) == sorted([leader.pid, member])
    assert os.getpid() not in procinfo.process_group_members(leader.pid)


def test_kill_group_kills_leader_and_members(group):
    leader, member = group()
    killed = procinfo.kill_group(leader.pid, procinfo.start_time(leader.pid))
    assert sorted(killed) == sorted([leader.pid, member])
    assert leader.wait(timeout=10) == -signal.SIGKILL
    assert os.WTERMSIG(reap(member)) == signal.SIGKILL


def test_kill_group_after_the_leader_died(group):
    leader, member = group()
    start = procinfo.start_time(leader.pid)
    leader.kill()
    leader.wait(timeout=10)
    assert procinfo.kill_group(leader.pid, start) == [member]
    assert os.WTERMSIG(reap(member)) == signal.SIGKILL


def test_kill_group_of_a_reused_number_kills_nothing(group):
    leader, member = group()
    wrong = procinfo.start_time(leader.pid) - 1
    assert procinfo.kill_group(leader.pid, wrong) == []
    time.sleep(0.1)
    assert leader.poll() is None and procinfo.alive(member, procinfo.start_time(member))
