"""The published JSON Schemas (wrapper/schemas) and the man page stay true.

* job schema vs ``--validate``: they agree on a corpus of valid and invalid jobs
  that exercises every documented key; what only the host can tell (files that
  exist, vault ownership) is a separate, explicit list;
* state schema vs the wrapper: every state the wrapper writes validates,
  snapshot by snapshot during a real (fake virt-v2v) run, and every key the
  wrapper writes is documented;
* the man page names every job key, state key, option and variable.
"""
import json
import os
import shutil
import subprocess

import jsonschema
import pytest

import wrapper
from tests import wrapperrun as wr
from tests.fakes import data, make_fake_v2v
from tests.test_status import make_state
from wrapper import config as jobconfig
from wrapper import validate
from wrapper.settings import LOCATIONS, env_name, resolve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMAS = os.path.join(os.path.dirname(wrapper.__file__), "schemas")
MAN_PAGE = os.path.join(ROOT, "docs", "virt-v2v-wrapper.1")
FP = ":".join(["AB"] * 20)
VDDK = {"vm_name": "vm1", "transport_method": "vddk", "vmware_uri": "esx://root@10.2.0.20?no_verify=1",
        "vmware_password": "pw", "vmware_fingerprint": FP}
SSH = {"vm_name": "ssh://root@10.2.0.20:2222/vmfs/volumes/ds1/vm1/vm1.vmx", "transport_method": "ssh"}
RHV = {"rhv_url": "https://engine.example.com/ovirt-engine/api", "rhv_password": "pw",
       "rhv_cluster": "Default", "rhv_storage": "data", "insecure_connection": True}


def load(name):
    with open(os.path.join(SCHEMAS, name)) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


JOB_SCHEMA = load("job.schema.json")
STATE_SCHEMA = load("state.schema.json")


class Host:
    """Paths a job may point at; ``{name}`` in corpus strings is replaced by them."""

    def __init__(self, root):
        self.root = str(root)
        self.out = self._dir("out")
        self.esd = self._dir("esd")
        self.home = self._dir("home")
        self.ca = self._file("ca.pem", "CA")
        self.iso = self._file("drivers.iso", "ISO")
        images = self._dir("mnt/srv:_iso/sd-uuid/images/11111111-1111-1111-1111-111111111111")
        self._dir("mnt/srv:_iso/sd-uuid/dom_md")
        self.iso_root = os.path.join(self.root, "mnt")
        with open(os.path.join(images, "virtio-win-0.1.240.iso"), "w") as f:
            f.write("ISO")
        self.vault = self._file("vault.json", json.dumps({"vm1": [{"device": "/dev/sda1", "key": "k"}]}),
                                0o600)
        self.open_vault = self._file("open-vault.json", "{}", 0o644)
        self.pw_file = self._file("password", "s3cret\n", 0o600)
        self.open_pw_file = self._file("open-password", "s3cret", 0o644)
        self.key_file = self._file("id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n", 0o400)
        self.virt_v2v = make_fake_v2v(self._dir("bin"))
        environ = {"HOME": self.home, "PATH": os.environ.get("PATH", ""),
                   "VIRT_V2V_WRAPPER_VDSM_CA": self.ca}
        self.settings = resolve({"state_dir": self._dir("state"), "log_dir": self._dir("logs"),
                                 "virt_v2v": self.virt_v2v, "run_as": str(os.geteuid()),
                                 "iso_domain_root": self.iso_root}, environ)

    def _dir(self, rel):
        path = os.path.join(self.root, rel)
        os.makedirs(path, exist_ok=True)
        return path

    def _file(self, rel, text, mode=0o644):
        path = os.path.join(self.root, rel)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def fill(self, value):
        if isinstance(value, str):
            return value.format(**vars(self))
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        return value


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    return Host(tmp_path_factory.mktemp("host"))


def job(*parts, **keys):
    out = {}
    for p in parts:
        out.update(p)
    out.update(keys)
    return out


def without(base, *keys):
    return {k: v for k, v in base.items() if k not in keys}


LOCAL = {"output_dir": "{out}"}

VALID = {
    "vddk-local": job(VDDK, LOCAL),
    "vddk-sha256-fingerprint-empty-password": job(VDDK, LOCAL, vmware_password="",
                                                  vmware_fingerprint=":".join(["0f"] * 32)),
    "ssh-port-uri": job(SSH, LOCAL),
    "ssh-key-uppercase-scheme-ipv6": job(SSH, LOCAL, vm_name="SSH://[::1]/vmfs/volumes/ds/vm/vm.vmx",
                                         ssh_key="-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"),
    "ssh-key-null": job(SSH, LOCAL, ssh_key=None),
    "rhv-upload-cafile": job(VDDK, without(RHV, "insecure_connection"), rhv_cafile="{ca}",
                             insecure_connection=False, output_format="qcow2", allocation="sparse"),
    "rhv-upload-default-ca": job(VDDK, without(RHV, "insecure_connection"), rhv_password=""),
    "rhv-upload-insecure-http": job(SSH, RHV, rhv_url="http://engine/api", rhv_cafile=None),
    "rhv-wins-over-other-targets": job(VDDK, RHV, export_domain=5, output_dir=[]),
    "export-domain-nfs": job(VDDK, export_domain="nfs.example.com:/exports/esd"),
    "export-domain-dir": job(SSH, export_domain="{esd}", allocation="preallocated"),
    "export-wins-over-output-dir": job(VDDK, export_domain="nfs:/e", output_dir=7),
    "everything": job(VDDK, LOCAL, output_format="raw", allocation="preallocated",
                      network_mappings=[{"source": "VM Network", "destination": "ovirtmgmt"},
                                        {"source": "DMZ", "destination": "br0",
                                         "mac_address": "00:50:56:aa:bb:cc"},
                                        {"source": " ", "destination": "x", "mac_address": None}],
                      source_disks=["[ds1] vm1/vm1.vmdk", "[ds1] vm1/vm1_1.vmdk", ""],
                      virtio_win="{iso}", install_drivers=True,
                      throttling={"cpu": "50", "network": 1048576, "other": "ignored"},
                      luks_keys_vault="{vault}", daemonize=False),
    "virtio-win-from-iso-domain": job(VDDK, LOCAL, virtio_win="virtio-win-0.1.240.iso"),
    "install-drivers-nothing-found-is-fine": job(SSH, LOCAL, install_drivers=True),
    "throttling-forms-1": job(VDDK, LOCAL, throttling={"cpu": "200%", "network": " 1024 "}),
    "throttling-forms-2": job(VDDK, LOCAL, throttling={"cpu": "unlimited", "network": "UNLIMITED"}),
    "throttling-forms-3": job(VDDK, LOCAL, throttling={"cpu": 12.5, "network": 2048.0}),
    "throttling-forms-4": job(VDDK, LOCAL, throttling={"cpu": None, "network": None}),
    "throttling-forms-5": job(VDDK, LOCAL, throttling={"cpu": " 7.5 % "}),
    "throttling-empty": job(VDDK, LOCAL, throttling={}),
    "optional-nulls": job(VDDK, LOCAL, output_format=None, allocation=None, network_mappings=None,
                          source_disks=None, virtio_win=None, install_drivers=None, throttling=None,
                          luks_keys_vault=None, daemonize=None),
    "unknown-keys-ignored": job(VDDK, LOCAL, vm_uuid="x", two_phase=False, warm=True,
                                conversion_host_uuid=1, osp_server_id="y"),
    "ssh-ignores-vddk-keys": job(SSH, LOCAL, vmware_password=5, vmware_fingerprint="no"),
    "vddk-ignores-ssh-key": job(VDDK, LOCAL, ssh_key=5),
    "secrets-may-hold-their-characters": job(SSH, LOCAL, ssh_key="-----BEGIN KEY-----\r\n\tx\n",
                                             vmware_password="p\tw\x7f\x85 \u00fc\u20ac"),
    "rhv-password-with-tab": job(VDDK, RHV, rhv_password="\tpw\x1b"),
    "unknown-keys-may-hold-anything-but-nul": job(VDDK, LOCAL, vm_uuid="a\nb\x1b", osp_x={"y": ["\x85\t"]},
                                                  **{"weird\nname\x00": 1, "\u2028": None}),
    "names-dashes-inside-and-unicode": job(VDDK, LOCAL, vm_name="my-vm-\u00e9t\u00e9 \u2603",
                                           source_disks=["[ds 1] caf\u00e9/-x-.vmdk"]),
    "throttling-at-the-bounds": job(VDDK, LOCAL, throttling={"cpu": "100000%", "network": "1000000000000000"}),
    "throttling-numbers-at-the-bounds": job(VDDK, LOCAL, throttling={"cpu": 100000, "network": 10 ** 15}),
    "throttling-leading-zeros": job(VDDK, LOCAL, throttling={"cpu": "0000000000000050", "network": "0" * 19 + "1"}),
    "rhv-url-ipv6-port": job(VDDK, RHV, rhv_url="https://admin@[fd00::1]:8443/ovirt-engine/api"),
    "vmware-uri-forms": job(VDDK, LOCAL, vmware_uri="vpx://u%40dom@[::1]:443/DC/host?no_verify=1"),
    "vmware-uri-without-authority": job(VDDK, LOCAL, vmware_uri="esx:/x"),
    "secrets-from-files": job(without(VDDK, "vmware_password"), without(RHV, "rhv_password"),
                              vmware_password_file="{pw_file}", rhv_password_file="{pw_file}"),
    "ssh-key-from-a-file": job(SSH, LOCAL, ssh_key_file="{key_file}"),
    "max-length-text": job(VDDK, LOCAL, rhv_cluster="c" * 4096, vmware_password="p" * 4096),
}

# name -> (job, the key the validator must name; None for a job-wide problem)
INVALID = {
    "not-an-object": ([VDDK], None),
    "a-string": ("job", None),
    "null": (None, None),
    "vm_name-missing": (without(job(VDDK, LOCAL), "vm_name"), "vm_name"),
    "vm_name-empty": (job(VDDK, LOCAL, vm_name=""), "vm_name"),
    "vm_name-blank": (job(VDDK, LOCAL, vm_name="  "), "vm_name"),
    "vm_name-number": (job(VDDK, LOCAL, vm_name=5), "vm_name"),
    "vm_name-null": (job(VDDK, LOCAL, vm_name=None), "vm_name"),
    "transport-missing": (without(job(VDDK, LOCAL), "transport_method"), "transport_method"),
    "transport-unknown": (job(VDDK, LOCAL, transport_method="http"), "transport_method"),
    "transport-null": (job(VDDK, LOCAL, transport_method=None), "transport_method"),
    "vmware_uri-missing": (without(job(VDDK, LOCAL), "vmware_uri"), "vmware_uri"),
    "vmware_uri-no-scheme": (job(VDDK, LOCAL, vmware_uri="10.2.0.20"), "vmware_uri"),
    "vmware_uri-empty": (job(VDDK, LOCAL, vmware_uri=""), "vmware_uri"),
    "vmware_password-missing": (without(job(VDDK, LOCAL), "vmware_password"), "vmware_password"),
    "vmware_password-number": (job(VDDK, LOCAL, vmware_password=1234), "vmware_password"),
    "vmware_fingerprint-missing": (without(job(VDDK, LOCAL), "vmware_fingerprint"), "vmware_fingerprint"),
    "vmware_fingerprint-short": (job(VDDK, LOCAL, vmware_fingerprint="AB:CD"), "vmware_fingerprint"),
    "vmware_fingerprint-not-hex": (job(VDDK, LOCAL, vmware_fingerprint=FP.replace("AB", "ZZ", 1)),
                                   "vmware_fingerprint"),
    "ssh-vm_name-not-uri": (job(SSH, LOCAL, vm_name="vm1"), "vm_name"),
    "ssh-vm_name-other-scheme": (job(SSH, LOCAL, vm_name="esx://h/vm.vmx"), "vm_name"),
    "ssh-vm_name-no-host": (job(SSH, LOCAL, vm_name="ssh://root@/vmfs/vm.vmx"), "vm_name"),
    "ssh-vm_name-no-path": (job(SSH, LOCAL, vm_name="ssh://root@host"), "vm_name"),
    "ssh-vm_name-port-too-big": (job(SSH, LOCAL, vm_name="ssh://h:99999/vm.vmx"), "vm_name"),
    "ssh-vm_name-port-not-number": (job(SSH, LOCAL, vm_name="ssh://h:ssh/vm.vmx"), "vm_name"),
    "ssh_key-empty": (job(SSH, LOCAL, ssh_key=""), "ssh_key"),
    "ssh_key-number": (job(SSH, LOCAL, ssh_key=5), "ssh_key"),
    "no-target": (job(VDDK), None),
    "rhv_url-null": (job(VDDK, RHV, rhv_url=None), "rhv_url"),
    "rhv_url-not-http": (job(VDDK, RHV, rhv_url="ftp://engine/api"), "rhv_url"),
    "rhv_password-missing": (job(VDDK, without(RHV, "rhv_password")), "rhv_password"),
    "rhv_password-number": (job(VDDK, RHV, rhv_password=5), "rhv_password"),
    "rhv_cluster-missing": (job(VDDK, without(RHV, "rhv_cluster")), "rhv_cluster"),
    "rhv_cluster-blank": (job(VDDK, RHV, rhv_cluster=" "), "rhv_cluster"),
    "rhv_storage-missing": (job(VDDK, without(RHV, "rhv_storage")), "rhv_storage"),
    "rhv_cafile-empty": (job(VDDK, RHV, rhv_cafile=""), "rhv_cafile"),
    "insecure_connection-string": (job(VDDK, RHV, insecure_connection="yes"), "insecure_connection"),
    "export_domain-empty": (job(VDDK, export_domain=""), "export_domain"),
    "export_domain-number": (job(VDDK, export_domain=5), "export_domain"),
    "output_dir-number": (job(VDDK, output_dir=5), "output_dir"),
    "output_dir-empty": (job(VDDK, output_dir=""), "output_dir"),
    "output_format-unknown": (job(VDDK, LOCAL, output_format="vmdk"), "output_format"),
    "output_format-empty": (job(VDDK, LOCAL, output_format=""), "output_format"),
    "allocation-unknown": (job(VDDK, LOCAL, allocation="thin"), "allocation"),
    "network_mappings-object": (job(VDDK, LOCAL, network_mappings={"a": "b"}), "network_mappings"),
    "network_mappings-entry-string": (job(VDDK, LOCAL, network_mappings=["a:b"]), "network_mappings[0]"),
    "network_mappings-no-destination": (job(VDDK, LOCAL, network_mappings=[{"source": "a"}]),
                                        "network_mappings[0]"),
    "network_mappings-empty-source": (job(VDDK, LOCAL, network_mappings=[
        {"source": "a", "destination": "b"}, {"source": "", "destination": "b"}]), "network_mappings[1]"),
    "network_mappings-bad-mac": (job(VDDK, LOCAL, network_mappings=[
        {"source": "a", "destination": "b", "mac_address": "00:11:22"}]), "network_mappings[0]"),
    "source_disks-string": (job(VDDK, LOCAL, source_disks="[ds] a.vmdk"), "source_disks"),
    "source_disks-numbers": (job(VDDK, LOCAL, source_disks=["a", 1]), "source_disks"),
    "virtio_win-number": (job(VDDK, LOCAL, virtio_win=5), "virtio_win"),
    "virtio_win-empty": (job(VDDK, LOCAL, virtio_win=""), "virtio_win"),
    "install_drivers-string": (job(VDDK, LOCAL, install_drivers="yes"), "install_drivers"),
    "throttling-string": (job(VDDK, LOCAL, throttling="50%"), "throttling"),
    "throttling-cpu-word": (job(VDDK, LOCAL, throttling={"cpu": "half"}), "throttling.cpu"),
    "throttling-cpu-zero": (job(VDDK, LOCAL, throttling={"cpu": "0%"}), "throttling.cpu"),
    "throttling-cpu-negative": (job(VDDK, LOCAL, throttling={"cpu": -5}), "throttling.cpu"),
    "throttling-cpu-bool": (job(VDDK, LOCAL, throttling={"cpu": True}), "throttling.cpu"),
    "throttling-network-fraction": (job(VDDK, LOCAL, throttling={"network": 1.5}), "throttling.network"),
    "throttling-network-suffix": (job(VDDK, LOCAL, throttling={"network": "10M"}), "throttling.network"),
    "throttling-network-zero": (job(VDDK, LOCAL, throttling={"network": "0"}), "throttling.network"),
    "throttling-network-list": (job(VDDK, LOCAL, throttling={"network": [1]}), "throttling.network"),
    "luks_keys_vault-empty": (job(VDDK, LOCAL, luks_keys_vault=""), "luks_keys_vault"),
    "luks_keys_vault-number": (job(VDDK, LOCAL, luks_keys_vault=5), "luks_keys_vault"),
    "daemonize-string": (job(VDDK, LOCAL, daemonize="no"), "daemonize"),
    "daemonize-number": (job(VDDK, LOCAL, daemonize=0), "daemonize"),
    # strings: control characters, NUL, lone surrogates, lengths (jobinput.string_problem)
    "vm_name-leading-dash": (job(VDDK, LOCAL, vm_name="-x"), "vm_name"),
    "ssh-vm_name-leading-dash": (job(SSH, LOCAL, vm_name="--help"), "vm_name"),
    "vm_name-newline": (job(VDDK, LOCAL, vm_name="vm1\n"), "vm_name"),
    "vm_name-escape": (job(VDDK, LOCAL, vm_name="vm\x1b[2J"), "vm_name"),
    "vm_name-del": (job(VDDK, LOCAL, vm_name="vm\x7f"), "vm_name"),
    "vm_name-c1": (job(VDDK, LOCAL, vm_name="vm\x9b"), "vm_name"),
    "vm_name-nul": (job(VDDK, LOCAL, vm_name="vm\x00"), "vm_name"),
    "vm_name-surrogate": (job(VDDK, LOCAL, vm_name="vm\ud800"), "vm_name"),
    "vm_name-too-long": (job(VDDK, LOCAL, vm_name="v" * 4097), "vm_name"),
    "ssh-vm_name-bad-ipv6": (job(SSH, LOCAL, vm_name="ssh://[::1/x.vmx"), "vm_name"),
    "ssh-vm_name-bracket-in-user": (job(SSH, LOCAL, vm_name="ssh://a[b@h/x.vmx"), "vm_name"),
    "ssh-vm_name-ipv4-in-brackets": (job(SSH, LOCAL, vm_name="ssh://[10.0.0.1]/x.vmx"), "vm_name"),
    "vmware_uri-bad-ipv6": (job(VDDK, LOCAL, vmware_uri="esx://[h"), "vmware_uri"),
    "vmware_uri-closing-bracket": (job(VDDK, LOCAL, vmware_uri="esx://h]?no_verify=1"), "vmware_uri"),
    "vmware_uri-bad-port": (job(VDDK, LOCAL, vmware_uri="esx://h:99999"), "vmware_uri"),
    "vmware_uri-newline": (job(VDDK, LOCAL, vmware_uri="esx://h\n"), "vmware_uri"),
    "vmware_fingerprint-trailing-newline": (job(VDDK, LOCAL, vmware_fingerprint=FP + "\n"), "vmware_fingerprint"),
    "vmware_password-newline": (job(VDDK, LOCAL, vmware_password="pw\n"), "vmware_password"),
    "vmware_password-nul": (job(VDDK, LOCAL, vmware_password="p\x00w"), "vmware_password"),
    "vmware_password-surrogate": (job(VDDK, LOCAL, vmware_password="p\udc80"), "vmware_password"),
    "vmware_password-too-long": (job(VDDK, LOCAL, vmware_password="p" * 4097), "vmware_password"),
    "ssh_key-nul": (job(SSH, LOCAL, ssh_key="key\x00"), "ssh_key"),
    "ssh_key-escape": (job(SSH, LOCAL, ssh_key="key\x1b[2J"), "ssh_key"),
    "ssh_key-too-long": (job(SSH, LOCAL, ssh_key="k" * 65537), "ssh_key"),
    "ssh_key-nul-with-vddk": (job(VDDK, LOCAL, ssh_key="\x00"), "ssh_key"),
    "rhv_url-bad-ipv6": (job(VDDK, RHV, rhv_url="https://[x"), "rhv_url"),
    "rhv_url-no-host": (job(VDDK, RHV, rhv_url="https:///ovirt-engine/api"), "rhv_url"),
    "rhv_url-bad-port": (job(VDDK, RHV, rhv_url="https://engine:443x/api"), "rhv_url"),
    "rhv_password-carriage-return": (job(VDDK, RHV, rhv_password="pw\r"), "rhv_password"),
    "rhv_cluster-del": (job(VDDK, RHV, rhv_cluster="Def\x7fault"), "rhv_cluster"),
    "rhv_storage-c1": (job(VDDK, RHV, rhv_storage="data\x85"), "rhv_storage"),
    "rhv_cafile-tab": (job(VDDK, RHV, rhv_cafile="ca.pem\t"), "rhv_cafile"),
    "export_domain-newline": (job(VDDK, export_domain="nfs:/e\nx"), "export_domain"),
    "output_dir-newline": (job(VDDK, output_dir="{out}\n"), "output_dir"),
    "unused-target-key-newline": (job(VDDK, LOCAL, rhv_storage="x\ny"), "rhv_storage"),
    "output_format-newline": (job(VDDK, LOCAL, output_format="raw\n"), "output_format"),
    "network_mappings-source-newline": (job(VDDK, LOCAL, network_mappings=[
        {"source": "a\nb", "destination": "c"}]), "network_mappings[0].source"),
    "network_mappings-mac-trailing-newline": (job(VDDK, LOCAL, network_mappings=[
        {"source": "a", "destination": "b", "mac_address": "00:11:22:33:44:55\n"}]),
        "network_mappings[0].mac_address"),
    "network_mappings-extra-key-nul": (job(VDDK, LOCAL, network_mappings=[
        {"source": "a", "destination": "b", "note": "\x00"}]), "network_mappings[0].note"),
    "source_disks-escape": (job(VDDK, LOCAL, source_disks=["ok", "[ds] a\x1b.vmdk"]), "source_disks[1]"),
    "virtio_win-newline": (job(VDDK, LOCAL, virtio_win="{iso}\n"), "virtio_win"),
    "luks_keys_vault-nul": (job(VDDK, LOCAL, luks_keys_vault="{vault}\x00"), "luks_keys_vault"),
    "unknown-key-nul": (job(VDDK, LOCAL, vm_uuid="\x00"), "vm_uuid"),
    "unknown-key-nested-surrogate": (job(VDDK, LOCAL, osp_x={"a": ["ok", "\udfff"]}), "osp_x.a[1]"),
    # throttling bounds (limits.py)
    "throttling-cpu-401-digits": (job(VDDK, LOCAL, throttling={"cpu": "1" * 401}), "throttling.cpu"),
    "throttling-cpu-17-digits": (job(VDDK, LOCAL, throttling={"cpu": "1" * 17}), "throttling.cpu"),
    "throttling-cpu-too-much": (job(VDDK, LOCAL, throttling={"cpu": "100001%"}), "throttling.cpu"),
    "throttling-cpu-huge-number": (job(VDDK, LOCAL, throttling={"cpu": 1e300}), "throttling.cpu"),
    "throttling-cpu-newline": (job(VDDK, LOCAL, throttling={"cpu": "50\n"}), "throttling.cpu"),
    "throttling-network-401-digits": (job(VDDK, LOCAL, throttling={"network": "1" * 401}), "throttling.network"),
    "ssh_key_file-and-ssh_key": (job(SSH, LOCAL, ssh_key="k", ssh_key_file="{key_file}"), "ssh_key_file"),
    "vmware_password_file-and-password": (job(VDDK, LOCAL, vmware_password_file="{pw_file}"),
                                          "vmware_password_file"),
    "rhv_password_file-and-password": (job(VDDK, RHV, rhv_password_file="{pw_file}"), "rhv_password_file"),
    "vmware_password_file-number": (job(without(VDDK, "vmware_password"), LOCAL, vmware_password_file=3),
                                    "vmware_password_file"),
    "rhv_password_file-null": (job(VDDK, without(RHV, "rhv_password"), rhv_password_file=None),
                               "rhv_password_file"),
    "ssh_key_file-empty": (job(SSH, LOCAL, ssh_key_file=""), "ssh_key_file"),
    "throttling-network-21-digits": (job(VDDK, LOCAL, throttling={"network": "0" * 20 + "1"}),
                                     "throttling.network"),
    "throttling-network-too-much": (job(VDDK, LOCAL, throttling={"network": 10 ** 15 + 1}), "throttling.network"),
    "throttling-network-huge-string": (job(VDDK, LOCAL, throttling={"network": "9" * 16}), "throttling.network"),
    "throttling-network-huge-float": (job(VDDK, LOCAL, throttling={"network": 1e300}), "throttling.network"),
}

# Valid for the schema, refused by --validate: only the host can tell.
HOST_ONLY = {
    "output_dir-missing": (job(VDDK, output_dir="{root}/nope"), "output_dir"),
    "export_domain-not-a-dir-nor-nfs": (job(VDDK, export_domain="{root}/nope"), "export_domain"),
    "rhv_cafile-missing": (job(VDDK, without(RHV, "insecure_connection"), rhv_cafile="{root}/nope.pem"),
                           "rhv_cafile"),
    "virtio_win-path-missing": (job(VDDK, LOCAL, virtio_win="{root}/nope.iso"), "virtio_win"),
    "virtio_win-not-in-iso-domain": (job(VDDK, LOCAL, virtio_win="RHV-toolsSetup_4.4.iso"), "virtio_win"),
    "luks_keys_vault-missing": (job(VDDK, LOCAL, luks_keys_vault="{root}/nope.json"), "luks_keys_vault"),
    "luks_keys_vault-readable-by-others": (job(VDDK, LOCAL, luks_keys_vault="{open_vault}"),
                                           "luks_keys_vault"),
    "vmware_password_file-missing": (job(without(VDDK, "vmware_password"), LOCAL,
                                         vmware_password_file="{root}/nope"), "vmware_password_file"),
    "rhv_password_file-readable-by-others": (job(VDDK, without(RHV, "rhv_password"),
                                                 rhv_password_file="{open_pw_file}"), "rhv_password_file"),
    "ssh_key_file-is-a-directory": (job(SSH, LOCAL, ssh_key_file="{root}"), "ssh_key_file"),
}

# Valid for the schema, refused by the validator: what its regular expressions
# cannot say (urlsplit's bracketed-host rules, with ipaddress behind them).
BEYOND_SCHEMA = {
    "rhv_url-bracketed-not-ipv6": (job(VDDK, RHV, rhv_url="https://[1:2:3]/api"), "rhv_url"),
    "vddk-vm_name-unparsable-uri": (job(VDDK, LOCAL, vm_name="x://[h"), "vm_name"),
}

# Where config.collect is more lenient than the schema (a defect reported to the
# lead; strict xfail flips to a failure once it is fixed, so the entry is removed).
KNOWN_DISAGREEMENTS = {}


def schema_errors(validator, document):
    return [e.message for e in validator.iter_errors(document)]


def _maybe_xfail(name):
    if name in KNOWN_DISAGREEMENTS:
        return [pytest.mark.xfail(strict=True, reason=KNOWN_DISAGREEMENTS[name])]
    return []


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_jobs_agree(host, name):
    document = host.fill(VALID[name])
    assert schema_errors(JOB_SCHEMA, document) == []
    config, problems = validate.check(document, host.settings)
    assert problems == [] and config is not None


@pytest.mark.parametrize("name", [pytest.param(n, marks=_maybe_xfail(n)) for n in sorted(INVALID)])
def test_invalid_jobs_agree(host, name):
    document, key = INVALID[name]
    document = host.fill(document)
    assert schema_errors(JOB_SCHEMA, document) != []
    _config, problems = validate.check(document, host.settings)
    assert problems, "the validator accepted what the schema refuses"
    assert key in [p.key for p in problems]


@pytest.mark.parametrize("name", sorted(HOST_ONLY))
def test_host_only_problems(host, name):
    document, key = HOST_ONLY[name]
    document = host.fill(document)
    assert schema_errors(JOB_SCHEMA, document) == []
    _config, problems = validate.check(document, host.settings)
    assert [p.key for p in problems] == [key]


@pytest.mark.parametrize("name", sorted(BEYOND_SCHEMA))
def test_problems_beyond_the_schema(host, name):
    document, key = BEYOND_SCHEMA[name]
    document = host.fill(document)
    assert schema_errors(JOB_SCHEMA, document) == []
    _config, problems = validate.check(document, host.settings)
    assert [p.key for p in problems] == [key]


def test_default_ca_missing_is_a_host_problem(host):
    settings = host.settings.with_(vdsm_ca=os.path.join(host.root, "no-ca.pem"))
    document = job(VDDK, without(RHV, "insecure_connection"))
    assert schema_errors(JOB_SCHEMA, document) == []
    assert [p.key for p in validate.check(document, settings)[1]] == ["rhv_cafile"]


def test_schema_documents_exactly_the_known_keys():
    props = set(JOB_SCHEMA.schema["properties"])
    assert props == set(jobconfig.KNOWN_KEYS)
    assert all(JOB_SCHEMA.schema["properties"][k].get("description") for k in props)


def test_every_documented_key_is_exercised():
    documented = set(JOB_SCHEMA.schema["properties"])
    in_valid = set().union(*(set(j) for j in VALID.values()))
    named_invalid = {key.split(".")[0].split("[")[0] for _j, key in INVALID.values() if key}
    assert documented - in_valid == set()
    assert documented - named_invalid == set()


# -- the state file ------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["fresh", "copying", "finished", "failed"])
def test_state_schema_accepts_every_stage(stage):
    state = make_state(stage, throttling={"cpu": "50%", "network": "1048576"}).data
    assert schema_errors(STATE_SCHEMA, state) == []


@pytest.mark.parametrize("change", [
    {"disks": None}, {"disks": [{"path": "a", "progress": 101}]}, {"disks": [{"progress": 1}]},
    {"disk_count": -1}, {"disk_count": 1.5}, {"throttling": {"cpu": "50"}},
    {"throttling": {"cpu": "50", "network": None}}, {"throttling": {"cpu": None, "network": "1M"}},
    {"finished": False}, {"failed": False}, {"started": "yes"}, {"pid": 0},
    {"last_message": {"message": "x", "type": "info"}}, {"last_message": "x"},
    {"return_code": "1"}, {"vm_id": "not-a-uuid"}, {"progress": -1}, {"stage": 5},
    {"transport": "nfs"}, {"tag": "today"}, {"wrapper_pid": "1"}, {"started_at": "now"},
    {"finished": True},                      # without finished_at
])
def test_state_schema_refuses(change):
    state = make_state("copying").data
    state.update(change)
    state = {k: v for k, v in state.items() if v is not None}
    assert schema_errors(STATE_SCHEMA, state) != []


def _run_and_sample(tmp_path, scenario, job_extra):
    """Run the real wrapper (foreground, fake virt-v2v) and collect every distinct state."""
    dirs = wr.WrapperDirs(tmp_path)
    exe = make_fake_v2v(dirs.bin, **scenario)
    document = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": "esx://root@h?no_verify=1",
                "vmware_password": "pw", "vmware_fingerprint": FP, "output_dir": dirs.out,
                "daemonize": False, "source_disks": ["[datastore1] testvm/testvm.vmdk"],
                "throttling": {"cpu": "50%"}}
    document.update(job_extra)
    p = wr.start(dirs.args(exe), document)
    seen = []
    try:
        state_file = json.loads(p.stdout.readline())["state_file"]
        wr.wait_state(state_file, lambda s: s.get("finished"), timeout=60, interval=0.02, seen=seen)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
    return p.returncode, seen


@pytest.fixture(scope="module")
def real_states(tmp_path_factory):
    ok = _run_and_sample(tmp_path_factory.mktemp("ok"), dict(
        log=data("run05-vmx-ssh-port-uri.vx.log"), mr=data("run05-vmx-ssh-port-uri.vx.mr.log"),
        duration=1.5), {})
    bad = _run_and_sample(tmp_path_factory.mktemp("bad"), dict(
        log=data("kill01-sigterm-during-copy.vx.log"), mr=data("kill01-sigterm-during-copy.vx.mr.log"),
        duration=0.5, exit_code=1), {"throttling": {"cpu": "50"}})    # not network: that would shape the host
    return ok, bad


def test_real_run_states_validate(real_states):
    (rc_ok, ok), (rc_bad, bad) = real_states
    assert rc_ok == 0 and rc_bad == 2
    assert len(ok) >= 3, "too few snapshots to mean anything"
    for snapshot in ok + bad:
        assert schema_errors(STATE_SCHEMA, snapshot) == [], snapshot
    assert ok[-1]["finished"] is True and "failed" not in ok[-1]
    assert bad[-1]["failed"] is True and bad[-1]["last_message"]["message"]


def test_every_state_key_is_documented_and_exercised(real_states):
    (_, ok), (_, bad) = real_states
    documented = set(STATE_SCHEMA.schema["properties"])
    written = set().union(*(set(s) for s in ok + bad))
    assert written - documented == set(), "the wrapper writes keys the schema does not document"
    made = set().union(*(set(make_state(s).data) for s in ("fresh", "copying", "finished", "failed")))
    assert documented - (written | made) == set()


# -- the man page --------------------------------------------------------------------
def _man_text():
    with open(MAN_PAGE, encoding="utf-8") as f:
        return f.read().replace("\\-", "-").replace("\\_", "_").replace("\\(lq", "\"")


def test_man_page_names_every_key_option_and_variable():
    text = _man_text()
    assert '"virt-v2v-wrapper %s"' % wrapper.__version__ in text.splitlines()[1]
    missing = [k for k in JOB_SCHEMA.schema["properties"] if k not in text]
    missing += [k for k in STATE_SCHEMA.schema["properties"] if k not in text]
    for opt, attr, _meta, _help, _default in LOCATIONS:
        missing += [w for w in ("--" + opt, env_name(attr)) if w not in text]
    missing += [w for w in ("--validate", "--checks", "--check-rhv-guest-tools", "--version", "status",
                            "--watch", "--json", "--plain", "--interval", "virt-v2v-wrapper.py",
                            "CPUQuota", "unlimited", ".throttle", "-mr.log", "-wrapper.log")
                if w not in text]
    assert missing == []


def test_man_page_renders_without_warnings():
    groff = shutil.which("groff")
    if not groff:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    with open(MAN_PAGE, "rb") as f:
        page = f.read()
    p = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z"], input=page, capture_output=True,
                       timeout=60)
    assert p.returncode == 0 and p.stderr == b""
    p = subprocess.run([groff, "-man", "-Tascii", "-P-cbou"], input=page, capture_output=True,
                       timeout=60)
    for heading in (b"NAME", b"SYNOPSIS", b"OPTIONS", b"ENVIRONMENT", b"FILES", b"EXIT STATUS"):
        assert b"\n" + heading + b"\n" in p.stdout


def test_schemas_ship_in_the_package():
    # setup.py package_data: wrapper/schemas/*.json
    names = sorted(n for n in os.listdir(SCHEMAS) if n.endswith(".json"))
    assert names == ["inspection.schema.json", "job.schema.json", "state.schema.json"]
