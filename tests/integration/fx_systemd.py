"""pytest plugin: a real, throw-away systemd (see sdmanager.py).

Fixtures:
  ``test_systemd``        a started manager in the host's network namespace
  ``make_test_systemd``   factory: ``make_test_systemd(netns="NAMEa", net_cls=True)``; every
                          manager it made is stopped at teardown, also when the test fails
Load with ``pytest_plugins`` (root conftest) or ``-p``.  Needs root and systemd/util-linux;
skips with the reason when they are missing.
"""
import uuid

import pytest

try:
    from . import sdmanager
except ImportError:                     # tests/integration on sys.path (rootdir-less layout)
    import sdmanager


@pytest.fixture(scope="session")
def _test_systemd_session():
    why = sdmanager.missing_prerequisites()
    if why:
        pytest.skip(why)
    sdmanager.clean_stale()
    yield


@pytest.fixture(name="make_test_systemd")
def _make_test_systemd(_test_systemd_session):
    made = []

    def make(netns=None, net_cls=False):
        m = sdmanager.TestSystemd("%s%s" % (sdmanager.PREFIX, uuid.uuid4().hex[:6]),
                                  netns=netns, net_cls=net_cls)
        made.append(m)
        return m.start()

    yield make
    errors = []
    for m in reversed(made):
        try:
            m.stop()
        except Exception as e:          # stop every manager, then report
            errors.append(str(e))
    if errors:
        pytest.fail("test systemd teardown: " + "; ".join(errors))


@pytest.fixture(name="test_systemd")
def _test_systemd(make_test_systemd):
    return make_test_systemd()
