"""The stand-in engine (tests/ovirt_standin) answers what virt-v2v 2.2's
rhv-upload helper scripts ask, as the REAL oVirt SDK reads it.

The scripts' own calls (precheck: data centers by storage name, their storage
domains and clusters with the CPU architecture; vmcheck: VMs by name;
transfer: hosts by hw_id) are replayed here with ovirtsdk4 over HTTPS."""
import http.client
import json
import os
import ssl
import time
import urllib.parse

import pytest

try:
    import ovirtsdk4 as sdk
    import ovirtsdk4.types as types
except ImportError:
    if os.environ.get("CI"):
        raise  # CI installs it (.ci/deps-ovirt.sh)
    pytest.skip("ovirt-engine-sdk-python is not installed (run .ci/deps-ovirt.sh)",
                allow_module_level=True)

from tests.ovirt_standin.engine import parse_search, path_template


@pytest.fixture
def world(ovirt_engine):
    """Two data centers, each with a storage domain and a cluster."""
    e = ovirt_engine
    dc = e.add_data_center("Default")
    other = e.add_data_center("Remote")
    sd = e.add_storage_domain("data-nfs", "nfs", data_center=dc)
    e.add_storage_domain("remote-iscsi", "iscsi", data_center=other)
    e.add_storage_domain("loose", "nfs")            # attached to no data center
    cluster = e.add_cluster("Default", dc)
    e.add_cluster("ppc", dc, cpu_architecture="ppc64")
    e.add_cluster("RemoteCluster", other)
    return e, dc, sd, cluster


@pytest.fixture
def conn(ovirt_engine, ovirt_pki):
    c = sdk.Connection(url=ovirt_engine.api_url, username="admin@internal",
                       password=ovirt_engine.password, ca_file=ovirt_pki.ca)
    try:
        yield c
    finally:
        c.close()


def test_precheck_data_center_by_storage_name_then_its_domains_and_clusters(world, conn):
    engine, dc, sd, cluster = world
    system = conn.system_service()
    dcs = system.data_centers_service().list(search="storage.name=data-nfs",
                                             case_sensitive=True)
    assert [d.id for d in dcs] == [dc.id]
    assert dcs[0].name == "Default"
    domains = conn.follow_link(dcs[0].storage_domains)
    assert [(d.id, d.name) for d in domains] == [(sd.id, "data-nfs")]
    assert domains[0].storage.type == types.StorageType.NFS
    clusters = conn.follow_link(dcs[0].clusters)
    assert sorted(c.name for c in clusters) == ["Default", "ppc"]
    by_name = {c.name: c for c in clusters}
    assert by_name["Default"].id == cluster.id
    assert by_name["Default"].cpu.architecture == types.Architecture.X86_64
    assert by_name["ppc"].cpu.architecture == types.Architecture.PPC64
    assert by_name["Default"].data_center.id == dc.id
    counts = engine.counts()
    assert counts["GET /ovirt-engine/api/datacenters"] == 1
    assert counts["GET /ovirt-engine/api/datacenters/{id}/storagedomains"] == 1
    assert counts["GET /ovirt-engine/api/datacenters/{id}/clusters"] == 1
    assert counts["POST /ovirt-engine/sso/oauth/token"] == 1


def test_data_center_search_case_and_misses(world, conn):
    engine, dc, _, _ = world
    dcs = conn.system_service().data_centers_service()
    assert dcs.list(search="storage.name=DATA-NFS", case_sensitive=True) == []
    assert [d.id for d in dcs.list(search="storage.name=DATA-NFS",
                                   case_sensitive=False)] == [dc.id]
    # A storage domain in no data center, and one that does not exist at all.
    assert dcs.list(search="storage.name=loose", case_sensitive=True) == []
    assert dcs.list(search="storage.name=nothing", case_sensitive=True) == []
    assert [d.name for d in dcs.list(search="storage.name=remote-*")] == ["Remote"]
    assert sorted(d.name for d in dcs.list()) == ["Default", "Remote"]
    assert dcs.data_center_service(dc.id).get().name == "Default"


def test_clusters_and_storage_domain_entities(world, conn):
    engine, dc, sd, cluster = world
    system = conn.system_service()
    got = system.clusters_service().cluster_service(cluster.id).get()
    assert (got.name, got.cpu.architecture) == ("Default", types.Architecture.X86_64)
    assert sorted(c.name for c in system.clusters_service().list()) == [
        "Default", "RemoteCluster", "ppc"]
    assert [c.name for c in system.clusters_service().list(search="name=ppc")] == ["ppc"]
    one = system.storage_domains_service().storage_domain_service(sd.id).get()
    assert (one.name, one.storage.type) == ("data-nfs", types.StorageType.NFS)
    assert [d.id for d in one.data_centers] == [dc.id]
    with pytest.raises(sdk.NotFoundError):
        system.clusters_service().cluster_service(
            "00000000-0000-0000-0000-000000000000").get()


def test_undefined_architecture_reads_as_the_sdk_enum(ovirt_engine, conn):
    dc = ovirt_engine.add_data_center("Empty")
    ovirt_engine.add_cluster("nohosts", dc, cpu_architecture="undefined")
    clusters = conn.follow_link(conn.system_service().data_centers_service().list(
        search="name=Empty")[0].clusters)
    assert clusters[0].cpu.architecture == types.Architecture.UNDEFINED


def test_vmcheck_vms_by_name(world, conn):
    engine, _, _, cluster = world
    vm = engine.add_vm("guest-1", cluster=cluster)
    engine.add_vm("guest-10")
    vms = conn.system_service().vms_service()
    found = vms.list(search="name=guest-1")
    assert [(v.id, v.name) for v in found] == [(vm.id, "guest-1")]
    assert found[0].cluster.id == cluster.id
    assert vms.list(search="name=absent") == []
    assert sorted(v.name for v in vms.list(search="name=guest-1*")) == ["guest-1", "guest-10"]
    assert vms.vm_service(vm.id).get().name == "guest-1"
    assert engine.counts()["GET /ovirt-engine/api/vms"] == 3


def test_transfer_hosts_by_hw_id(world, conn):
    engine, dc, _, cluster = world
    host = engine.add_host("host1", "4c4c4544-0000-1111-2222-333344445555", cluster)
    engine.add_host("host2", "other-hw", cluster, status="maintenance")
    hosts = conn.system_service().hosts_service()
    # The transfer script's exact search.
    found = hosts.list(search="hw_id=4c4c4544-0000-1111-2222-333344445555 and "
                              "datacenter=Default and status=Up", case_sensitive=True)
    assert [h.id for h in found] == [host.id]
    assert found[0].status == types.HostStatus.UP
    assert hosts.list(search="hw_id=other-hw and datacenter=Default and status=Up",
                      case_sensitive=True) == []
    assert hosts.list(search="hw_id=4c4c4544-0000-1111-2222-333344445555 and "
                             "datacenter=Remote and status=Up", case_sensitive=True) == []


def test_unknown_search_field_is_an_error_not_everything(world, conn):
    with pytest.raises(sdk.Error) as err:
        conn.system_service().vms_service().list(search="description=x")
    assert "cannot search vms by description" in str(err.value)


def test_search_parsing_and_path_templates():
    assert parse_search('hw_id=a and datacenter="My DC" AND status=Up') == [
        ("hw_id", "a"), ("datacenter", "My DC"), ("status", "Up")]
    with pytest.raises(ValueError):
        parse_search("justaword")
    assert path_template("/ovirt-engine/api/disks/0b4a4b9c-3a59-4f8e-9d2f-0c3c2f1e2d3a"
                         "/x") == "/ovirt-engine/api/disks/{id}/x"
    assert path_template("/ovirt-engine/api/vms") == "/ovirt-engine/api/vms"


# --------------------------------------------------------------------------
# The write side, as the transfer/finalize/createvm/cancel scripts drive it,
# with image transfers pointing at a real ovirt-imageio daemon.

OVF = """<?xml version='1.0' encoding='utf-8'?>
<ovf:Envelope xmlns:ovf='http://schemas.dmtf.org/ovf/envelope/1/' ovf:version='0.9'>
  <References><File ovf:href='%(image)s' ovf:id='%(image)s'/></References>
  <DiskSection><Disk ovf:diskId='%(disk)s' ovf:fileRef='%(image)s'/></DiskSection>
  <VirtualSystem ovf:id='%(vm)s'><Name>%(name)s</Name></VirtualSystem>
</ovf:Envelope>"""


@pytest.fixture
def wconn(ovirt_world):
    c = sdk.Connection(url=ovirt_world.engine.api_url, username="admin@internal",
                       password=ovirt_world.engine.password, ca_file=ovirt_world.pki.ca)
    try:
        yield c
    finally:
        c.close()


def poll(get, until, tries=20):
    for _ in range(tries):
        value = get()
        if until(value):
            return value
    raise AssertionError("never reached: last %r" % (value,))


def start_upload(conn, storage="data-nfs", size=4 << 20):
    """The transfer script's calls: disk, wait ok, transfer, wait transferring."""
    system = conn.system_service()
    disks = system.disks_service()
    disk = disks.add(types.Disk(name="guest-sda", description="Uploaded by virt-v2v",
                                format=types.DiskFormat.RAW, initial_size=size,
                                provisioned_size=size, sparse=True,
                                storage_domains=[types.StorageDomain(name=storage)]))
    assert disk.status == types.DiskStatus.LOCKED
    poll(lambda: disks.disk_service(disk.id).get().status, lambda s: s == types.DiskStatus.OK)
    transfers = system.image_transfers_service()
    t = transfers.add(types.ImageTransfer(disk=types.Disk(id=disk.id), inactivity_timeout=3600,
                                          format=types.DiskFormat.RAW))
    assert t.phase == types.ImageTransferPhase.INITIALIZING
    t = poll(lambda: transfers.image_transfer_service(t.id).get(),
             lambda x: x.phase == types.ImageTransferPhase.TRANSFERRING)
    assert disks.disk_service(disk.id).get().status == types.DiskStatus.LOCKED
    return disk, t, transfers.image_transfer_service(t.id)


def imageio_http(url, cafile):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPSConnection(u.hostname, u.port,
                                       context=ssl.create_default_context(cafile=cafile)), u.path


def put(conn, path, offset, data):
    conn.putrequest("PUT", path + "?flush=n")
    conn.putheader("Content-Range", "bytes %d-%d/*" % (offset, offset + len(data) - 1))
    conn.putheader("Content-Length", str(len(data)))
    conn.endheaders()
    conn.send(data)
    r = conn.getresponse()
    return r.status, r.read()


def test_upload_finalize_and_createvm(ovirt_world, wconn):
    engine, imageio = ovirt_world.engine, ovirt_world.imageio
    disk, t, transfer_service = start_upload(wconn)
    d = engine.disks[disk.id]
    assert (d.name, d.provisioned_size, d.initial_size, d.sparse, d.format) == (
        "guest-sda", 4 << 20, 4 << 20, True, "raw")
    assert d.storage_domain_id == ovirt_world.storage_domain.id
    assert t.transfer_url == t.proxy_url and t.transfer_url.startswith("https://127.0.0.1:")

    # The nbdkit plugin's protocol, against the real daemon.
    http_conn, path = imageio_http(t.transfer_url, ovirt_world.pki.ca)
    http_conn.request("OPTIONS", path)
    r = http_conn.getresponse()
    options = json.loads(r.read())
    assert r.status == 200 and {"zero", "flush"} <= set(options["features"])
    assert options["max_writers"] >= 1
    assert put(http_conn, path, 0, b"\x55" * 65536)[0] == 200
    http_conn.request("PATCH", path, body=json.dumps({"op": "zero", "offset": 65536,
                                                      "size": 65536, "flush": False}),
                      headers={"Content-Type": "application/json"})
    assert http_conn.getresponse().read() == b""
    http_conn.request("PATCH", path, body=json.dumps({"op": "flush"}),
                      headers={"Content-Type": "application/json"})
    r = http_conn.getresponse()
    r.read()
    assert r.status == 200
    http_conn.close()
    backing = engine.transfers[t.id].backing_path
    with open(backing, "rb") as f:
        assert f.read(65536) == b"\x55" * 65536
    assert imageio.served()["WRITE bytes"] == 65536

    # finalize: finalizing_success, then finished_success, the disk unlocked.
    transfer_service.finalize()
    poll(lambda: transfer_service.get().phase,
         lambda p: p == types.ImageTransferPhase.FINISHED_SUCCESS)
    assert engine.disks[disk.id].status() == "ok"
    assert engine.locked_disks() == [] and engine.unfinished_transfers() == []
    ticket_id = imageio.ticket_for(t.transfer_url).id
    assert poll(lambda: (time.sleep(0.1), imageio.ticket_info(ticket_id))[1],
                lambda info: info is None, tries=100) is None

    # createvm: POST /vms with the OVF and a correlation id, then /jobs.
    system = wconn.system_service()
    cluster = system.clusters_service().cluster_service(ovirt_world.cluster.id).get()
    vm_uuid = "5d3c0a0e-1111-4222-8333-444455556666"
    ovf = OVF % {"image": "0f0f0f0f-0000-4000-8000-000000000001", "disk": disk.id,
                 "vm": vm_uuid, "name": "guest"}
    vm = system.vms_service().add(
        types.Vm(cluster=cluster, initialization=types.Initialization(
            configuration=types.Configuration(type=types.ConfigurationType.OVA, data=ovf))),
        query={"correlation_id": "corr-1"})
    assert (vm.id, vm.name) == (vm_uuid, "guest")
    jobs = system.jobs_service().list(search="correlation_id=corr-1")
    assert [j.status for j in jobs] == [types.JobStatus.FINISHED]
    assert system.jobs_service().list(search="correlation_id=other") == []
    assert engine.vms[vm_uuid].ovf == ovf and engine.vms[vm_uuid].correlation_id == "corr-1"
    assert system.vms_service().vm_service(vm_uuid).get().status == types.VmStatus.DOWN
    # The same name again: the engine refuses.
    with pytest.raises(sdk.Error, match="name is already in use"):
        system.vms_service().add(types.Vm(cluster=cluster, initialization=types.Initialization(
            configuration=types.Configuration(type=types.ConfigurationType.OVA, data=ovf))))


def test_import_job_fails_and_leaves_no_vm(ovirt_world, wconn):
    engine = ovirt_world.engine
    engine.import_job_fails, engine.job_polls = True, 1
    system = wconn.system_service()
    cluster = system.clusters_service().cluster_service(ovirt_world.cluster.id).get()
    ovf = OVF % {"image": "i", "disk": "d", "vm": "not-a-uuid", "name": "doomed"}
    vm = system.vms_service().add(
        types.Vm(cluster=cluster, initialization=types.Initialization(
            configuration=types.Configuration(type=types.ConfigurationType.OVA, data=ovf))),
        query={"correlation_id": "corr-2"})
    assert vm.status == types.VmStatus.IMAGE_LOCKED
    jobs = system.jobs_service()
    assert [j.status for j in jobs.list(search="correlation_id=corr-2")] == [
        types.JobStatus.STARTED]
    assert [j.status for j in jobs.list(search="correlation_id=corr-2")] == [
        types.JobStatus.FAILED]
    assert engine.vms == {}
    with pytest.raises(sdk.NotFoundError):
        system.vms_service().vm_service(vm.id).get()


def test_finalize_failure_removes_the_disk(ovirt_world, wconn):
    engine = ovirt_world.engine
    engine.finalize_fails = True
    disk, t, transfer_service = start_upload(wconn)
    transfer_service.finalize()
    assert poll(lambda: transfer_service.get().phase,
                lambda p: p != types.ImageTransferPhase.FINALIZING_FAILURE) == \
        types.ImageTransferPhase.FINISHED_FAILURE
    with pytest.raises(sdk.NotFoundError):
        wconn.system_service().disks_service().disk_service(disk.id).get()


@pytest.mark.parametrize("removes", [True, False])
def test_cancel_then_delete(ovirt_world, wconn, removes):
    """The cancel script: cancel the transfer, then DELETE the disk (409 while
    the engine still holds it, unless the engine removed it itself)."""
    engine = ovirt_world.engine
    engine.cancel_removes_disk, engine.cancel_locked_polls = removes, 1
    disk, t, transfer_service = start_upload(wconn)
    disk_service = wconn.system_service().disks_service().disk_service(disk.id)
    with pytest.raises(sdk.Error, match="409"):
        disk_service.remove()                       # locked by the running transfer
    transfer_service.cancel()
    assert transfer_service.get().phase == types.ImageTransferPhase.CANCELLED_USER
    if removes:
        with pytest.raises(sdk.NotFoundError):
            disk_service.remove()
    else:
        assert disk_service.get().status == types.DiskStatus.LOCKED
        disk_service.remove()
    assert engine.disks == {} and engine.unfinished_transfers() == []
    assert engine.counts()["DELETE /ovirt-engine/api/disks/{id}"] == 2


def test_disk_on_unknown_storage_domain_is_refused(ovirt_world, wconn):
    with pytest.raises(sdk.Error, match="Storage Domain doesn't exist"):
        start_upload(wconn, storage="nothing")
    assert ovirt_world.engine.disks == {}


def test_write_limit_makes_the_real_daemon_answer_500_part_way(ovirt_pki, tmp_path):
    from tests.ovirt_standin.imageio import ImageioDaemon, available
    if not available():
        pytest.skip("ovirt-imageio is not installed")
    with ImageioDaemon(ovirt_pki, str(tmp_path / "io"), write_limit=1 << 20) as daemon:
        url, path = daemon.add_ticket("disk-1", 4 << 20)
        conn, p = imageio_http(url, ovirt_pki.ca)
        assert put(conn, p, 0, b"a" * 65536)[0] == 200
        status, body = put(conn, p, 2 << 20, b"b" * 65536)
        assert status == 500, body
        assert put(conn, p, 65536, b"c" * 65536)[0] == 200   # the daemon lives on
        conn.close()
        assert daemon.errors()
        assert daemon.served()["WRITE"] == 3


def test_serve_command_prints_its_world_and_stops_on_sigterm(tmp_path):
    import signal
    import subprocess
    import sys
    from tests.ovirt_standin.imageio import available
    if not available():
        pytest.skip("ovirt-imageio is not installed")
    d = tmp_path / "world"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "tests.ovirt_standin", "serve", "--dir", str(d)],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert set(info) == {"api_url", "cafile", "password_file", "storage", "cluster"}
        assert os.stat(info["password_file"]).st_mode & 0o777 == 0o600
        with open(info["password_file"]) as f:
            password = f.read().strip()
        c = sdk.Connection(url=info["api_url"], username="admin@internal", password=password,
                           ca_file=info["cafile"])
        try:
            dcs = c.system_service().data_centers_service().list(
                search="storage.name=%s" % info["storage"], case_sensitive=True)
            clusters = c.follow_link(dcs[0].clusters)
            assert info["cluster"] in [cl.name for cl in clusters]
        finally:
            c.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert json.loads(out)["requests"]["GET /ovirt-engine/api/datacenters"] == 1
    assert password not in out + err


def test_cancel_after_a_failed_finalize_is_refused(ovirt_world, wconn):
    ovirt_world.engine.finalize_fails = True
    disk, t, transfer_service = start_upload(wconn)
    transfer_service.finalize()
    poll(lambda: transfer_service.get().phase,
         lambda p: p == types.ImageTransferPhase.FINISHED_FAILURE)
    with pytest.raises(sdk.Error, match="409"):
        transfer_service.cancel()
    assert transfer_service.get().phase == types.ImageTransferPhase.FINISHED_FAILURE
