"""The real CLI run as a program, with the fake virt-v2v (tests/fake_virt_v2v.py)."""
import glob
import json
import os
import re
import subprocess
import signal
import time

import pytest

from tests import wrapperrun as wr
from tests.fakes import data, make_fake_v2v
from wrapper import causes

FP = ":".join(["AB"] * 20)


@pytest.fixture
def dirs(tmp_path):
    return wr.WrapperDirs(tmp_path)


def fake(dirs, **scenario):
    scenario.setdefault("record", os.path.join(dirs.root, "record.json"))
    return make_fake_v2v(dirs.bin, **scenario)


def ok_scenario(**kw):
    return dict(log=data("run05-vmx-ssh-port-uri.vx.log"), mr=data("run05-vmx-ssh-port-uri.vx.mr.log"), **kw)


def vddk_job(dirs, **kw):
    job = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1?no_verify=1",
           "vmware_password": "pw", "vmware_fingerprint": FP, "output_dir": dirs.out}
    job.update(kw)
    return job


def announced(stdout):
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    doc = json.loads(lines[0])
    assert sorted(doc) == ["state_file", "throttling_file", "v2v_log", "wrapper_log"]
    assert all(os.path.isabs(v) for v in doc.values())
    return doc


def test_version_and_checks():
    r = wr.run(["--version"], "")
    assert r.returncode == 0 and r.stdout.startswith("virt-v2v-wrapper ")
    r = wr.run(["--checks"], "")
    assert r.returncode == 0 and "rhv-guest-tools" in r.stdout.split()


def test_check_rhv_guest_tools(tmp_path):
    r = wr.run(["--check-rhv-guest-tools", "--iso-domain-root", str(tmp_path)], "")
    assert r.returncode == 1 and "no Windows drivers ISO" in r.stderr
    images = tmp_path / "srv:_iso" / "sd" / "images" / "11111111-1111-1111-1111-111111111111"
    images.mkdir(parents=True)
    (tmp_path / "srv:_iso" / "sd" / "dom_md").mkdir()
    (images / "virtio-win-0.1.240.iso").write_text("x")
    r = wr.run(["--check-rhv-guest-tools"], "", env=wr.env(VIRT_V2V_WRAPPER_ISO_DOMAIN_ROOT=str(tmp_path)))
    assert r.returncode == 0 and "virtio-win-0.1.240.iso" in r.stdout


def test_help_lists_options_and_env():
    r = wr.run(["--help"], "")
    for text in ("--state-dir", "VIRT_V2V_WRAPPER_STATE_DIR", "--log-dir", "--virt-v2v", "--run-as",
                 "--iso-domain-root", "VIRT_V2V_WRAPPER_ISO_DOMAIN_ROOT"):
        assert text in r.stdout


def test_foreground_success(dirs):
    exe = fake(dirs, **ok_scenario(duration=1))
    r = wr.run(dirs.args(exe), vddk_job(dirs, daemonize=False, source_disks=["[datastore1] testvm/testvm.vmdk"],
                                        vm_uuid="abc"))
    assert r.returncode == 0, r.stderr
    doc = announced(r.stdout)
    state = wr.read_state(doc["state_file"])
    assert state["finished"] is True and "failed" not in state
    assert state["return_code"] == 0 and state["started"] is True
    assert state["disks"] == [{"path": "[datastore1] testvm/testvm.vmdk", "progress": 100}]
    assert state["disk_count"] == 1 and state["progress"] == 100
    assert "virt-v2v exited with status 0" in r.stderr      # foreground: log on stderr too
    log = open(doc["wrapper_log"]).read()
    assert "ignoring unknown job keys: vm_uuid" in log
    assert os.stat(doc["state_file"]).st_mode & 0o777 == 0o644
    assert wr.secret_dirs(dirs.state) == []
    rec = json.load(open(os.path.join(dirs.root, "record.json")))
    assert rec["argv"][:5] == ["-v", "-x", "--machine-readable=file:/dev/fd/3", "--root", "first"]
    # written through the inherited descriptor into the file the wrapper created
    mr = open(doc["v2v_log"][:-4] + "-mr.log").read().splitlines()
    assert mr and all(json.loads(line)["type"] for line in mr)


def test_foreground_failure_reports_virt_v2v_error(dirs):
    exe = fake(dirs, log=data("fail02-ssh-missing-vmx.vx.log"), mr=data("fail02-ssh-missing-vmx.vx.mr.log"),
               exit_code=1, duration=0.2)
    r = wr.run(dirs.args(exe), vddk_job(dirs, daemonize=False))
    assert r.returncode == 2
    state = wr.read_state(announced(r.stdout)["state_file"])
    assert state["failed"] is True and state["finished"] is True and state["return_code"] == 1
    # virt-v2v's "see earlier error messages" replaced by the earlier cause from its verbose log
    # and a failure code with its hint (wrapper/causes.py)
    assert state["last_message"] == {"type": "error", "message":
                                     "could not copy the VMX file from the remote server: scp: "
                                     "/vmfs/volumes/datastore1/nosuchvm/nosuchvm.vmx: No such file or directory",
                                     "code": "vmx_missing", "hint": causes.CATALOGUE["vmx_missing"].hint}


def test_daemon_returns_at_once_and_closes_stdout(dirs):
    exe = fake(dirs, **ok_scenario(duration=2, chunks=40, frame_pause=0.3))
    t0 = time.monotonic()
    p = wr.start(dirs.args(exe), vddk_job(dirs))
    out = p.stdout.read()          # EOF only when every holder of the pipe closed it
    err = p.stderr.read()
    rc = p.wait(timeout=10)
    elapsed = time.monotonic() - t0
    assert rc == 0 and err == ""
    doc = announced(out)
    # the caller had its answer while the conversion still ran (how soon: printed, not asserted)
    print("the caller waited %.2f s" % elapsed)
    assert "finished" not in wr.read_state(doc["state_file"])
    seen = []
    state = wr.wait_state(doc["state_file"], lambda s: s.get("finished"), timeout=30, seen=seen)
    assert "failed" not in state and state["disks"][0]["progress"] == 100
    progress = [s["disks"][0]["progress"] for s in seen if s["disks"]]
    assert progress == sorted(progress) and len(set(progress)) > 2
    assert all("finished" not in s for s in seen[:-1])
    assert state["wrapper_pid"] != p.pid
    log = open(doc["wrapper_log"]).read()
    assert "systemd is not running" in log and "plain child process" in log


def test_cancel_by_sigterm_to_state_pid(dirs):
    exe = fake(dirs, **ok_scenario(duration=30, chunks=300))
    p = wr.start(dirs.args(exe), vddk_job(dirs))
    doc = announced(p.stdout.read())
    p.wait(timeout=10)
    state = wr.wait_state(doc["state_file"], lambda s: s.get("stage") == "Inspecting the source")
    v2v_pid = state["pid"]
    os.kill(v2v_pid, signal.SIGTERM)
    state = wr.wait_state(doc["state_file"], lambda s: s.get("finished"), timeout=20)
    assert state["failed"] is True and state["return_code"] == 1
    assert "cancelled" in state["last_message"]["message"] and "SIGTERM" in state["last_message"]["message"]
    assert not wr.pid_alive(v2v_pid)
    assert wr.secret_dirs(dirs.state) == []


def test_sigterm_to_wrapper_stops_virt_v2v(dirs):
    exe = fake(dirs, **ok_scenario(duration=30, chunks=300))
    p = wr.start(dirs.args(exe), vddk_job(dirs, daemonize=False))
    doc = json.loads(p.stdout.readline())
    state = wr.wait_state(doc["state_file"], lambda s: s.get("started"))
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=30)
    assert rc == 2
    state = wr.read_state(doc["state_file"])
    assert state["finished"] and state["failed"]
    assert "SIGTERM" in state["last_message"]["message"]
    assert not wr.pid_alive(state["pid"])
    assert wr.secret_dirs(dirs.state) == []


def test_sigint_to_daemon_stops_virt_v2v(dirs):
    exe = fake(dirs, **ok_scenario(duration=30, chunks=300))
    p = wr.start(dirs.args(exe), vddk_job(dirs))
    doc = announced(p.stdout.read())
    state = wr.wait_state(doc["state_file"], lambda s: s.get("started"))
    os.kill(state["wrapper_pid"], signal.SIGINT)
    state = wr.wait_state(doc["state_file"], lambda s: s.get("finished"), timeout=30)
    assert state["failed"] and "SIGINT" in state["last_message"]["message"]
    assert not wr.pid_alive(state["pid"]) and wr.wait_gone(state["wrapper_pid"])


@pytest.mark.parametrize("job,words", [
    ("{not json", "not valid JSON"),
    ("[1]", "must be a JSON object"),
    (json.dumps({"vm_name": "x", "transport_method": "vddk", "vmware_uri": "esx://h", "vmware_password": "p",
                 "vmware_fingerprint": FP, "output_dir": "/", "daemonize": "no"}), "daemonize: must be true or false"),
])
def test_refused_jobs(dirs, job, words):
    exe = fake(dirs, **ok_scenario())
    r = wr.run(dirs.args(exe), job)
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr
    assert os.listdir(dirs.state) == []
    assert not os.path.exists(os.path.join(dirs.root, "record.json"))   # virt-v2v never ran
    assert [f for f in os.listdir(dirs.logs) if not f.endswith("-wrapper.log")] == []


def test_refused_after_secrets_were_written(dirs):
    """A bad ssh_key fails in ssh-add, after the secret dir and agent exist."""
    exe = fake(dirs, **ok_scenario())
    job = {"vm_name": "ssh://root@127.0.0.1/vmfs/volumes/ds/vm/vm.vmx", "transport_method": "ssh",
           "ssh_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----\n",
           "output_dir": dirs.out}
    r = wr.run(dirs.args(exe), job)
    assert r.returncode == 1 and "ssh_key" in r.stderr and len(r.stderr.splitlines()) == 1
    assert os.listdir(dirs.state) == []
    log = open(glob.glob(os.path.join(dirs.logs, "*-wrapper.log"))[0]).read()
    agent_pid = int(re.search(r"ssh-agent started \(pid (\d+)", log).group(1))
    assert wr.wait_gone(agent_pid)
    assert "ssh-agent stopped" in log


def test_missing_virt_v2v_is_refused(dirs):
    r = wr.run(dirs.args(os.path.join(dirs.bin, "nope")), vddk_job(dirs))
    assert r.returncode == 1 and "capabilities" in r.stderr
    assert os.listdir(dirs.state) == []


def test_option_wins_over_environment(dirs, tmp_path):
    exe = fake(dirs, **ok_scenario(duration=0.1))
    other = tmp_path / "other"
    r = wr.run(dirs.args(exe), vddk_job(dirs, daemonize=False),
               env=wr.env(VIRT_V2V_WRAPPER_STATE_DIR=str(other)))
    assert r.returncode == 0
    assert announced(r.stdout)["state_file"].startswith(dirs.state)
    r = wr.run(["--log-dir", dirs.logs, "--virt-v2v", exe], vddk_job(dirs, daemonize=False),
               env=wr.env(VIRT_V2V_WRAPPER_STATE_DIR=str(other)))
    assert announced(r.stdout)["state_file"].startswith(str(other))


def test_ssh_agent_socket_under_a_very_deep_state_dir(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    dirs = wr.WrapperDirs(deep)
    exe = fake(dirs, **ok_scenario(duration=0.2))
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    job = {"vm_name": "ssh://root@127.0.0.1/vmfs/volumes/ds/vm/vm.vmx", "transport_method": "ssh",
           "ssh_key": key.read_text(), "output_dir": dirs.out, "daemonize": False}
    r = wr.run(dirs.args(exe), job)
    assert r.returncode == 0, r.stderr
    rec = json.load(open(os.path.join(dirs.root, "record.json")))
    sock = rec["env"]["SSH_AUTH_SOCK"]
    assert len(sock) < 108 and not os.path.exists(os.path.dirname(sock))
