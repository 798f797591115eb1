"""Per-disk credit when disks are copied at once (docs/contract.md §5): an interleaved
virt-v2v 2.10-style log with the nbdcopy shim's tagged lines goes through the real
parser, state and throughput; the serial path stays as it was."""
import pytest

from tests.fakes import Clock
from wrapper import progress as ev
from wrapper import rate
from wrapper.state import State, apply

MiB = 1 << 20
BIG, SMALL = 512 * MiB, 64 * MiB
SOURCES = ("[datastore1] testvm2/testvm2_1.vmdk", "[datastore1] testvm2/testvm2.vmdk")


def nbdkit_line(k, name):
    return ("nbdkit: debug: /usr/bin/nbdkit '--exit-with-parent' '--foreground' '--unix' "
            "'/tmp/v2v.Ab12Cd/in%d' '--filter' 'rate' 'ssh' 'host=127.0.0.1' "
            "'path=/vmfs/volumes/datastore1/testvm2/%s-flat.vmdk'\n" % (k, name))


def nbdinfo(k, size):
    return "\texport-size: %d\n\turi: nbd+unix:///?socket=/tmp/v2v.Ab12Cd/in%d\n" % (size, k)


def tagged(k, pct):
    return "\nvirt-v2v-wrapper: nbdcopy in%d progress %d/100\n" % (k, pct)


def interleaved_log():
    """Disk 1 (512 MiB, in0) and disk 2 (64 MiB, in1) overlapping: disk 2 starts 0.9 s
    after disk 1 and ends long before it.  Stray untagged bar frames (as a shim-less
    nbdcopy would print) and an output export URI are mixed in.  Returns (chunk, the
    moment) pairs; each chunk is fed as one read."""
    return [
        (nbdkit_line(0, "testvm2") + nbdkit_line(1, "testvm2_1"), "setup"),
        ("[  40.1] Copying disk 1/2\n" + nbdinfo(0, BIG) + tagged(0, 0), "disk 1 started"),
        ("uri: nbd+unix:///testvm2-sda?socket=/tmp/v2v.Ab12Cd/out0\n", "output uri"),
        ("[  41.0] Copying disk 2/2\n" + nbdinfo(1, SMALL) + tagged(1, 0), "disk 2 started"),
        ("\r\xe2\x96\x9d  75% [******--]\r", "a stray bar frame"),
        (tagged(0, 25), "disk 1 at 25"),
        (tagged(1, 100) + "nbdcopy: blkhash: 123abc\n", "disk 2 done"),
        (tagged(0, 50), "disk 1 at 50"),
        (tagged(0, 75), "disk 1 at 75"),
        (tagged(0, 100), "disk 1 done"),
    ]


def replay(state, chunks, after=None):
    parser = ev.LogParser(2)
    seen = []
    for text, moment in chunks:
        for e in parser.feed(text.encode("utf-8", "surrogateescape") if isinstance(text, str)
                             else text):
            apply(state, e)
        if after:
            after(state)
        seen.append((moment, [d["progress"] for d in state["disks"]], state.get("progress", 0)))
    return seen


def test_parser_reads_the_tagged_lines_and_nothing_else_like_them():
    events = ev.LogParser(2).feed(
        b"virt-v2v-wrapper: nbdcopy in3 progress 42/100\n"
        b"virt-v2v-wrapper: nbdcopy in3 progress 101/100\n"       # not a percentage
        b"virt-v2v-wrapper: nbdcopy in3 progress 42/100 extra\n"
        b"say virt-v2v-wrapper: nbdcopy in3 progress 43/100\n"    # not at the start of a line
        b"\rvirt-v2v-wrapper: nbdcopy in1 progress 7/100\r")
    assert events == [ev.DiskCopyProgress(3, 42.0), ev.DiskCopyProgress(1, 7.0)]


def test_parallel_each_disk_credited_from_its_own_lines():
    s = State(list(SOURCES))            # source_disks shuffled, as in the matrix
    s.parallel = True
    seen = replay(s, interleaved_log())
    at = {moment: disks for moment, disks, _ in seen}
    # source_disks were reversed: disks[0] is in0 (the OS disk, 512 MiB)
    assert [d["path"] for d in s["disks"]] == [SOURCES[1], SOURCES[0]]
    assert at["disk 2 started"] == [0, 0]           # never 100 because another one started
    assert at["a stray bar frame"] == [0, 0]        # an untagged frame is nobody's
    assert at["disk 2 done"] == [25, 100]
    assert at["disk 1 at 75"] == [75, 100]
    assert at["disk 1 done"] == [100, 100]
    for (_, before, p0), (_, after, p1) in zip(seen, seen[1:]):
        assert all(b <= a for b, a in zip(before, after)) and p0 <= p1    # never backwards
    # the overall figure is weighted by size: the small disk done is 1/9 of the work
    overall = {moment: p for moment, _, p in seen}
    assert overall["disk 2 done"] == pytest.approx((25 * BIG + 100 * SMALL) / (BIG + SMALL), abs=0.01)
    assert s["stage"] == "Copying disk 2/2" and s.sizes == {0: BIG, 1: SMALL}


def test_parallel_the_copy_ends_for_every_disk_when_virt_v2v_goes_on():
    s = State(list(SOURCES))
    s.parallel = True
    replay(s, interleaved_log()[:6])                # disk 1 at 25, disk 2 at 0
    assert [d["progress"] for d in s["disks"]] == [25, 0]
    apply(s, ev.V2vMessage("message", "Creating output metadata"))
    assert [d["progress"] for d in s["disks"]] == [100, 100] and s["progress"] == 100


def test_serial_path_is_as_before_and_ignores_tagged_lines():
    """Without parallel copies the bar credits the current disk, a new disk completes
    the previous one, and a (forged) tagged line moves nothing."""
    s = State(list(SOURCES))
    log = [(nbdkit_line(0, "testvm2") + nbdkit_line(1, "testvm2_1"), "setup"),
           ("[  40.1] Copying disk 1/2\n" + nbdinfo(0, BIG), "1"),
           ("\r\xe2\x96\x9d  25% [**------]\r", "bar 25"),
           (tagged(1, 100), "forged"),
           ("[  41.0] Copying disk 2/2\n" + nbdinfo(1, SMALL), "2"),
           ("\r\xe2\x96\x9d  50% [****----]\r", "bar 50")]
    at = {moment: disks for moment, disks, _ in replay(s, log)}
    assert at["bar 25"] == [25, 0] and at["forged"] == [25, 0]
    assert at["2"] == [100, 0] and at["bar 50"] == [100, 50]
    assert s.copying() == [1]


def test_tagged_index_out_of_range_is_ignored(caplog):
    s = State()
    s.parallel = True
    apply(s, ev.DiskCopyProgress(100000, 50.0))
    assert s["disks"] == [] and "out of range" in caplog.text


# -- rate and time left when copies overlap ---------------------------------------------------
def test_throughput_per_disk_and_overall_while_copies_overlap():
    """Disk 1: 512 MiB at 4 MiB/s; disk 2: 64 MiB at 5 MiB/s, both from t=0.  Each disk's
    rate and time left is its own; the overall time left is the slower disk's."""
    clock = Clock()
    tp = rate.Throughput(clock, wall=lambda: 1000.0 + clock.now)
    s = State(["a", "b"])
    s.parallel = True
    for i, size in enumerate((BIG, SMALL)):
        apply(s, ev.CopyingDisk(i, 2))
        apply(s, ev.DiskSize(i, size))
    tp.update(s)
    assert set(tp.disks) == {0, 1}                  # both measured from the start
    for t in range(1, 21):
        clock.now = t
        apply(s, ev.DiskCopyProgress(0, 4 * t * 100 // 512))       # whole percents, as nbdcopy
        apply(s, ev.DiskCopyProgress(1, min(100, 5 * t * 100 // 64)))
        tp.update(s)
        if t == 20:
            c = s["copy"]
    d0, d1 = c["disks"]
    assert d0["rate"] == pytest.approx(4 * MiB, rel=0.1)
    assert d0["eta"] == pytest.approx((BIG - d0["bytes_copied"]) / (4 * MiB), rel=0.15)
    assert d1["eta"] == 0.0 and d1["finished_at"] <= 1020.0
    assert d1["rate"] == pytest.approx(5 * MiB, rel=0.15)
    assert d0["started_at"] == d1["started_at"] == 1000.0
    assert c["eta"] == pytest.approx(d0["eta"], rel=0.1)            # the slower disk decides
    assert c["eta"] > 0 and c["size"] == BIG + SMALL


def test_parallel_overall_time_left_unknown_until_each_disk_settles():
    clock = Clock()
    tp = rate.Throughput(clock, wall=lambda: clock.now)
    s = State(["a", "b"])
    s.parallel = True
    for i, size in enumerate((BIG, SMALL)):
        apply(s, ev.CopyingDisk(i, 2))
        apply(s, ev.DiskSize(i, size))
    for t in range(1, 11):
        clock.now = t
        apply(s, ev.DiskCopyProgress(0, t))          # disk 2 has not moved yet
        tp.update(s)
    assert s["copy"]["disks"][0]["eta"] is not None
    assert s["copy"]["disks"][1]["eta"] is None and s["copy"]["eta"] is None


# -- the source-read limit shared by the disks being read ----------------------------------------
def test_the_limit_is_shared_by_the_disks_being_copied_now(tmp_path):
    """Each input nbdkit has its own rate filter on the one bandwidth file: while two disks
    are read each gets half, once one is done the other gets all of it again."""
    from wrapper.security.secrets import SecretDir
    from wrapper.throttling import bandwidth
    from wrapper.throttling.limits import NetworkRate
    from wrapper.throttling.network import NetworkLimit
    from tests.fakes import Limiter

    def content(d):
        with open(bw.path) as f:
            return f.read()
    with SecretDir(str(tmp_path)) as d:
        bw = bandwidth.BandwidthFile(d)
        limit = NetworkLimit(State(), Limiter(), source_read=bw)
        bw.set(NetworkRate(2 * MiB))                      # 16 Mbit/s
        s = State(["a", "b"])
        s.parallel = True
        readers = []
        for event in (ev.CopyingDisk(0, 2), ev.CopyingDisk(1, 2), ev.DiskCopyProgress(1, 100),
                      ev.DiskCopyProgress(0, 100)):
            apply(s, event)
            limit.share_source_read(len(s.copying()))
            readers.append((len(s.copying()), content(d)))
        assert readers == [(1, "16777216"), (2, "8388608"), (1, "16777216"), (0, "16777216")]
        bw.set(NetworkRate(4 * MiB))                      # a new limit keeps the share
        limit.share_source_read(2)
        assert content(d) == "16777216"
        limit.share_source_read(2)                        # no change, no rewrite
        bw.set(None)
        assert content(d) == "0"


def test_without_a_source_read_file_sharing_is_a_no_op():
    from wrapper.throttling.network import NetworkLimit
    from tests.fakes import Limiter
    NetworkLimit(State(), Limiter()).share_source_read(3)


def test_the_monitor_reports_how_many_disks_are_copied_after_each_read(tmp_path):
    from wrapper.monitor import Monitor
    from types import SimpleNamespace
    log = tmp_path / "v2v.log"
    log.write_bytes(b"[  1.0] Copying disk 1/2\n[  1.1] Copying disk 2/2\n"
                    b"virt-v2v-wrapper: nbdcopy in1 progress 100/100\n")
    (tmp_path / "mr.log").write_bytes(b"")
    s = State(["a", "b"])
    s.parallel = True
    seen = []
    proc = SimpleNamespace(poll=lambda: None, pid=1)
    m = Monitor(proc, s, SimpleNamespace(write=lambda state: None), str(log),
                str(tmp_path / "mr.log"), copying=seen.append)
    m.step()
    assert seen == [1]                       # disk 2 done, disk 1 still read
    serial = Monitor(proc, State(), SimpleNamespace(write=lambda state: None), str(log),
                     str(tmp_path / "mr.log"))
    serial.step()                            # no hook: nothing shared
