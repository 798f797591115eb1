"""``virt-v2v-wrapper inspect`` of a vddk job takes the conversion's VDDK code
paths (docs/contract.md §10): the administrator's VDDK tuning on the
inspector's command line, and the VDDK pre-flight (wrapper.vmware.preflight)
before anything is made, against the fakes of tests/test_vmware_preflight.py
(a fake vSphere over https, a fake nbdkit) and the fake inspector of
tests/test_inspect.py.  The real VDDK world's inspections are in
tests/integration/test_inspect_vddk.py.
"""
import json
import os

import pytest

from tests import wrapperrun as wr
from tests.fakes import make_fake_v2v
from tests.test_inspect import DISKS, GOOD, make_inspector, valid
from tests.fake_vsphere import FakeVSphere, make_certificate
from tests.test_vmware_preflight import PASSWORD, make_bin, make_libdir
from wrapper import inspector, v2vinfo
from wrapper.config import Config, LocalTarget, VddkSource
from wrapper.security.secrets import Secret
from wrapper.settings import resolve
from wrapper.v2v import RunPaths, Tuning

FP = ":".join(["AB"] * 20)
HELP_2_10 = ("Options:\n  -i <disk|libvirt>\n  -io <option[=value]>\n  --key <SELECTOR>\n"
             "  --memsize <mb>\n  --smp <vcpus>\n  -v, --verbose\n  -x\n")
IO_2_10 = ("Input options (-io) which can be used with -it vddk:\n\n  -io vddk-thumbprint=xx\n"
           "  -io vddk-config=FILE\n  -io vddk-libdir=LIBDIR\n  -io vddk-transports=MODE\n"
           "  -io vddk-compression=TYPE\n")
VDDK_CONF = "VixDiskLib.nfcAio.Session.BufSizeIn64KB = 16\nVixDiskLib.nfcAio.Session.BufCount = 4\n"


# ---------------------------------------------------------------- the command line (pure)

def test_command_gets_the_conversions_vddk_tuning_and_appliance():
    config = Config(vm_name="vm1", target=LocalTarget("/out"), throttling={"cpu": "150%"},
                    source=VddkSource("esx://root@10.2.0.20?no_verify=1", Secret("pw"), FP))
    paths = RunPaths(machine_readable_log="/dev/fd/7", vmware_password_file="/s/vmware_password",
                     vddk_config_file="/s/vddk_config")
    caps = v2vinfo.Capabilities(("virt-v2v",), options=frozenset(("--memsize", "--smp")))
    tuning = Tuning(vddk_libdir="/srv/vddk", vddk_transports="nbdssl:nbd",
                    vddk_compression="zlib", appliance_memsize=4096, host_cpus=4)
    assert inspector.build_command(config, paths, "/usr/bin/virt-v2v-inspector", "/dev/fd/8",
                                   caps=caps, tuning=tuning) == [
        "/usr/bin/virt-v2v-inspector", "-v", "-x", "--machine-readable=file:/dev/fd/7",
        "--root", "first", "-i", "libvirt", "-ic", "esx://root@10.2.0.20?no_verify=1",
        "-it", "vddk", "-io", "vddk-libdir=/srv/vddk", "-io", "vddk-thumbprint=" + FP,
        "-io", "vddk-transports=nbdssl:nbd", "-io", "vddk-config=/s/vddk_config",
        "-io", "vddk-compression=zlib", "-ip", "/s/vmware_password",
        "--smp", "2", "--memsize", "4096", "-O", "/dev/fd/8", "vm1"]
    # a release without --smp/--memsize (2.2) gets neither
    old = v2vinfo.Capabilities(("virt-v2v",), options=frozenset(("--key",)))
    argv = inspector.build_command(config, paths, "i", "/dev/fd/8", caps=old, tuning=tuning)
    assert "--memsize" not in argv and "--smp" not in argv


def test_tuning_of_the_settings_is_the_conversions():
    settings = resolve({"vddk_libdir": "/srv/vddk"}, {"VIRT_V2V_WRAPPER_VDDK_TRANSPORTS": "nbd"})
    tuning = Tuning.of(settings)
    assert (tuning.vddk_libdir, tuning.vddk_transports) == ("/srv/vddk", "nbd")


# ---------------------------------------------------------------- through the command

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_certificate(str(tmp_path_factory.mktemp("cert")))


@pytest.fixture
def server(tmp_path, cert):
    with FakeVSphere(str(tmp_path), vms={"testvm": "poweredOff", "busy": "poweredOn"},
                     password=PASSWORD, cert=cert) as vsphere:
        yield vsphere


@pytest.fixture
def fx(tmp_path):
    dirs = wr.WrapperDirs(tmp_path)
    make_bin(dirs.bin)                                   # the fake nbdkit
    dirs.libdir = make_libdir(str(tmp_path / "lib"))
    dirs.record = os.path.join(dirs.root, "record.json")
    make_inspector(dirs.bin, record=dirs.record, **GOOD)
    return dirs


def run_inspect(fx, vsphere, *args, preflight="on", v2v=None, **job):
    exe = v2v or make_fake_v2v(fx.bin)
    j = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": vsphere.uri(),
         "vmware_password": PASSWORD, "vmware_fingerprint": vsphere.fingerprint,
         "output_dir": fx.out, "source_disks": DISKS}
    j.update(job)
    env = wr.env(VIRT_V2V_WRAPPER_VDDK_PREFLIGHT=preflight,
                 PATH="%s:%s" % (fx.bin, os.environ.get("PATH", "/usr/bin:/bin")),
                 VIRT_V2V_WRAPPER_LOCK_DIR=os.path.join(fx.root, "lock"))
    p = wr.run(["inspect"] + fx.args(exe) + ["--vddk-libdir", fx.libdir] + list(args), j, env=env)
    doc = valid(json.loads(p.stdout)) if p.stdout else None
    assert PASSWORD not in p.stdout + p.stderr
    assert [n for n in os.listdir(fx.state) if n.startswith("v2v-wrapper-")] == []
    return p, doc


def entry(doc, name):
    found = [c for c in doc["preflight"] if c["check"] == name]
    return found[0] if found else None


def recorded(fx):
    with open(fx.record) as f:
        return json.load(f)


def test_preflight_passes_and_the_inspector_gets_the_libdir(fx, server):
    p, doc = run_inspect(fx, server)
    assert p.returncode == 0, p.stderr
    pre = entry(doc, "VDDK pre-flight")
    assert pre["passed"] and "VDDK 8" in pre["message"] and server.fingerprint in pre["message"]
    names = [c["check"] for c in doc["preflight"]]
    assert names.index("virt-v2v-inspector") < names.index("VDDK pre-flight") < names.index(
        "secret files")
    assert "Logout" in server.calls
    argv = recorded(fx)["argv"]
    assert argv[argv.index("-it"):argv.index("-ip")] == [
        "-it", "vddk", "-io", "vddk-libdir=%s" % fx.libdir,
        "-io", "vddk-thumbprint=%s" % server.fingerprint]


def test_wrong_fingerprint_is_refused_before_the_inspector(fx, server):
    p, doc = run_inspect(fx, server, vmware_fingerprint=FP)
    assert p.returncode == 1, p.stderr
    assert [pr["code"] for pr in doc["problems"]] == ["thumbprint_mismatch"]
    assert doc["problems"][0]["hint"] and "vmware_fingerprint" in doc["problems"][0]["message"]
    pre = doc["preflight"][-1]
    assert pre["check"] == "VDDK pre-flight" and pre["passed"] is False
    assert "Login" not in server.calls                   # the password was not sent
    assert not os.path.exists(fx.record)                 # the inspector never ran
    assert p.stderr.count("\n") == 1 and "(thumbprint_mismatch)" in p.stderr


def test_every_preflight_problem_is_a_problem_with_its_code(fx, server):
    p, doc = run_inspect(fx, server, "--vddk-libdir", os.path.join(fx.root, "no-vddk"),
                         vm_name="busy")
    assert p.returncode == 1
    assert [pr["code"] for pr in doc["problems"]] == ["vddk_library_missing", "vm_powered_on"]
    assert not os.path.exists(fx.record)


def test_preflight_off_is_not_run(fx, server):
    p, doc = run_inspect(fx, server, preflight="off", vmware_fingerprint=FP)
    assert p.returncode == 0, p.stderr
    assert entry(doc, "VDDK pre-flight") is None
    assert server.calls == []                             # nobody asked the VMware host
    assert os.path.exists(fx.record)


def test_a_bad_preflight_setting_is_a_problem(fx, server):
    p, doc = run_inspect(fx, server, preflight="maybe")
    assert p.returncode == 1
    assert "VIRT_V2V_WRAPPER_VDDK_PREFLIGHT" in doc["problems"][0]["message"]
    assert entry(doc, "VDDK pre-flight")["passed"] is False


def test_the_administrators_vddk_settings_reach_the_inspector(fx, server, tmp_path):
    conf = tmp_path / "vddk.conf"
    conf.write_text(VDDK_CONF)
    conf.chmod(0o644)
    exe = make_fake_v2v(fx.bin, help=HELP_2_10, io=IO_2_10, version="virt-v2v 2.10.0\n")
    p, doc = run_inspect(fx, server, "--vddk-transports", "nbdssl", "--vddk-config", str(conf),
                         "--vddk-compression", "zlib", "--appliance-memsize", "2048", v2v=exe)
    assert p.returncode == 0, p.stderr
    rec = recorded(fx)
    argv = rec["argv"]
    assert ["-io", "vddk-transports=nbdssl"] == argv[argv.index("vddk-transports=nbdssl") - 1:][:2]
    assert "-io" == argv[argv.index("vddk-compression=zlib") - 1]
    assert argv[argv.index("--memsize") + 1] == "2048"
    copy = [a.split("=", 1)[1] for a in argv if a.startswith("vddk-config=")]
    assert copy and copy[0] != str(conf) and "vddk-config" in rec["files"]
    assert "BufSizeIn64KB" in rec["files"]["vddk-config"]
    assert not os.path.exists(copy[0])                   # the private copy went with the rest


def test_a_setting_this_virt_v2v_does_not_take_is_refused(fx, server):
    p, doc = run_inspect(fx, server, "--vddk-compression", "zlib")     # the fake says 2.2
    assert p.returncode == 1
    assert entry(doc, "virt-v2v")["passed"] is False
    assert "vddk-compression" in doc["problems"][0]["message"]
    assert server.calls == [] and not os.path.exists(fx.record)


def test_a_tuning_setting_that_makes_no_sense_is_one_line(fx, server):
    p, doc = run_inspect(fx, server, "--vddk-transports", "carrier-pigeon")
    assert p.returncode == 1 and doc is None
    assert p.stderr.count("\n") == 1 and "--vddk-transports" in p.stderr
