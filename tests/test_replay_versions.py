"""Replays of real virt-v2v 2.6 and 2.10 logs (issue 21) through the progress parser and the
state, next to the 2.2 replays in test_state.py.

The logs were captured by tests/integration/test_version_matrix.py in the worlds of
.ci/worlds.sh and trimmed by tools/trim_v2v_log.py (tests/data/virt-v2v-*/README.md).  The
two-disk conversion had ``source_disks`` = [data disk, OS disk]: each caller string must end
up on exactly one disk, the OS disk copied first, and every disk credited 100.
"""
import os

import pytest

from tests.fakes import data
from wrapper import progress as p
from wrapper.state import State, apply

VERSIONS = ("2.6", "2.10")
OS_DISK = "[datastore1] testvm2/testvm2.vmdk"
DATA_DISK = "[datastore1] testvm2/testvm2_1.vmdk"


def log(version, name):
    return data(os.path.join("virt-v2v-%s" % version, name))


def replay(blob, state, chunk=256):
    """Feed ``blob`` in ``chunk``-byte reads; the disks' progress after each read."""
    parser = p.LogParser(2)
    seen = []
    for i in range(0, len(blob), chunk):
        for e in parser.feed(blob[i:i + chunk]):
            apply(state, e)
        seen.append([d["progress"] for d in state["disks"]])
    for e in parser.flush():
        apply(state, e)
    return seen


@pytest.mark.parametrize("version", VERSIONS)
def test_two_disk_log_credits_each_shuffled_disk(version):
    with open(log(version, "two-disk.vx.log"), "rb") as f:
        blob = f.read()
    s = State([DATA_DISK, OS_DISK])
    seen = replay(blob, s)
    apply(s, p.V2vMessage("message", "Creating output metadata"))
    assert s["disks"] == [{"path": OS_DISK, "progress": 100},
                          {"path": DATA_DISK, "progress": 100}]
    assert s["disk_count"] == 2 and s["progress"] == 100
    assert any(0 < a < 100 and b == 0 for a, b in seen), seen      # the OS disk moved first
    assert all(b == 0 or a == 100 for a, b in seen), seen          # ... and alone
    assert s.sizes == {0: 536870912, 1: 67108864}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("chunk", [1, 4096, 1 << 20])
def test_two_disk_log_gives_the_same_events_in_any_read_size(version, chunk):
    with open(log(version, "two-disk.vx.log"), "rb") as f:
        blob = f.read()
    if chunk == 1:
        blob = blob[-20000:]        # byte by byte: the tail (the copy of disk 2 and the end)

    def events(size):
        parser = p.LogParser(2)
        out = []
        for i in range(0, len(blob), size):
            out += parser.feed(blob[i:i + size])
        return out + parser.flush()

    assert events(chunk) == events(len(blob) or 1)


@pytest.mark.parametrize("version", VERSIONS)
def test_sigterm_log_ends_with_the_signal(version):
    with open(log(version, "sigterm.vx.log"), "rb") as f:
        blob = f.read()
    parser = p.LogParser(2)
    events = parser.feed(blob) + parser.flush()
    assert p.KilledBySignal("SIGTERM") in events, events[-5:]
    s = State()
    for e in events:
        apply(s, e)
    assert s["disk_count"] == 2
    assert all(d["progress"] < 100 for d in s["disks"][:1]), s["disks"]
