"""wrapper.ovirt.api against the stand-in engine, with the REAL oVirt SDK as client.

Nothing of ovirtsdk4 is mocked: requests go over HTTPS (a CA generated per
session) to tests/ovirt_standin, which records them.  Time is injected
(clock/sleep) where the tests wait for locked disks, except one test that
checks the bound with the real clock.
"""
import logging
import os
import socket
import sys
import time
import uuid

import pytest

from tests.fakes import Clock
from tests.ovirt_standin.engine import closed_port
from wrapper.ovirt import api as ovirt_api
from wrapper.ovirt import cleanup as ovirt_cleanup
from wrapper.errors import JobError, WrapperError
from wrapper.security.secrets import Secret

try:
    import ovirtsdk4  # noqa: F401
    HAVE_SDK = True
except ImportError:
    HAVE_SDK = False
    if os.environ.get("CI"):
        raise  # CI installs it (.ci/deps-ovirt.sh): a skip there would hide a broken setup

needs_sdk = pytest.mark.skipif(
    not HAVE_SDK, reason="ovirt-engine-sdk-python is not installed (run .ci/deps-ovirt.sh)")



def one_sentence(text):
    return "\n" not in text and "Traceback" not in text and len(text) < 400


# --------------------------------------------------------------------------
# access_from_url (no SDK needed)

@pytest.mark.parametrize("rhv_url, username, api_url", [
    ("https://engine.example.com/ovirt-engine/api",
     "admin@internal", "https://engine.example.com/ovirt-engine/api"),
    ("https://admin@internal@engine.example.com:8443/ovirt-engine/api/",
     "admin@internal", "https://engine.example.com:8443/ovirt-engine/api"),
    ("https://admin@ovirt@internalsso@engine/ovirt-engine/api",
     "admin@ovirt@internalsso", "https://engine/ovirt-engine/api"),
    ("https://someone%40corp.example@[fd00::1]:443/ovirt-engine/api",
     "someone@corp.example", "https://[fd00::1]:443/ovirt-engine/api"),
    ("https://user@internal:urlpass@engine/ovirt-engine/api",
     "user@internal", "https://engine/ovirt-engine/api"),
])
def test_access_from_url_user_and_api_url(rhv_url, username, api_url):
    access = ovirt_api.access_from_url(rhv_url, "pw", "/ca.pem", False)
    assert access.username == username
    assert access.url == api_url
    assert "urlpass" not in access.url
    assert access.password == Secret("pw")
    assert (access.cafile, access.insecure) == ("/ca.pem", False)


def test_access_defaults_and_masking():
    access = ovirt_api.access_from_url("https://e/ovirt-engine/api", Secret("s3cret"), None, 1)
    assert access.cafile == "/etc/pki/vdsm/certs/cacert.pem"
    assert access.insecure is True
    assert "s3cret" not in repr(access) and "s3cret" not in str(access)


@pytest.mark.parametrize("bad", ["engine.example.com/ovirt-engine/api", "ftp://e/api",
                                 "https:///ovirt-engine/api", "https://user@/api"])
def test_access_from_url_refuses_non_urls(bad):
    with pytest.raises(JobError) as e:
        ovirt_api.access_from_url(bad, "pw", None, False)
    assert e.value.key == "rhv_url"


def test_missing_sdk_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ovirtsdk4", None)  # makes `import ovirtsdk4` fail
    access = ovirt_api.access_from_url("https://e/ovirt-engine/api", "pw", None, True)
    with pytest.raises(WrapperError) as e:
        ovirt_api.check_target(access, "data", "Default", "vm1")
    assert str(e.value) == ("the oVirt SDK (ovirt-engine-sdk-python) is needed "
                            "for rhv_url jobs")
    problems = ovirt_cleanup.remove_created_disks(access, [str(uuid.uuid4())])
    assert len(problems) == 1 and "ovirt-engine-sdk-python" in problems[0]


# --------------------------------------------------------------------------
# Storage type -> allocation (the engine half: tests/test_ovirt_check_target.py)

@pytest.mark.parametrize("storage_type, expected", [
    ("fcp", "preallocated"), ("iscsi", "preallocated"), ("cinder", "preallocated"),
    ("glusterfs", "preallocated"), ("posixfs", "preallocated"),
    ("nfs", "sparse"), ("localfs", "sparse"), ("glance", "sparse"),
    ("managed_block_storage", "sparse"), (None, "sparse"),
])
def test_allocation_for_each_storage_type(storage_type, expected):
    assert ovirt_api.allocation_for_type(storage_type) == expected
    facts = ovirt_api.TargetFacts("dc", "sd", storage_type, "cl", "x86_64")
    assert facts.allocation == expected


@needs_sdk
def test_search_wildcards_never_pick_another_domain(ovirt_engine, ovirt_access):
    dc = ovirt_engine.add_data_center("dc1")
    ovirt_engine.add_storage_domain("data", "iscsi", data_center=dc)
    ovirt_engine.add_cluster("Default", dc)
    with pytest.raises(JobError) as e:
        ovirt_api.check_target(ovirt_access, "da*", "Default", "vm1")
    assert e.value.key == "rhv_storage"
    assert "no storage domain named 'da*'" in str(e.value)
    # The engine did return "data" for the pattern; the exact match refused it.
    assert ovirt_engine.calls("GET", "/ovirt-engine/api/storagedomains")[0].query["search"] == \
        ["name=da*"]


# --------------------------------------------------------------------------
# Removing the disks a failed conversion created

def _touched(engine, ident):
    return [r for r in engine.requests if ident in r.path]


@needs_sdk
def test_removes_exactly_the_listed_disks_and_cancels_their_transfers(ovirt_engine,
                                                                      ovirt_access):
    e = ovirt_engine
    disk_a, disk_b, disk_c = e.add_disk(), e.add_disk(), e.add_disk()
    t_a = e.add_transfer(disk_a)                                # virt-v2v 2.x: by disk
    t_b = e.add_transfer(disk_b, by="image")                    # 1.x style: by image
    t_a_old = e.add_transfer(disk_a, phase="finished_success")  # settled: leave alone
    t_c = e.add_transfer(disk_c)                                # not ours
    ft = Clock(now=1000.0)

    problems = ovirt_cleanup.remove_created_disks(
        ovirt_access, [disk_a, disk_b.upper()], clock=ft, sleep=ft.sleep, poll=1.0)

    assert problems == []
    assert set(e.disks) == {disk_c}
    cancelled = [r.path for r in e.calls("POST", "/ovirt-engine/api/imagetransfers/")]
    assert sorted(cancelled) == sorted("/ovirt-engine/api/imagetransfers/%s/cancel" % t
                                       for t in (t_a, t_b))
    assert [r.path for r in e.calls("DELETE")] == [
        "/ovirt-engine/api/disks/%s" % disk_a, "/ovirt-engine/api/disks/%s" % disk_b]
    assert e.transfers[t_a_old].phase == "finished_success"
    assert e.transfers[t_c].phase == "transferring"
    assert _touched(e, disk_c) == [] and _touched(e, t_c) == []
    assert ft.sleeps == []  # nothing was locked: no waiting


@needs_sdk
def test_disk_already_removed_by_the_cancelled_transfer(ovirt_engine, ovirt_access):
    e = ovirt_engine
    e.cancel_removes_disk = True  # what the real engine does when an upload is cancelled
    disks = [e.add_disk(), e.add_disk()]
    for d in disks:
        e.add_transfer(d)
    assert ovirt_cleanup.remove_created_disks(ovirt_access, disks) == []
    assert e.disks == {}
    assert e.calls("DELETE") == []
    assert len(e.calls("POST", "/ovirt-engine/api/imagetransfers/")) == 2


@needs_sdk
def test_locked_disk_is_waited_for_then_removed(ovirt_engine, ovirt_access):
    e = ovirt_engine
    disk = e.add_disk(locked_polls=3)
    ft = Clock(now=1000.0)
    problems = ovirt_cleanup.remove_created_disks(ovirt_access, [disk], timeout=60,
                                              clock=ft, sleep=ft.sleep, poll=2.0)
    assert problems == []
    assert disk not in e.disks
    assert ft.sleeps == [2.0, 2.0, 2.0]
    assert len(e.calls("DELETE")) == 1


@needs_sdk
def test_refused_removal_is_retried(ovirt_engine, ovirt_access):
    e = ovirt_engine
    disk = e.add_disk()
    e.disks[disk].refuse_deletes = 2  # 409 "Related operation is currently in progress"
    ft = Clock(now=1000.0)
    assert ovirt_cleanup.remove_created_disks(ovirt_access, [disk], clock=ft,
                                          sleep=ft.sleep, poll=1.0) == []
    assert disk not in e.disks
    assert len(e.calls("DELETE")) == 3


@needs_sdk
def test_stuck_locked_disk_times_out_and_is_reported(ovirt_engine, ovirt_access, caplog):
    e = ovirt_engine
    stuck = e.add_disk(locked_polls=None)   # locked forever
    fine = e.add_disk(locked_polls=4)       # unlocks while we wait for the stuck one
    ft = Clock(now=1000.0)
    caplog.set_level(logging.DEBUG)
    problems = ovirt_cleanup.remove_created_disks(ovirt_access, [stuck, fine], timeout=10,
                                              clock=ft, sleep=ft.sleep, poll=1.0)
    assert len(problems) == 1
    assert stuck in problems[0] and "locked" in problems[0] and "10 s" in problems[0]
    assert one_sentence(problems[0])
    assert stuck in e.disks and fine not in e.disks
    assert sum(ft.sleeps) == pytest.approx(10.0)
    assert len(e.calls("GET", "/ovirt-engine/api/disks/" + stuck)) == 11  # t=0..10
    assert not e.calls("DELETE", "/ovirt-engine/api/disks/" + stuck)
    errors = [r for r in caplog.records
              if r.name == "wrapper.ovirt.cleanup" and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == problems


@needs_sdk
def test_cleanup_time_bound_holds_with_the_real_clock(ovirt_engine, ovirt_access):
    disk = ovirt_engine.add_disk(locked_polls=None)
    start = time.monotonic()
    problems = ovirt_cleanup.remove_created_disks(ovirt_access, [disk], timeout=0.6, poll=0.1)
    elapsed = time.monotonic() - start
    assert len(problems) == 1 and disk in problems[0]
    print("gave up after %.2f s (timeout 0.6 s)" % elapsed)
    # the 0.6 s bound ended it, not the 300 s default (how close to 0.6 s depends on the machine)
    assert 0.6 <= elapsed < 60


@needs_sdk
def test_cleanup_ignores_what_is_not_a_disk_id(ovirt_engine, ovirt_access):
    disk = ovirt_engine.add_disk()
    problems = ovirt_cleanup.remove_created_disks(ovirt_access, ["../storagedomains", disk, disk])
    assert len(problems) == 1 and "not a disk id" in problems[0]
    assert ovirt_engine.disks == {}
    assert [r.path for r in ovirt_engine.calls("DELETE")] == ["/ovirt-engine/api/disks/" + disk]
    assert not [r for r in ovirt_engine.requests if "storagedomains" in r.path]


@needs_sdk
def test_cleanup_with_nothing_to_do_does_not_log_in(ovirt_engine, ovirt_access):
    assert ovirt_cleanup.remove_created_disks(ovirt_access, []) == []
    assert ovirt_engine.requests == []


# --------------------------------------------------------------------------
# Engine access failures: one clear sentence, no secret

@needs_sdk
def test_wrong_password(ovirt_engine, ovirt_pki):
    access = ovirt_api.access_from_url(ovirt_engine.api_url, "not-the-password",
                                       ovirt_pki.ca, False)
    with pytest.raises(JobError) as e:
        ovirt_api.check_target(access, "data", "Default", "vm1")
    msg = str(e.value)
    assert e.value.key == "rhv_password"
    assert "refused the login of admin@internal" in msg
    assert "username or password is incorrect" in msg
    assert one_sentence(msg) and "not-the-password" not in msg

    problems = ovirt_cleanup.remove_created_disks(access, [ovirt_engine.add_disk()])
    assert len(problems) == 1 and "refused the login" in problems[0]
    assert ovirt_engine.calls("DELETE") == []


@needs_sdk
def test_engine_unreachable(ovirt_pki):
    url = "https://127.0.0.1:%d/ovirt-engine/api" % closed_port()
    access = ovirt_api.access_from_url(url, "pw", ovirt_pki.ca, False)
    with pytest.raises(JobError) as e:
        ovirt_api.check_target(access, "data", "Default", "vm1")
    assert e.value.key == "rhv_url"
    assert str(e.value).startswith("rhv_url: cannot connect to the oVirt engine at " + url)
    assert one_sentence(str(e.value))
    problems = ovirt_cleanup.remove_created_disks(access, [str(uuid.uuid4())])
    assert len(problems) == 1 and "cannot connect" in problems[0]


@needs_sdk
def test_engine_that_never_answers_is_bounded(ovirt_pki):
    with socket.socket() as silent:  # accepts connections (backlog), never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = "https://127.0.0.1:%d/ovirt-engine/api" % silent.getsockname()[1]
        access = ovirt_api.access_from_url(url, "pw", ovirt_pki.ca, False)
        start = time.monotonic()
        with pytest.raises(JobError) as e:
            ovirt_api.check_target(access, "data", "Default", "vm1", timeout=1)
        assert time.monotonic() - start < 30            # the 1 s bound, not the 60 s default
        assert e.value.key == "rhv_url" and "did not answer" in str(e.value)
        problems = ovirt_cleanup.remove_created_disks(access, [str(uuid.uuid4())], timeout=1)
        assert len(problems) == 1 and "did not answer" in problems[0]
        assert time.monotonic() - start < 60           # both 1 s bounds, not the 60 s and 300 s defaults


@needs_sdk
def test_bad_ca(ovirt_engine, ovirt_pki):
    ovirt_engine.add_storage_domain("data", "iscsi")
    access = ovirt_api.access_from_url(ovirt_engine.api_url, ovirt_engine.password,
                                       ovirt_pki.other_ca, False)
    with pytest.raises(JobError) as e:
        ovirt_api.check_target(access, "data", "Default", "vm1")
    assert e.value.key == "rhv_cafile"
    assert "cannot be verified with the CA file %s" % ovirt_pki.other_ca in str(e.value)
    assert one_sentence(str(e.value))
    # The password never went to an engine whose certificate did not verify.
    assert ovirt_engine.requests == []


@needs_sdk
def test_missing_ca_file(ovirt_engine):
    access = ovirt_api.access_from_url(ovirt_engine.api_url, ovirt_engine.password,
                                       "/nonexistent/cacert.pem", False)
    with pytest.raises(JobError) as e:
        ovirt_api.check_target(access, "data", "Default", "vm1")
    assert str(e.value) == "rhv_cafile: the CA file /nonexistent/cacert.pem does not exist"


@needs_sdk
def test_insecure_connection_skips_verification(ovirt_engine, ovirt_pki):
    # insecure_connection=true (-oo rhv-verifypeer=false): the CA does not matter.
    dc = ovirt_engine.add_data_center("dc1")
    ovirt_engine.add_storage_domain("data", "fcp", data_center=dc)
    ovirt_engine.add_cluster("Default", dc)
    access = ovirt_api.access_from_url(ovirt_engine.api_url, ovirt_engine.password,
                                       ovirt_pki.other_ca, True)
    assert ovirt_api.check_target(access, "data", "Default", "vm1").allocation == "preallocated"


@needs_sdk
def test_password_and_token_never_logged(ovirt_pki, caplog):
    from tests.ovirt_standin.engine import StandinEngine

    marker = "Mark3r-%s" % uuid.uuid4().hex
    wrong = "Wr0ng-%s" % uuid.uuid4().hex
    caplog.set_level(logging.DEBUG)  # root: the SDK, pycurl, everything
    with StandinEngine(ovirt_pki, password=marker) as e:
        dc = e.add_data_center("dc1")
        e.add_storage_domain("data", "iscsi", data_center=dc)
        e.add_cluster("Default", dc)
        access = ovirt_api.access_from_url(e.api_url, marker, ovirt_pki.ca, False)
        disk = e.add_disk(locked_polls=1)
        e.add_transfer(disk)
        assert ovirt_api.check_target(access, "data", "Default", "vm1").allocation == "preallocated"
        assert ovirt_cleanup.remove_created_disks(access, [disk], poll=0.05) == []
        errors = []
        bad = ovirt_api.access_from_url(e.api_url, wrong, ovirt_pki.ca, False)
        with pytest.raises(JobError) as exc:
            ovirt_api.check_target(bad, "data", "Default", "vm1")
        errors.append(str(exc.value))
        errors += ovirt_cleanup.remove_created_disks(bad, [disk])
        tokens = e.tokens | e.revoked

    assert caplog.records, "something was logged at all"
    logged = caplog.text + "".join(errors)
    assert marker not in logged and wrong not in logged
    assert tokens and not any(t in logged for t in tokens)
    token_requests = [r for r in e.requests if r.path == "/ovirt-engine/sso/oauth/token"]
    assert any(marker in r.body for r in token_requests)  # it really was the password
    others = [r for r in e.requests if r not in token_requests]
    assert others and not any(marker in r.body or marker in str(r.headers) or
                              marker in r.path or marker in str(r.query) for r in others)
