"""pytest plugin: network namespaces joined by a veth pair, and a receiver-side meter.

Fixtures:
  ``netns_pair``   a NetnsPair that is up: ``.a`` (sender, va 198.18.0.1) <-> ``.b`` (receiver,
                   vb 198.18.0.2); ``.runner()`` runs commands in ``.a``; deleted at teardown
  ``receiver``     factory: ``receiver()`` starts a netns.Receiver in ``netns_pair.b`` on a new
                   port and returns it; stopped at teardown
"""
import itertools
import shutil

import pytest

try:
    from . import netns as netns_mod
except ImportError:
    import netns as netns_mod


@pytest.fixture(scope="session")
def _netns_session():
    import os
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    lacking = [t for t in ("ip", "nsenter", "tc", "nft") if shutil.which(t) is None]
    if lacking:
        pytest.skip("missing for the network tests: " + ", ".join(lacking) + " (see .ci/deps-net.sh)")
    netns_mod.clean_stale()
    yield


@pytest.fixture
def netns_pair(_netns_session):
    pair = netns_mod.NetnsPair()
    pair.up()
    try:
        yield pair
    finally:
        pair.down()


@pytest.fixture
def receiver(netns_pair):
    started = []
    ports = itertools.count(5301)

    def start(port=None):
        r = netns_mod.Receiver(netns_pair.b, port or next(ports))
        started.append(r)
        return r.start()

    yield start
    for r in started:
        r.stop()
