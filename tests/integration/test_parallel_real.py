"""Issue 21: ``--parallel`` against the real virt-v2v 2.10 (Debian sid world), through the
CLI: a two-disk guest (``testvm2``: 512 MiB OS disk as virt-v2v's in0, 64 MiB data disk
as in1, ``source_disks`` reversed) copied with ``--parallel 2`` (the default setting).

One conversion serves every assertion: each disk is credited from its own nbdcopy (the
shim's tagged lines), the big disk is not marked 100 when the second copy starts (the
lab's bug), no disk moves backwards, every value a disk shows is one its own nbdcopy
printed, and ``status --json`` and the metrics give each disk its own figures while they
copy.  On the host's 2.2 (no ``parallel-option``) the serial path is what
test_real_conversions.py already covers; here only the argv is checked there.
The copy-phase timing with and without ``--parallel`` is bench/parallel_copy.py's.
"""
import os
import re

import pytest

if not os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "worlds.py")):
    pytest.skip("needs tests/integration/worlds.py (the version-matrix worlds of issue 21)",
                allow_module_level=True)
try:
    from . import parallel_world as pw
    from . import worlds
except ImportError:  # pragma: no cover - depends on how pytest was started
    import parallel_world as pw
    import worlds

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sid(fake_esxi):
    world = worlds.get("sid")
    if world is None:
        pytest.skip(worlds.not_ready_reason("sid"))
    with pw.trusted(world, fake_esxi):
        yield world


@pytest.fixture(scope="module")
def parallel_run(sid, fake_esxi):
    run, state = pw.convert(sid, fake_esxi, "parallel2", every=0.5)
    run.print_sequence()
    yield run, state, fake_esxi.vddk_style_path("testvm2", "testvm2"), \
        fake_esxi.vddk_style_path("testvm2", "testvm2_1")
    run.cleanup()


def series(run, path):
    out = []
    for _, s in run.states:
        match = [d["progress"] for d in s.get("disks", []) if d["path"] == path]
        out.append(match[0] if match else None)
    return out


def test_parallel_conversion_succeeds_with_parallel_2(parallel_run):
    run, state, os_disk, data_disk = parallel_run
    assert "failed" not in state, "%s\n%s" % (state, run.tail("wrapper_log"))
    assert state["return_code"] == 0 and state["disk_count"] == 2
    wrapper_log = run.tail("wrapper_log", None)
    command = re.search(r"virt-v2v command: (.*)", wrapper_log).group(1)
    assert "--parallel 2 " in command
    assert "copying up to 2 disks at once" in wrapper_log
    assert [d["progress"] for d in state["disks"]] == [100, 100]
    assert {d["path"] for d in state["disks"]} == {os_disk, data_disk}
    assert run.wait_no_leftovers() == {}


def test_each_disk_credited_from_its_own_nbdcopy(parallel_run):
    run, state, os_disk, data_disk = parallel_run
    with open(run.announced["v2v_log"], "rb") as f:
        log = f.read()
    tagged = pw.tagged_progress(log)
    assert set(tagged) == {0, 1}, "no tagged lines: the shim was not used"
    assert tagged[0][-1] == tagged[1][-1] == 100
    # virt-v2v's in0 is the OS disk (source_disks were reversed: the wrapper placed it)
    own = {os_disk: set(tagged[0]) | {0, 100}, data_disk: set(tagged[1]) | {0, 100}}
    for path in (os_disk, data_disk):
        values = [v for v in series(run, path) if v is not None]
        assert values == sorted(values), (path, values)                 # never backwards
        assert set(values) <= own[path], (path, values, tagged)        # only its own figures
    os_series, data_series = series(run, os_disk), series(run, data_disk)
    # the lab's bug: the OS disk marked 100 the moment the second copy started
    second = next(i for i, (_, s) in enumerate(run.states) if s.get("stage") == "Copying disk 2/2")
    assert os_series[second] < 100, run.states[second]
    # the big disk reaches 100 only with its own last line: 0 < p < 100 seen on it
    assert any(0 < v < 100 for v in os_series if v is not None), os_series
    # the copies overlapped: the data disk's nbdcopy was started (virt-v2v's debug line of
    # its command) before the OS disk's printed 100 (nbdcopy's first figure of a small disk
    # may come only at its end, so the tagged lines alone need not interleave)
    started_in1 = log.index(b"nbdcopy 'nbd+unix:///?socket=")
    started_in1 = log.index(b"/in1' ", started_in1)
    assert started_in1 < log.index(b"virt-v2v-wrapper: nbdcopy in0 progress 100/100"), \
        pw.tagged_order(log)
    print("tagged lines in log order:", pw.tagged_order(log))
    print("OS disk:", os_series, "\ndata disk:", data_series)


def test_status_and_metrics_show_each_disk_on_its_own(parallel_run):
    run, state, os_disk, data_disk = parallel_run
    assert run.samples, "no sample taken while copying"
    final = state["copy"]
    assert final["eta"] == 0.0 and final["size"] > 0
    by_path = {d["path"]: c for d, c in zip(state["disks"], final["disks"])}
    big, small = by_path[os_disk], by_path[data_disk]
    assert big["rate"] and small["rate"]                    # each its own average
    assert big["started_at"] < small["finished_at"]         # overlapping copies
    for t, summary, metrics in run.samples:
        disks = {d["path"]: d for d in summary["disks"]}
        for path, d in disks.items():
            if d.get("eta") is not None:
                assert d["eta"] >= 0
            index = str([x["path"] for x in summary["disks"]].index(path) + 1)
            ratio = metrics.get("v2v_disk_progress_ratio", {}).get(index)
            assert ratio is not None and 0 <= ratio <= 1
    # while the OS disk copies, some sample gives it a rate of its own
    assert any(next(d for d in s["disks"] if d["path"] == os_disk).get("rate")
               for _, s, _ in run.samples), [s for _, s, _ in run.samples]


def test_host_virt_v2v_2_2_keeps_the_serial_path():
    """Debian 12's virt-v2v 2.2 has no parallel-option: the plan is serial, so the command
    and environment are exactly what they were (test_real_conversions.py runs them)."""
    import shutil
    import subprocess
    from wrapper import parallel
    from wrapper.settings import resolve
    from wrapper.v2v import parse_capabilities
    if shutil.which("virt-v2v") is None:
        pytest.skip("no virt-v2v on this host")
    caps = parse_capabilities(subprocess.run(["virt-v2v", "--machine-readable"], capture_output=True,
                                             text=True, timeout=60, check=True).stdout)
    if caps.has(parallel.CAPABILITY):
        pytest.skip("this host's virt-v2v copies in parallel")
    the_plan = parallel.plan(resolve({}, {}), caps, 2)
    assert the_plan == parallel.SERIAL
    argv, env = ["virt-v2v", "-v", "vm"], {"PATH": "/usr/bin"}
    assert parallel.command(argv, the_plan) == argv and parallel.environment(env, the_plan) == env
