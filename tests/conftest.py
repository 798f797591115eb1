"""Test configuration: fixture plugins for the integration tests live in
their own modules (tests/integration/fx_*.py, tests/ovirt_standin)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

pytest_plugins = [p for p, f in (
    ("tests.integration.fx_esxi", "integration/fx_esxi.py"),
    ("tests.integration.fx_systemd", "integration/fx_systemd.py"),
    ("tests.integration.fx_netns", "integration/fx_netns.py"),
    ("tests.ovirt_standin.fixtures", "ovirt_standin/fixtures.py"),
) if os.path.exists(os.path.join(HERE, f))]
