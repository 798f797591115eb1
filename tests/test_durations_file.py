"""tests/conftest.py's durations file: the slowest phases, slowest first, only when asked."""
from types import SimpleNamespace

from tests import conftest


class Reporter:
    def __init__(self, reports):
        self.stats = {"passed": reports[:2], "failed": reports[2:], "": []}
        self.lines = []

    def write_line(self, text):
        self.lines.append(text)


def report(nodeid, when, duration):
    return SimpleNamespace(nodeid=nodeid, when=when, duration=duration)


def test_writes_the_slowest_first_and_caps_the_count(tmp_path, monkeypatch):
    path = tmp_path / "durations.txt"
    monkeypatch.setenv(conftest.DURATIONS_ENV, str(path))
    monkeypatch.setattr(conftest, "DURATIONS_COUNT", 2)
    reporter = Reporter([report("t.py::a", "call", 0.5), report("t.py::b", "setup", 12.25),
                         report("t.py::c", "call", 3.0)])
    conftest.pytest_terminal_summary(reporter)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# slowest 2 of 3 test phases") and "16 s in all" in lines[0]
    assert [line.split() for line in lines[2:]] == [["12.25s", "setup", "t.py::b"],
                                                    ["3.00s", "call", "t.py::c"]]
    assert reporter.lines == ["durations written to %s" % path]


def test_nothing_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(conftest.DURATIONS_ENV, raising=False)
    reporter = Reporter([report("t.py::a", "call", 0.5)])
    conftest.pytest_terminal_summary(reporter)
    assert reporter.lines == [] and list(tmp_path.iterdir()) == []
