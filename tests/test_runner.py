"""wrapper.runner: short commands, their output kept in memory within a bound
(security review: a hostile VMware host or the run-as user, who can ptrace its
own probe, made root hold gigabytes of a probe's output)."""
import os

import pytest

from wrapper import runner, users
from wrapper.errors import CommandError


def test_output_status_and_input_through_a_pipe():
    r = runner.run(["sh", "-c", "cat; echo err >&2; exit 3"], input="x" * 300000, check=False)
    assert (r.rc, len(r.out), r.err) == (3, 300000, "err\n")
    with pytest.raises(CommandError) as e:
        runner.run(["sh", "-c", "exit 4"])
    assert e.value.rc == 4


def test_a_program_that_prints_without_end_is_killed_at_the_bound():
    with pytest.raises(runner._TooMuch):
        runner.capture(["yes"], limit=1 << 20)
    with pytest.raises(CommandError) as e:
        runner.run(["sh", "-c", "yes >&2"], timeout=60)
    assert e.value.rc == runner.RC_TOO_MUCH


def test_the_bound_and_the_timeout_hold_for_a_user_too():
    me = users.current()
    r = runner.run_as(me, ["yes"], env={"PATH": os.defpath}, timeout=60)
    assert r.rc == runner.RC_TOO_MUCH and "more than" in r.err
    r = runner.run_as(me, ["sleep", "30"], env={"PATH": os.defpath}, timeout=0.5)
    assert r.rc == 124


def test_a_reader_that_goes_away_is_not_an_error():
    r = runner.run(["true"], input="x" * (4 << 20), check=False)
    assert r.rc == 0
