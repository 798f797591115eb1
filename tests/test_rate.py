"""Rate and time-left maths (wrapper/rate.py): steady, bursty, stalled, finished."""
import pytest

from tests.fakes import Clock
from wrapper import progress as ev
from wrapper import rate
from wrapper.state import State, apply

MiB = 1 << 20


def feed(meter, points):
    for t, amount in points:
        meter.observe(amount, t)


# -- RateMeter ------------------------------------------------------------------
def test_steady_rate_and_eta_exact():
    m = rate.RateMeter()
    feed(m, [(t, 10 * t) for t in range(0, 11)])        # 10 units/s for 10 s
    assert m.rate(10) == pytest.approx(10)
    assert m.eta(100 - 100, 10) == 0.0
    assert m.eta(50, 10) == pytest.approx(5.0)


def test_unknown_until_settled():
    m = rate.RateMeter()
    assert m.rate(0) is None and m.eta(100, 0) is None
    feed(m, [(0, 0), (0.5, 5), (1.0, 10)])               # two reports, one second
    assert m.rate(1.0) == pytest.approx(10)
    assert m.eta(90, 1.0) is None                        # too early to say
    feed(m, [(1.5, 15), (2.0, 20)])
    assert m.eta(80, 2.0) == pytest.approx(8.0)


def test_bursty_reports_give_the_time_average():
    """Steps of 12.5 % alternating 0.1 s and 1.9 s apart: the instantaneous
    rate swings between 125 and 6.6 %/s; the smoothed one stays near the true
    average of 6.25 %/s, and so does the estimate."""
    m = rate.RateMeter()
    t, amount, points = 0.0, 0.0, [(0.0, 0.0)]
    for i in range(7):
        t += 0.1 if i % 2 == 0 else 1.9
        amount += 12.5
        points.append((t, amount))
    feed(m, points)
    true = amount / t
    assert m.rate(t) == pytest.approx(true, rel=0.35)
    eta = m.eta(100 - amount, t)
    assert eta == pytest.approx((100 - amount) / true, rel=0.35)


def test_rate_follows_a_change_of_speed():
    m = rate.RateMeter()
    feed(m, [(t, 10 * t) for t in range(0, 61)])                 # 10/s for a minute
    feed(m, [(60 + t, 600 + 2 * t) for t in range(1, 121)])      # then 2/s for two
    assert m.rate(180) == pytest.approx(2, rel=0.05)


def test_stall_decays_the_rate_and_hides_the_eta():
    m = rate.RateMeter()
    feed(m, [(t, 10 * t) for t in range(0, 11)])
    assert m.eta(50, 10.5) == pytest.approx(5.0)
    assert m.rate(10 + 1) == pytest.approx(10)           # one usual gap: no decay
    assert m.rate(10 + 21) < m.rate(10 + 11) < 10        # decays as the wait grows
    assert m.eta(50, 10 + 20) > 5.0                      # time left grows meanwhile
    assert not m.stalled(10 + rate.STALL_SECONDS)
    assert m.stalled(10 + rate.STALL_SECONDS + 1)
    assert m.eta(50, 10 + rate.STALL_SECONDS + 1) is None
    feed(m, [(45, 110)])                                 # moving again
    assert not m.stalled(45)


def test_slow_usual_gap_is_not_a_stall():
    """A disk whose bar moves once a minute is slow, not stalled."""
    m = rate.RateMeter()
    feed(m, [(60 * i, i) for i in range(6)])
    assert not m.stalled(300 + 100)
    assert m.eta(95, 300 + 30) == pytest.approx(95 * 60, rel=0.01)


def test_no_progress_is_not_a_report():
    m = rate.RateMeter()
    feed(m, [(0, 0), (1, 0), (2, 0), (3, 0)])
    assert m.rate(3) is None and m.reports == 0 and m.eta(100, 3) is None


def test_reports_closer_than_min_interval_merge():
    m = rate.RateMeter()
    feed(m, [(0, 0), (1.0, 10), (1.01, 11), (2.0, 20)])
    assert m.reports == 2
    assert m.rate(2.0) == pytest.approx(10, rel=0.01)


# -- Throughput on a State --------------------------------------------------------
def copy_state(sizes):
    state = State()
    apply(state, ev.CopyingDisk(0, len(sizes)))
    for i, size in enumerate(sizes):
        apply(state, ev.DiskSize(i, size))
    return state


def drive(state, tp, clock, points):
    for t, pct in points:
        clock.now = t
        apply(state, ev.DiskProgress(pct))
        tp.update(state)


def test_throughput_one_disk_steady_then_finished():
    clock = Clock()
    tp = rate.Throughput(clock, wall=lambda: 1000.0 + clock.now)
    state = copy_state([100 * MiB])
    tp.update(state)
    assert state["copy"]["disks"][0]["eta"] is None
    drive(state, tp, clock, [(t, 2 * t) for t in range(1, 21)])     # 2 %/s = 2 MiB/s
    c = state["copy"]
    d = c["disks"][0]
    assert d["size"] == 100 * MiB and d["bytes_copied"] == 40 * MiB
    assert d["rate"] == pytest.approx(2 * MiB, rel=0.01)
    assert d["eta"] == pytest.approx(30, abs=0.2)
    assert c["eta"] == pytest.approx(30, abs=0.2) and c["rate"] == pytest.approx(2 * MiB, rel=0.01)
    assert c["size"] == 100 * MiB and c["bytes_copied"] == 40 * MiB
    assert d["started_at"] == 1000.0 and c["at"] == 1020.0
    drive(state, tp, clock, [(t, 2 * t) for t in range(21, 51)])
    c = state["copy"]
    assert c["disks"][0]["eta"] == 0.0 and c["eta"] == 0.0
    assert c["disks"][0]["finished_at"] == 1050.0
    assert c["disks"][0]["rate"] == pytest.approx(2 * MiB, rel=0.01)   # the disk's average


def test_throughput_two_disks_overall_unknown_until_sizes_known():
    clock = Clock()
    tp = rate.Throughput(clock, wall=lambda: clock.now)
    state = State(["a", "b"])
    apply(state, ev.CopyingDisk(0, 2))
    apply(state, ev.DiskSize(0, 100 * MiB))
    drive(state, tp, clock, [(t, 5 * t) for t in range(0, 21)])
    c = state["copy"]
    assert c["size"] is None and c["eta"] is None          # disk 2's size is not known yet
    assert c["rate"] == pytest.approx(5 * MiB, rel=0.01)
    assert c["disks"][0]["eta"] == 0.0 and c["disks"][1]["eta"] is None
    apply(state, ev.CopyingDisk(1, 2))
    apply(state, ev.DiskSize(1, 300 * MiB))
    drive(state, tp, clock, [(20 + t, t) for t in range(1, 21)])    # 3 MiB/s
    c = state["copy"]
    assert c["size"] == 400 * MiB
    assert c["bytes_copied"] == 100 * MiB + 60 * MiB
    assert c["disks"][1]["rate"] == pytest.approx(3 * MiB, rel=0.01)
    assert c["disks"][1]["eta"] == pytest.approx(80 / 1.0, rel=0.02)
    # overall: what is left at the rate of the disk being copied, not the faded average of
    # both (which still remembers disk 1's 5 MiB/s)
    assert c["rate"] > 3.2 * MiB
    assert c["eta"] == pytest.approx(240 / 3, rel=0.02)


def test_overall_time_left_waits_for_the_new_disk_to_settle():
    clock = Clock()
    tp = rate.Throughput(clock, wall=lambda: clock.now)
    state = State(["a", "b"])
    apply(state, ev.CopyingDisk(0, 2))
    apply(state, ev.DiskSize(0, 100 * MiB))
    apply(state, ev.DiskSize(1, 100 * MiB))
    drive(state, tp, clock, [(t, 10 * t) for t in range(0, 11)])
    assert state["copy"]["eta"] == pytest.approx(10, rel=0.05)       # disk 2 at disk 1's speed
    apply(state, ev.CopyingDisk(1, 2))
    drive(state, tp, clock, [(11, 0), (12, 1)])
    assert state["copy"]["eta"] is None                 # disk 2's own rate is not known yet
    drive(state, tp, clock, [(11 + t, t) for t in range(2, 7)])
    assert state["copy"]["eta"] == pytest.approx(94, rel=0.05)       # 94 MiB at 1 MiB/s


def test_throughput_without_sizes_still_gives_time_left():
    """virt-v2v 1.x prints no sizes: the percent rate still gives an ETA."""
    clock = Clock()
    tp = rate.Throughput(clock, wall=lambda: clock.now)
    state = State()
    apply(state, ev.CopyingDisk(0, 1))
    drive(state, tp, clock, [(t, 4 * t) for t in range(0, 11)])
    d = state["copy"]["disks"][0]
    assert d["size"] is None and d["rate"] is None and d["bytes_copied"] is None
    assert d["eta"] == pytest.approx(15, abs=0.1)


def test_throughput_republishes_a_stall_and_close_forgets_unfinished():
    clock = Clock()
    tp = rate.Throughput(clock, wall=lambda: clock.now)
    state = copy_state([100 * MiB])
    drive(state, tp, clock, [(t, t) for t in range(0, 11)])
    clock.now = 12
    assert not tp.update(state)                       # nothing new
    clock.now = 10 + rate.REPUBLISH + 0.1
    assert tp.update(state)                           # the decaying estimate is refreshed
    clock.now = 10 + rate.STALL_SECONDS + 1
    tp.update(state)
    assert state["copy"]["disks"][0]["eta"] is None
    tp.close(state)
    c = state["copy"]
    assert c["disks"][0]["rate"] is None and c["eta"] is None and c["rate"] is None
    assert "finished_at" not in c["disks"][0]


def test_nothing_before_copying():
    tp = rate.Throughput(Clock(), wall=lambda: 0.0)
    state = State(["a"])
    tp.update(state)
    assert state["copy"]["disks"] == [{"size": None, "bytes_copied": None, "rate": None, "eta": None}]
    assert state["copy"]["eta"] is None


# -- reading ---------------------------------------------------------------------
def test_read_copy_counts_time_since_the_estimate_and_ignores_junk():
    data = {"copy": {"at": 100.0, "eta": 30.0, "rate": 5, "size": "x", "bytes_copied": -1,
                     "disks": [{"eta": 30.0, "rate": True}, "junk", {"eta": 5, "finished_at": 90}]}}
    overall, disks = rate.read_copy(data, 110.0)
    assert overall == {"size": None, "bytes_copied": None, "rate": 5, "eta": 20.0,
                       "started_at": None, "finished_at": None}
    assert disks[0]["eta"] == 20.0 and disks[0]["rate"] is None
    assert disks[1]["eta"] is None
    assert disks[2]["eta"] == 0.0
    assert rate.read_copy({"copy": []}, 0) == (rate.read_copy({}, 0)[0], [])
    assert rate.read_copy({"copy": {"eta": float("nan")}}, 0)[0]["eta"] is None


@pytest.mark.parametrize("value,text", [(None, "-"), (512, "512 B/s"), (2 * MiB, "2.0 MiB/s"),
                                        (3 << 30, "3.0 GiB/s")])
def test_format_speed(value, text):
    assert rate.format_speed(value) == text


def test_format_left():
    assert rate.format_left(None) == "unknown"
    assert rate.format_left(None, running=False) == "-"
    assert rate.format_left(0.0) == "done"
    assert rate.format_left(61.2) == "0:01:02"
    assert rate.format_left(3600 * 2 + 5) == "2:00:05"
