"""Every byte of every job value reaches virt-v2v as the job gave it (issue 20,
class 2): through a real systemd 252 unit (daemon mode) and through the gate
shell of a plain child.  A fake virt-v2v records the argv it received; the
record is compared byte for byte with the job's values and with the command
line the wrapper log shows.

systemd rewrites ``$NAME``, ``${NAME}`` and ``$$`` in ExecStart; ``%``
specifiers and backslashes are measured too.  The job schema allows no
control character (newline included) in a value that reaches argv: those are
refused before anything starts (tests/test_jobinput.py)."""
import json
import os
import re
import shlex
import shutil
import tempfile

import pytest

from tests import wrapperrun as wr
from tests.fakes import data, make_fake_v2v

pytestmark = pytest.mark.integration
FP = ":".join(["AB"] * 20)
SYSTEM_PYTHON = "/usr/bin/python3"     # reachable by the run-as user
HOSTILE = "$HOME ${PATH} $$ $0 %n %% %i \\ \\$x 'q' \"d\" ;`id`"
VM_NAMES = ["$VIRTIO_WIN", "$NOSUCHVAR", "${VIRTIO_WIN}x", "vm " + HOSTILE]


@pytest.fixture
def dirs():
    root = tempfile.mkdtemp(prefix="v2vw-argv-", dir="/var/tmp")
    os.chmod(root, 0o755)
    d = wr.WrapperDirs(root)
    for sub in (d.bin, d.logs, d.state):
        os.chmod(sub, 0o755)
    d.target = os.path.join(root, "out " + HOSTILE)
    os.mkdir(d.target)
    os.chmod(d.target, 0o777)
    # a file anyone could have made, with spaces and an option in its name
    d.virtio = os.path.join(root, "virtio -oo x $y ${PATH} %n %%.iso")
    open(d.virtio, "w").close()
    yield d
    shutil.rmtree(root, ignore_errors=True)


def hostile_job(dirs, vm_name, target_key, daemonize):
    return {"vm_name": vm_name, "transport_method": "vddk",
            "vmware_uri": "esx://root@127.0.0.1/dc $HOME/${PATH}/%n%%/\\'\"?no_verify=1&x=$$",
            "vmware_password": "pw $HOME", "vmware_fingerprint": FP,
            target_key: dirs.target, "virtio_win": dirs.virtio, "install_drivers": True,
            "network_mappings": [
                {"source": "$NET", "destination": "br ${PATH} %n"},
                {"source": "'src' \"x\" \\ $$", "destination": "$0"},
                {"source": "m", "destination": "%% $HOME", "mac_address": "00:11:22:33:44:55"}],
            "daemonize": daemonize}


def expected_values(job):
    """The argv elements that must be exactly there (order as virt-v2v wants it)."""
    vals = [["-ic", job["vmware_uri"]]]
    vals.append(["-os", job.get("output_dir") or job.get("export_domain")])
    for m in job["network_mappings"]:
        if m.get("mac_address"):
            vals.append(["--mac", "%s:bridge:%s" % (m["mac_address"], m["destination"])])
        else:
            vals.append(["--bridge", "%s:%s" % (m["source"], m["destination"])])
            vals.append(["--network", "%s:%s" % (m["source"], m["destination"])])
    return vals


def contains(argv, pair):
    return any(argv[i:i + len(pair)] == pair for i in range(len(argv)))


def logged_command(wrapper_log):
    line = next(x for x in open(wrapper_log).read().splitlines() if "virt-v2v command: " in x)
    return shlex.split(line.split("virt-v2v command: ", 1)[1])


def run_job(dirs, job, manager=None):
    record = os.path.join(dirs.target, "record.json")      # writable by the run-as user
    exe = make_fake_v2v(dirs.bin, python=SYSTEM_PYTHON, log=data("run05-vmx-ssh-port-uri.vx.log"),
                        mr=data("run05-vmx-ssh-port-uri.vx.mr.log"), duration=0.5, record=record)
    env = {"VIRT_V2V_WRAPPER_LOCK_DIR": os.path.join(dirs.root, "lock")}
    if manager:
        env.update(PATH=manager.bin + os.pathsep + os.environ["PATH"],
                   VIRT_V2V_WRAPPER_SYSTEMD_MARKER=manager.rundir)
    else:
        env["VIRT_V2V_WRAPPER_SYSTEMD_MARKER"] = os.path.join(dirs.root, "no-systemd")
    r = wr.run(dirs.args(exe) + ["--run-as", "nobody"], job, env=wr.env(**env), timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.splitlines()[0])
    state = wr.wait_state(doc["state_file"], lambda s: s.get("finished"), timeout=60)
    assert not state.get("failed"), state
    rec = json.load(open(record))
    return doc, state, rec


def check_argv(doc, job, rec):
    argv = rec["argv"]
    assert argv[-1] == job["vm_name"]                            # the guest name, unchanged
    for pair in expected_values(job):
        assert contains(argv, pair), (pair, argv)
    assert "--machine-readable=file:/dev/fd/3" in argv
    assert rec["env"]["VIRTIO_WIN"] == job["virtio_win"]       # Environment= is not expanded
    assert rec["uid"] == 65534
    # the wrapper log shows exactly what virt-v2v received (after the program itself)
    assert logged_command(doc["wrapper_log"])[1:] == argv
    # written through descriptor 3 into the file the wrapper created, not by name
    mr = doc["v2v_log"][:-4] + "-mr.log"
    assert os.path.getsize(mr) > 0
    assert all(json.loads(line) for line in open(mr).read().splitlines())


@pytest.mark.parametrize("vm_name", VM_NAMES)
def test_daemon_unit_passes_hostile_bytes_unchanged(dirs, test_systemd, vm_name):
    job = hostile_job(dirs, vm_name, "output_dir", daemonize=True)
    doc, state, rec = run_job(dirs, job, manager=test_systemd)
    check_argv(doc, job, rec)
    assert re.match(r"v2v-import-.*\.service", "v2v-import-%s.service" % state["tag"])
    log = open(doc["wrapper_log"]).read()
    assert "virt-v2v started in systemd unit" in log            # the unit path, not the fallback


def test_daemon_unit_export_domain_directory(dirs, test_systemd):
    job = hostile_job(dirs, VM_NAMES[0], "export_domain", daemonize=True)
    doc, _state, rec = run_job(dirs, job, manager=test_systemd)
    check_argv(doc, job, rec)
    assert contains(rec["argv"], ["-o", "rhv"])


@pytest.mark.parametrize("vm_name", VM_NAMES[:1] + VM_NAMES[-1:])
def test_plain_child_passes_hostile_bytes_unchanged(dirs, vm_name):
    job = hostile_job(dirs, vm_name, "output_dir", daemonize=False)
    doc, _state, rec = run_job(dirs, job)
    check_argv(doc, job, rec)
    assert "virt-v2v started as a child process" in open(doc["wrapper_log"]).read()
