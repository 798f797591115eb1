"""wrapper.ovirt.api.check_target: the engine half of the rhv_url pre-flight,
with the real SDK against the stand-in engine (tests/ovirt_standin)."""
import os
import threading
import time

import pytest

from wrapper.ovirt import api as ovirt_api
from wrapper.errors import JobError

if not os.environ.get("CI"):
    pytest.importorskip("ovirtsdk4")


@pytest.fixture
def engine(ovirt_engine):
    dc = ovirt_engine.add_data_center("dc1")
    ovirt_engine.add_storage_domain("data", "iscsi", data_center=dc)
    ovirt_engine.add_cluster("Default", dc)
    return ovirt_engine


def check(access, storage="data", cluster="Default", vm="vm1", timeout=30.0):
    return ovirt_api.check_target(access, storage, cluster, vm, timeout=timeout)


def one_line_no_secret(err, engine):
    text = str(err)
    return "\n" not in text and engine.password not in text


def test_everything_there(engine, ovirt_access):
    facts = check(ovirt_access)
    sd = [s for s in engine.storage_domains if s.name == "data"][0]
    cl = [c for c in engine.clusters if c.name == "Default"][0]
    assert facts == ovirt_api.TargetFacts("dc1", sd.id, "iscsi", cl.id, "x86_64")
    assert facts.allocation == "preallocated"
    counts = engine.counts()
    assert counts["POST /ovirt-engine/sso/oauth/token"] == 1
    assert counts["POST /ovirt-engine/services/sso-logout"] == 1     # the token is revoked
    searches = [r.query.get("search") for r in engine.calls("GET", "/ovirt-engine/api/")
                if r.query.get("search")]
    assert ["storage.name=data"] in searches and ["name=vm1"] in searches


def test_wrong_password(engine, ovirt_pki):
    access = ovirt_api.access_from_url(engine.api_url, "Wrong-Pa55", ovirt_pki.ca, False)
    with pytest.raises(JobError) as e:
        check(access)
    assert e.value.key == "rhv_password" and "username or password is incorrect" in str(e.value)
    assert e.value.code == "engine_login_refused"       # the failure code (wrapper/causes.py)
    assert one_line_no_secret(e.value, engine) and "Wrong-Pa55" not in str(e.value)


def test_no_such_storage_domain(engine, ovirt_access):
    with pytest.raises(JobError) as e:
        check(ovirt_access, storage="dat")       # a prefix of a real name is no match
    assert e.value.key == "rhv_storage" and "no storage domain named 'dat'" in str(e.value)
    assert e.value.code == "storage_domain_unknown"


def test_storage_domain_in_no_data_center(engine, ovirt_access):
    engine.add_storage_domain("loose", "nfs")
    with pytest.raises(JobError) as e:
        check(ovirt_access, storage="loose")
    assert e.value.key == "rhv_storage" and "not attached to a data center" in str(e.value)


def test_cluster_of_another_data_center(engine, ovirt_access):
    other = engine.add_data_center("dc2")
    engine.add_cluster("Far", other)
    with pytest.raises(JobError) as e:
        check(ovirt_access, cluster="Far")
    msg = str(e.value)
    assert e.value.key == "rhv_cluster"
    assert "no cluster named 'Far' in data center 'dc1', where storage domain 'data' is" in msg


def test_cluster_without_architecture(engine, ovirt_access):
    engine.add_cluster("Empty", "dc1", cpu_architecture="undefined")
    with pytest.raises(JobError) as e:
        check(ovirt_access, cluster="Empty")
    assert e.value.key == "rhv_cluster" and "unknown CPU architecture" in str(e.value)


def test_vm_name_taken(engine, ovirt_access):
    vm = engine.add_vm("vm1", cluster="Default")
    with pytest.raises(JobError) as e:
        check(ovirt_access)
    assert e.value.key == "vm_name" and e.value.code == "vm_name_taken"
    assert "a VM named 'vm1' already exists" in str(e.value) and vm.id in str(e.value)
    assert one_line_no_secret(e.value, engine)


def test_sparse_on_file_storage(engine, ovirt_access):
    engine.add_storage_domain("nfsdata", "nfs", data_center="dc1")
    assert check(ovirt_access, storage="nfsdata").allocation == "sparse"


def test_an_engine_that_stops_answering_after_the_login_is_bounded(engine, ovirt_access,
                                                                   monkeypatch):
    real = engine.handle
    answered = threading.Event()

    def slow(method, path, query, headers, body):
        if path.endswith("/vms"):
            time.sleep(20)         # far beyond the 2 s bound, even on a loaded machine
            answered.set()
        return real(method, path, query, headers, body)

    monkeypatch.setattr(engine, "handle", slow)
    t0 = time.monotonic()
    with pytest.raises(JobError) as e:
        check(ovirt_access, timeout=2.0)
    took = time.monotonic() - t0
    assert e.value.key == "rhv_url" and "did not answer" in str(e.value)
    print("gave up after %.1f s (timeout 2 s, the engine answers after 20 s)" % took)
    assert not answered.is_set()     # it gave up, rather than waiting for the answer


def test_a_url_curl_cannot_send_is_a_job_error(engine, ovirt_pki):
    """What config refuses anyway (a non-ASCII rhv_url), if it reaches the SDK: no traceback."""
    access = ovirt_api.access_from_url(engine.api_url.replace("/api", "/a\u202epi"),
                                       engine.password, ovirt_pki.ca, False)
    with pytest.raises(JobError) as e:
        check(access)
    assert e.value.key == "rhv_url" and one_line_no_secret(e.value, engine)
