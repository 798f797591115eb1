import glob
import json
import os
import pickle
import stat
import subprocess
import threading

import pytest

from tests import wrapperrun as wr
from tests.fakes import data, make_fake_v2v, rhv_upload_path
from tests.ovirt_standin.engine import StandinEngine
from wrapper.security.secrets import Secret, SecretDir

FP = ":".join(["AB"] * 20)


def test_secret_prints_masked():
    s = Secret("hunter2")
    assert str(s) == repr(s) == "%s" % s == "{}".format(s) == f"{s}" == "******"
    assert "hunter2" not in repr({"k": s}) and "hunter2" not in str([s])
    assert s.reveal() == "hunter2" and s == Secret("hunter2") and s != "hunter2"
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(TypeError):
        json.dumps({"s": s})


def test_secret_dir_files(tmp_path):
    with SecretDir(str(tmp_path)) as d:
        path = d.write("pw", Secret("abc"))
        assert open(path).read() == "abc"          # no trailing newline
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(d.path).st_mode) == 0o700
        assert os.path.dirname(path) == d.path and d.path.startswith(str(tmp_path))
        with pytest.raises(FileExistsError):
            d.write("pw", "again")
        with pytest.raises(ValueError):
            d.write("../x", "y")
    assert not os.path.exists(d.path)
    d.remove()          # idempotent


def test_secret_dir_removed_on_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with SecretDir(str(tmp_path)) as d:
            d.write("k", "v")
            raise RuntimeError
    assert os.listdir(tmp_path) == []


class ProcessWatcher:
    """Samples every process's command line and environment during a run."""

    def __init__(self):
        self.seen = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                for what in ("cmdline", "environ"):
                    try:
                        with open("/proc/%s/%s" % (pid, what), "rb") as f:
                            self.seen.append((pid, what, f.read()))
                    except OSError:
                        pass
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def all_files(*roots):
    for root in roots:
        for base, _dirs, files in os.walk(root):
            for name in files:
                yield os.path.join(base, name)


@pytest.mark.parametrize("daemonize", [False, True])
def test_no_secret_leaks_anywhere(tmp_path, daemonize, ovirt_pki):
    """Every secret kind at once; the rhv password also goes to the stand-in
    engine through the pre-flight (its probes run as processes watched too)."""
    if not os.environ.get("CI"):           # CI installs the SDK: a skip there would hide it
        pytest.importorskip("ovirtsdk4")   # (the wrapper's pre-flight needs it)
    dirs = wr.WrapperDirs(tmp_path)
    markers = {"vmware": "VMWAREMARKER-7f3a", "rhv": "RHVMARKER-91cc", "luks": "LUKSMARKER-55e1"}
    engine = StandinEngine(ovirt_pki, password=markers["rhv"]).start()
    try:
        dc = engine.add_data_center("dc1")
        engine.add_cluster("Default", dc)
        engine.add_storage_domain("data", "nfs", data_center=dc)
        _no_secret_leaks(dirs, tmp_path, daemonize, markers, engine)
        assert engine.counts()["POST /ovirt-engine/sso/oauth/token"] == 1
    finally:
        engine.stop()


def _no_secret_leaks(dirs, tmp_path, daemonize, markers, engine):
    record = os.path.join(dirs.root, "record.json")
    exe = make_fake_v2v(dirs.bin, log=data("run05-vmx-ssh-port-uri.vx.log"),
                        mr=data("run05-vmx-ssh-port-uri.vx.mr.log"), duration=1.5, record=record)
    vault = tmp_path / "vault.json"
    vault.write_text(json.dumps({"testvm": [{"device": "/dev/sda1", "key": markers["luks"]}]}))
    os.chmod(vault, 0o600)
    job = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1?no_verify=1",
           "vmware_password": markers["vmware"], "vmware_fingerprint": FP,
           "rhv_url": engine.api_url, "rhv_password": markers["rhv"],
           "rhv_cluster": "Default", "rhv_storage": "data", "insecure_connection": True,
           "allocation": "sparse", "luks_keys_vault": str(vault), "daemonize": daemonize}
    with ProcessWatcher() as watcher:
        p = wr.start(dirs.args(exe), job, env=wr.env(PATH=rhv_upload_path(dirs.bin)))
        out, err = p.stdout.read(), p.stderr.read()
        p.wait(timeout=30)
        doc = json.loads(out)
        state = wr.wait_state(doc["state_file"], lambda s: s.get("finished"), timeout=30)
    assert "failed" not in state, state
    rec = json.load(open(record))
    # the secrets did reach virt-v2v, through files only
    contents = sorted(f["content"] for f in rec["files"].values())
    assert contents == sorted(markers.values())
    assert all(f["mode"] == 0o600 for f in rec["files"].values())
    for marker in markers.values():
        assert marker not in out and marker not in err
        assert marker not in json.dumps(rec["argv"]) and marker not in json.dumps(rec["env"])
        for path in all_files(dirs.state, dirs.logs):
            with open(path, "rb") as f:
                assert marker.encode() not in f.read(), path
        hits = [(pid, what) for pid, what, blob in watcher.seen if marker.encode() in blob]
        # the test process itself holds the job in memory, not in its cmdline/environ
        assert hits == [], hits
    assert len(watcher.seen) > 100
    assert wr.secret_dirs(dirs.state) == []


def test_ssh_key_never_leaks(tmp_path):
    dirs = wr.WrapperDirs(tmp_path)
    key_path = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_path)], check=True)
    key = key_path.read_text()
    marker = key.splitlines()[2]      # a line of the private key body
    record = os.path.join(dirs.root, "record.json")
    exe = make_fake_v2v(dirs.bin, log=data("run05-vmx-ssh-port-uri.vx.log"),
                        mr=data("run05-vmx-ssh-port-uri.vx.mr.log"), duration=0.5, record=record)
    job = {"vm_name": "ssh://root@127.0.0.1/vmfs/volumes/ds/testvm/testvm.vmx", "transport_method": "ssh",
           "ssh_key": key, "output_dir": dirs.out, "daemonize": False}
    with ProcessWatcher() as watcher:
        r = wr.run(dirs.args(exe), job)
    assert r.returncode == 0, r.stderr
    rec = json.load(open(record))
    assert "SSH_AUTH_SOCK" in rec["env"]
    assert marker not in r.stdout + r.stderr + json.dumps(rec)
    for path in all_files(dirs.state, dirs.logs):
        assert marker.encode() not in open(path, "rb").read()
    assert [x for x in watcher.seen if marker.encode() in x[2]] == []
    assert glob.glob(os.path.join(dirs.state, "v2v-wrapper-secrets-*")) == []
