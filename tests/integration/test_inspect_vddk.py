"""``virt-v2v-wrapper inspect`` of a VDDK source: the real virt-v2v-inspector 2.2 through
libvirt's ESX driver and the real nbdkit vddk plugin, against the VDDK test world's
stand-ins (tests/integration/vddk/, fx_vddk.py), as the run-as user ``v2vw-vddk``:

* a two-disk VM that converts, with ``--vddk-libdir`` naming the stand-in's library
  directory (the inspector gets the conversion's VDDK settings: nothing is at the default
  /opt/vmware-vix-disklib-distrib) and the VDDK pre-flight on: exit 0, the pre-flight
  passed, both disks matched to ``source_disks``, sizes sane;
* a wrong fingerprint: the VDDK pre-flight (the conversion's) refuses it before the
  inspector starts, exit 1, ``thumbprint_mismatch``;
* with the pre-flight off, the inspector's own failures are read: a VM that does not
  exist, exit 1, ``vm_not_found``; a wrong password, exit 1, ``source_login_refused``;
  the password is nowhere in the output.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import jsonschema
import pytest

import wrapper
from tests import wrapperrun as wr
from tests.integration.fx_vddk import vddk_path
from tests.integration.test_inspect_real import marked_pids
from tests.integration.vddk import world as W
from tests.integration.vddkrun import vddk_job

pytestmark = pytest.mark.integration

MARKER_VAR = "LIBGUESTFS_V2VW_TEST_RUN"
SCHEMA_PATH = os.path.join(os.path.dirname(wrapper.__file__), "schemas", "inspection.schema.json")
with open(SCHEMA_PATH) as _f:
    SCHEMA = jsonschema.Draft202012Validator(json.load(_f))


@pytest.fixture
def root(vddk_run_as):
    path = tempfile.mkdtemp(prefix="v2vw-iv-", dir="/var/tmp")
    os.chmod(path, 0o755)
    for d in ("state", "logs", "out"):
        os.makedirs(os.path.join(path, d))
    os.chown(os.path.join(path, "out"), vddk_run_as.uid, vddk_run_as.gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def inspect(sim, job, run_as, root, preflight="off"):
    marker = uuid.uuid4().hex
    argv = wr.wrapper_cmd("inspect", "--state-dir", os.path.join(root, "state"),
                          "--log-dir", os.path.join(root, "logs"), "--run-as", run_as.name,
                          "--vddk-libdir", sim.libdir)
    env = wr.env(PATH=vddk_path(sim.world), LANG="C", VIRT_V2V_WRAPPER_VDDK_PREFLIGHT=preflight,
                 LIBGUESTFS_BACKEND=os.environ.get("LIBGUESTFS_BACKEND", "direct"),
                 LIBGUESTFS_BACKEND_SETTINGS=os.environ.get("LIBGUESTFS_BACKEND_SETTINGS",
                                                            "force_tcg"),
                 **{MARKER_VAR: marker})
    t0 = time.monotonic()
    p = subprocess.run(argv, input=json.dumps(job), capture_output=True, text=True, timeout=1500,
                       cwd=wr.ROOT, env=env)
    print("inspect %s (vddk, pre-flight %s): exit %d in %.1f s" % (
        job["vm_name"], preflight, p.returncode, time.monotonic() - t0))
    doc = json.loads(p.stdout)
    assert sorted(e.message for e in SCHEMA.iter_errors(doc)) == []
    assert sim.password not in p.stdout + p.stderr
    deadline = time.monotonic() + 30
    while marked_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marked_pids(marker) == []
    assert os.listdir(os.path.join(root, "state")) == []
    return p, doc


def test_vddk_vm_that_converts(vddk_plugin, vddk_standin, vddk_run_as, guest_images, root):
    sim = vddk_standin()
    disks = [W.datastore_path("testvm2", i) for i in (0, 1)]
    assert not os.path.exists("/opt/vmware-vix-disklib-distrib")   # only --vddk-libdir serves
    p, doc = inspect(sim, vddk_job(sim, "testvm2", output_dir=os.path.join(root, "out"),
                                   source_disks=disks), vddk_run_as, root, preflight="on")
    assert p.returncode == 0, doc["problems"]
    pre = [c for c in doc["preflight"] if c["check"] == "VDDK pre-flight"]
    assert len(pre) == 1 and pre[0]["passed"]
    assert sim.thumbprint.lower() in pre[0]["message"].lower()
    assert doc["guest"]["distro"] == "debian" and doc["job"]["transport"] == "vddk"
    assert [d["source_disk"] for d in doc["disks"]] == disks
    assert [d["virtual_size"] for d in doc["disks"]] == [512 << 20, 64 << 20]
    assert all(0 < d["estimated_size"] <= d["virtual_size"] for d in doc["disks"])
    assert doc["target"]["enough"] is True


def test_vddk_vm_not_found(vddk_plugin, vddk_standin, vddk_run_as, root):
    sim = vddk_standin()
    p, doc = inspect(sim, vddk_job(sim, "nosuchvm", output_dir=os.path.join(root, "out")),
                     vddk_run_as, root)
    assert p.returncode == 1, doc
    assert [pr["code"] for pr in doc["problems"]] == ["vm_not_found"]


def test_vddk_wrong_password(vddk_plugin, vddk_standin, vddk_run_as, root):
    sim = vddk_standin()
    job = vddk_job(sim, "testvm", output_dir=os.path.join(root, "out"),
                   vmware_password="not-" + sim.password)
    p, doc = inspect(sim, job, vddk_run_as, root)
    assert p.returncode == 1, doc
    assert [pr["code"] for pr in doc["problems"]] == ["source_login_refused"]
    assert job["vmware_password"] not in p.stdout + p.stderr


def test_vddk_wrong_fingerprint_refused_by_the_preflight(vddk_plugin, vddk_standin, vddk_run_as,
                                                         root):
    sim = vddk_standin()
    wrong = ":".join(["5A"] * 20)
    assert wrong.lower() != sim.thumbprint.lower()
    p, doc = inspect(sim, vddk_job(sim, "testvm", output_dir=os.path.join(root, "out"),
                                   vmware_fingerprint=wrong), vddk_run_as, root, preflight="on")
    assert p.returncode == 1, doc
    assert [pr["code"] for pr in doc["problems"]] == ["thumbprint_mismatch"]
    assert doc["preflight"][-1]["check"] == "VDDK pre-flight"
    assert doc["preflight"][-1]["passed"] is False
    assert doc["inspector"] is None                         # it never started
