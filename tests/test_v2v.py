import pytest

from wrapper import config as cfg, users, v2v
from wrapper.security.secrets import Secret

CAPS2 = v2v.parse_capabilities(open("tests/data/virt-v2v--machine-readable.txt").read())
CAPS1 = v2v.parse_capabilities("virt-v2v\nlibguestfs-rewrite\nvcenter-https\nxen-ssh\nvddk\n"
                               "colours-option\nvdsm-compat-option\nin-place\nio/oo\n"
                               "input:disk\ninput:vmx\noutput:rhv-upload\n")
PATHS = v2v.RunPaths(machine_readable_log="/log/mr.log", vmware_password_file="/s/vmware_password",
                     rhv_password_file="/s/rhv_password", ssh_auth_sock="/s/agent.sock")
FP = ":".join(["AB"] * 20)
VDDK = cfg.VddkSource("esx://root@10.2.0.20?no_verify=1", Secret("pw"), FP)
SSH = cfg.SshSource(None)
RHV = cfg.RhvUploadTarget("https://engine/ovirt-engine/api", Secret("pw"), "Default", "data",
                          "/ca.pem", False)


def config(source=VDDK, target=cfg.LocalTarget("/out"), **kw):
    name = "ssh://root@h/vmfs/volumes/ds/vm/vm.vmx" if source is SSH else "vm1"
    return cfg.Config(vm_name=name, source=source, target=target, **kw)


def test_capabilities():
    assert CAPS2.major == 2 and CAPS2.has("mac-option")
    assert CAPS1.major == 1 and not CAPS1.has("mac-option")


def test_vddk_to_local():
    assert v2v.build_command(config(), CAPS2, PATHS) == [
        "virt-v2v", "-v", "-x", "--machine-readable=file:/log/mr.log", "--root", "first",
        "-i", "libvirt", "-ic", "esx://root@10.2.0.20?no_verify=1", "-it", "vddk",
        "-io", "vddk-libdir=/opt/vmware-vix-disklib-distrib", "-io", "vddk-thumbprint=" + FP,
        "-ip", "/s/vmware_password",
        "-o", "local", "-os", "/out", "-of", "raw", "vm1"]


def test_ssh_to_export_domain_qcow2_sparse():
    c = config(SSH, cfg.ExportDomainTarget("nfs:/export"), output_format="qcow2", allocation="sparse")
    assert v2v.build_command(c, CAPS2, PATHS, virt_v2v="/usr/bin/virt-v2v") == [
        "/usr/bin/virt-v2v", "-v", "-x", "--machine-readable=file:/log/mr.log", "--root", "first",
        "-i", "vmx", "-it", "ssh",
        "-o", "rhv", "-os", "nfs:/export", "-of", "qcow2", "-oa", "sparse",
        "--bridge", "ovirtmgmt", "--network", "ovirtmgmt",
        "ssh://root@h/vmfs/volumes/ds/vm/vm.vmx"]


def test_rhv_upload_with_mappings_and_keys():
    c = config(target=RHV, network_mappings=(
        cfg.NetworkMapping("VM Network", "ovirtmgmt"),
        cfg.NetworkMapping("Prod", "prod", "00:11:22:33:44:55")))
    paths = v2v.RunPaths(machine_readable_log="/m", vmware_password_file="/s/v",
                         rhv_password_file="/s/r", luks_key_files=(("/dev/sda1", "/s/luks_key_0"),))
    argv = v2v.build_command(c, CAPS2, paths, allocation="preallocated")
    assert argv[argv.index("-o"):] == [
        "-o", "rhv-upload", "-oc", "https://engine/ovirt-engine/api", "-os", "data", "-op", "/s/r",
        "-oo", "rhv-cafile=/ca.pem", "-oo", "rhv-cluster=Default", "-oo", "rhv-direct",
        "-oo", "rhv-verifypeer=true", "-of", "raw", "-oa", "preallocated",
        "--bridge", "VM Network:ovirtmgmt", "--network", "VM Network:ovirtmgmt",
        "--mac", "00:11:22:33:44:55:bridge:prod",
        "--bridge", "ovirtmgmt", "--network", "ovirtmgmt",
        "--key", "/dev/sda1:file:/s/luks_key_0", "vm1"]


def test_insecure_rhv_upload_without_ca():
    target = cfg.RhvUploadTarget("https://e/ovirt-engine/api", Secret("p"), "C", "S", None, True)
    argv = v2v.build_command(config(target=target), CAPS2, PATHS)
    assert "rhv-verifypeer=false" in argv
    assert not any(a.startswith("rhv-cafile") for a in argv)


def test_mac_without_capability_falls_back_to_bridge():
    c = config(network_mappings=(cfg.NetworkMapping("a", "b", "00:11:22:33:44:55"),))
    argv = v2v.build_command(c, CAPS1, PATHS)
    assert "--mac" not in argv and argv[argv.index("--bridge") + 1] == "a:b"


def test_no_secret_on_the_command_line():
    argv = v2v.build_command(config(target=RHV), CAPS2, PATHS)
    assert "pw" not in argv and not any("pw" == a for a in argv)


def test_env_is_minimal_and_secret_free():
    user = users.RunUser(36, 36, "vdsm", "/var/lib/vdsm")
    environ = {"PATH": "/usr/bin", "HOME": "/root", "USER": "root", "XDG_RUNTIME_DIR": "/run/user/0",
               "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg", "SECRET": "x", "SUDO_USER": "a"}
    c = config(SSH, virtio_win="/iso/virtio-win.iso", install_drivers=True)
    env = v2v.build_env(c, environ, user, PATHS)
    assert env == {"LANG": "C", "LC_ALL": "C", "LIBGUESTFS_BACKEND": "direct", "PATH": "/usr/bin",
                   "HOME": "/var/lib/vdsm", "USER": "vdsm", "LOGNAME": "vdsm",
                   "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg", "VIRTIO_WIN": "/iso/virtio-win.iso",
                   "SSH_AUTH_SOCK": "/s/agent.sock"}


def test_probe_capabilities_errors():
    from wrapper.errors import ConversionError
    from tests.fakes import RecordingRunner
    runner = RecordingRunner({("virt-v2v",): (0, "not it\n", "")})
    with pytest.raises(ConversionError):
        v2v.probe_capabilities("virt-v2v", runner)
    runner = RecordingRunner({("virt-v2v",): (127, "", "No such file")})
    with pytest.raises(ConversionError) as e:
        v2v.probe_capabilities("virt-v2v", runner)
    assert "capabilities" in str(e.value)
