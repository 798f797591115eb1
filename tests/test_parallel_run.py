"""The real CLI with a fake virt-v2v 2.8+ that copies two disks at once through
``nbdcopy`` from its PATH (tests/fake_virt_v2v.py ``copies``): the wrapper passes
``--parallel 2``, puts its root-owned shim first on PATH, and credits each disk
from its own nbdcopy while the copies overlap.  With ``parallel`` 1 the same fake
runs the serial path as before."""
import json
import os

import pytest

from tests import wrapperrun as wr
from tests.fake_virt_v2v import CAPABILITIES, FAKE_NBDCOPY
from tests.fakes import make_fake_v2v
from wrapper import parallel

FP = ":".join(["AB"] * 20)
MiB = 1 << 20
# source_disks reversed: virt-v2v's disk 1 (in0, the big one) is the caller's second
SOURCE_DISKS = ["[datastore1] testvm2/disk1.vmdk", "[datastore1] testvm2/disk0.vmdk"]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or parallel.shim_problem() is not None,
    reason="the shim is used only from a root-owned checkout: %s" % parallel.shim_problem())


def run(tmp_path, env):
    dirs = wr.WrapperDirs(tmp_path)
    nbdcopy_dir = os.path.join(dirs.root, "nbdcopy-bin")
    os.mkdir(nbdcopy_dir)
    with open(os.path.join(nbdcopy_dir, "nbdcopy"), "w") as f:
        f.write(FAKE_NBDCOPY)
    os.chmod(nbdcopy_dir, 0o755)
    os.chmod(os.path.join(nbdcopy_dir, "nbdcopy"), 0o755)
    exe = make_fake_v2v(dirs.bin, capabilities=CAPABILITIES + "parallel-option\n",
                        record=os.path.join(dirs.root, "record.json"), nbdcopy_dir=nbdcopy_dir,
                        copies=[{"size": 512 * MiB, "seconds": 3.0}, {"size": 64 * MiB, "seconds": 0.8}])
    job = {"vm_name": "testvm2", "transport_method": "vddk", "vmware_password": "pw",
           "vmware_uri": "esx://root@127.0.0.1?no_verify=1", "vmware_fingerprint": FP,
           "output_dir": dirs.out, "source_disks": SOURCE_DISKS}
    p = wr.start(dirs.args(exe), job, env=wr.env(**env))
    out, err = p.stdout.read(), p.stderr.read()
    assert p.wait(timeout=30) == 0, err
    doc = json.loads(out)
    seen = []
    final = wr.wait_state(doc["state_file"], lambda s: s.get("finished"), timeout=60, seen=seen)
    with open(os.path.join(dirs.root, "record.json")) as f:
        record = json.load(f)
    with open(doc["v2v_log"], "rb") as f:
        v2v_log = f.read()
    return final, seen, record, v2v_log


def progress(seen):
    return [[d["progress"] for d in s["disks"]] for s in seen if s.get("disks")]


def test_two_disks_at_once_each_credited_from_its_own_nbdcopy(tmp_path):
    final, seen, record, v2v_log = run(tmp_path, {})
    assert "failed" not in final and final["return_code"] == 0
    argv = record["argv"]
    assert argv[-3:] == ["--parallel", "2", "testvm2"]
    assert record["env"]["PATH"].split(":")[0] == parallel.SHIM_DIR
    assert b"virt-v2v-wrapper: nbdcopy in0 progress 50/100" in v2v_log
    assert b"virt-v2v-wrapper: nbdcopy in1 progress 50/100" in v2v_log
    assert b"% [" not in v2v_log                          # no untagged bar at all
    # placed at virt-v2v's index: disks[0] is in0 (the big disk, the caller's second)
    assert [d["path"] for d in final["disks"]] == [SOURCE_DISKS[1], SOURCE_DISKS[0]]
    steps = progress(seen)
    for before, after in zip(steps, steps[1:]):
        assert all(b <= a for b, a in zip(before, after)), steps     # never backwards
    small_done = next(s for s in steps if s[1] == 100)
    assert small_done[0] < 100, steps                     # the big disk was still copying
    assert any(0 < big < 100 and 0 < small < 100 for big, small in steps), steps   # overlapped
    assert final["disks"][0]["progress"] == final["disks"][1]["progress"] == 100
    copy = final["copy"]
    assert copy["size"] == 576 * MiB and copy["eta"] == 0.0
    big, small = copy["disks"]
    assert big["finished_at"] > small["finished_at"]       # each its own end
    assert big["started_at"] < small["finished_at"]
    assert big["rate"] > small["rate"] > 0                 # 512 MiB in ~3 s vs 64 MiB in ~0.8 s


def test_parallel_one_keeps_the_serial_path(tmp_path):
    final, seen, record, v2v_log = run(tmp_path, {"VIRT_V2V_WRAPPER_PARALLEL": "1"})
    assert "failed" not in final
    assert "--parallel" not in record["argv"]
    assert parallel.SHIM_DIR not in record["env"]["PATH"].split(":")
    assert b"virt-v2v-wrapper: nbdcopy" not in v2v_log and b"% [" in v2v_log
    steps = progress(seen)
    # one disk after the other: the big one (in0) is complete before the small one moves
    assert all(small == 0 for big, small in steps if big < 100), steps
    assert final["disks"][0]["progress"] == final["disks"][1]["progress"] == 100


def test_a_bad_setting_refuses_the_job_with_one_line(tmp_path):
    dirs = wr.WrapperDirs(tmp_path)
    r = wr.run(dirs.args("/bin/false"), "{}", env=wr.env(VIRT_V2V_WRAPPER_PARALLEL_MAX="lots"))
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "VIRT_V2V_WRAPPER_PARALLEL_MAX" in r.stderr
    assert os.listdir(dirs.state) == []
