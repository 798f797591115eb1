"""pytest fixtures for the attack / fault suites (helpers in attack.py).

Not a registered plugin: the test modules import them explicitly
(``from tests.integration.fx_attack import *  # noqa``).

  ``attack_users``  session: the real local users v2vw-runas, v2vw-caller,
                    v2vw-other (useradd; userdel -r at the end)
  ``scratch``       a 0755 directory under /var/tmp for one test; teardown kills
                    what the test started (by PID), unmounts, removes it
Both skip when not root.
"""
import os

import pytest

from tests.integration import attack

__all__ = ["attack_users", "scratch"]


def _need_root():
    if not attack.is_root():
        pytest.skip("needs root: creates users, mounts tmpfs, runs the wrapper as root")


@pytest.fixture(scope="session")
def attack_users():
    _need_root()
    users = attack.acquire_users()
    yield users
    attack.release_users()


@pytest.fixture
def scratch(request):
    _need_root()
    s = attack.Scratch(request.node.name)
    yield s
    s.cleanup()
    assert not os.path.exists(s.root)
