"""`virt-v2v-wrapper status` shows the copy rate and time left (wrapper/rate.py)."""
import json

from test_status import T0, make_state, run_status, write
from wrapper import progress as ev
from wrapper import rate
from wrapper.state import apply

MiB = 1 << 20


def measured_state(points, sizes=(100 * MiB, 300 * MiB)):
    """The 'copying' state, measured by the real Throughput at T0 + t for each (t, percent)
    of disk 2 (disk 1 was copied from T0 to T0 + 10)."""
    clock = {"now": 0.0}
    tp = rate.Throughput(lambda: clock["now"], wall=lambda: T0 + clock["now"])
    s = make_state("fresh")
    s.set("started", True)
    s.set("pid", 200)
    for i, size in enumerate(sizes):
        s.sizes[i] = size
    apply(s, ev.CopyingDisk(0, 2))
    for t in range(0, 11):
        clock["now"] = t
        apply(s, ev.DiskProgress(10 * t))
        tp.update(s)
    apply(s, ev.CopyingDisk(1, 2))
    for t, pct in points:
        clock["now"] = t
        apply(s, ev.DiskProgress(pct))
        tp.update(s)
    return s


def test_status_json_and_text_show_rate_and_time_left(tmp_path):
    # disk 2: 1 % (3 MiB) a second from T0 + 10 to T0 + 30
    s = measured_state([(10 + t, t) for t in range(0, 21)])
    path = write(tmp_path / "v2v-import-20270115T080000-100.state", s)
    rc, out, _ = run_status(["--json", path], clock=lambda: T0 + 35)
    assert rc == 0
    c = json.loads(out)["conversions"][0]
    d1, d2 = c["disks"]
    assert d1["eta"] == 0.0 and d1["size"] == 100 * MiB and d1["bytes_copied"] == 100 * MiB
    assert abs(d1["rate"] - 10 * MiB) < 0.05 * 10 * MiB
    assert abs(d2["rate"] - 3 * MiB) < 0.05 * 3 * MiB
    # 80 % left at 1 %/s, estimated at T0 + 30, read at T0 + 35
    assert abs(d2["eta"] - 75) < 2
    assert c["size"] == 400 * MiB and c["bytes_copied"] == 160 * MiB
    # overall: 240 MiB left at disk 2's 3 MiB/s, estimated at T0 + 30, read at T0 + 35
    assert abs(c["eta"] - 75) < 2
    rc, out, _ = run_status([path], clock=lambda: T0 + 35)
    assert "done, 10.0 MiB/s on average   100.0 MiB of 100.0 MiB" in out
    assert "3.0 MiB/s   0:01:1" in out and "60.0 MiB of 300.0 MiB" in out
    assert "160.0 MiB of 400.0 MiB" in out


def test_status_says_unknown_until_the_estimate_settles(tmp_path):
    s = measured_state([(10, 0), (11, 1)])
    path = write(tmp_path / "v2v-import-20270115T080000-100.state", s)
    rc, out, _ = run_status([path], clock=lambda: T0 + 12)
    assert "time left unknown" in out
    rc, out, _ = run_status(["--json", path], clock=lambda: T0 + 12)
    c = json.loads(out)["conversions"][0]
    assert c["disks"][1]["eta"] is None
    assert c["eta"] is None            # nor overall: it goes at the rate of the disk being copied


def test_status_without_copy_figures_is_unchanged(tmp_path):
    path = write(tmp_path / "v2v-import-20270115T080000-100.state", make_state("copying"))
    rc, out, _ = run_status([path])
    assert "left" not in out and "MiB/s" not in out
    c = json.loads(run_status(["--json", path])[1])["conversions"][0]
    assert c["eta"] is None and c["disks"][0]["rate"] is None
