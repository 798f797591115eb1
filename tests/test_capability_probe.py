"""The capability probe (``virt-v2v --machine-readable``) runs as the run-as
user with virt-v2v's environment, never as root unless that user is root
(review F5: with a sudo rule that allows options, ``--virt-v2v PROGRAM``
was run as root even with ``--run-as nobody``).

Fakes: a recording runner sees which user and environment the probe asks
for.  Real (root only): the real CLI and the real runner with a shell-script
virt-v2v that records the uid it runs as."""
import logging
import os
import pathlib
import shutil
import signal
import stat
import tempfile
import time

import pytest

from test_job_life import VIRT_V2V, Launcher, host, read  # noqa: F401 (fixture)
from tests import wrapperrun as wr
from tests.fakes import RecordingRunner
from wrapper import checks, cli, reclaim, runner, users, v2v
from wrapper.settings import Settings

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
NOBODY = users.RunUser(65534, 65534, "nobody", "/nonexistent")
FP = ":".join(["AB"] * 20)


def test_probe_capabilities_asks_the_runner_for_the_user():
    runner = RecordingRunner({("/bin/virt-v2v",): (0, "virt-v2v\n", "")})
    caps = v2v.probe_capabilities("/bin/virt-v2v", runner, env={"PATH": "/bin"}, user=NOBODY)
    assert caps.has("virt-v2v")
    assert runner.users == [(["/bin/virt-v2v", "--machine-readable"], NOBODY, {"PATH": "/bin"})]


def test_the_job_probes_as_the_run_as_user_with_virt_v2vs_environment(host):  # noqa: F811
    host.environ["ROOTS_OWN_SETTING"] = "not for virt-v2v"
    launcher = Launcher(read("run05-vmx-ssh-port-uri.vx.log"), read("run05-vmx-ssh-port-uri.vx.mr.log"))
    code, _out, err = host.main(host.job(daemonize=False), launcher)
    assert code == cli.EXIT_OK, err
    (argv, user, env), = host.runner.users
    assert argv == [VIRT_V2V, "--machine-readable"]
    assert user == users.current()          # tests run without sudo: the wrapper's own user
    assert "ROOTS_OWN_SETTING" not in env and env["HOME"] == user.home and env["LANG"] == "C"


def test_the_throttling_check_probes_as_the_run_as_user():
    runner = RecordingRunner({("/bin/virt-v2v",): (0, "virt-v2v\n", "")})
    settings = Settings(virt_v2v="/bin/virt-v2v", run_as="nobody", environ={"SECRET": "x"})
    line = checks.source_read_report(settings, runner, resolve_user=lambda s, t: NOBODY)
    assert line.startswith("network source read: inbound policing (virt-v2v does not report")
    (_argv, user, env), = runner.users
    assert user == NOBODY and "SECRET" not in env and env["USER"] == "nobody"


# -- real: the real runner, a program that records who it runs as ------------------------
RECORDER = """#!/bin/sh
if [ "$1" = "--machine-readable" ]; then
    id -u >> %(rec)s
    printf 'virt-v2v\\n'
    exit 0
fi
exit 1
"""


@pytest.fixture
def public():
    """A 0755 directory nobody can reach (pytest's tmp is root's 0700), with a
    0777 directory for the record and the output."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="v2vw-probe-", dir="/var/tmp"))
    d.chmod(0o755)
    (d / "w").mkdir()
    (d / "w").chmod(0o777)
    exe = d / "virt-v2v"
    exe.write_text(RECORDER % {"rec": d / "w" / "uids"})
    exe.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    yield d
    shutil.rmtree(d)


def recorded_uids(public):
    return [int(line) for line in (public / "w" / "uids").read_text().split()]


@needs_root
def test_the_probe_of_a_job_runs_as_the_run_as_user(public, tmp_path):
    dirs = wr.WrapperDirs(tmp_path)
    job = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1?no_verify=1",
           "vmware_password": "pw", "vmware_fingerprint": FP, "output_dir": str(public / "w"),
           "daemonize": False}
    r = wr.run(dirs.args(str(public / "virt-v2v")) + ["--run-as", "nobody"], job,
               env=wr.env(VIRT_V2V_WRAPPER_SYSTEMD_MARKER=str(tmp_path / "no-systemd"),
                          VIRT_V2V_WRAPPER_LOCK_DIR=str(tmp_path / "lock")))
    assert "Traceback" not in r.stderr
    assert recorded_uids(public) == [65534], r.stderr


@needs_root
def test_the_throttling_check_probe_runs_as_the_run_as_user(public):
    settings = Settings(virt_v2v=str(public / "virt-v2v"), run_as="nobody", environ={})
    line = checks.source_read_report(settings, runner.run)
    assert line.startswith("network source read: inbound policing (virt-v2v does not report"), line
    assert recorded_uids(public) == [65534]


# -- the start-up window: killed during the probe, reclaimed by the next wrapper --------
HANGER = """#!/bin/sh
if [ "$1" = "--machine-readable" ]; then
    : > %(mark)s
    exec sleep 60
fi
exit 1
"""


@needs_root
def test_a_wrapper_killed_while_probing_is_reclaimed(public, tmp_path):
    """The lease is taken with the job's names, before the probe: the state
    file a SIGKILLed wrapper reserved is finished by the next one's reclaim
    (it used to stay unfinished, with no lease pointing at it)."""
    exe = public / "virt-v2v"
    exe.write_text(HANGER % {"mark": public / "w" / "probing"})
    dirs = wr.WrapperDirs(tmp_path)
    lock = tmp_path / "lock"
    job = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1?no_verify=1",
           "vmware_password": "pw", "vmware_fingerprint": FP, "output_dir": str(public / "w"),
           "daemonize": False}
    env = wr.env(VIRT_V2V_WRAPPER_SYSTEMD_MARKER=str(tmp_path / "no-systemd"),
                 VIRT_V2V_WRAPPER_LOCK_DIR=str(lock))
    p = wr.start(dirs.args(str(exe)) + ["--run-as", "nobody"], job, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (public / "w" / "probing").exists():
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
            time.sleep(0.05)
        states = [n for n in os.listdir(dirs.state) if n.endswith(".state")]
        assert len(states) == 1 and [n for n in os.listdir(lock / "jobs") if n.endswith(".lease")]
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()
        p.stderr.close()
    assert not wr.read_state(os.path.join(dirs.state, states[0])).get("finished")
    reclaim.reclaim_at(Settings(lock_dir=str(lock), environ={}), runner.run, logging.getLogger("t"))
    state = wr.read_state(os.path.join(dirs.state, states[0]))
    assert state["finished"] is True and state["failed"] is True
    assert "died" in state["last_message"]["message"], state
    assert not [n for n in os.listdir(dirs.state) if n.endswith(".throttle.d")]
    assert not os.listdir(lock / "jobs")
