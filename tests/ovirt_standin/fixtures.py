"""pytest plugin: the stand-in oVirt engine.

Load it with ``pytest_plugins = ["tests.ovirt_standin.fixtures"]`` (root
conftest or a test module).  Fixtures:

* ``ovirt_pki`` (session): CA, server certificate for 127.0.0.1, unrelated CA;
* ``ovirt_engine``: a started :class:`StandinEngine` (user ``admin@internal``,
  password ``ovirt_engine.password``), stopped after the test even on failure;
* ``ovirt_access``: an ``EngineAccess`` for it, verifying with the right CA.
"""
import shutil

import pytest

from tests.ovirt_standin.engine import StandinEngine, make_pki


@pytest.fixture(scope="session")
def ovirt_pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make the stand-in engine's certificates")
    return make_pki(str(tmp_path_factory.mktemp("ovirt-pki")))


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
    from wrapper.ovirt_api import access_from_url
    return access_from_url(ovirt_engine.api_url, ovirt_engine.password, ovirt_pki.ca, False)
