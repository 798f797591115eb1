"""pytest fixtures for real virt-v2v conversions from a fake ESXi host (plugin module).

List it in ``pytest_plugins``. Fixtures:

* ``guest_images`` (session): :class:`guestimage.GuestImages`, built/cached on first use
  (cold ~95 s with the debootstrap download, cached a few ms).
* ``fake_esxi`` (session): a started :class:`fake_esxi.FakeEsxi` with VMs ``testvm``
  (1 disk), ``testvm2`` (OS + data disk) and ``brokenvm`` (flat vmdk missing).
* ``esxi_agent`` (function): an :class:`fake_esxi.SshAgent` holding the fake host's client
  key, for tests that run ssh/virt-v2v directly (the wrapper starts its own agent).
* ``v2v_env`` (session): environment for running virt-v2v directly on this kind of machine
  (no libvirtd, KVM unusable: ``LIBGUESTFS_BACKEND=direct``, ``..._SETTINGS=force_tcg``).

Prerequisites missing (not root, programs not installed) -> skip with the reason;
``.ci/deps-virt-v2v.sh`` installs everything.
"""

import os
import shutil

import pytest

try:  # importable both as tests.integration.fx_esxi and with tests/integration on sys.path
    from . import fake_esxi as _fake_esxi
    from . import guestimage as _guestimage
except ImportError:  # pragma: no cover - depends on how pytest was started
    import fake_esxi as _fake_esxi
    import guestimage as _guestimage

GUEST_BUILD_PROGRAMS = ("debootstrap", "mkfs.ext4", "sfdisk", "flock")
ESXI_PROGRAMS = ("/usr/sbin/sshd", "ssh", "scp", "ssh-keygen", "ssh-agent", "ssh-add")
V2V_PROGRAMS = ("virt-v2v", "nbdkit", "nbdcopy", "nbdinfo")


def missing_programs(names):
    return [n for n in names if shutil.which(n) is None]


def require(names, what):
    if os.geteuid() != 0:
        pytest.skip("%s needs root" % what)
    missing = missing_programs(names)
    if missing:
        pytest.skip("%s needs %s (run .ci/deps-virt-v2v.sh)" % (what, ", ".join(missing)))


@pytest.fixture(scope="session")
def guest_images():
    require(GUEST_BUILD_PROGRAMS, "building the test guest")
    return _guestimage.ensure_guest_images()


@pytest.fixture(scope="session")
def fake_esxi(guest_images):
    require(ESXI_PROGRAMS, "the fake ESXi host")
    images = {"os": guest_images.os_disk, "data": guest_images.data_disk}
    with _fake_esxi.FakeEsxi(images) as fx:
        yield fx


@pytest.fixture
def esxi_agent(fake_esxi):
    # default workdir /var/tmp: pytest's tmp_path can exceed the 108-byte socket path limit
    with _fake_esxi.SshAgent(fake_esxi.client_private_key_text) as agent:
        yield agent


@pytest.fixture(scope="session")
def v2v_env():
    require(V2V_PROGRAMS, "a real virt-v2v conversion")
    env = dict(os.environ)
    env["LANG"] = "C"
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    env.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    return env
