"""pytest plugin: the stand-in oVirt engine.

Load it with ``pytest_plugins = ["tests.ovirt_standin.fixtures"]`` (root
conftest or a test module).  Fixtures:

* ``ovirt_pki`` (session): CA, server certificate for 127.0.0.1, unrelated CA;
* ``ovirt_engine``: a started :class:`StandinEngine` (user ``admin@internal``,
  password ``ovirt_engine.password``), stopped after the test even on failure;
* ``ovirt_access``: an ``EngineAccess`` for it, verifying with the right CA;
* ``ovirt_world``: a :class:`World`: the engine wired to a real ovirt-imageio
  daemon (image transfers get tickets there), with data center ``Default``
  holding storage domain ``data-nfs`` (nfs) and cluster ``Default``; its
  directory (``ovirt_world.directory``) is under /var/tmp, mode 0755, so a
  run-as user can reach the client files it writes there.  Skips (fails
  under CI) when ovirt-imageio is not installed.
"""
import contextlib
import os
import shutil
import tempfile

import pytest

from tests.ovirt_standin import imageio as _imageio
from tests.ovirt_standin.engine import StandinEngine, make_pki
from tests.ovirt_standin.world import start_world


@pytest.fixture(scope="session")
def ovirt_pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make the stand-in engine's certificates")
    directory = tempfile.mkdtemp(prefix="v2vw-ovirt-pki-", dir="/var/tmp")
    os.chmod(directory, 0o755)      # the CA must reach a run-as user; the key stays 0600
    try:
        yield make_pki(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def ovirt_engine(ovirt_pki):
    engine = StandinEngine(ovirt_pki, password="Engine-Pa55word")
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def ovirt_access(ovirt_engine, ovirt_pki):
    from wrapper.ovirt.api import access_from_url
    return access_from_url(ovirt_engine.api_url, ovirt_engine.password, ovirt_pki.ca, False)


@contextlib.contextmanager
def standin_world(pki, **kw):
    """A started :class:`World` in a new /var/tmp directory (0755), stopped and removed
    after; ``kw`` go to :func:`start_world` (storage_type, write_limit, ...).  Skips (fails
    under CI) when ovirt-imageio is not installed."""
    if not _imageio.available():
        if os.environ.get("CI"):
            raise AssertionError("ovirt-imageio is not importable: .ci/deps-ovirt.sh installs it")
        pytest.skip("ovirt-imageio is not installed (run .ci/deps-ovirt.sh)")
    directory = tempfile.mkdtemp(prefix="v2vw-ovirt-", dir="/var/tmp")
    os.chmod(directory, 0o755)
    try:
        world = start_world(pki, directory, password="Engine-Pa55word", **kw)
        try:
            yield world
        finally:
            world.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def ovirt_world(ovirt_pki):
    with standin_world(ovirt_pki) as world:
        yield world
