import json
import os
import signal

import pytest

from wrapper import config as cfg
from wrapper.errors import JobError
from wrapper.security.boundary import Boundary, Caller
from wrapper.throttling.limits import NetworkRate
from wrapper.security.secrets import Secret
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


def problem(job, settings, boundary=None):
    with pytest.raises(JobError) as e:
        cfg.parse_job(job, settings, boundary)
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
    ("virtio_win", "/nonexistent/virtio-win.iso", "No such file or directory"),
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
    assert e.key == "output_dir" and "No such file or directory" in e.message   # the caller's own open()
    (tmp_path / "file").write_text("x")
    e = problem(vddk_job(tmp_path, output_dir=str(tmp_path / "file")), settings)
    assert e.key == "output_dir" and "Not a directory" in e.message
    e = problem(vddk_job(tmp_path, export_domain=str(tmp_path / "nope")), settings)
    assert e.key == "export_domain" and "not an NFS share" in e.message and "No such file" in e.message


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
    assert c.throttling == {"cpu": "50%", "network": NetworkRate(1048576)}


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
    if os.geteuid() == 0:
        # a vault another user put where the caller looked: not the caller's, not root's
        os.chown(vault, 65534, 65534)
        with pytest.raises(JobError) as e:
            cfg.parse_job(vddk_job(tmp_path, luks_keys_vault=vault), settings)
        assert "owned by uid 65534, not by you or root" in e.value.message
        os.chown(vault, 0, 0)
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


# -- strings: control characters, NUL, lone surrogates ------------------------------
@pytest.mark.parametrize("key,value", [
    ("vm_name", "vm\n1"), ("vm_name", "vm\x1b[31m"), ("vm_name", "vm\x7f"), ("vm_name", "vm\x9b"),
    ("vmware_uri", "esx://h\r"), ("vmware_fingerprint", FP + "\t"), ("output_dir", "/tmp\n"),
    ("output_format", "raw\x00"), ("virtio_win", "/x.iso\n"), ("luks_keys_vault", "/v\x85"),
    ("rhv_cluster", "c\x01"), ("export_domain", "\x1bnfs:/e"), ("allocation", "sparse\n"),
    ("install_drivers", "\n"), ("daemonize", "\x00"),
])
def test_control_characters_are_refused_in_plain_strings(tmp_path, settings, key, value):
    e = problem(vddk_job(tmp_path, **{key: value}), settings)
    assert e.key == key
    assert "must not contain" in e.message and "\n" not in str(e) and "\x1b" not in str(e)


@pytest.mark.parametrize("key,value,where", [
    ("network_mappings", [{"source": "a\nb", "destination": "c"}], "network_mappings[0].source"),
    ("network_mappings", [{"source": "a", "destination": "b"}, {"source": "a", "destination": "b",
                                                                "mac_address": "\x00"}],
     "network_mappings[1].mac_address"),
    ("source_disks", ["[ds] a.vmdk", "[ds] b\r.vmdk"], "source_disks[1]"),
    ("throttling", {"cpu": "50\n"}, "throttling.cpu"),
    ("throttling", {"network": "1\ud800"}, "throttling.network"),
])
def test_nested_strings_are_checked(tmp_path, settings, key, value, where):
    assert problem(vddk_job(tmp_path, **{key: value}), settings).key == where


def test_nul_is_refused_in_secrets_naming_the_key(tmp_path, settings):
    e = problem(ssh_job(tmp_path, ssh_key="-----BEGIN\x00"), settings)
    assert str(e) == "ssh_key: must not contain NUL bytes or invalid characters"
    for key in ("vmware_password", "rhv_password"):
        e = problem(vddk_job(tmp_path, **{key: "pw\x00"}), settings)
        assert str(e) == "%s: must not contain NUL bytes or invalid characters" % key
    e = problem(vddk_job(tmp_path, vmware_password="pw\udc80"), settings)
    assert e.key == "vmware_password"


def test_secret_rules(tmp_path, settings):
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\r\n\tabc\n-----END OPENSSH PRIVATE KEY-----\n"
    assert cfg.parse_job(ssh_job(tmp_path, ssh_key=key), settings).source.key.reveal() == key
    e = problem(ssh_job(tmp_path, ssh_key="abc\x1b"), settings)
    assert e.key == "ssh_key" and "other than newlines and tabs" in e.message
    password = "p\tw\x1b\x7f\x85 \u00fc"
    assert cfg.parse_job(vddk_job(tmp_path, vmware_password=password), settings).source.password.reveal() == password
    for bad in ("pw\n", "pw\r", "\npw"):
        e = problem(vddk_job(tmp_path, vmware_password=bad), settings)
        assert e.key == "vmware_password" and "line breaks" in e.message
    e = problem(vddk_job(tmp_path, vmware_password="x" * 5000), settings)
    assert e.key == "vmware_password" and "too long" in e.message


def test_secret_values_never_in_messages(tmp_path, settings):
    for job in (vddk_job(tmp_path, vmware_password="SECRET\n"), ssh_job(tmp_path, ssh_key="SECRET\x1b"),
                vddk_job(tmp_path, rhv_password="SECRET\r")):
        _config, problems = cfg.collect(job, settings)
        assert problems and all("SECRET" not in str(p) for p in problems)


def test_unknown_key_values_may_hold_anything_but_nul(tmp_path, settings):
    c = cfg.parse_job(vddk_job(tmp_path, vm_uuid="a\nb\x1b", osp_x={"y": ["\x85"]}), settings)
    assert c.ignored_keys == ("osp_x", "vm_uuid")
    assert problem(vddk_job(tmp_path, vm_uuid="a\x00"), settings).key == "vm_uuid"
    assert problem(vddk_job(tmp_path, osp_x={"y": ["\ud800"]}), settings).key == "osp_x.y[0]"


def test_unknown_key_names_are_escaped_for_the_log(tmp_path, settings):
    c = cfg.parse_job(vddk_job(tmp_path, **{"evil\nINFO fake line": 1, "\x1b[2J": 2, "s\ud800": 3}), settings)
    assert c.ignored_keys == ("\\x1b[2J", "evil\\nINFO fake line", "s\\ud800")
    assert all(len(k.splitlines()) == 1 for k in c.ignored_keys)
    "".join(c.ignored_keys).encode("utf-8")
    e = problem(vddk_job(tmp_path, **{"bad\nname": "\x00"}), settings)
    assert e.key == "bad\\nname" and len(str(e).splitlines()) == 1


def test_many_unknown_keys_are_summarised(tmp_path, settings):
    c = cfg.parse_job(vddk_job(tmp_path, **{"k%04d" % i: i for i in range(1000)}), settings)
    assert len(c.ignored_keys) == cfg.MAX_IGNORED_SHOWN + 1 and c.ignored_keys[-1] == "... and 950 more"


def test_overlong_text_is_refused(tmp_path, settings):
    e = problem(vddk_job(tmp_path, vm_name="v" * (1 << 20)), settings)
    assert e.key == "vm_name" and "too long" in e.message and len(str(e)) < 100


# -- vm_name ------------------------------------------------------------------------
@pytest.mark.parametrize("vm_name", ["-vm", "--help", "-"])
def test_vm_name_must_not_look_like_an_option(tmp_path, settings, vm_name):
    for job in (vddk_job(tmp_path, vm_name=vm_name), ssh_job(tmp_path, vm_name=vm_name)):
        e = problem(job, settings)
        assert e.key == "vm_name" and "'-'" in e.message


@pytest.mark.parametrize("vm_name", ["", " ", "\u3000 "])
def test_vm_name_must_not_be_blank(tmp_path, settings, vm_name):
    assert str(problem(vddk_job(tmp_path, vm_name=vm_name), settings)) == "vm_name: must not be empty"


def test_vm_name_with_inner_dashes_is_fine(tmp_path, settings):
    assert cfg.parse_job(vddk_job(tmp_path, vm_name="my-vm-"), settings).vm_name == "my-vm-"


# -- patterns match whole values ---------------------------------------------------------
def test_fingerprint_and_mac_match_whole_values(tmp_path, settings):
    assert cfg._FINGERPRINT.fullmatch(FP) and not cfg._FINGERPRINT.fullmatch(FP + "\n")
    assert not cfg._MAC.fullmatch("00:11:22:33:44:55\n")
    assert problem(vddk_job(tmp_path, vmware_fingerprint=FP + ":"), settings).key == "vmware_fingerprint"
    e = problem(vddk_job(tmp_path, network_mappings=[
        {"source": "a", "destination": "b", "mac_address": "00:11:22:33:44:55:66"}]), settings)
    assert e.key == "network_mappings[0]"


# -- URIs that urlsplit cannot parse ------------------------------------------------------
@pytest.mark.parametrize("job_kw,key", [
    ({"transport_method": "ssh", "vm_name": "ssh://[::1/x.vmx"}, "vm_name"),
    ({"transport_method": "ssh", "vm_name": "ssh://h]/x.vmx"}, "vm_name"),
    ({"transport_method": "ssh", "vm_name": "ssh://[1.2.3.4]/x.vmx"}, "vm_name"),
    ({"transport_method": "ssh", "vm_name": "ssh://h:99999/x.vmx"}, "vm_name"),
    ({"vm_name": "ssh://[h/x"}, "vm_name"),                 # vddk: described later by urlsplit
    ({"vmware_uri": "esx://[h"}, "vmware_uri"),
    ({"vmware_uri": "esx://h:port"}, "vmware_uri"),
    ({"rhv_url": "https://[x", "rhv_password": "p", "rhv_cluster": "c", "rhv_storage": "s",
      "insecure_connection": True}, "rhv_url"),
    ({"rhv_url": "https://e:70000/api", "rhv_password": "p", "rhv_cluster": "c", "rhv_storage": "s",
      "insecure_connection": True}, "rhv_url"),
    ({"rhv_url": "https:///api", "rhv_password": "p", "rhv_cluster": "c", "rhv_storage": "s",
      "insecure_connection": True}, "rhv_url"),
    # found by the fuzzer once the pre-flight sent the URL to curl: it must be encoded already
    ({"rhv_url": "https://e/ovirt\u202e-engine/api", "rhv_password": "p", "rhv_cluster": "c",
      "rhv_storage": "s", "insecure_connection": True}, "rhv_url"),
    ({"rhv_url": "https://e/ovirt-engi\U0001F600ne/api", "rhv_password": "p", "rhv_cluster": "c",
      "rhv_storage": "s", "insecure_connection": True}, "rhv_url"),
    ({"rhv_url": "https://\u00e9ngine/api", "rhv_password": "p", "rhv_cluster": "c",
      "rhv_storage": "s", "insecure_connection": True}, "rhv_url"),
])
def test_malformed_uris_are_refused_naming_the_key(tmp_path, settings, job_kw, key):
    job = vddk_job(tmp_path, **job_kw)
    e = problem(job, settings)
    assert e.key == key and len(str(e).splitlines()) == 1


def test_ipv6_uris_are_fine(tmp_path, settings):
    c = cfg.parse_job(ssh_job(tmp_path, vm_name="ssh://root@[fd00::1]:22/vmfs/volumes/ds/vm/vm.vmx"), settings)
    assert c.vm_name.startswith("ssh://root@[fd00::1]")
    c = cfg.parse_job(vddk_job(tmp_path, vmware_uri="esx://root@[::1]?no_verify=1", rhv_url="https://[::1]/api",
                               rhv_password="p", rhv_cluster="c", rhv_storage="s", insecure_connection=True),
                      settings)
    assert c.target.url == "https://[::1]/api"


# -- the LUKS vault ------------------------------------------------------------------------
def _vault_problem(tmp_path, settings, path):
    e = problem(vddk_job(tmp_path, luks_keys_vault=str(path)), settings)
    assert e.key == "luks_keys_vault" and len(str(e).splitlines()) == 1, str(e)
    return e.message


def test_luks_vault_kinds_are_refused(tmp_path, settings):
    d = tmp_path / "vault-dir"
    d.mkdir(mode=0o700)
    assert "not a regular file" in _vault_problem(tmp_path, settings, d)
    fifo = tmp_path / "vault-fifo"
    os.mkfifo(fifo, 0o600)
    signal.alarm(10)                     # a FIFO must never block the wrapper
    try:
        assert "not a regular file" in _vault_problem(tmp_path, settings, fifo)
    finally:
        signal.alarm(0)
    # links are followed the way the caller's own open() follows them: what
    # the caller may read is the kernel's decision with the caller's rights
    # (tests/test_boundary.py, tests/integration/test_security_boundary.py)
    target = _vault(tmp_path, {"vm1": [{"device": "/dev/sda1", "key": "k"}]})
    link = tmp_path / "vault-link"
    link.symlink_to(target)
    assert cfg.parse_job(vddk_job(tmp_path, luks_keys_vault=str(link)), settings).luks_keys[0][0] == "/dev/sda1"


def test_luks_vault_size_and_content(tmp_path, settings):
    big = tmp_path / "big.json"
    big.write_text('{"vm1": []}' + " " * (1 << 20))
    os.chmod(big, 0o600)
    assert "larger than" in _vault_problem(tmp_path, settings, big)
    for content, words in ((b'{"vm1": "\xff"}', "not valid UTF-8 (byte 0xff at offset 9)"),
                           (b"[" * 100000, "nested too deeply"),
                           (b'{"vm1": NaN}', "NaN"),
                           (b"{bad", "not valid JSON"),
                           (b"[]", "must be a JSON object"),
                           (b'{"vm1": {}}', "must be an array"),
                           (b'{"vm1": [{"device": "/dev/sda\\n1", "key": "k"}]}', "device must not contain"),
                           (b'{"vm1": [{"device": "/dev/sda1", "key": "k\\u0000"}]}', "key must not contain NUL")):
        path = tmp_path / "v.json"
        path.write_bytes(content)
        os.chmod(path, 0o600)
        message = _vault_problem(tmp_path, settings, path)
        assert words in message, message


def test_luks_vault_path_with_nul_or_control_characters(tmp_path, settings):
    assert "NUL" in _vault_problem(tmp_path, settings, str(tmp_path) + "/v\x00.json")
    assert "control characters" in _vault_problem(tmp_path, settings, str(tmp_path) + "/v\n.json")


def test_luks_vault_empty_value_does_not_fall_back_to_the_default(tmp_path, settings):
    home = tmp_path / "home"
    home.mkdir()
    os.mkfifo(home / ".v2v_luks_keys_vault.json", 0o600)
    _config, problems = cfg.collect(vddk_job(tmp_path, luks_keys_vault=""), settings)
    assert [str(p) for p in problems] == ["luks_keys_vault: must not be empty"]


@pytest.mark.parametrize("kind", ["directory", "fifo", "open-mode"])
def test_default_vault_that_exists_is_checked_like_any_other(tmp_path, settings, kind):
    home = tmp_path / "home"
    home.mkdir()
    default = home / ".v2v_luks_keys_vault.json"
    if kind == "dangling-symlink":
        default.symlink_to(tmp_path / "nowhere")
    elif kind == "symlink":
        default.symlink_to(_vault(tmp_path, {"vm1": []}))
    elif kind == "directory":
        default.mkdir()
    elif kind == "fifo":
        os.mkfifo(default, 0o600)
    else:
        default.write_text("{}")
        os.chmod(default, 0o644)
    e = problem(vddk_job(tmp_path), settings)
    assert e.key == "luks_keys_vault" and len(str(e).splitlines()) == 1


def test_default_vault_is_what_the_callers_open_finds(tmp_path, settings):
    """A dangling link is absent to the caller's open(): no vault; a link to a
    good vault is that vault."""
    home = tmp_path / "home"
    home.mkdir()
    default = home / ".v2v_luks_keys_vault.json"
    default.symlink_to(tmp_path / "nowhere")
    assert cfg.parse_job(vddk_job(tmp_path), settings).luks_keys == ()
    default.unlink()
    default.symlink_to(_vault(tmp_path, {"vm1": [{"device": "/dev/sdb1", "key": "z"}]}))
    assert cfg.parse_job(vddk_job(tmp_path), settings).luks_keys == (("/dev/sdb1", Secret("z")),)


def test_luks_vault_messages_escape_the_path(tmp_path, settings):
    from wrapper import luks
    odd = tmp_path / "v\u2028x.json"
    odd.write_text("{}")
    os.chmod(odd, 0o644)
    with pytest.raises(JobError) as e:
        luks.read_vault(Boundary(Caller(os.geteuid(), os.getegid())), str(odd), "vm1")
    assert "\\u2028" in str(e.value) and len(str(e.value).splitlines()) == 1


# -- relative paths: virt-v2v runs in / -------------------------------------------------------
def test_relative_paths_are_made_absolute(tmp_path, settings, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "esd").mkdir()
    (tmp_path / "isos").mkdir()
    (tmp_path / "isos" / "drivers.iso").write_text("x")
    (tmp_path / "ca.crt").write_text("x")
    c = cfg.parse_job(vddk_job(tmp_path, export_domain="esd", virtio_win="isos/drivers.iso"), settings)
    assert c.target.path == str(tmp_path / "esd") and c.virtio_win == str(tmp_path / "isos" / "drivers.iso")
    c = cfg.parse_job(vddk_job(tmp_path, rhv_url="https://e/api", rhv_password="p", rhv_cluster="c",
                               rhv_storage="s", rhv_cafile="ca.crt"), settings)
    assert c.target.cafile == str(tmp_path / "ca.crt")
    assert cfg.parse_job(vddk_job(tmp_path, output_dir="."), settings).target.path == str(tmp_path)
    assert cfg.parse_job(vddk_job(tmp_path, export_domain="nfs:/e"), settings).target.path == "nfs:/e"


def test_messages_repeating_paths_stay_one_line(tmp_path, settings):
    weird = str(tmp_path / "no\u2028pe")
    for job in (vddk_job(tmp_path, output_dir=weird), vddk_job(tmp_path, virtio_win=weird + "/x.iso"),
                vddk_job(tmp_path, virtio_win="x\u2029.iso"), vddk_job(tmp_path, output_format="q" * 10000)):
        e = problem(job, settings)
        assert len(str(e).splitlines()) == 1 and len(str(e)) < 600


# -- settings ----------------------------------------------------------------------------------
def test_settings_virt_v2v_path_is_absolute_when_it_is_a_path(tmp_path, monkeypatch):
    from wrapper.settings import resolve
    monkeypatch.chdir(tmp_path)
    assert resolve({"virt_v2v": "bin/virt-v2v"}, {}).virt_v2v == str(tmp_path / "bin" / "virt-v2v")
    assert resolve({}, {"VIRT_V2V_WRAPPER_VIRT_V2V": "./v2v"}).virt_v2v == str(tmp_path / "v2v")
    assert resolve({"virt_v2v": "virt-v2v"}, {}).virt_v2v == "virt-v2v"      # looked up on PATH
    assert resolve({"state_dir": "st"}, {}).state_dir == str(tmp_path / "st")


def test_settings_help_shows_the_defaults():
    from wrapper.settings import LOCATIONS
    texts = {opt: text for opt, _attr, _meta, text, _default in LOCATIONS}
    assert "(default /tmp)" in texts["state-dir"]
    assert "(default /rhev/data-center/mnt)" in texts["iso-domain-root"]
    for opt, _attr, _meta, text, default in LOCATIONS:
        assert default is None or default in text, opt
