"""The VDDK test world's pure parts (tests/integration/vddk/world.py, fx_vddk.with_libdir):
the datastore files the SOAP stand-in and the VDDK library read, and the wrapper command
that gives virt-v2v a stand-in libdir. Fast; the world itself is in
tests/integration/test_vddk_world.py."""

import pytest

from tests.integration import fx_vddk
from tests.integration.vddk import capture
from tests.integration.vddk import world as W


def test_disk_names_follow_vmware():
    assert W.disk_file_names("vm", 0) == ("vm.vmdk", "vm-flat.vmdk")
    assert W.disk_file_names("vm", 2) == ("vm_2.vmdk", "vm_2-flat.vmdk")
    assert W.datastore_path("vm", 1) == "[datastore1] vm/vm_1.vmdk"


def test_descriptor_names_its_flat_extent_in_sectors():
    text = W.vmdk_descriptor("vm-flat.vmdk", 64 * 1024 * 1024)
    assert text.startswith("# Disk DescriptorFile\n")
    assert 'RW 131072 FLAT "vm-flat.vmdk" 0' in text.splitlines()
    assert 'createType="monolithicFlat"' in text


def test_vmx_lists_each_disk_on_the_pvscsi_controller():
    text = W.vmx_text("vm", 2, uuid_byte=7)
    assert 'scsi0:0.fileName = "vm.vmdk"' in text
    assert 'scsi0:1.fileName = "vm_1.vmdk"' in text
    assert "scsi0:2" not in text
    assert 'scsi0.virtualDev = "pvscsi"' in text and "99 07" in text


def test_library_config_has_the_options_asked_for():
    text = W.library_config(password="pw", thumbprint="AA:BB", morefs=["vm-9", "vm-11"],
                            datastore_dir="/ds", fail_read=(10, 20), read_delay_us=5)
    lines = text.splitlines()
    assert lines[:5] == ["user root", "password pw", "thumbprint AA:BB", "server 127.0.0.1",
                         "datastore datastore1 /ds"]
    assert {"vm vm-9", "vm vm-11", "fail_read 10-20", "read_delay_us 5"} <= set(lines)
    assert "calllog" not in text
    plain = W.library_config(password="pw", thumbprint="x", morefs=[], datastore_dir="/d")
    assert "fail_read" not in plain and "read_delay_us" not in plain


def test_build_output_is_parsed():
    kv = W.parse_world("plugin=/p/x.so\nplugin_kind=real 1.42.3\nnoise\n")
    assert kv == {"plugin": "/p/x.so", "plugin_kind": "real 1.42.3"}


def test_with_libdir_uses_the_setting_when_the_wrapper_has_it(monkeypatch):
    monkeypatch.setattr(fx_vddk, "wrapper_has_libdir_setting", lambda: True)
    assert fx_vddk.with_libdir(["w", "-x"], "/l") == ["w", "-x", "--vddk-libdir", "/l"]
    assert fx_vddk.with_libdir(["w"], None)[-1].startswith("/nonexistent")


def test_with_libdir_binds_the_fixed_path_in_a_private_namespace(monkeypatch):
    monkeypatch.setattr(fx_vddk, "wrapper_has_libdir_setting", lambda: False)
    argv = fx_vddk.with_libdir(["w", "-x"], "/l")
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert argv[-3:] == ["/l", "w", "-x"]
    assert fx_vddk.FIXED_LIBDIR in argv[-4]
    assert fx_vddk.with_libdir(["w"], None)[-2] == ""      # no libdir: nothing bound


@pytest.mark.parametrize("line, kept", [
    ("[   0.1234] Opening the source", True),
    ("[   0.1234] pci 0000:00:01.0: reg 0x10", False),
    ("libguestfs: trace: v2v: launch", False),
    ("nbdkit: vddk[1]: error: VixDiskLib_Open: x: Unknown error", True),
    ("nbdkit: vddk[4]: debug: retry 2: original errno = 5", True),
    ("2026-12-06 19:58:11.164+0000: 13175: warning : esxVI_UserSession_Deserialize:7089 : x",
     False),
])
def test_capture_trims_appliance_noise_only(line, kept):
    assert (capture.trim(line) == line + "\n") is kept


@pytest.mark.parametrize("line", [
    "nbdkit: vddk[3]: debug: retry: pread count=2097152 offset=0",
    "nbdkit: debug: cow: config key=server, value=127.0.0.1",
    "nbdkit: file[2]: debug: file: pwrite count=65536",
])
def test_capture_drops_the_filter_chain_and_the_output_side(line):
    assert capture.trim(line) == "\n"
