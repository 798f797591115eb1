import os

import pytest

from tests.fakes import Clock, RecordingRunner
from wrapper import systemd
from wrapper.errors import ConversionError, ThrottleError
from wrapper.settings import Settings
from wrapper.users import RunUser

USER = RunUser(36, 36, "vdsm", "/var/lib/vdsm")


def test_available(tmp_path):
    assert systemd.available(Settings(systemd_marker=str(tmp_path)))
    assert not systemd.available(Settings(systemd_marker=str(tmp_path / "nope")))


def test_run_argv_exact():
    assert systemd.run_argv("v2v-import-T-1.service", USER, {"LANG": "C", "A": "b"},
                            ["virt-v2v", "-v"], "T-1") == [
        "systemd-run", "--unit=v2v-import-T-1.service", "--description=virt-v2v conversion T-1",
        "--uid=36", "--gid=36", "--property=RemainAfterExit=yes", "--property=StandardInput=null",
        "--property=StandardOutput=null", "--property=StandardError=null",
        "--property=CPUAccounting=yes", "--property=KillMode=control-group",
        "--property=TimeoutStopSec=30",
        "--setenv=A=b", "--setenv=LANG=C", "--", "virt-v2v", "-v"]


@pytest.mark.parametrize("props,status", [
    ({"ActiveState": "active", "SubState": "running", "ExecMainCode": "0"}, None),
    ({"ActiveState": "activating", "SubState": "start", "ExecMainCode": "0"}, None),
    ({"ActiveState": "active", "SubState": "exited", "ExecMainCode": "1", "ExecMainStatus": "0"}, 0),
    ({"ActiveState": "failed", "SubState": "failed", "ExecMainCode": "1", "ExecMainStatus": "1"}, 1),
    ({"ActiveState": "active", "SubState": "exited", "ExecMainCode": "2", "ExecMainStatus": "15"}, 143),
    ({"ActiveState": "failed", "SubState": "failed", "ExecMainCode": "2", "ExecMainStatus": "9"}, 137),
    ({"ActiveState": "inactive", "SubState": "dead", "ExecMainCode": "0"}, 255),
])
def test_exit_status(props, status):
    assert systemd.exit_status(props) == status


def test_parse_show():
    assert systemd.parse_show("A=1\nControlGroup=/system.slice/x.service\nEmpty=\nnoise\n") == {
        "A": "1", "ControlGroup": "/system.slice/x.service", "Empty": ""}


def fake_cgroup(root, cg, pids):
    d = root / "unified" / cg.lstrip("/")
    d.mkdir(parents=True)
    (d / "cgroup.procs").write_text("".join("%d\n" % p for p in pids))


def test_host_pid_same_namespace(tmp_path):
    me = os.getpid()
    fake_cgroup(tmp_path, "/system.slice/u.service", [me])
    assert systemd.host_pid(str(tmp_path), "/system.slice/u.service", me) == me


def test_host_pid_prefixed_cgroup(tmp_path):
    me = os.getpid()
    fake_cgroup(tmp_path, "/outer/system.slice/u.service", [me])
    assert systemd.cgroup_dirs(str(tmp_path), "/system.slice/u.service") == [
        str(tmp_path / "unified" / "outer" / "system.slice" / "u.service")]
    assert systemd.host_pid(str(tmp_path), "/system.slice/u.service", me) == me
    assert systemd.host_pid(str(tmp_path), "/system.slice/u.service", 999999) is None


class FakeSystemd:
    """Answers systemctl show from a script of states."""

    def __init__(self, root, states):
        self.states = list(states)
        self.runner = RecordingRunner({("systemctl", "show"): self.show})
        self.root = root

    def show(self, argv):
        state = self.states[0] if len(self.states) == 1 else self.states.pop(0)
        return 0, "".join("%s=%s\n" % kv for kv in state.items()), ""


def running(pid):
    return {"ActiveState": "active", "SubState": "running", "MainPID": str(pid), "ExecMainCode": "0",
            "ControlGroup": "/system.slice/u.service"}


def test_unit_lifecycle(tmp_path):
    me = os.getpid()
    fake_cgroup(tmp_path, "/system.slice/u.service", [me])
    fs = FakeSystemd(tmp_path, [running(me), running(me),
                                {"ActiveState": "failed", "SubState": "failed", "ExecMainCode": "1",
                                 "ExecMainStatus": "1", "MainPID": "0"}])
    unit = systemd.SystemdUnit("u.service", ["systemd-run", "x"], fs.runner, str(tmp_path),
                               sleep=lambda s: None)
    unit.start()
    assert unit.pid == me and unit.main_pid == me
    assert unit.poll() is None
    unit.set_cpu_quota("50%")
    unit.set_cpu_quota(None)
    unit.terminate()
    assert unit.poll() == 1
    unit.close()
    calls = [c for c in fs.runner.calls if c[:2] != ["systemctl", "show"]]
    assert calls == [
        ["systemd-run", "x"],
        ["systemctl", "set-property", "--runtime", "u.service", "CPUQuota=50%"],
        ["systemctl", "set-property", "--runtime", "u.service", "CPUQuota="],
        ["systemctl", "kill", "--signal=SIGTERM", "--kill-who=main", "u.service"],
        ["systemctl", "stop", "u.service"],
        ["systemctl", "reset-failed", "u.service"]]


def test_close_kills_a_unit_that_ignores_sigterm(tmp_path):
    me = os.getpid()
    fake_cgroup(tmp_path, "/system.slice/u.service", [me])
    fs = FakeSystemd(tmp_path, [running(me)])
    clock = Clock()
    unit = systemd.SystemdUnit("u.service", ["systemd-run"], fs.runner, str(tmp_path),
                               clock=clock, sleep=clock.sleep)
    unit.start()
    unit.close(grace=5)
    kills = [c for c in fs.runner.calls if c[:2] == ["systemctl", "kill"]]
    assert kills == [["systemctl", "kill", "--signal=SIGTERM", "--kill-who=main", "u.service"],
                     ["systemctl", "kill", "--signal=SIGKILL", "--kill-who=all", "u.service"]]
    assert clock.now >= 5


def test_systemd_run_failure_is_a_conversion_error(tmp_path):
    runner = RecordingRunner({("systemd-run",): (1, "", "Failed to start transient service unit")})
    unit = systemd.SystemdUnit("u.service", ["systemd-run"], runner, str(tmp_path))
    with pytest.raises(ConversionError) as e:
        unit.start()
    assert "Failed to start transient service unit" in str(e.value)
    unit.close()         # nothing started: nothing to stop
    assert runner.calls == [["systemd-run"]]


def test_set_property_failure_is_a_throttle_error(tmp_path):
    runner = RecordingRunner({("systemctl", "set-property"): (1, "", "Unit not loaded")})
    unit = systemd.SystemdUnit("u.service", [], runner, str(tmp_path))
    with pytest.raises(ThrottleError):
        unit.set_cpu_quota("10%")


def test_process_that_exits_at_once(tmp_path):
    fs = FakeSystemd(tmp_path, [{"ActiveState": "failed", "SubState": "failed", "ExecMainCode": "1",
                                 "ExecMainStatus": "203", "MainPID": "0", "ExecMainPID": "4242",
                                 "ControlGroup": ""}])
    unit = systemd.SystemdUnit("u.service", ["systemd-run"], fs.runner, str(tmp_path), sleep=lambda s: None)
    unit.start()
    assert unit.poll() == 203 and unit.pid == 4242


# What systemd 252 does to an ExecStart argument of a transient unit, as
# measured (tests/integration/test_systemd_argv.py checks the real one): an
# argument that is exactly $NAME becomes the variable's words (none when unset),
# ${NAME} anywhere its value, $$ a single $; % specifiers are left alone.
def systemd_expands(args, env):
    import re
    out = []
    for a in args:
        whole = re.fullmatch(r"\$([A-Za-z0-9_]+)", a)          # "$0" too, measured
        if whole:
            out += env.get(whole.group(1), "").split()
            continue
        out.append(re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                          lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), ""), a))
    return out


HOSTILE = [
    ("$VIRTIO_WIN", "$$VIRTIO_WIN"),
    ("${VIRTIO_WIN}", "$${VIRTIO_WIN}"),
    ("$NOSUCHVAR", "$$NOSUCHVAR"),
    ("$$", "$$$$"),
    ("a$$b", "a$$$$b"),
    ("pre${PATH}post", "pre$${PATH}post"),
    ("$", "$$"),
    ("x$", "x$$"),
    ("$0", "$$0"),
    ("\\$HOME", "\\$$HOME"),
    ("%n", "%n"),
    ("%%", "%%"),
    ("%i %u %h", "%i %u %h"),
    ("a b\tc", "a b\tc"),
    ("'single'", "'single'"),
    ('"double"', '"double"'),
    ("back\\slash\\", "back\\slash\\"),
    ("line\nbreak", "line\nbreak"),
    (";&|<>`*?", ";&|<>`*?"),
    ("", ""),
    ("ünïcødé $€", "ünïcødé $$€"),
]


@pytest.mark.parametrize("raw,expanded", [
    ("$VIRTIO_WIN", ["/tmp/a", "b", "-oo", "x"]), ("$NOSUCHVAR", []), ("$0", []),
    ("${PATH}x", ["/binx"]), ("a$$b", ["a$b"]), ("%n", ["%n"])])
def test_the_model_of_systemd_bites(raw, expanded):
    """Without the escaping, the job's bytes are rewritten (what issue 20 found)."""
    env = {"VIRTIO_WIN": "/tmp/a b -oo x", "PATH": "/bin"}
    assert systemd_expands([raw], env) == expanded


@pytest.mark.parametrize("given,escaped", HOSTILE)
def test_exec_arg_table(given, escaped):
    assert systemd.exec_arg(given) == escaped


@pytest.mark.parametrize("given", [g for g, _ in HOSTILE])
def test_exec_arg_survives_the_expansion(given):
    env = {"VIRTIO_WIN": "/tmp/a b -oo x", "PATH": "/bin", "HOME": "/root"}
    assert systemd_expands(systemd.exec_argv(["virt-v2v", given]), env) == ["virt-v2v", given]


def test_run_argv_escapes_every_argument_after_the_separator():
    cmd = systemd.run_argv("u.service", USER, {"VIRTIO_WIN": "/x/$y"},
                           ["/bin/sh", "-c", 'exec "$@"', "$VM", "${A}"], "T")
    assert cmd[cmd.index("--"):] == ["--", "/bin/sh", "-c", 'exec "$$@"', "$$VM", "$${A}"]
    assert "--setenv=VIRTIO_WIN=/x/$y" in cmd       # Environment= is not expanded


def test_release_opens_the_gate_for_the_units_host_pid():
    """The gate checks the main process's descriptors (launch.Gate.swapped):
    it must be given the PID as the host sees it."""
    seen = []

    class FakeGate:
        def open(self, poll, pid=None):
            seen.append(pid)

    unit = systemd.SystemdUnit("u.service", ["systemd-run"], None, "/nonexistent", gate=FakeGate())
    unit.pid = 4242
    unit.release()
    assert seen == [4242]


def test_unit_launcher_has_the_gate_shell_open_both_logs():
    from wrapper.launch import Gate, Launch
    launch = Launch(argv=("virt-v2v", "$VM"), env={}, user=USER, log=-1, log_path="/l/v.log",
                    gate=Gate("/s/gate"), tag="T", machine_log=-1, machine_log_path="/l/mr $x.log")
    cmd = systemd.unit_launcher(runner=None, cgroup_root="/nonexistent")(launch).run_cmd
    tail = cmd[cmd.index("--") + 1:]
    assert tail[:2] == ["/bin/sh", "-c"] and '3>>"$$2"' in tail[2]
    assert tail[3:] == ["/s/gate", "/l/v.log", "/l/mr $$x.log", "virt-v2v", "$$VM"]
