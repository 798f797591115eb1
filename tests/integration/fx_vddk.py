"""pytest fixtures for the VDDK test world (plugin module; tests/integration/vddk/).

Fixtures:

* ``vddk_world`` (session): the built :class:`vddk.world.World` (cached under
  /var/tmp/v2vw-vddk, rebuilt when its sources change; cold ~2 min, cached ~50 ms).
  Skips when not root or when .ci/deps-vddk.sh's packages are missing.
* ``vddk_plugin`` (session): the world, saying which nbdkit vddk plugin the tests use: the
  real one (Debian 13's, unpacked) or, when it cannot be had, the stand-in plugin (a
  warning in the test summary says so).
* ``vddk_standin`` (function): ``start(vms=None, **options)`` starts a SOAP stand-in
  (:class:`vddk.world.Standin`; options ``vpx``, ``powered_on``, ``password``,
  ``library_password``, ``read_delay_us``, ``fail_read``, ``calllog``) and stops it
  after the test. Default VMs: ``testvm`` (the OS disk) and ``testvm2`` (OS + data disk).
  The stand-in has ``libdir``, ``thumbprint``, ``password``, ``password_file``,
  ``esx_uri()``, ``vpx_uri()``, ``morefs``.
* ``vddk_run_as`` (session): a ``vdsm:kvm`` look-alike user (``v2vw-vddk``, group kvm)
  to pass as ``--run-as``.

Helpers for running the wrapper against a stand-in's library directory:
:func:`vddk_path` (PATH with the world's ``nbdkit`` first) and :func:`with_libdir`
(the wrapper's argv such that virt-v2v gets ``-io vddk-libdir`` = the given directory).
"""

import os
import pwd
import shutil
import subprocess
import warnings
from collections import namedtuple

import pytest

try:
    from .vddk import world as _world
except ImportError:  # pragma: no cover - depends on how pytest was started
    from vddk import world as _world

RUN_AS = "v2vw-vddk"
FIXED_LIBDIR = "/opt/vmware-vix-disklib-distrib"   # wrapper/config.py VDDK_LIBDIR
BUILD_PROGRAMS = ("go", "gcc", "openssl", "nbdkit", "apt-get", "dpkg-deb", "nm", "unshare")
RunAs = namedtuple("RunAs", "name uid gid")


def _skip_unless_ready():
    if os.geteuid() != 0:
        pytest.skip("the VDDK world needs root")
    missing = [p for p in BUILD_PROGRAMS if shutil.which(p) is None]
    if missing or not os.path.isdir("/usr/share/gocode/src/github.com/vmware/govmomi/simulator"):
        pytest.skip("the VDDK world needs %s (run .ci/deps-vddk.sh)"
                    % (", ".join(missing) or "golang-github-vmware-govmomi-dev"))


@pytest.fixture(scope="session")
def vddk_world():
    _skip_unless_ready()
    return _world.ensure_world()


@pytest.fixture(scope="session")
def vddk_plugin(vddk_world, pytestconfig):
    pytestconfig.stash[PLUGIN_KEY] = "%s (%s)" % (vddk_world.plugin_kind, vddk_world.plugin)
    if not vddk_world.real_plugin:
        warnings.warn("VDDK tests use the STAND-IN nbdkit vddk plugin: nbdkit's real one could "
                      "not be unpacked from Debian 13 (see %s/plugin.log)" % vddk_world.cache)
    print("\nVDDK world: nbdkit vddk plugin %s (%s)" % (vddk_world.plugin_kind,
                                                     vddk_world.plugin))
    return vddk_world


PLUGIN_KEY = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter, config):
    """Say which nbdkit vddk plugin the VDDK tests ran with (the real one, or the stand-in)."""
    kind = config.stash.get(PLUGIN_KEY, None)
    if kind is not None:
        terminalreporter.write_line("VDDK tests ran with the nbdkit vddk plugin: %s" % kind)


def default_vms():
    from tests.integration.guestimage import ensure_guest_images
    images = ensure_guest_images()
    return {"testvm": [images.os_disk], "testvm2": [images.os_disk, images.data_disk]}


@pytest.fixture
def vddk_standin(vddk_world):
    started = []

    def start(vms=None, **options):
        sim = _world.Standin(vddk_world, vms or default_vms(), **options)
        started.append(sim)
        sim.start()
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture(scope="session")
def vddk_run_as():
    if os.geteuid() != 0:
        pytest.skip("creates a user")
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-g", "kvm", "-s", "/bin/sh",
                        RUN_AS], check=True, capture_output=True, text=True)
    pw = pwd.getpwnam(RUN_AS)
    yield RunAs(RUN_AS, pw.pw_uid, pw.pw_gid)
    if not os.environ.get("V2VW_KEEP_TEST_USERS"):
        subprocess.run(["userdel", "-f", RUN_AS], capture_output=True)


def vddk_path(world, rest=None):
    """PATH with the world's nbdkit wrapper first (virt-v2v finds nbdkit on PATH)."""
    return "%s:%s" % (world.wrapper_dir, rest or os.environ.get("PATH", "/usr/bin:/bin"))


def wrapper_has_libdir_setting():
    """Whether the wrapper has the administrator setting ``--vddk-libdir`` (i21-caps)."""
    try:
        from wrapper import settings
    except ImportError:  # pragma: no cover
        return False
    return "vddk_libdir" in getattr(settings.Settings, "__dataclass_fields__", {})


NAMESPACE_SCRIPT = (
    'mount -t tmpfs -o mode=0755,size=64k v2vw-vddk-opt /opt || exit 125; '
    'if [ -n "$0" ]; then mkdir %s && mount --bind "$0" %s || exit 125; fi; '
    'exec "$@"' % (FIXED_LIBDIR, FIXED_LIBDIR))


def with_libdir(argv, libdir):
    """The wrapper command ``argv`` so that its virt-v2v uses ``libdir`` as VDDK's library
    directory (None: a libdir that does not exist).  With the ``--vddk-libdir`` setting it
    is that option; without it, the wrapper runs in a private mount namespace where
    /opt is a fresh tmpfs and the fixed path is a bind mount of ``libdir``: nothing
    changes on the host."""
    if wrapper_has_libdir_setting():
        return list(argv) + ["--vddk-libdir", str(libdir or "/nonexistent/vddk-libdir")]
    return (["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
             NAMESPACE_SCRIPT, str(libdir or "")] + list(argv))
