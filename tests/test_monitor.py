import os

from tests.fakes import Clock
from wrapper.monitor import LogTail, Monitor, SignalFlag
from wrapper.state import State, StateFile


class FakeProcess:
    """A process that ends only when killed (or after a number of polls)."""

    def __init__(self, ignore_term=False, ends_after=None):
        self.pid = 4242
        self.calls = []
        self.ignore_term = ignore_term
        self.ends_after = ends_after
        self.status = None
        self.polls = 0

    def poll(self):
        self.polls += 1
        if self.ends_after is not None and self.polls > self.ends_after:
            self.status = 0
        return self.status

    def terminate(self):
        self.calls.append("TERM")
        if not self.ignore_term:
            self.status = 143

    def kill(self):
        self.calls.append("KILL")
        self.status = 137


def monitor(tmp_path, process, signals=None, clock=None):
    clock = clock or Clock()
    state = State()
    (tmp_path / "v.log").write_bytes(b"")
    return Monitor(process, state, StateFile(str(tmp_path / "s.state")), str(tmp_path / "v.log"),
                   str(tmp_path / "mr.log"), signals=signals, clock=clock, sleep=clock.sleep,
                   grace=10), state, clock


def test_signal_then_grace_then_kill(tmp_path):
    proc = FakeProcess(ignore_term=True)
    flag = SignalFlag()
    m, state, clock = monitor(tmp_path, proc, flag)
    m.step()
    flag(15, None)
    assert m.run() == 137
    assert proc.calls == ["TERM", "KILL"]
    assert 10 <= clock.now <= 11


def test_signal_terminates_once(tmp_path):
    proc = FakeProcess()
    flag = SignalFlag()
    flag(2, None)
    flag(15, None)
    m, state, clock = monitor(tmp_path, proc, flag)
    assert m.run() == 143
    assert proc.calls == ["TERM"] and flag.received == "SIGINT"


def test_progress_reaches_the_state_file_each_step(tmp_path):
    proc = FakeProcess(ends_after=3)
    m, state, clock = monitor(tmp_path, proc)
    with open(tmp_path / "v.log", "ab") as f:
        f.write(b"[  1.0] Copying disk 1/1\n\xe2\x96\x9d  12% [**--]\r")
    m.step()
    assert '"progress": 12' in (tmp_path / "s.state").read_text()
    with open(tmp_path / "v.log", "ab") as f:
        f.write(b"\xe2\x96\x9d  50% [**--]")        # no separator yet: flushed at the end
    assert m.run() == 0
    assert state["disks"][0]["progress"] == 50


def test_log_tail_reads_only_new_data(tmp_path):
    path = tmp_path / "log"
    tail = LogTail(str(path))
    assert tail.read() == b""                     # not there yet
    path.write_bytes(b"abc")
    assert tail.read() == b"abc"
    with open(path, "ab") as f:
        f.write(b"def" * 10)
    assert list(tail.chunks(limit=5)) == [b"defde"]
    assert tail.read() == b"fdef" + b"def" * 7
    tail.close()
    assert os.path.exists(path)
