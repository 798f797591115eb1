"""The stand-in engine (tests/ovirt_standin) answers what virt-v2v 2.2's
rhv-upload helper scripts ask, as the REAL oVirt SDK reads it.

The scripts' own calls (precheck: data centers by storage name, their storage
domains and clusters with the CPU architecture; vmcheck: VMs by name;
transfer: hosts by hw_id) are replayed here with ovirtsdk4 over HTTPS."""
import os

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
