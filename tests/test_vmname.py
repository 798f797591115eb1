"""The VM's name: one function, and every place that shows it agrees."""
import types

import pytest

from wrapper import vmname
from wrapper.config import Config, RhvUploadTarget, SshSource
from wrapper.errors import JobError
from wrapper.job import initial_state
from wrapper.observe import metrics
from wrapper.ovirt import preflight
from wrapper.ovirt.api import TargetFacts
from wrapper.runner import Result
from wrapper.security.secrets import Secret
from wrapper.settings import Settings
from wrapper.users import RunUser

URI = "ssh://root@esx.example.com/vmfs/volumes/ds/"


@pytest.mark.parametrize("vm_name, expected", [
    (URI + "tg-mini/tg-mini.vmx", "tg-mini"),
    (URI + "My%20VM/My%20VM.VMX", "My VM"),          # decoded, .VMX stripped
    (URI + "web/web%20one.Vmx", "web one"),
    ("ssh://root@esx:2222/vmfs/volumes/ds/a/b%2Fc.vmx", "b/c"),   # one path segment
    (URI + "odd/odd.vmx.bak", "odd.vmx.bak"),           # only a final .vmx goes
    (URI + "x/.vmx", ".vmx"),                           # never an empty name
    (URI + "caf%C3%A9/caf%C3%A9.vmx", "café"),
    ("SSH://root@esx/vmfs/volumes/ds/u/Up.vmx", "Up"),
])
def test_ssh_uri_gives_the_vmx_base_name(vm_name, expected):
    assert vmname.display_name(vm_name, "ssh") == expected


@pytest.mark.parametrize("vm_name", ["My VM", "My%20VM", "ssh://x/y/z.vmx", "vm.vmx"])
def test_a_vddk_name_is_the_libvirt_domain_name_unchanged(vm_name):
    assert vmname.display_name(vm_name, "vddk") == vm_name


def test_a_uri_urlsplit_refuses_is_not_an_exception():
    # config refuses it first; the name function must still not raise
    assert vmname.display_name("ssh://[::1/vm/vm.vmx", "ssh") == "vm"


def _config(vm_name):
    target = RhvUploadTarget(url="https://engine/ovirt-engine/api", password=Secret("pw"),
                             cluster="Default", storage="data", cafile=None, insecure=True)
    return Config(vm_name=vm_name, source=SshSource(key=None), target=target)


def test_state_file_metrics_and_preflight_agree_on_the_percent_encoded_case():
    """Issue 19: the state file and metrics showed ``My%20VM.VMX`` while the
    pre-flight looked for ``My VM`` on the engine."""
    config = _config(URI + "My%20VM/My%20VM.VMX")
    state = initial_state(config, types.SimpleNamespace(tag="t1"))
    assert state["vm"] == "My VM"

    text = metrics.state_exposition(state.data, "/state/t1.state", 1000.0)
    assert 'vm="My VM"' in text and "%20" not in text

    seen = {}

    def check_target(access, storage, cluster, vm_name, timeout):
        seen["vm_name"] = vm_name
        return TargetFacts("dc", "sd-id", "nfs", "cl-id", "x86_64")

    def run_as(user, argv, **kw):
        out = "name=python\npython_version=3.11\n" if argv[0] != "python3" else ""
        return Result(tuple(argv), 0, out, "")

    try:
        preflight.check(config, Settings(), RunUser(0, 0, "root", "/root"), {"PATH": "/p"},
                        object(), check_target=check_target, run_as=run_as)
    except JobError:       # the probe's answer is not what this test is about
        pass
    assert seen == {"vm_name": "My VM"}
