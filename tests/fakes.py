"""Shared fakes for the unit and process tests."""
import json
import os
import shutil
import stat
import sys

from wrapper.errors import CommandError
from wrapper.runner import Result

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
FAKE_V2V = os.path.join(HERE, "fake_virt_v2v.py")


def data(name):
    return os.path.join(DATA, name)


FAKE_NBDKIT = """#!/bin/sh
# nbdkit python <plugin.py> --dump-plugin, the plugin readable
[ "$1 $3" = "python --dump-plugin" ] && [ -r "$2" ] || exit 1
echo name=python
echo python_version=3.11.2
"""


def rhv_upload_path(bin_dir, python=None, nbdkit=FAKE_NBDKIT):
    """A PATH for a fake ``-o rhv-upload`` virt-v2v that passes the wrapper's
    pre-flight: in ``bin_dir`` a stand-in nbdkit answering ``python
    <plugin> --dump-plugin`` (None: none) and ``python`` as python3 (None: the test's
    own from its venv, which has the SDK), then the system's directories."""
    if python:
        os.symlink(python, os.path.join(bin_dir, "python3"))
    if nbdkit:
        with open(os.path.join(bin_dir, "nbdkit"), "w") as f:
            f.write(nbdkit)
        os.chmod(os.path.join(bin_dir, "nbdkit"), 0o755)
    return bin_dir + ":" + os.path.dirname(sys.executable) + ":/usr/sbin:/usr/bin:/sbin:/bin"


def make_fake_v2v(directory, python=sys.executable, **scenario):
    """Write a scenario and an executable that runs the fake with it."""
    scenario_path = os.path.join(directory, "scenario.json")
    with open(scenario_path, "w") as f:
        json.dump(scenario, f)
    # a copy next to the scenario: a run-as user may not reach the checkout
    fake_copy = os.path.join(directory, "fake_virt_v2v.py")
    shutil.copyfile(FAKE_V2V, fake_copy)
    exe = os.path.join(directory, "virt-v2v")
    with open(exe, "w") as f:
        f.write("#!/bin/sh\nexec %s %s --scenario %s \"$@\"\n" % (python, fake_copy, scenario_path))
    os.chmod(exe, os.stat(exe).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


class RecordingRunner:
    """A command runner that records argv and answers from a table."""

    def __init__(self, answers=None):
        self.calls = []
        self.users = []           # (argv, user, env) of calls made as a user (runner.run's user=)
        self.answers = answers or {}

    def __call__(self, argv, *, input=None, env=None, timeout=None, check=True, quiet=False,
                 user=None):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        if user is not None:
            self.users.append((argv, user, env))
        answer = None
        for key, value in self.answers.items():
            if tuple(argv[:len(key)]) == tuple(key):
                answer = value
                break
        if callable(answer):
            answer = answer(argv)
        rc, out, err = answer if answer is not None else (0, "", "")
        if check and rc != 0:
            raise CommandError(argv, rc, out, err)
        return Result(tuple(argv), rc, out, err)


class Clock:
    """A clock that moves only when told, for code that takes ``clock`` and
    ``sleep`` seams: calling it reads the time (first advanced by ``tick``,
    for code that reads it twice to measure something); :meth:`sleep`
    advances it and records how long, so nothing really waits."""

    def __init__(self, now=0.0, tick=0.0):
        self.now = now
        self.tick = tick
        self.sleeps = []

    def __call__(self):
        self.now += self.tick
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0, "sleep(%r)" % (seconds,)
        self.sleeps.append(seconds)
        self.now += seconds


class Limiter:
    """Stand-in for the network limiter (:class:`wrapper.throttling.netlimit.NetLimiter`):
    records ``start`` and every ``set_rate``; ``fail_start`` / ``fail_rate``
    are raised by those calls instead."""

    def __init__(self, fail_rate=None, fail_start=None):
        self.fail_rate = fail_rate
        self.fail_start = fail_start
        self.started = False
        self.starts = []
        self.rates = []
        self.closed = 0
        self.runner = None          # what an InboundPolicer would run nft through

    def start(self, pids, dedicated):
        if self.fail_start:
            raise self.fail_start
        self.starts.append((list(pids), dedicated))
        self.started = True

    def set_rate(self, rate):
        if self.fail_rate:
            raise self.fail_rate
        self.rates.append(rate)

    def close(self):
        self.closed += 1
