import os
import subprocess
import time

import pytest

from wrapper.errors import ConversionError, ThrottleError
from wrapper.launch import ChildProcess, Gate, Launch, child_launcher, exit_status
from wrapper.users import RunUser

ME = RunUser(os.geteuid(), os.getegid(), "me", "/")


def test_gate_wrap_is_exact():
    assert Gate("/s/gate").wrap(["virt-v2v", "x y"]) == [
        "/bin/sh", "-c", 'read _ < "$0" && exec "$@"', "/s/gate", "virt-v2v", "x y"]


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
    assert unit.run_cmd[unit.run_cmd.index("--") + 1:] == gate.wrap(["virt-v2v", "-v"], log=log_path)
    assert "--setenv=WHO=child" in unit.run_cmd and "--uid=%d" % ME.uid in unit.run_cmd
