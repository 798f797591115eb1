"""``virt-v2v-wrapper inspect`` with the real virt-v2v-inspector 2.2 (docs/contract.md §10).

The source is the session's fake ESXi host (sshd on 127.0.0.1, fake_esxi.py), reached
with the ssh transport through the wrapper's own ssh-agent, as a conversion reaches it:

* a guest that converts (``testvm2``: OS + data disk): exit 0, the document validates, the
  guest is the Debian 12 test guest, each disk matches its ``source_disks`` entry, the sizes
  are those of the images and the estimates below them;
* a disk that is missing (``brokenvm``: its -flat.vmdk is not there): exit 1,
  ``flat_disk_missing``;
* a target without room: ``output_dir`` on a 1 MiB tmpfs mounted in a private mount
  namespace the wrapper runs in (gone with it): exit 1, ``target_full``;
* SIGTERM during the inspection and ``--timeout``: exit 2, the inspector's processes (found
  by a marker variable every process it starts inherits) and the secret, agent and work
  directories gone.

Each inspection of the test guest takes 1-3 min under TCG (the inspector boots the
libguestfs appliance and converts the guest in an overlay); the missing disk fails in
seconds.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import jsonschema
import pytest

import wrapper
from tests import wrapperrun as wr

pytestmark = pytest.mark.integration

TIMEOUT = 1200
MARKER_VAR = "LIBGUESTFS_V2VW_TEST_RUN"      # passed on to the inspector (LIBGUESTFS_*)
SCHEMA_PATH = os.path.join(os.path.dirname(wrapper.__file__), "schemas", "inspection.schema.json")
with open(SCHEMA_PATH) as _f:
    SCHEMA = jsonschema.Draft202012Validator(json.load(_f))


@pytest.fixture
def box():
    root = tempfile.mkdtemp(prefix="v2vw-in-", dir="/var/tmp")
    os.chmod(root, 0o755)
    for d in ("state", "logs", "out"):
        os.makedirs(os.path.join(root, d))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def job_for(fake_esxi, vm, out):
    return {"vm_name": fake_esxi.vm_uri(vm), "transport_method": "ssh",
            "ssh_key": fake_esxi.client_private_key_text, "output_dir": out,
            "source_disks": [fake_esxi.vddk_style_path(vm, d) for d in fake_esxi.disk_files(vm)]}


def command(root, *extra, namespace_tmpfs=None):
    argv = wr.wrapper_cmd("inspect", "--state-dir", os.path.join(root, "state"),
                          "--log-dir", os.path.join(root, "logs"), *extra)
    if namespace_tmpfs:
        # a private mount namespace: the tiny tmpfs exists for the wrapper and its children only
        argv = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                'mount -t tmpfs -o size=1m,mode=0755 v2vw-tiny "$0" && exec "$@"',
                namespace_tmpfs] + argv
    return argv


def run_env(v2v_env, marker):
    return wr.env(LIBGUESTFS_BACKEND=v2v_env["LIBGUESTFS_BACKEND"],
                  LIBGUESTFS_BACKEND_SETTINGS=v2v_env["LIBGUESTFS_BACKEND_SETTINGS"],
                  **{MARKER_VAR: marker})


def inspect(root, job, v2v_env, *extra, namespace_tmpfs=None):
    marker = uuid.uuid4().hex
    t0 = time.monotonic()
    p = subprocess.run(command(root, *extra, namespace_tmpfs=namespace_tmpfs),
                       input=json.dumps(job), capture_output=True, text=True, timeout=TIMEOUT,
                       cwd=wr.ROOT, env=run_env(v2v_env, marker))
    print("inspect %s: exit %d in %.1f s" % (job["vm_name"].rsplit("/", 1)[-1], p.returncode,
                                              time.monotonic() - t0))
    assert p.stdout.count("\n") == 1, p.stderr[-3000:]
    doc = json.loads(p.stdout)
    assert sorted(e.message for e in SCHEMA.iter_errors(doc)) == []
    assert wait_no_processes(marker), "the inspector left processes behind"
    assert leftovers(root) == []
    return p, doc


def marked_pids(marker):
    needle = ("%s=%s" % (MARKER_VAR, marker)).encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def wait_no_processes(marker, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not marked_pids(marker):
            return True
        time.sleep(0.2)
    return False


def leftovers(root):
    state = os.path.join(root, "state")
    return sorted(n for n in os.listdir(state)) + sorted(os.listdir(os.path.join(root, "logs")))


GUEST_SIZES = {"testvm2.vmdk": 512 << 20, "testvm2_1.vmdk": 64 << 20}


def test_a_guest_that_converts(fake_esxi, v2v_env, box):
    p, doc = inspect(box, job_for(fake_esxi, "testvm2", os.path.join(box, "out")), v2v_env)
    assert p.returncode == 0, doc["problems"]
    assert doc["would_run"] and doc["problems"] == [] and all(c["passed"] for c in doc["preflight"])
    g = doc["guest"]
    assert (g["os"], g["distro"], g["osinfo"], g["arch"], g["firmware"]) == (
        "linux", "debian", "debian12", "x86_64", "bios")
    assert g["version"].startswith("12.")
    assert doc["inspector"]["version"].startswith("2.")
    disks = doc["disks"]
    assert [d["source_disk"] for d in disks] == job_for(fake_esxi, "testvm2", "")["source_disks"]
    for d in disks:
        assert d["virtual_size"] == GUEST_SIZES[d["source_disk"].rsplit("/", 1)[-1]]
        assert 0 < d["estimated_size"] <= d["virtual_size"] and d["needed"] == d["estimated_size"]
    t = doc["target"]
    assert t["kind"] == "local" and t["measured_by"] == "statvfs" and t["enough"] is True
    assert t["needed"] == sum(d["needed"] for d in disks) and t["free"] > t["needed"]
    assert os.listdir(os.path.join(box, "out")) == []          # nothing written to the target


def test_a_missing_disk_would_be_refused(fake_esxi, v2v_env, box):
    p, doc = inspect(box, job_for(fake_esxi, "brokenvm", os.path.join(box, "out")), v2v_env)
    assert p.returncode == 1
    assert [pr["code"] for pr in doc["problems"]] == ["flat_disk_missing"]
    assert doc["preflight"][-1]["check"] == "inspection" and not doc["preflight"][-1]["passed"]
    assert "flat_disk_missing" in p.stderr


def test_a_target_without_room_would_be_refused(fake_esxi, v2v_env, box):
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed for a private tmpfs")
    tiny = os.path.join(box, "out")
    p, doc = inspect(box, job_for(fake_esxi, "testvm", tiny), v2v_env, namespace_tmpfs=tiny)
    assert p.returncode == 1, p.stderr[-2000:]
    assert [pr["code"] for pr in doc["problems"]] == ["target_full"]
    t = doc["target"]
    assert t["enough"] is False and t["free"] <= 1 << 20 < t["needed"]
    assert doc["guest"]["distro"] == "debian"                    # the inspection itself ran
    assert not os.path.ismount(tiny)                             # only the namespace saw it


def _start(root, job, v2v_env, *extra):
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(command(root, *extra), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=wr.ROOT,
                            env=run_env(v2v_env, marker))
    proc.stdin.write(json.dumps(job))
    proc.stdin.close()
    return proc, marker


def _wait_for_the_appliance(marker, timeout=120):
    """Until the inspector runs qemu (the libguestfs appliance): deep in its work."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in marked_pids(marker):
            try:
                with open("/proc/%d/comm" % pid) as f:
                    if f.read().startswith("qemu"):
                        return
            except OSError:
                continue
        time.sleep(0.2)
    raise AssertionError("the inspector never started the appliance")


def test_sigterm_cancels_the_inspection(fake_esxi, v2v_env, box):
    proc, marker = _start(box, job_for(fake_esxi, "testvm", os.path.join(box, "out")), v2v_env)
    _wait_for_the_appliance(marker)
    assert any(n.startswith("v2v-wrapper-secrets-") for n in os.listdir(os.path.join(box, "state")))
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    doc = json.loads(proc.stdout.read())
    assert proc.returncode == 2 and [pr["code"] for pr in doc["problems"]] == ["cancelled"]
    assert wait_no_processes(marker) and leftovers(box) == []


def test_timeout_stops_the_inspection(fake_esxi, v2v_env, box):
    proc, marker = _start(box, job_for(fake_esxi, "testvm", os.path.join(box, "out")), v2v_env,
                          "--timeout", "8")
    proc.wait(120)
    doc = json.loads(proc.stdout.read())
    assert proc.returncode == 2 and doc["inspector"]["timed_out"] is True
    assert wait_no_processes(marker) and leftovers(box) == []
