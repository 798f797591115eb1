"""Test configuration: fixture plugins for the integration tests live in
their own modules (tests/integration/fx_*.py, tests/ovirt_standin)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

# The fake virt-v2v's vddk jobs name VMware hosts nobody answers for: the VDDK
# pre-flight (wrapper.vmware.preflight) is off for every wrapper these tests start,
# unless a test turns it on (tests/test_vmware_preflight.py, the VDDK world's tests).
PREFLIGHT_ENV = "VIRT_V2V_WRAPPER_VDDK_PREFLIGHT"
os.environ.setdefault(PREFLIGHT_ENV, "off")

pytest_plugins = [p for p, f in (
    ("tests.integration.fx_esxi", "integration/fx_esxi.py"),
    ("tests.integration.fx_systemd", "integration/fx_systemd.py"),
    ("tests.integration.fx_netns", "integration/fx_netns.py"),
    ("tests.integration.fx_vddk", "integration/fx_vddk.py"),
    ("tests.ovirt_standin.fixtures", "ovirt_standin/fixtures.py"),
) if os.path.exists(os.path.join(HERE, f))]


DURATIONS_ENV = "V2VW_DURATIONS_FILE"
DURATIONS_COUNT = 40


def pytest_terminal_summary(terminalreporter):
    """With V2VW_DURATIONS_FILE set (tests/run-all.sh sets it to
    docs/test-durations.txt), also write the slowest tests to that file, so
    the suite's cost is kept with the code and not only scrolled past."""
    path = os.environ.get(DURATIONS_ENV)
    if not path:
        return
    rows = []
    for reports in terminalreporter.stats.values():
        for rep in reports:
            if getattr(rep, "when", None) and getattr(rep, "duration", None) is not None:
                rows.append((rep.duration, rep.when, rep.nodeid))
    rows.sort(reverse=True)
    total = sum(d for d, _, _ in rows)
    lines = ["# slowest %d of %d test phases (setup/call/teardown), %.0f s in all"
             % (min(DURATIONS_COUNT, len(rows)), len(rows), total),
             "# written by tests/conftest.py (%s); do not edit by hand" % DURATIONS_ENV]
    lines += ["%9.2fs %-8s %s" % row for row in rows[:DURATIONS_COUNT]]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    terminalreporter.write_line("durations written to %s" % path)
