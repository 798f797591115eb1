import json
import os

import pytest

from wrapper import config as cfg
from wrapper.errors import JobError
from wrapper.secrets import Secret
from wrapper.settings import Settings

FP = ":".join(["AB"] * 20)


@pytest.fixture
def settings(tmp_path):
    return Settings(state_dir=str(tmp_path), iso_domain_root=str(tmp_path / "mnt"),
                    vdsm_ca=str(tmp_path / "ca.pem"), environ={"HOME": str(tmp_path / "home")})


def vddk_job(tmp_path, **extra):
    job = {"vm_name": "vm1", "transport_method": "vddk", "vmware_uri": "esx://root@10.2.0.20?no_verify=1",
           "vmware_password": "pw", "vmware_fingerprint": FP, "output_dir": str(tmp_path)}
    job.update(extra)
    return job


def ssh_job(tmp_path, **extra):
    job = {"vm_name": "ssh://root@127.0.0.1:2222/vmfs/volumes/ds/vm/vm.vmx", "transport_method": "ssh",
           "output_dir": str(tmp_path)}
    job.update(extra)
    return job


def problem(job, settings):
    with pytest.raises(JobError) as e:
        cfg.parse_job(job, settings)
    return e.value


def test_minimal_vddk_job(tmp_path, settings):
    c = cfg.parse_job(vddk_job(tmp_path), settings)
    assert c.vm_name == "vm1"
    assert isinstance(c.source, cfg.VddkSource)
    assert c.source.password == Secret("pw")
    assert str(c.source.password) == "******"
    assert c.target == cfg.LocalTarget(str(tmp_path))
    assert c.output_format == "raw" and c.allocation is None and c.daemonize is True


def test_ssh_job_with_key(tmp_path, settings):
    c = cfg.parse_job(ssh_job(tmp_path, ssh_key="KEY"), settings)
    assert c.source.key.reveal() == "KEY"
    assert "KEY" not in repr(c)


@pytest.mark.parametrize("key,value,words", [
    ("daemonize", "no", "true or false"),
    ("daemonize", 0, "true or false"),
    ("install_drivers", "yes", "true or false"),
    ("vm_name", 5, "a string"),
    ("output_format", "vmdk", "one of raw, qcow2"),
    ("allocation", "thin", "one of preallocated, sparse"),
    ("source_disks", "[ds] a.vmdk", "an array"),
    ("source_disks", ["ok", 3], "array of strings"),
    ("network_mappings", {"source": "a"}, "an array"),
    ("network_mappings", [{"source": "a"}], "source and destination"),
    ("network_mappings", ["x"], "an object"),
    ("network_mappings", [{"source": "a", "destination": "b", "mac_address": "zz"}], "mac_address"),
    ("throttling", "fast", "an object"),
    ("throttling", {"cpu": "lots"}, "percentage"),
    ("throttling", {"network": "-5"}, "bytes per second"),
    ("vmware_fingerprint", "not-a-fingerprint", "hex pairs"),
    ("vmware_uri", "10.2.0.20", "libvirt URI"),
    ("transport_method", "nfs", "one of vddk, ssh"),
    ("virtio_win", "/nonexistent/virtio-win.iso", "does not exist"),
    ("virtio_win", "virtio-win.iso", "not found in an ISO domain"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, settings, key, value, words):
    e = problem(vddk_job(tmp_path, **{key: value}), settings)
    assert e.key.startswith(key) if e.key else False
    assert words in e.message


@pytest.mark.parametrize("missing", ["vm_name", "transport_method", "vmware_uri", "vmware_password",
                                     "vmware_fingerprint"])
def test_missing_keys(tmp_path, settings, missing):
    job = vddk_job(tmp_path)
    del job[missing]
    assert problem(job, settings).key == missing


def test_no_target_is_refused(tmp_path, settings):
    job = vddk_job(tmp_path)
    del job["output_dir"]
    assert "no output target" in str(problem(job, settings))


def test_output_dir_must_exist(tmp_path, settings):
    e = problem(vddk_job(tmp_path, output_dir=str(tmp_path / "nope")), settings)
    assert e.key == "output_dir" and "does not exist" in e.message


def test_ssh_vm_name_must_be_ssh_uri(tmp_path, settings):
    e = problem(ssh_job(tmp_path, vm_name="vm1"), settings)
    assert e.key == "vm_name" and "ssh://" in e.message


def test_target_precedence(tmp_path, settings):
    (tmp_path / "ca.pem").write_text("x")
    job = vddk_job(tmp_path, rhv_url="https://engine/ovirt-engine/api", rhv_password="p",
                   rhv_cluster="Default", rhv_storage="data", export_domain="nfs:/export")
    c = cfg.parse_job(job, settings)
    assert isinstance(c.target, cfg.RhvUploadTarget)
    assert c.target.cafile == str(tmp_path / "ca.pem") and c.target.insecure is False
    del job["rhv_url"]
    assert cfg.parse_job(job, settings).target == cfg.ExportDomainTarget("nfs:/export")


def test_rhv_upload_needs_its_keys_and_a_ca(tmp_path, settings):
    job = vddk_job(tmp_path, rhv_url="https://engine/ovirt-engine/api", rhv_password="p",
                   rhv_cluster="Default")
    assert problem(job, settings).key == "rhv_storage"
    job["rhv_storage"] = "data"
    assert problem(job, settings).key == "rhv_cafile"
    job["insecure_connection"] = True
    c = cfg.parse_job(job, settings)
    assert c.target.insecure and c.target.cafile is None
    job["insecure_connection"] = "true"
    assert problem(job, settings).key == "insecure_connection"


def test_export_domain_forms(tmp_path, settings):
    assert cfg.parse_job(vddk_job(tmp_path, export_domain=str(tmp_path)), settings).target.path == str(tmp_path)
    assert problem(vddk_job(tmp_path, export_domain="just-a-name"), settings).key == "export_domain"


def test_mappings_and_disks(tmp_path, settings):
    c = cfg.parse_job(vddk_job(tmp_path, network_mappings=[
        {"source": "VM Network", "destination": "ovirtmgmt"},
        {"source": "b", "destination": "c", "mac_address": "00:11:22:33:44:55"}],
        source_disks=["[ds] vm/vm.vmdk"]), settings)
    assert c.network_mappings == (cfg.NetworkMapping("VM Network", "ovirtmgmt"),
                                  cfg.NetworkMapping("b", "c", "00:11:22:33:44:55"))
    assert c.source_disks == ("[ds] vm/vm.vmdk",)


def test_unknown_keys_are_kept_for_the_log(tmp_path, settings):
    c = cfg.parse_job(vddk_job(tmp_path, vm_uuid="u", two_phase=False, osp_x=1), settings)
    assert c.ignored_keys == ("osp_x", "two_phase", "vm_uuid")


def test_collect_reports_every_problem(tmp_path, settings):
    config, problems = cfg.collect({"transport_method": "ssh", "daemonize": "no",
                                    "output_format": 3}, settings)
    assert config is None
    keys = [p.key for p in problems]
    assert "vm_name" in keys and "daemonize" in keys and "output_format" in keys
    assert None in keys      # no target


def test_job_must_be_an_object(settings):
    assert "JSON object" in str(problem([1, 2], settings))


def test_throttling_is_normalised(tmp_path, settings):
    c = cfg.parse_job(vddk_job(tmp_path, throttling={"cpu": "50", "network": 1048576}), settings)
    assert c.throttling == {"cpu": "50%", "network": "1048576"}


def _iso_domain(root, names):
    d = root / "mnt" / "nfs:_iso" / "sd-uuid"
    (d / "dom_md").mkdir(parents=True)
    images = d / "images" / "11111111-1111-1111-1111-111111111111"
    images.mkdir(parents=True)
    for n in names:
        (images / n).write_text("iso")
    return images


def test_drivers_from_iso_domain(tmp_path, settings):
    images = _iso_domain(tmp_path, ["virtio-win-0.1.185.iso", "RHV-toolsSetup_4.3_10.iso"])
    c = cfg.parse_job(vddk_job(tmp_path, install_drivers=True), settings)
    assert c.virtio_win == str(images / "RHV-toolsSetup_4.3_10.iso") and c.install_drivers
    c = cfg.parse_job(vddk_job(tmp_path, virtio_win="virtio-win-0.1.185.iso"), settings)
    assert c.virtio_win == str(images / "virtio-win-0.1.185.iso") and c.install_drivers


def test_install_drivers_without_iso_is_not_an_error(tmp_path, settings):
    c = cfg.parse_job(vddk_job(tmp_path, install_drivers=True), settings)
    assert c.virtio_win is None and c.install_drivers
    assert any("no drivers ISO" in n for n in c.notes)


def test_virtio_win_path(tmp_path, settings):
    iso = tmp_path / "drivers.iso"
    iso.write_text("x")
    c = cfg.parse_job(vddk_job(tmp_path, virtio_win=str(iso)), settings)
    assert c.virtio_win == str(iso) and c.install_drivers


def _vault(tmp_path, content, mode=0o600):
    path = tmp_path / "vault.json"
    path.write_text(json.dumps(content))
    os.chmod(path, mode)
    return str(path)


def test_luks_vault(tmp_path, settings):
    vault = _vault(tmp_path, {"vm1": [{"device": "/dev/sda1", "key": "k1"}], "other": []})
    c = cfg.parse_job(vddk_job(tmp_path, luks_keys_vault=vault), settings)
    assert c.luks_keys == (("/dev/sda1", Secret("k1")),)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_luks_vault_open_to_others_is_refused(tmp_path, settings, mode):
    vault = _vault(tmp_path, {"vm1": []}, mode)
    e = problem(vddk_job(tmp_path, luks_keys_vault=vault), settings)
    assert e.key == "luks_keys_vault" and "group or others" in e.message


def test_luks_vault_wrong_owner_or_content(tmp_path, settings):
    vault = _vault(tmp_path, {"vm1": []})
    with pytest.raises(JobError) as e:
        cfg.parse_job(vddk_job(tmp_path, luks_keys_vault=vault), settings, uid=os.geteuid() + 1)
    assert "owned by" in e.value.message
    bad = _vault(tmp_path, {"vm1": [{"device": "/dev/sda1"}]})
    assert "'device' and 'key'" in problem(vddk_job(tmp_path, luks_keys_vault=bad), settings).message
    assert "cannot open" in problem(vddk_job(tmp_path, luks_keys_vault=str(tmp_path / "no")), settings).message


def test_default_vault_used_only_if_present(tmp_path, settings):
    assert cfg.parse_job(vddk_job(tmp_path), settings).luks_keys == ()
    home = tmp_path / "home"
    home.mkdir()
    (home / ".v2v_luks_keys_vault.json").write_text(json.dumps({"vm1": [{"device": "/dev/sdb1", "key": "z"}]}))
    os.chmod(home / ".v2v_luks_keys_vault.json", 0o600)
    assert cfg.parse_job(vddk_job(tmp_path), settings).luks_keys == (("/dev/sdb1", Secret("z")),)
