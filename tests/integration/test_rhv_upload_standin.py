"""Real virt-v2v 2.2 ``-o rhv-upload`` against the stand-in oVirt world.

virt-v2v itself (not the wrapper) converts the test guest and uploads it: its
helper scripts talk to the stand-in engine (tests/ovirt_standin/engine.py)
through the real oVirt SDK, its nbdkit python plugin writes the disk to a
real ovirt-imageio daemon (tests/ovirt_standin/imageio.py).  It runs as an
unprivileged user, as on an oVirt host (vdsm:kvm): the CA, the password file
and the ``python3`` it finds first on PATH (tests/ovirt_standin/v2vpython.py)
must be readable by that user.

One conversion (CI time): ~2 min under TCG.
"""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from tests.integration.fx_attack import attack_users  # noqa: F401 (fixture)
from tests.integration.guestimage import default_cache_dir, ext4_cat
from tests.ovirt_standin.engine import parse_ovf
from tests.ovirt_standin.v2vpython import ensure_v2v_python

pytestmark = pytest.mark.integration

CONVERSION_TIMEOUT = 1200
DISK_SIZE = 512 * 1024 * 1024       # guest-os.img (tests/integration/scripts/build-guest.sh)


def user_env(user, path_first, tmpdir, v2v_env):
    env = {"PATH": "%s:/usr/local/bin:/usr/bin:/bin" % path_first, "HOME": "/nonexistent",
           "USER": user.name, "LOGNAME": user.name, "LANG": "C", "TMPDIR": tmpdir}
    for k in ("LIBGUESTFS_BACKEND", "LIBGUESTFS_BACKEND_SETTINGS"):
        env[k] = v2v_env[k]
    return env


def partition_table(image):
    """sfdisk's dump without the lines naming the file."""
    out = subprocess.run(["sfdisk", "-d", str(image)], check=True, capture_output=True,
                         text=True).stdout
    return [line.split(":", 1)[1] if line.startswith(str(image)) else line
            for line in out.splitlines() if not line.startswith("device:")]


@pytest.fixture
def user_tmp(attack_users):  # noqa: F811
    d = tempfile.mkdtemp(prefix="v2vw-rhvu-tmp-", dir="/var/tmp")
    os.chown(d, attack_users.runas.uid, attack_users.runas.gid)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_rhv_upload_as_unprivileged_user_succeeds(guest_images, v2v_env, ovirt_world,
                                                  attack_users, user_tmp):  # noqa: F811
    user = attack_users.runas
    world, engine, imageio = ovirt_world, ovirt_world.engine, ovirt_world.imageio
    v2v_bin = ensure_v2v_python(default_cache_dir())
    cafile, password_file = world.write_client_files(
        os.path.join(world.directory, "client"), owner=(user.uid, user.gid))
    log_path = os.path.join(world.directory, "virt-v2v.log")
    argv = ["virt-v2v", "-v", "-x", "-i", "disk", str(guest_images.os_disk),
            "-on", "rhvu-guest"] + world.virt_v2v_args(cafile, password_file)
    start = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.run(argv, env=user_env(user, v2v_bin, user_tmp, v2v_env),
                              cwd=user_tmp, stdin=subprocess.DEVNULL, stdout=log,
                              stderr=subprocess.STDOUT, timeout=CONVERSION_TIMEOUT,
                              user=user.uid, group=user.gid, extra_groups=[])
    seconds = time.monotonic() - start
    with open(log_path, errors="replace") as f:
        text = f.read()
    assert proc.returncode == 0, text[-6000:]

    # The engine: one disk, as requested, unlocked; its transfer finished.
    assert len(engine.disks) == 1
    disk = next(iter(engine.disks.values()))
    assert disk.status() == "ok"
    assert (disk.provisioned_size, disk.format, disk.sparse) == (DISK_SIZE, "raw", True)
    assert disk.storage_domain_id == world.storage_domain.id
    assert disk.name.startswith("rhvu-guest")
    (transfer,) = engine.transfers.values()
    assert transfer.disk_id == disk.id and transfer.phase == "finished_success"
    assert engine.locked_disks() == [] and engine.unfinished_transfers() == []
    # ... a VM created from an OVF naming that disk, its import job finished.
    (vm,) = engine.vms.values()
    assert vm.name == "rhvu-guest" and vm.cluster_id == world.cluster.id
    vm_id, name, ovf_disks = parse_ovf(vm.ovf)
    assert (vm.id, name, ovf_disks) == (vm_id, "rhvu-guest", [disk.id])
    (job,) = engine.jobs
    assert job.correlation_id == vm.correlation_id and job.status() == "finished"

    # imageio: the plugin covered the whole disk with writes and zeroes, and
    # the engine's finalize removed the ticket.
    (ticket,) = imageio.tickets.values()
    assert ticket.transfer_url == transfer.transfer_url
    served = imageio.served()
    assert served["WRITE bytes"] + served.get("ZERO bytes", 0) == DISK_SIZE
    assert served["OPTIONS"] >= 1 and served["FLUSH"] >= 1
    assert imageio.errors() == []
    deadline = time.monotonic() + 15
    while imageio.ticket_info(ticket.id) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert imageio.ticket_info(ticket.id) is None

    # The bytes that reached imageio are the converted guest: raw, the
    # source's partition table, its root file system with the same files.
    written = ticket.path
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-f", "raw", written],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["virtual-size"] == DISK_SIZE
    assert partition_table(written) == partition_table(guest_images.os_disk)
    with open(written, "rb") as f:
        f.seek(510)
        assert f.read(2) == b"\x55\xaa"
    assert ext4_cat(written, "/etc/os-release") == ext4_cat(guest_images.os_disk,
                                                            "/etc/os-release")
    allocated = os.stat(written).st_blocks * 512
    # (the file system's extent blocks count too: a little over the data)
    assert 0 < allocated <= served["WRITE bytes"] + 1024 * 1024

    # What the engine saw.
    counts = engine.counts()
    api = "/ovirt-engine/api"
    for key, n in {"GET %s/datacenters" % api: 1, "GET %s/vms" % api: 1,
                   "POST %s/disks" % api: 1, "POST %s/imagetransfers" % api: 1,
                   "POST %s/imagetransfers/{id}/finalize" % api: 1,
                   "POST %s/vms" % api: 1}.items():
        assert counts.get(key) == n, (key, counts)
    assert counts["GET %s/jobs" % api] >= 1
    assert not any(k.startswith("DELETE") or k.endswith("/cancel") for k in counts), counts
    assert "virt-v2v: error" not in text
    print("rhv-upload as %s: %.0f s, imageio wrote %d bytes (+%d zeroed), file allocates %d;"
          " engine requests %s" % (user.name, seconds, served["WRITE bytes"],
                                   served.get("ZERO bytes", 0), allocated,
                                   json.dumps(counts, sort_keys=True)))
