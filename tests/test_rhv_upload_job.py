"""The oVirt API upload target end to end through the CLI: the real oVirt SDK
talks to the stand-in engine (tests/ovirt_standin), virt-v2v is the fake.

The pre-flight runs ``python3`` and ``nbdkit python`` from virt-v2v's PATH:
here the test's python (which has the SDK) and a stand-in nbdkit that
answers ``--dump-plugin`` like the real plugin (the real one is checked in
tests/test_preflight.py and tests/integration/test_rhv_upload_real.py).
"""
import json
import os
import time

import pytest

from tests import wrapperrun as wr
from tests.fakes import make_fake_v2v, rhv_upload_path

pytest.importorskip("ovirtsdk4") if not os.environ.get("CI") else None

FP = ":".join(["AB"] * 20)
VM_UUID = "3e9d0c1a-5b6f-4a7e-8c9d-0a1b2c3d4e5f"


def upload_log(tmp_path, disk_ids, fail=True):
    lines = ["[   0.5] Setting up the destination: -o rhv-upload -oc https://engine/ovirt-engine/api -os data"]
    for d in disk_ids:
        lines += ["disk.id = '%s'" % d, "transfer.id = '%s'" % ("f" * 8 + d[8:])]
    lines += ["[   1.0] Copying disk 1/%d" % len(disk_ids), "\u259d  12% [*****----]"]
    if fail:
        lines += ["virt-v2v: error: nbdcopy command failed, see earlier error messages"]
    else:
        lines += ["OVF:", "<VirtualSystem ovf:id='%s'>" % VM_UUID, "[   2.0] Finishing off"]
    log = tmp_path / "upload.log"
    log.write_text("\n".join(lines) + "\n")
    mr = [{"message": "Setting up the destination: -o rhv-upload", "timestamp": "t", "type": "message"},
          {"message": "Copying disk 1/%d" % len(disk_ids), "timestamp": "t", "type": "message"}]
    if fail:
        mr.append({"message": "nbdcopy command failed, see earlier error messages", "timestamp": "t",
                   "type": "error"})
    else:
        mr.append({"message": "Finishing off", "timestamp": "t", "type": "message"})
    mrf = tmp_path / "upload.mr.log"
    mrf.write_text("".join(json.dumps(m) + "\n" for m in mr))
    return str(log), str(mrf)


def job(engine, pki, dirs, **kw):
    j = {"vm_name": "vm1", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1?no_verify=1",
         "vmware_password": "vmware-pw", "vmware_fingerprint": FP, "rhv_url": engine.api_url,
         "rhv_password": engine.password, "rhv_cluster": "Default", "rhv_storage": "data",
         "rhv_cafile": pki.ca, "daemonize": False}
    j.update(kw)
    return j


@pytest.fixture
def dirs(tmp_path):
    return wr.WrapperDirs(tmp_path)


def run(dirs, exe, j, path=None):
    return wr.run(dirs.args(exe), j, env=wr.env(VIRT_V2V_WRAPPER_OVIRT_CLEANUP_TIMEOUT="5",
                                                PATH=path or rhv_upload_path(dirs.bin)))


def add_target(engine, storage_type="nfs", name="data"):
    dc = engine.add_data_center("dc1")
    engine.add_cluster("Default", dc)
    return engine.add_storage_domain(name, storage_type, data_center=dc)


def assert_refused(r, tmp_path, dirs, *words):
    """Exit 1, one line naming ``words``, nothing started, nothing left."""
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    for w in words:
        assert w in r.stderr, r.stderr
    assert not (tmp_path / "rec.json").exists() and os.listdir(dirs.state) == []


@pytest.mark.parametrize("storage_type,allocation", [("iscsi", "preallocated"), ("fcp", "preallocated"),
                                                     ("nfs", "sparse"), ("glusterfs", "preallocated")])
def test_allocation_from_storage_domain(tmp_path, dirs, ovirt_engine, ovirt_pki, storage_type, allocation):
    add_target(ovirt_engine, storage_type)
    log, mr = upload_log(tmp_path, [], fail=False)
    exe = make_fake_v2v(dirs.bin, log=log, mr=mr, duration=0.1, record=str(tmp_path / "rec.json"))
    r = run(dirs, exe, job(ovirt_engine, ovirt_pki, dirs))
    assert r.returncode == 0, r.stderr
    argv = json.load(open(tmp_path / "rec.json"))["argv"]
    assert argv[argv.index("-oa") + 1] == allocation
    assert "rhv-verifypeer=true" in argv
    # the job's CA reaches virt-v2v as a private copy, never as the caller's path
    ca_arg = [a for a in argv if a.startswith("rhv-cafile=")]
    assert len(ca_arg) == 1 and ca_arg[0] != "rhv-cafile=%s" % ovirt_pki.ca
    copy = ca_arg[0].split("=", 1)[1]
    assert "/v2v-wrapper-secrets-" in copy
    with open(ovirt_pki.ca) as f:
        assert json.load(open(tmp_path / "rec.json"))["files"][copy]["content"] == f.read()
    assert not os.path.exists(copy)                      # gone with the secret directory
    state = wr.read_state(json.loads(r.stdout)["state_file"])
    assert state["vm_id"] == VM_UUID and "failed" not in state


@pytest.mark.parametrize("allocation", [None, "sparse"])
def test_unknown_storage_domain_refused(dirs, ovirt_engine, ovirt_pki, tmp_path, allocation):
    add_target(ovirt_engine, name="other")
    exe = make_fake_v2v(dirs.bin, record=str(tmp_path / "rec.json"))
    extra = {"allocation": allocation} if allocation else {}
    r = run(dirs, exe, job(ovirt_engine, ovirt_pki, dirs, **extra))
    assert_refused(r, tmp_path, dirs, "rhv_storage: no storage domain named 'data'")


@pytest.mark.parametrize("allocation", [None, "preallocated"])
def test_existing_vm_name_refused_in_seconds(dirs, ovirt_engine, ovirt_pki, tmp_path, allocation):
    add_target(ovirt_engine)
    vm = ovirt_engine.add_vm("vm1", cluster="Default")
    exe = make_fake_v2v(dirs.bin, record=str(tmp_path / "rec.json"))
    extra = {"allocation": allocation} if allocation else {}
    t0 = time.monotonic()
    r = run(dirs, exe, job(ovirt_engine, ovirt_pki, dirs, **extra))
    print("refused in %.2f s" % (time.monotonic() - t0))
    assert_refused(r, tmp_path, dirs, "vm_name: a VM named 'vm1' already exists", vm.id)


def test_cluster_elsewhere_refused(dirs, ovirt_engine, ovirt_pki, tmp_path):
    add_target(ovirt_engine)
    ovirt_engine.add_cluster("Prod", ovirt_engine.add_data_center("dc2"))
    exe = make_fake_v2v(dirs.bin, record=str(tmp_path / "rec.json"))
    r = run(dirs, exe, job(ovirt_engine, ovirt_pki, dirs, rhv_cluster="Prod", allocation="sparse"))
    assert_refused(r, tmp_path, dirs, "rhv_cluster: no cluster named 'Prod' in data center 'dc1'")


def test_python_without_the_sdk_and_no_nbdkit_refused(dirs, ovirt_engine, ovirt_pki, tmp_path):
    """Debian's python3 (no ovirtsdk4 there) and no nbdkit on PATH: both said, and
    the job's other mistake (the VM name) too, in one line."""
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3")
    add_target(ovirt_engine)
    ovirt_engine.add_vm("vm1")
    exe = make_fake_v2v(dirs.bin, record=str(tmp_path / "rec.json"))
    rhv_upload_path(dirs.bin, python="/usr/bin/python3", nbdkit=None)
    r = run(dirs, exe, job(ovirt_engine, ovirt_pki, dirs, allocation="sparse"),
            path=dirs.bin + ":/nonexistent")
    assert_refused(r, tmp_path, dirs, "cannot import ovirtsdk4", "ovirt-engine-sdk-python",
                   "; also nbdkit is not installed", "; also vm_name: a VM named 'vm1'")


@pytest.mark.parametrize("allocation", [None, "sparse"])
def test_wrong_password_refused(dirs, ovirt_engine, ovirt_pki, tmp_path, allocation):
    add_target(ovirt_engine)
    exe = make_fake_v2v(dirs.bin, record=str(tmp_path / "rec.json"))
    extra = {"allocation": allocation} if allocation else {}
    r = run(dirs, exe, job(ovirt_engine, ovirt_pki, dirs, rhv_password="wrong-Secret-42", **extra))
    assert_refused(r, tmp_path, dirs, "rhv_password", "username or password is incorrect")
    assert "wrong-Secret-42" not in r.stderr
    for name in os.listdir(dirs.logs):
        assert "wrong-Secret-42" not in open(os.path.join(dirs.logs, name)).read()


def test_failed_upload_removes_exactly_the_created_disks(tmp_path, dirs, ovirt_engine, ovirt_pki):
    add_target(ovirt_engine)
    created = [ovirt_engine.add_disk(), ovirt_engine.add_disk()]
    bystander = ovirt_engine.add_disk()
    for d in created:
        ovirt_engine.add_transfer(d)
    other_transfer = ovirt_engine.add_transfer(bystander)
    log, mr = upload_log(tmp_path, created)
    exe = make_fake_v2v(dirs.bin, log=log, mr=mr, duration=0.2, exit_code=1)
    r = run(dirs, exe, job(ovirt_engine, ovirt_pki, dirs, allocation="sparse"))
    assert r.returncode == 2
    state = wr.read_state(json.loads(r.stdout)["state_file"])
    assert state["failed"] and state["finished"]
    assert state["last_message"]["message"] == "nbdcopy command failed, see earlier error messages"
    assert sorted(ovirt_engine.disks) == [bystander]
    deleted = sorted(c.path.rsplit("/", 1)[-1] for c in ovirt_engine.calls("DELETE", "/ovirt-engine/api/disks/"))
    assert deleted == sorted(created)
    cancelled = [c.path for c in ovirt_engine.calls("POST") if c.path.endswith("/cancel")]
    assert len(cancelled) == 2 and not any(other_transfer in c for c in cancelled)
    assert ovirt_engine.password not in open(json.loads(r.stdout)["wrapper_log"]).read()


def test_stuck_disk_is_logged_and_original_error_kept(tmp_path, dirs, ovirt_engine, ovirt_pki):
    add_target(ovirt_engine)
    stuck = ovirt_engine.add_disk(locked_polls=None)
    log, mr = upload_log(tmp_path, [stuck])
    exe = make_fake_v2v(dirs.bin, log=log, mr=mr, duration=0.1, exit_code=1)
    r = run(dirs, exe, job(ovirt_engine, ovirt_pki, dirs, allocation="sparse"))
    assert r.returncode == 2
    doc = json.loads(r.stdout)
    state = wr.read_state(doc["state_file"])
    assert state["last_message"]["message"] == "nbdcopy command failed, see earlier error messages"
    assert stuck in ovirt_engine.disks
    assert "cleanup:" in open(doc["wrapper_log"]).read()
