"""The VDDK test world itself (tests/integration/vddk/), checked in seconds.

Through nbdkit's real vddk plugin (Debian 13's, unpacked) and the file-backed VDDK
library: a disk named the VMware way reads back byte for byte, and the library refuses a
wrong password, thumbprint, VM or file the way the plugin reports VDDK errors. Through
real virt-v2v: the SOAP stand-in answers libvirt's ESX driver in ESXi and vCenter form
(an unknown VM is "not found", a powered-on VM "running"). ~10 s in all.
"""
import filecmp
import os
import subprocess

import pytest

from tests.integration.fx_vddk import vddk_path
from tests.integration.vddk import world as W

pytestmark = pytest.mark.integration


def nbdkit_vddk(world, sim, vm, disk, run, *, password_file=None, thumbprint=None,
                moref=None, timeout=120, wrapper_dir=None):
    argv = ["nbdkit", "-U", "-", "-r", "vddk", "server=127.0.0.1", "user=root",
            "password=+%s" % (password_file or sim.password_file),
            "thumbprint=%s" % (thumbprint or sim.thumbprint), "libdir=%s" % sim.libdir,
            "vm=moref=%s" % (moref or sim.morefs[vm]), "file=%s" % disk, "--run", run]
    env = dict(os.environ, PATH="%s:%s" % (wrapper_dir or world.wrapper_dir, os.environ["PATH"]),
               LANG="C")
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def virt_v2v_probe(world, sim, uri, vm):
    """virt-v2v up to the point where libvirt has looked the VM up (-o null)."""
    env = dict(os.environ, PATH=vddk_path(world), LANG="C", LIBGUESTFS_BACKEND="direct")
    argv = ["virt-v2v", "-i", "libvirt", "-ic", uri, "-it", "vddk",
            "-io", "vddk-libdir=%s" % sim.libdir, "-io", "vddk-thumbprint=%s" % sim.thumbprint,
            "-ip", str(sim.password_file), vm, "-o", "null"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def test_two_disk_vm_reads_back_identical_through_the_real_plugin(vddk_plugin, vddk_standin,
                                                                  tmp_path):
    sim = vddk_standin(calllog=True)
    data = sim.vms["testvm2"][1]
    out = tmp_path / "copy.img"
    r = nbdkit_vddk(vddk_plugin, sim, "testvm2", W.datastore_path("testvm2", 1),
                    "nbdcopy $uri %s" % out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert filecmp.cmp(str(out), str(data), shallow=False)
    calls = sim.calllog_path.read_text()
    assert "Open [datastore1] testvm2/testvm2_1.vmdk flags=4 -> 0" in calls
    assert "InitEx 6.5 libdir=%s" % sim.libdir in calls


def test_the_fallback_stand_in_plugin_reads_back_identical(vddk_plugin, vddk_standin, tmp_path):
    """The plugin the tests fall back to where the real one cannot be had works too."""
    sim = vddk_standin()
    out = tmp_path / "copy.img"
    r = nbdkit_vddk(vddk_plugin, sim, "testvm2", W.datastore_path("testvm2", 1),
                    "nbdcopy $uri %s" % out, wrapper_dir=vddk_plugin.standin_wrapper_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert filecmp.cmp(str(out), str(sim.vms["testvm2"][1]), shallow=False)
    r = nbdkit_vddk(vddk_plugin, sim, "testvm", W.datastore_path("testvm", 0),
                    "nbdinfo --size $uri", thumbprint=":".join(["AA"] * 20),
                    wrapper_dir=vddk_plugin.standin_wrapper_dir)
    assert r.returncode != 0 and "VixDiskLib_Open: [datastore1] testvm/testvm.vmdk: " \
        "Unknown error" in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("case, words", [
    ("password", "Cannot connect to host"),
    ("thumbprint", "Unknown error"),
    ("moref", "One of the parameters was invalid"),
    ("file", "The file was not found"),
])
def test_library_refuses_like_vddk(vddk_plugin, vddk_standin, tmp_path, case, words):
    sim = vddk_standin()
    kw = {}
    disk = W.datastore_path("testvm", 0)
    if case == "password":
        bad = tmp_path / "pw"
        bad.write_text("not-the-password")
        kw["password_file"] = bad
    elif case == "thumbprint":
        kw["thumbprint"] = ":".join(["AA"] * 20)
    elif case == "moref":
        kw["moref"] = "vm-999"
    else:
        disk = "[datastore1] testvm/missing.vmdk"
    r = nbdkit_vddk(vddk_plugin, sim, "testvm", disk, "nbdinfo --size $uri", **kw)
    assert r.returncode != 0
    assert "VixDiskLib_Open: %s: %s" % (disk, words) in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("vpx", [False, True], ids=["esx", "vpx"])
def test_soap_standin_answers_libvirt(vddk_plugin, vddk_standin, vpx):
    sim = vddk_standin(vpx=vpx, powered_on=["testvm2"])
    uri = sim.vpx_uri() if vpx else sim.esx_uri()
    r = virt_v2v_probe(vddk_plugin, sim, uri, "novm")
    assert r.returncode == 1
    assert "Could not find domain with name 'novm'" in r.stderr, r.stderr[-2000:]
    r = virt_v2v_probe(vddk_plugin, sim, uri, "testvm2")
    assert r.returncode == 1
    assert "is running or paused" in r.stderr, r.stderr[-2000:]


def test_soap_standin_refuses_a_wrong_password(vddk_plugin, vddk_standin):
    sim = vddk_standin()
    sim.password_file.write_text("wrong-password")
    r = virt_v2v_probe(vddk_plugin, sim, sim.esx_uri(), "testvm")
    assert r.returncode == 1
    assert "Cannot complete login due to an incorrect user name or password" in r.stderr
