"""``virt-v2v-wrapper inspect`` with a fake virt-v2v-inspector (docs/contract.md §10).

The fake (tests/fake_inspector.py) replays what the real virt-v2v-inspector 2.2
wrote for the fake ESXi host's guests (tests/data/inspector-2.2/): the XML
report, the verbose log lines the wrapper reads, the machine-readable log.
Pure parts are tested directly; the command runs for real (``python3 -m
wrapper inspect``) with the fake next to a fake virt-v2v.  The real inspector
is in tests/integration/test_inspect_real.py.
"""
import json
import os
import signal
import stat
import time
import types

import jsonschema
import pytest

import wrapper
from tests import wrapperrun as wr
from tests.fakes import data, make_fake_v2v
from wrapper import inspector, inspectreport as rep, procinfo
from wrapper.config import LocalTarget, SshSource, VddkSource, Config, RhvUploadTarget
from wrapper.inspection import classify
from wrapper.inspectreport import target_space
from wrapper.observe import history
from wrapper.security.secrets import Secret
from wrapper.settings import resolve
from wrapper.v2v import RunPaths

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "fake_inspector.py")
SCHEMA_PATH = os.path.join(os.path.dirname(wrapper.__file__), "schemas", "inspection.schema.json")
with open(SCHEMA_PATH) as _f:
    SCHEMA = jsonschema.Draft202012Validator(json.load(_f))
PASSWORD = "Vm-Pa55word-in-no-output"
FP = ":".join(["AB"] * 20)
REPORT = data("inspector-2.2/testvm2.xml")
GOOD = {"report": REPORT, "log": data("inspector-2.2/testvm2.log"),
        "mr": data("inspector-2.2/testvm2-mr.log")}
BROKEN = {"log": data("inspector-2.2/brokenvm.log"), "mr": data("inspector-2.2/brokenvm-mr.log"),
          "exit_code": 1}
DISKS = ["[datastore1] testvm2/testvm2.vmdk", "[datastore1] testvm2/testvm2_1.vmdk"]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def valid(doc):
    errors = sorted(e.message for e in SCHEMA.iter_errors(doc))
    assert errors == [], errors
    return doc


# ---------------------------------------------------------------- the report

def test_report_of_the_real_inspector():
    report = inspector.parse_report(read(REPORT))
    assert report.version == "2.2.0"
    assert [(d.index, d.virtual_size, d.allocated) for d in report.disks] == [
        (0, 536870912, 286916608), (1, 67108864, 15335424)]
    g = report.guest
    assert (g["os"], g["distro"], g["osinfo"], g["arch"], g["version"], g["product"]) == (
        "linux", "debian", "debian12", "x86_64", "12.15", "12.15")
    assert g["boot_order"] is None and g["firmware"] is None     # 2.2 reports neither


@pytest.mark.parametrize("data_, why", [
    (b"", "no report"),
    (b"<v2v-inspection>", "not XML"),
    (b"<other/>", "not a v2v-inspection"),
    (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><v2v-inspection/>', "DOCTYPE"),
    (b"<v2v-inspection>" + b" " * (inspector.MAX_REPORT) + b"</v2v-inspection>", "larger"),
])
def test_bad_reports_are_refused(data_, why):
    with pytest.raises(inspector.ReportError, match=why):
        inspector.parse_report(data_)


def test_report_numbers_and_texts_are_bounded():
    doc = (b"<v2v-inspection><disks><disk index='0'><virtual-size>99999999999999999999999"
           b"</virtual-size><allocated>-5</allocated></disk><disk index='x'/></disks>"
           b"<operatingsystem><name>" + "a\u202e".encode() * 500 + b"</name><major_version>1e9"
           b"</major_version></operatingsystem></v2v-inspection>")
    report = inspector.parse_report(doc)
    assert [(d.index, d.virtual_size, d.allocated) for d in report.disks] == [
        (0, None, None), (1, None, None)]
    assert len(report.guest["os"]) <= inspector.MAX_TEXT and "\u202e" not in report.guest["os"]
    assert report.guest["major_version"] is None and report.guest["version"] is None


def test_log_facts_of_the_real_inspector():
    sources, firmware = rep.log_facts(read(data("inspector-2.2/testvm2.log")))
    assert sources == {0: "/vmfs/volumes/datastore1/testvm2/testvm2-flat.vmdk",
                       1: "/vmfs/volumes/datastore1/testvm2/testvm2_1-flat.vmdk"}
    assert firmware == "bios"
    assert rep.log_facts(b"i_firmware = UEFI\n")[1] == "uefi"
    assert rep.log_facts(b"nothing\n") == ({}, None)


# ---------------------------------------------------------------- the command line

def _config(source, **kw):
    return Config(vm_name=kw.pop("vm_name", "vm1"), source=source,
                  target=LocalTarget("/out"), **kw)


def test_command_for_vddk_is_the_conversions_source():
    config = _config(VddkSource("esx://root@10.2.0.20?no_verify=1", Secret("pw"), FP),
                     luks_keys=(("/dev/sda1", Secret("k")),))
    paths = RunPaths(machine_readable_log="/dev/fd/7", vmware_password_file="/s/vmware_password",
                     luks_key_files=(("/dev/sda1", "/s/luks_key_0"),))
    assert inspector.build_command(config, paths, "/usr/bin/virt-v2v-inspector", "/dev/fd/8") == [
        "/usr/bin/virt-v2v-inspector", "-v", "-x", "--machine-readable=file:/dev/fd/7",
        "--root", "first", "-i", "libvirt", "-ic", "esx://root@10.2.0.20?no_verify=1",
        "-it", "vddk", "-io", "vddk-libdir=/opt/vmware-vix-disklib-distrib",
        "-io", "vddk-thumbprint=" + FP, "-ip", "/s/vmware_password",
        "--key", "/dev/sda1:file:/s/luks_key_0", "-O", "/dev/fd/8", "vm1"]


def test_command_for_ssh():
    uri = "ssh://root@10.2.0.20/vmfs/volumes/ds/vm/vm.vmx"
    argv = inspector.build_command(_config(SshSource(None), vm_name=uri),
                                   RunPaths(machine_readable_log="/dev/fd/7"), "i", "/dev/fd/8")
    assert argv[6:] == ["-i", "vmx", "-it", "ssh", "-O", "/dev/fd/8", uri]
    assert not any("-o" == a or a.startswith("-o") and a != "-O" for a in argv[1:])


def test_program_is_the_one_next_to_virt_v2v(tmp_path):
    (tmp_path / "virt-v2v").write_text("")
    sibling = tmp_path / "virt-v2v-inspector"
    sibling.write_text("")
    sibling.chmod(0o755)
    settings = resolve({"virt_v2v": str(tmp_path / "virt-v2v")}, {"PATH": "/nowhere"})
    assert inspector.program_path(settings) == str(sibling)
    chosen = resolve({}, {"VIRT_V2V_WRAPPER_INSPECTOR": "/x/insp", "PATH": "/nowhere"})
    assert inspector.program_path(chosen) == "/x/insp"
    assert inspector.program_path(resolve({}, {"PATH": "/nowhere"})) == "virt-v2v-inspector"


# ---------------------------------------------------------------- sizes, space, time

def test_disks_match_source_disks_and_sizes_follow_the_allocation():
    report = inspector.parse_report(read(REPORT))
    sources, _ = rep.log_facts(read(data("inspector-2.2/testvm2.log")))
    disks, unmatched = rep.match_disks(report.disks, sources, DISKS + ["[ds] other.vmdk"],
                                       None, "raw")
    assert [d["source_disk"] for d in disks] == DISKS and unmatched == ["[ds] other.vmdk"]
    assert [d["needed"] for d in disks] == [286916608, 15335424]
    pre, _ = rep.match_disks(report.disks, sources, DISKS, "preallocated", "raw")
    assert [d["needed"] for d in pre] == [536870912, 67108864]
    none, unmatched = rep.match_disks(report.disks, {}, DISKS, None, "raw")
    assert [d["source_disk"] for d in none] == [None, None] and unmatched == DISKS


class FakeBoundary:
    def __init__(self, free_blocks):
        self.free_blocks = free_blocks
        self.asked = []

    def statvfs_dir(self, path):
        self.asked.append(path)
        return types.SimpleNamespace(f_bavail=self.free_blocks, f_frsize=4096)


def test_target_space_local_and_rhv():
    small = target_space(LocalTarget("/out"), 10 * 4096, FakeBoundary(9), None)
    assert (small["free"], small["enough"], small["measured_by"]) == (9 * 4096, False, "statvfs")
    assert target_space(LocalTarget("/out"), 9 * 4096, FakeBoundary(9), None)["enough"] is True
    rhv = RhvUploadTarget("https://e/api", Secret("p"), "c", "data", None, True)
    facts = types.SimpleNamespace(available=100)
    assert target_space(rhv, 101, FakeBoundary(0), facts)["enough"] is False
    assert target_space(rhv, 1, FakeBoundary(0), types.SimpleNamespace(available=None))[
        "enough"] is None


def _state(tmp_path, name, **data_):
    path = tmp_path / ("v2v-import-%s.state" % name)
    path.write_text(json.dumps(data_))
    return str(path)


def _copy(copied, start, end):
    return {"bytes_copied": copied, "disks": [{"started_at": start, "finished_at": end}]}


def test_last_rate_is_the_newest_finished_copy_from_the_same_host(tmp_path):
    _state(tmp_path, "a", source_host="h1", finished=True, vm="old", copy=_copy(100, 0, 10))
    newest = _state(tmp_path, "b", source_host="h1", finished=True, vm="new",
                    copy=_copy(1000, 100, 110))
    _state(tmp_path, "c", source_host="h1", finished=True, failed=True, copy=_copy(9, 200, 210))
    _state(tmp_path, "d", source_host="h2", finished=True, copy=_copy(9, 300, 310))
    _state(tmp_path, "e", source_host="h1", copy=_copy(9, 400, 410))          # running
    os.symlink(newest, str(tmp_path / "v2v-import-f.state"))
    found = history.last_rate(str(tmp_path), "h1")
    assert (found.rate, found.vm, found.state_file) == (100.0, "new", newest)
    assert history.last_rate(str(tmp_path), "h3") is None
    assert history.last_rate(str(tmp_path / "missing"), "h1") is None
    estimate = rep.copy_estimate(found, 1050)
    assert (estimate["seconds"], estimate["rate"]) == (11, 100)
    assert rep.copy_estimate(None, 1050) is None


def test_last_rate_ignores_hostile_files(tmp_path):
    _state(tmp_path, "a", source_host="h1", finished=True,
           copy={"bytes_copied": 1e300, "disks": [{"started_at": "x", "finished_at": 5}]})
    (tmp_path / "v2v-import-b.state").write_text("[" * 10000)
    os.mkfifo(str(tmp_path / "v2v-import-c.state"))
    assert history.last_rate(str(tmp_path), "h1") is None


def test_problems_carry_the_catalogues_codes():
    problems = rep.Problems(classify)
    assert problems.exit_status() == rep.EXIT_WOULD_RUN
    problems.add("the target has 1 bytes free", "target_full")
    assert problems.items[0]["code"] == "target_full" and problems.items[0]["hint"]
    assert problems.exit_status() == rep.EXIT_REFUSED
    problems.add("inspection cancelled by SIGTERM", "cancelled", failed=True)
    assert problems.exit_status() == rep.EXIT_FAILED
    assert classify("no such code", "not-a-code")[0] == "conversion_failed"


# ---------------------------------------------------------------- the command, for real

@pytest.fixture
def fx(tmp_path):
    dirs = wr.WrapperDirs(tmp_path)
    dirs.v2v = make_fake_v2v(dirs.bin)
    return dirs


def make_inspector(directory, python=None, **scenario):
    import shutil
    import sys
    path = os.path.join(directory, "inspector-scenario.json")
    with open(path, "w") as f:
        json.dump(scenario, f)
    shutil.copyfile(FAKE, os.path.join(directory, "fake_inspector.py"))
    exe = os.path.join(directory, "virt-v2v-inspector")
    with open(exe, "w") as f:
        f.write("#!/bin/sh\nexec %s %s --scenario %s \"$@\"\n" % (
            python or sys.executable, os.path.join(directory, "fake_inspector.py"), path))
    os.chmod(exe, os.stat(exe).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def vddk_job(fx, **extra):
    return dict({"vm_name": "testvm2", "transport_method": "vddk",
                 "vmware_uri": "esx://root@10.2.0.20?no_verify=1", "vmware_password": PASSWORD,
                 "vmware_fingerprint": FP, "output_dir": fx.out, "source_disks": DISKS}, **extra)


def inspect(fx, job, *args, **kw):
    return wr.run(["inspect"] + fx.args(fx.v2v) + list(args), job, **kw)


def leftovers(fx):
    return sorted(n for n in os.listdir(fx.state) if n.startswith("v2v-wrapper-"))


def test_a_job_that_would_run(fx):
    record = os.path.join(fx.root, "record.json")
    make_inspector(fx.bin, record=record, **GOOD)
    p = inspect(fx, vddk_job(fx))
    assert p.returncode == 0, p.stderr
    doc = valid(json.loads(p.stdout))
    assert p.stdout.count("\n") == 1 and p.stderr == ""
    assert doc["would_run"] and doc["problems"] == [] and doc["warnings"] == []
    assert [c["check"] for c in doc["preflight"]] == [
        "state directory", "job", "run-as user", "output directory", "virt-v2v", "virt-v2v-inspector",
        "secret files", "inspection"]
    assert all(c["passed"] for c in doc["preflight"])
    assert doc["guest"]["distro"] == "debian" and doc["guest"]["firmware"] == "bios"
    assert [d["virtual_size"] for d in doc["disks"]] == [536870912, 67108864]
    assert doc["target"]["enough"] is True and doc["target"]["needed"] == 286916608 + 15335424
    assert doc["job"]["source_host"] == "10.2.0.20" and doc["copy_estimate"] is None
    rec = json.loads(read(record))
    assert rec["files"]["-ip"] == PASSWORD                   # the password reached it, as a file
    assert PASSWORD not in json.dumps(rec["argv"]) + json.dumps(rec["env"])
    assert rec["argv"][rec["argv"].index("-O") + 1].startswith("/dev/fd/")
    assert PASSWORD not in p.stdout + p.stderr
    assert leftovers(fx) == [] and os.listdir(fx.logs) == []


def test_estimate_from_the_last_conversion_of_the_same_host(fx):
    make_inspector(fx.bin, **GOOD)
    earlier = _state(__import__("pathlib").Path(fx.state), "20260101T000000-000000000000",
                     source_host="10.2.0.20", finished=True, vm="web01",
                     copy=_copy(60 << 20, 1000.0, 1060.0))
    doc = valid(json.loads(inspect(fx, vddk_job(fx)).stdout))
    assert doc["copy_estimate"]["measured_from"]["state_file"] == earlier
    assert doc["copy_estimate"]["rate"] == 1 << 20
    assert doc["copy_estimate"]["seconds"] == (536870912 + 67108864) // (1 << 20)


def test_a_missing_flat_disk_would_be_refused(fx):
    make_inspector(fx.bin, **BROKEN)
    p = inspect(fx, vddk_job(fx))
    assert p.returncode == 1
    doc = valid(json.loads(p.stdout))
    assert [pr["code"] for pr in doc["problems"]] == ["flat_disk_missing"]
    assert doc["preflight"][-1] == dict(doc["preflight"][-1], check="inspection", passed=False)
    assert doc["guest"] is None and doc["disks"] is None
    assert "flat_disk_missing" in p.stderr and len(p.stderr.splitlines()) == 1
    assert leftovers(fx) == []


def test_an_unknown_inspector_failure_is_a_failed_inspection(fx):
    make_inspector(fx.bin, exit_code=3)
    p = inspect(fx, vddk_job(fx))
    assert p.returncode == 2
    doc = valid(json.loads(p.stdout))
    assert doc["problems"][0]["code"] == "conversion_failed"
    assert "status 3" in doc["problems"][0]["message"]


def test_an_unreadable_report_is_a_failed_inspection(fx, tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<html/>")
    make_inspector(fx.bin, report=str(bad))
    p = inspect(fx, vddk_job(fx))
    assert p.returncode == 2 and json.loads(p.stdout)["problems"][0]["code"] == "internal_error"


@pytest.mark.parametrize("job, key", [
    ("not json", "job"),
    ({"vm_name": "x", "transport_method": "vddk"}, "vmware_uri"),
])
def test_a_bad_job_would_be_refused_and_nothing_runs(fx, job, key):
    record = os.path.join(fx.root, "record.json")
    make_inspector(fx.bin, record=record, **GOOD)
    p = inspect(fx, job)
    assert p.returncode == 1
    doc = valid(json.loads(p.stdout))
    assert doc["problems"][0]["code"] == "job_refused" and key in doc["problems"][0]["message"]
    assert not os.path.exists(record) and leftovers(fx) == []
    assert len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr


def test_an_output_dir_that_is_not_there_is_refused(fx):
    make_inspector(fx.bin, **GOOD)
    p = inspect(fx, vddk_job(fx, output_dir=os.path.join(fx.root, "nope")))
    assert p.returncode == 1 and "output_dir" in json.loads(p.stdout)["problems"][0]["message"]


def test_no_inspector_is_refused(fx):
    p = inspect(fx, vddk_job(fx), env=wr.env(VIRT_V2V_WRAPPER_INSPECTOR="/nonexistent/insp"))
    assert p.returncode == 1
    doc = valid(json.loads(p.stdout))
    assert doc["preflight"][-1]["check"] == "virt-v2v-inspector" and not doc["preflight"][-1]["passed"]


def test_usage_errors(fx):
    assert inspect(fx, vddk_job(fx), "--timeout", "0").returncode == 1
    p = inspect(fx, vddk_job(fx), "--bogus")
    assert p.returncode == 1 and p.stdout == "" and "--bogus" in p.stderr


def _wait_pids(path, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            text = read(path).decode().split()
            if len(text) == 2:
                return [int(x) for x in text]
        time.sleep(0.05)
    raise AssertionError("the fake inspector never started")


def _gone(pids, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(procinfo.running(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def _finish(p, timeout=60):
    p.wait(timeout)
    return p.stdout.read(), p.stderr.read()


def test_timeout_stops_the_inspector_and_its_group(fx):
    pid_file = os.path.join(fx.root, "pids")
    make_inspector(fx.bin, hold=60, pid_file=pid_file, **GOOD)
    p = wr.start(["inspect", "--timeout", "1"] + fx.args(fx.v2v), vddk_job(fx))
    pids = _wait_pids(pid_file)
    out, err = _finish(p)
    assert p.returncode == 2
    doc = valid(json.loads(out))
    assert doc["inspector"]["timed_out"] is True and "within 1 s" in doc["problems"][0]["message"]
    assert _gone(pids) and leftovers(fx) == []


def test_sigterm_cancels_cleanly(fx):
    pid_file = os.path.join(fx.root, "pids")
    make_inspector(fx.bin, hold=60, pid_file=pid_file, **GOOD)
    p = wr.start(["inspect"] + fx.args(fx.v2v), vddk_job(fx))
    pids = _wait_pids(pid_file)
    assert leftovers(fx) != []               # the secret and work directories exist meanwhile
    p.send_signal(signal.SIGTERM)
    out, err = _finish(p)
    assert p.returncode == 2
    doc = valid(json.loads(out))
    assert [pr["code"] for pr in doc["problems"]] == ["cancelled"]
    assert _gone(pids) and leftovers(fx) == []
    assert PASSWORD not in out + err


def test_the_state_directory_is_made_as_for_a_conversion(fx):
    make_inspector(fx.bin, **GOOD)
    os.rmdir(fx.state)
    p = inspect(fx, vddk_job(fx))
    assert p.returncode == 0, p.stdout
    assert stat.S_IMODE(os.stat(fx.state).st_mode) == 0o755 and os.listdir(fx.state) == []
    os.chmod(fx.state, 0o777)                      # writable by all, not sticky: refused
    try:
        doc = json.loads(inspect(fx, vddk_job(fx)).stdout)
    finally:
        os.chmod(fx.state, 0o755)
    assert doc["preflight"][0]["check"] == "state directory" and not doc["preflight"][0]["passed"]
    assert doc["exit_status"] == 1


def test_sigkill_leftovers_are_reclaimed_by_the_next_status(fx, tmp_path):
    """Killed outright, the inspection leaves its secret directory (the report's files and
    the password file) and its inspector: its lease lets ``status`` as root reclaim both."""
    if os.geteuid() != 0:
        pytest.skip("leases are root's")
    lock = tmp_path / "lock"
    os.chmod(str(tmp_path), 0o755)
    env = wr.env(VIRT_V2V_WRAPPER_LOCK_DIR=str(lock))
    pid_file = os.path.join(fx.root, "pids")
    make_inspector(fx.bin, hold=60, pid_file=pid_file, **GOOD)
    p = wr.start(["inspect"] + fx.args(fx.v2v), vddk_job(fx), env=env)
    pids = _wait_pids(pid_file)
    assert [n for n in leftovers(fx) if n.startswith("v2v-wrapper-secrets-")]
    assert any(n.startswith("inspect-") and n.endswith(".lease") for n in os.listdir(lock / "jobs"))
    p.kill()
    p.wait(30)
    status = wr.run(["status", "--state-dir", fx.state], "", env=env)
    assert status.returncode == 0, status.stderr
    assert _gone(pids) and leftovers(fx) == []
    assert os.listdir(lock / "jobs") == []


# ---------------------------------------------------------------- rhv_url: the stand-in engine

def rhv_job(fx, engine, pki, **kw):
    job = vddk_job(fx, **dict({"rhv_url": engine.api_url, "rhv_password": engine.password,
                               "rhv_cluster": "Default", "rhv_storage": "data",
                               "rhv_cafile": pki.ca}, **kw))
    del job["output_dir"]
    return job


def rhv_inspect(fx, job):
    from tests.fakes import rhv_upload_path
    return wr.run(["inspect"] + fx.args(fx.v2v), job, env=wr.env(PATH=rhv_upload_path(fx.bin)))


@pytest.mark.parametrize("available, status", [(10 << 30, 0), (1000, 1)])
def test_rhv_storage_domain_space_from_the_engine(fx, ovirt_engine, ovirt_pki, available, status):
    pytest.importorskip("ovirtsdk4")
    dc = ovirt_engine.add_data_center("dc1")
    ovirt_engine.add_cluster("Default", dc)
    ovirt_engine.add_storage_domain("data", "iscsi", data_center=dc).available = available
    make_inspector(fx.bin, **GOOD)
    p = rhv_inspect(fx, rhv_job(fx, ovirt_engine, ovirt_pki))
    assert p.returncode == status, p.stdout
    doc = valid(json.loads(p.stdout))
    assert "oVirt pre-flight" in [c["check"] for c in doc["preflight"] if c["passed"]]
    t = doc["target"]
    assert (t["kind"], t["free"], t["measured_by"]) == ("rhv-upload", available, "ovirt-api")
    # iscsi: preallocated, so the disks need their virtual size
    assert t["needed"] == 536870912 + 67108864
    assert [pr["code"] for pr in doc["problems"]] == ([] if status == 0 else ["target_full"])
    assert ovirt_engine.password not in p.stdout + p.stderr and leftovers(fx) == []


def test_rhv_engine_login_refused(fx, ovirt_engine, ovirt_pki):
    pytest.importorskip("ovirtsdk4")
    dc = ovirt_engine.add_data_center("dc1")
    ovirt_engine.add_cluster("Default", dc)
    ovirt_engine.add_storage_domain("data", "nfs", data_center=dc)
    record = os.path.join(fx.root, "record.json")
    make_inspector(fx.bin, record=record, **GOOD)
    p = rhv_inspect(fx, rhv_job(fx, ovirt_engine, ovirt_pki, rhv_password="Wrong-pa55"))
    assert p.returncode == 1
    doc = valid(json.loads(p.stdout))
    assert doc["preflight"][-1]["check"] == "oVirt pre-flight" and not doc["preflight"][-1]["passed"]
    assert [pr["code"] for pr in doc["problems"]] == ["engine_login_refused"]
    assert not os.path.exists(record) and "Wrong-pa55" not in p.stdout + p.stderr
