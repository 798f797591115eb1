"""tests/inprocess.py, the fuzzer's way of running cli.main() with nothing real started."""
import json
import os

from tests import inprocess
from tests import wrapperrun as wr
from tests.fakes import make_fake_v2v
from wrapper import job as job_module
from wrapper.ovirt import preflight

FP = ":".join(["AB"] * 20)


def vddk_job(out, **kw):
    return dict({"vm_name": "vm1", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1?no_verify=1",
                 "vmware_password": "pw", "vmware_fingerprint": FP, "output_dir": out}, **kw)


def _world(tmp_path):
    dirs = wr.WrapperDirs(tmp_path)
    exe = make_fake_v2v(dirs.bin)
    env = dict(wr.env(HOME=str(tmp_path)), VIRT_V2V_WRAPPER_CGROUP_ROOT=str(tmp_path / "no-cgroup"),
               VIRT_V2V_WRAPPER_SYSTEMD_MARKER=str(tmp_path / "no-systemd"),
               VIRT_V2V_WRAPPER_LOCK_DIR=str(tmp_path / "lock"))
    return dirs, exe, env


def test_a_foreground_job_runs_its_life_and_starts_nothing(tmp_path):
    dirs, exe, env = _world(tmp_path)
    raw = json.dumps(vddk_job(dirs.out, daemonize=False)).encode()
    o = inprocess.run_main(dirs.args(exe), raw, env, exe)
    assert o.returncode == 0 and not o.daemonized and o.escaped is None and o.other_commands == []
    (line,) = o.stdout.splitlines()
    state = wr.read_state(json.loads(line)["state_file"])
    assert state["finished"] is True and state["return_code"] == 0 and "failed" not in state
    assert wr.secret_dirs(dirs.state) == []


def test_a_daemonized_job_runs_here_as_the_daemon(tmp_path):
    dirs, exe, env = _world(tmp_path)
    o = inprocess.run_main(dirs.args(exe), json.dumps(vddk_job(dirs.out)).encode(), env, exe)
    assert o.returncode == 0 and o.daemonized and o.stdout == ""
    (name,) = [n for n in os.listdir(dirs.state) if n.endswith(".state")]
    state = wr.read_state(os.path.join(dirs.state, name))
    assert state["finished"] is True and state["wrapper_pid"] == os.getpid()


def test_a_bad_job_is_refused_in_one_line(tmp_path):
    dirs, exe, env = _world(tmp_path)
    o = inprocess.run_main(dirs.args(exe), b'{"vm_name": 5}', env, exe)
    assert o.returncode == 1 and o.stdout == "" and o.escaped is None
    assert len(o.stderr.splitlines()) == 1 and o.stderr.startswith("virt-v2v-wrapper: error: ")
    assert os.listdir(dirs.state) == []


def test_the_patches_are_undone():
    agent, run_as = job_module.SshAgent, preflight.check.__kwdefaults__["run_as"]
    with inprocess.nothing_real_starts("key"):
        assert job_module.SshAgent is not agent
        assert preflight.check.__kwdefaults__["run_as"] is inprocess.fake_run_as
    assert job_module.SshAgent is agent and preflight.check.__kwdefaults__["run_as"] is run_as


def test_the_probe_stand_in_reads_the_ca_as_the_probe_does(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("CA")
    ok = json.loads(inprocess.fake_run_as(None, preflight.probe_argv(str(ca)), env={}).out)
    missing = json.loads(inprocess.fake_run_as(None, preflight.probe_argv(str(tmp_path / "no")), env={}).out)
    assert ok["ca"] == "ok" and "ca" not in missing and missing["ca_error"] == "No such file or directory"
    assert inprocess.fake_run_as(None, preflight.nbdkit_argv("/p.py"), env={}).rc == 0
