import os
import subprocess
import time

import pytest

from wrapper.errors import ConversionError, ThrottleError
from wrapper.launch import MACHINE_FD, ChildProcess, Gate, Launch, child_launcher, exit_status, gate_script
from wrapper.users import RunUser

ME = RunUser(os.geteuid(), os.getegid(), "me", "/")


def test_gate_wrap_is_exact():
    assert Gate("/s/gate").wrap(["virt-v2v", "x y"]) == [
        "/bin/sh", "-c", 'read _ < "$0" || exit 125; exec "$@"', "/s/gate", "virt-v2v", "x y"]


@pytest.mark.parametrize("kw,script,params", [
    ({"log": "/l/o g"}, 'exec >>"$1" 2>&1 || exit 125; read _ < "$0" || exit 125; shift 1; exec "$@"',
     ["/l/o g"]),
    ({"log": "/l/a", "machine_log": "/l/$m"},
     'exec >>"$1" 2>&1 3>>"$2" || exit 125; read _ < "$0" || exit 125; shift 2; exec "$@"',
     ["/l/a", "/l/$m"]),
    ({"machine_fd": 17}, 'exec 3>>/dev/fd/17 || exit 125; read _ < "$0" || exit 125; exec "$@"', []),
    ({"machine_fd": 3}, 'read _ < "$0" || exit 125; exec "$@"', []),       # already in place
])
def test_gate_script_is_exact(kw, script, params):
    assert gate_script("/s/gate", ["virt-v2v", "-v"], **kw) == [
        "/bin/sh", "-c", script, "/s/gate"] + params + ["virt-v2v", "-v"]


HOSTILE = ["$VIRTIO_WIN", "${HOME}", "$$", "$0", "$1", "$@", "%n", "%%", "a b", "'q'", '"d"',
           "back\\slash\\", "new\nline", "-oo", ";rm -rf /;", "`id`", "$(id)", "", "*"]
DUMP = "import json, os, sys; os.write(3, json.dumps(sys.argv[1:]).encode())"


@pytest.mark.parametrize("kw", [{}, {"log": True}, {"log": True, "machine_log": True}])
def test_gate_script_runs_the_argv_unchanged_and_opens_the_logs(tmp_path, kw):
    """Every byte of every argument reaches the program, with log names as
    hostile as the arguments; the machine log is at descriptor 3."""
    names = {}
    if kw.get("log"):
        names["log"] = str(tmp_path / "out $HOME ${x} 'q\"")
    names["machine_log"] = str(tmp_path / "mr $$ %n \\ \"")
    if not kw.get("machine_log"):
        fd = os.open(names.pop("machine_log"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        names["machine_fd"] = fd
    argv = gate_script(None, ["/usr/bin/python3", "-c", DUMP + "; print('printed')"] + HOSTILE, **names)
    try:
        subprocess.run(argv, check=True, pass_fds=[names["machine_fd"]] if "machine_fd" in names else [],
                       stdout=subprocess.PIPE)
    finally:
        if "machine_fd" in names:
            os.close(names["machine_fd"])
    import json
    assert json.loads(open(str(tmp_path / "mr $$ %n \\ \"")).read()) == HOSTILE
    if kw.get("log"):
        assert open(names["log"]).read() == "printed\n"


def test_gate_script_starts_nothing_when_a_log_cannot_be_opened(tmp_path):
    marker = tmp_path / "ran"
    argv = gate_script(None, ["/bin/sh", "-c", 'echo > "$0"', str(marker)],
                       log=str(tmp_path / "log"), machine_log=str(tmp_path / "no" / "such"))
    assert subprocess.run(argv, stderr=subprocess.DEVNULL).returncode != 0
    assert not marker.exists()


def test_child_process_hands_the_machine_log_over_as_a_descriptor(tmp_path):
    """A plain child inherits the wrapper's descriptor (any number) and finds
    it at MACHINE_FD; virt-v2v reopens it as /dev/fd/3, never by name."""
    path = tmp_path / "mr.log"
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    high = os.dup2(fd, 23, inheritable=False)           # past what dash can redirect
    os.close(fd)
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo)
    child = ChildProcess(["/bin/sh", "-c", 'echo "$0" > /dev/fd/%d; ls /proc/self/fd > /dev/null'
                          % MACHINE_FD, "from the child"], {"PATH": "/usr/bin:/bin"},
                         str(tmp_path / "v.log"), ME, gate=Gate(fifo), machine_fd=high)
    child.start()
    child.release()
    while child.poll() is None:
        time.sleep(0.05)
    os.close(high)
    assert child.poll() == 0, (tmp_path / "v.log").read_text()
    assert path.read_text() == "from the child\n"
    child.close()


def test_gate_holds_the_program_until_opened(tmp_path):
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo, 0o600)
    marker = tmp_path / "ran"
    gate = Gate(fifo)
    p = subprocess.Popen(gate.wrap(["/bin/sh", "-c", 'echo $$ > "$0"', str(marker)]))
    time.sleep(0.3)
    assert not marker.exists() and p.poll() is None
    gate.open(p.poll)
    assert p.wait(timeout=10) == 0
    assert int(marker.read_text()) == p.pid          # exec'ed: same PID as the gate shell
    gate.open(p.poll)                                 # idempotent


def test_gate_gives_up_when_the_program_died(tmp_path):
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConversionError):
        Gate(fifo).open(lambda: 1, timeout=0.2)


def test_child_process_lifecycle(tmp_path):
    log = tmp_path / "v.log"
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo)
    child = ChildProcess(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], {"PATH": "/usr/bin:/bin"},
                         str(log), ME, gate=Gate(fifo))
    child.start()
    child.release()
    while child.poll() is None:
        time.sleep(0.05)
    assert child.poll() == 3
    assert log.read_text() == "out\nerr\n"
    child.close()


def test_child_terminate_and_close_kill_the_group(tmp_path):
    child = ChildProcess(["/bin/sh", "-c", "sleep 60 & sleep 60; wait"], {"PATH": "/usr/bin:/bin"},
                         str(tmp_path / "v.log"), ME)
    child.start()
    time.sleep(0.2)
    child.terminate()
    child.close(grace=5)
    assert child.poll() == 143
    from tests.wrapperrun import wait_gone
    left = subprocess.run(["pgrep", "-g", str(child.pid)], capture_output=True, text=True).stdout.split()
    assert all(wait_gone(int(pid), timeout=5) for pid in left)      # killed (zombies at most)


def test_child_start_failure(tmp_path):
    child = ChildProcess([str(tmp_path / "missing")], {}, str(tmp_path / "v.log"), ME)
    with pytest.raises(ConversionError):
        child.start()


def test_no_cpu_limits_without_systemd(tmp_path):
    with pytest.raises(ThrottleError):
        ChildProcess(["true"], {}, str(tmp_path / "l"), ME).set_cpu_quota("50%")


def test_exit_status():
    assert exit_status(0) == 0 and exit_status(2) == 2 and exit_status(-15) == 143 and exit_status(-9) == 137


def ident(path):
    st = os.stat(str(path))
    return (st.st_dev, st.st_ino)


@pytest.mark.parametrize("swap", [None, "log", "machine_log"])
def test_gate_lets_the_program_run_only_on_the_wrappers_log_files(tmp_path, swap):
    """The shell opens the logs by name (a unit); if someone replaced a name
    after the wrapper created the file, the program never runs."""
    fifo = str(tmp_path / "gate")
    os.mkfifo(fifo)
    logs = {k: tmp_path / k for k in ("log", "machine_log")}
    for p in logs.values():
        p.write_text("")
    expect = {1: ident(logs["log"]), MACHINE_FD: ident(logs["machine_log"])}
    if swap:                                       # the name now leads to another file
        os.rename(str(logs[swap]), str(tmp_path / "moved"))
        logs[swap].write_text("")
    marker = tmp_path / "ran"
    gate = Gate(fifo, expect=expect)
    p = subprocess.Popen(gate.wrap(["/bin/sh", "-c", 'echo > "$0"', str(marker)],
                                   log=str(logs["log"]), machine_log=str(logs["machine_log"])))
    try:
        if swap:
            with pytest.raises(ConversionError, match="descriptor %d of its gate shell"
                               % (1 if swap == "log" else MACHINE_FD)):
                gate.open(p.poll, pid=p.pid)
            assert p.wait(timeout=10) == 125 and not marker.exists()
        else:
            gate.open(p.poll, pid=p.pid)
            assert p.wait(timeout=10) == 0 and marker.exists()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_gate_counts_an_unreadable_descriptor_as_swapped(tmp_path):
    gate = Gate(str(tmp_path / "none"), expect={1: (0, 0)}, proc=str(tmp_path / "noproc"))
    assert gate.swapped(12345) == [1]              # nothing to read counts as wrong
    assert Gate("x").swapped(os.getpid()) == []


def _launch(tmp_path, argv, gate=None):
    log_path = str(tmp_path / "v2v.log")
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return Launch(argv=tuple(argv), env={"PATH": "/usr/bin:/bin", "WHO": "child"}, user=ME, log=fd,
                  log_path=log_path, gate=gate, tag="20270101T000000-7"), log_path


def test_child_launcher_runs_the_record_with_its_env_and_log(tmp_path):
    launch, log_path = _launch(tmp_path, ["/bin/sh", "-c", 'echo "ran as $WHO"; exit 3'])
    try:
        handle = child_launcher(launch).start()
        assert handle.proc.wait(timeout=10) is not None and handle.poll() == 3
    finally:
        os.close(launch.log)
    assert open(log_path).read() == "ran as child\n"


def test_unit_launcher_names_the_unit_after_the_tag_and_logs_through_the_gate(tmp_path):
    from wrapper import systemd
    gate = Gate(str(tmp_path / "gate"))
    launch, log_path = _launch(tmp_path, ["virt-v2v", "-v"], gate=gate)
    os.close(launch.log)
    unit = systemd.unit_launcher(runner=None, cgroup_root=str(tmp_path))(launch)
    assert unit.unit == "v2v-import-20270101T000000-7.service" and unit.gate is gate
    assert unit.run_cmd[unit.run_cmd.index("--") + 1:] == systemd.exec_argv(
        gate.wrap(["virt-v2v", "-v"], log=log_path))
    assert "--setenv=WHO=child" in unit.run_cmd and "--uid=%d" % ME.uid in unit.run_cmd
