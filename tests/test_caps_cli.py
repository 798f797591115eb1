"""The administrator's VDDK and appliance settings and what the installed
virt-v2v accepts, through the real CLI run as a program (docs/contract.md §2,
§3.4): the fake virt-v2v (tests/fake_virt_v2v.py) answers the probes with the
real answers of a release (tests/data/virt-v2v-<release>/caps/) and records
the argv it is started with, compared as an exact list."""
import json
import os
import pathlib

import pytest

from tests import wrapperrun as wr
from tests.fakes import data, make_fake_v2v

DATA = pathlib.Path(__file__).parent / "data"
FP = ":".join(["AB"] * 20)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="a root-owned file needs root")


def answers(release, drop_ovirt=False):
    def text(name):
        return (DATA / ("virt-v2v-%s" % release) / "caps" / name).read_text()
    mr = text("machine-readable.txt")
    if drop_ovirt:          # a 2.10+ build without the oVirt outputs does not print them
        mr = "".join(line for line in mr.splitlines(True) if not line.startswith("output:ovirt"))
    return {"capabilities": mr, "version": text("version.txt"), "help": text("help.txt"),
            "io": text("io-libvirt-esx-vddk.txt")}


@pytest.fixture
def dirs(tmp_path):
    return wr.WrapperDirs(tmp_path)


def fake(dirs, release="2.10", drop_ovirt=False):
    return make_fake_v2v(dirs.bin, record=os.path.join(dirs.root, "record.json"),
                         log=data("run05-vmx-ssh-port-uri.vx.log"),
                         mr=data("run05-vmx-ssh-port-uri.vx.mr.log"), duration=0.2,
                         **answers(release, drop_ovirt))


def vddk_job(dirs, **kw):
    job = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1?no_verify=1",
           "vmware_password": "pw", "vmware_fingerprint": FP, "output_dir": dirs.out, "daemonize": False}
    job.update(kw)
    return job


def recorded(dirs):
    with open(os.path.join(dirs.root, "record.json")) as f:
        return json.load(f)


def vddk_config(dirs, text="VixDiskLib.nfcAio.Session.BufSizeIn64KB = 16\n"
                           "# Forklift's pair\nVixDiskLib.nfcAio.Session.BufCount=4\n", mode=0o644):
    path = os.path.join(dirs.root, "vddk.conf")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def assert_refused(r, dirs, *words):
    """Exit 1, one line naming ``words``, virt-v2v never started, no state file."""
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    for w in words:
        assert w in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(dirs.root, "record.json"))
    assert [n for n in os.listdir(dirs.state) if not n.endswith(".log")] == []


@as_root
def test_settings_reach_virt_v2v_2_10_as_options(dirs):
    conf = vddk_config(dirs)
    r = wr.run(dirs.args(fake(dirs)) + [
        "--vddk-libdir", "/srv/vddk", "--vddk-transports", "nbdssl:nbd", "--vddk-config", conf,
        "--vddk-compression", "zlib", "--appliance-memsize", "2048",
        "--parallel", "1"],          # parallel copies: tests/test_parallel_run.py
        vddk_job(dirs, throttling={"cpu": "150%"}))
    assert r.returncode == 0, r.stderr
    rec = recorded(dirs)
    copy = next(a.split("=", 1)[1] for a in rec["argv"] if a.startswith("vddk-config="))
    password = rec["argv"][rec["argv"].index("-ip") + 1]
    assert os.path.dirname(copy) == os.path.dirname(password) != os.path.dirname(conf)
    assert rec["argv"] == [
        "-v", "-x", "--machine-readable=file:/dev/fd/3", "--root", "first",
        "-i", "libvirt", "-ic", "esx://root@127.0.0.1?no_verify=1", "-it", "vddk",
        "-io", "vddk-libdir=/srv/vddk", "-io", "vddk-thumbprint=" + FP,
        "-io", "vddk-transports=nbdssl:nbd", "-io", "vddk-config=" + copy,
        "-io", "vddk-compression=zlib", "-ip", password,
        "-o", "disk", "-os", dirs.out, "-of", "raw", "--bandwidth-file", rec["argv"][-6],
        "--smp", "2", "--memsize", "2048", "testvm"]
    # virt-v2v reads the checked text from the private directory, gone afterwards
    assert rec["files"][copy]["content"] == ("VixDiskLib.nfcAio.Session.BufCount=4\n"
                                             "VixDiskLib.nfcAio.Session.BufSizeIn64KB=16\n")
    assert not os.path.exists(copy)


def test_settings_from_the_environment_on_2_2_keep_the_old_names(dirs):
    env = wr.env(VIRT_V2V_WRAPPER_VDDK_LIBDIR="/srv/vddk2", VIRT_V2V_WRAPPER_VDDK_TRANSPORTS="nbd")
    r = wr.run(dirs.args(fake(dirs, "2.2")), vddk_job(dirs, throttling={"cpu": "150%"}), env=env)
    assert r.returncode == 0, r.stderr
    argv = recorded(dirs)["argv"]
    assert argv[5:17] == ["-i", "libvirt", "-ic", "esx://root@127.0.0.1?no_verify=1", "-it", "vddk",
                          "-io", "vddk-libdir=/srv/vddk2", "-io", "vddk-thumbprint=" + FP,
                          "-io", "vddk-transports=nbd"]
    assert argv[19:23] == ["-o", "local", "-os", dirs.out]
    assert "--smp" not in argv and "--memsize" not in argv


def test_the_default_libdir_and_the_option_wins_over_the_environment(dirs):
    r = wr.run(dirs.args(fake(dirs, "2.6")), vddk_job(dirs))
    assert r.returncode == 0, r.stderr
    assert "vddk-libdir=/opt/vmware-vix-disklib-distrib" in recorded(dirs)["argv"]
    os.unlink(os.path.join(dirs.root, "record.json"))
    r = wr.run(dirs.args(fake(dirs, "2.6")) + ["--vddk-libdir", "/a"], vddk_job(dirs),
               env=wr.env(VIRT_V2V_WRAPPER_VDDK_LIBDIR="/b"))
    assert r.returncode == 0, r.stderr
    assert "vddk-libdir=/a" in recorded(dirs)["argv"]


@pytest.mark.parametrize("args, words", [
    (["--vddk-transports", "nbd:tcp"], "--vddk-transports (VIRT_V2V_WRAPPER_VDDK_TRANSPORTS) must be modes"),
    (["--vddk-transports", "nbd:nbd"], "each once"),
    (["--vddk-transports", ""], "--vddk-transports"),
    (["--vddk-compression", "gzip"], "--vddk-compression (VIRT_V2V_WRAPPER_VDDK_COMPRESSION) must be one of"),
    (["--appliance-memsize", "12"], "--appliance-memsize (VIRT_V2V_WRAPPER_APPLIANCE_MEMSIZE) must be a whole"),
    (["--appliance-memsize", "2G"], "from 256 to 1048576"),
    (["--vddk-libdir", "/opt/x\ny"], "no control character"),
])
def test_a_bad_setting_is_one_line_and_nothing_starts(dirs, args, words):
    r = wr.run(dirs.args(fake(dirs)) + args, vddk_job(dirs))
    assert_refused(r, dirs, words)


def test_a_bad_setting_from_the_environment_is_named(dirs):
    r = wr.run(dirs.args(fake(dirs)), vddk_job(dirs), env=wr.env(VIRT_V2V_WRAPPER_APPLIANCE_MEMSIZE="-1"))
    assert_refused(r, dirs, "VIRT_V2V_WRAPPER_APPLIANCE_MEMSIZE", "'-1'")


@pytest.mark.parametrize("text, mode, words", [
    ("VixDiskLib.nfcAio.Session.BufCount=4\n", 0o664, "must not be writable by group or others (mode 0664)"),
    ("VixDiskLib.nfcAio.Session.BufCount=4\n", 0o646, "mode 0646"),
    ("tempDirectory=/tmp\n", 0o644, "line 1 is not one of"),
    ("VixDiskLib.nfcAio.Session.BufSizeIn64KB=17\n", 0o644, "must be a whole number from 1 to 16"),
    ("VixDiskLib.nfcAio.Session.BufCount=4\nVixDiskLib.nfcAio.Session.BufCount=8\n", 0o644, "set twice"),
    ("# nothing\n", 0o644, "sets none of"),
])
def test_a_bad_vddk_config_refuses_the_vddk_job(dirs, text, mode, words):
    conf = vddk_config(dirs, text, mode)
    r = wr.run(dirs.args(fake(dirs)) + ["--vddk-config", conf], vddk_job(dirs))
    assert_refused(r, dirs, "--vddk-config: " + conf, words)


@as_root
def test_a_vddk_config_not_owned_by_root_or_a_link_is_refused(dirs):
    conf = vddk_config(dirs)
    os.chown(conf, 65534, 65534)
    r = wr.run(dirs.args(fake(dirs)) + ["--vddk-config", conf], vddk_job(dirs))
    assert_refused(r, dirs, "must be owned by root, not uid 65534")
    link = os.path.join(dirs.root, "link.conf")
    os.chown(conf, 0, 0)
    os.symlink(conf, link)
    r = wr.run(dirs.args(fake(dirs)) + ["--vddk-config", link], vddk_job(dirs))
    assert_refused(r, dirs, "cannot be opened")


def test_vddk_compression_on_2_6_is_refused_before_anything_starts(dirs):
    r = wr.run(dirs.args(fake(dirs, "2.6")) + ["--vddk-compression", "zlib"], vddk_job(dirs))
    assert_refused(r, dirs, "--vddk-compression: virt-v2v 2.6.0 does not take -io vddk-compression")


def test_a_build_without_ovirt_outputs_refuses_an_export_domain_job(dirs, tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    job = vddk_job(dirs, export_domain=str(export))
    del job["output_dir"]
    r = wr.run(dirs.args(fake(dirs, drop_ovirt=True)), job)
    assert_refused(r, dirs, "export_domain: virt-v2v 2.10.0 was built without the oVirt outputs")


def test_version_and_the_virt_v2v_check_say_what_it_enables(dirs):
    exe = fake(dirs, "2.10")
    r = wr.run(["--version", "--virt-v2v", exe], "")
    assert r.returncode == 0
    first, second = r.stdout.splitlines()
    assert first.startswith("virt-v2v-wrapper ")
    assert second == ("virt-v2v 2.10.0: bandwidth-file, mac, parallel, smp, memsize, vddk-compression, "
                      "outputs disk,ovirt,ovirt-upload")
    r = wr.run(["--checks"], "")
    assert "virt-v2v" in r.stdout.split()
    r = wr.run(["--check-virt-v2v", "--virt-v2v", exe], "")
    assert r.returncode == 0 and r.stdout == "virt-v2v: " + second + "\n"
    r = wr.run(["--check-virt-v2v", "--virt-v2v", os.path.join(dirs.root, "missing")], "")
    assert r.returncode == 1 and r.stderr.startswith("virt-v2v: virt-v2v: unavailable (cannot query")
    r = wr.run(["--version", "--virt-v2v", os.path.join(dirs.root, "missing")], "")
    assert r.returncode == 0 and r.stdout.splitlines()[1].startswith("virt-v2v: unavailable")


def test_the_virt_v2v_check_fails_for_a_setting_this_release_does_not_take(dirs):
    r = wr.run(["--check-virt-v2v", "--virt-v2v", fake(dirs, "2.6"), "--appliance-memsize", "4096"], "")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ("virt-v2v: virt-v2v 2.6.0: bandwidth-file, mac, outputs local,rhv,rhv-upload; "
                        "but --appliance-memsize: virt-v2v 2.6.0 does not take --memsize (its --help "
                        "does not list it; virt-v2v 2.10 added it): unset it or "
                        "VIRT_V2V_WRAPPER_APPLIANCE_MEMSIZE\n")
    r = wr.run(["--check-virt-v2v", "--virt-v2v", fake(dirs, "2.10"), "--vddk-transports", "x"], "")
    assert r.returncode == 1 and "but --vddk-transports (VIRT_V2V_WRAPPER_VDDK_TRANSPORTS)" in r.stderr
