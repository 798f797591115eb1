"""wrapper.stages: the state file's stage words, one owner for the parser,
the state and the observers."""
import pytest

from wrapper import progress, stages
from wrapper.observe import metrics, status


def test_copying_stage_counts_from_one():
    assert stages.copying(0, 2) == "Copying disk 1/2"
    assert stages.is_copying(stages.copying(4, 5))
    assert not stages.is_after_copy(stages.copying(0, 1))


@pytest.mark.parametrize("stage, phase", [
    ("Copying disk 2/3", "copying"), ("Creating output metadata", "finishing"),
    ("Finishing off", "finishing"), ("Inspecting the source", "converting"),
])
def test_metrics_phase_follows_the_stage_words(stage, phase):
    s = {"outcome": status.RUNNING, "pid": 42, "stage": stage}
    assert metrics.phase(s) == phase


def test_the_parser_recognises_the_copying_stage_it_names():
    parser = progress.LogParser(dialect=2)
    events = parser.feed(b"[  52.1] %s 1/2\n" % stages.COPYING.encode())
    assert [(e.index, e.count) for e in events if isinstance(e, progress.CopyingDisk)] == [(0, 2)]
