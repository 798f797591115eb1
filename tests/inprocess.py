"""Running :func:`wrapper.cli.main` in this process, with nothing real started.

The fuzzer (tests/test_fuzz_cli.py) sends most of its jobs through here instead of a fresh
interpreter each.  ``main()``'s own seams carry most of it: ``runner`` answers the
capability probe (any other command is recorded, and the caller treats it as a problem),
``launcher_factory`` gives a virt-v2v that "runs" without a process and exits 0 at its
first poll, and ``detach`` stays in this process as the daemon.  Two things ``main()`` has
no seam for are patched while :func:`nothing_real_starts` is active: the ssh-agent a job
with an ssh source starts (``wrapper.job.SshAgent``) and the oVirt pre-flight's python3
and nbdkit probes (``run_as`` of :func:`wrapper.ovirt.preflight.check`).

``main()`` installs signal handlers, so it runs in the main thread, one job at a time;
handlers and the ``wrapper`` logger are put back after each job.
"""
import contextlib
import faulthandler
import glob
import io
import json
import logging
import os
import signal
import sys
import traceback
from dataclasses import dataclass, field
from typing import Optional

from tests.fake_virt_v2v import CAPABILITIES
from tests.fakes import RecordingRunner
from wrapper import cli, v2vinfo
from wrapper import job as job_module
from wrapper.errors import JobError
from wrapper.ovirt import preflight
from wrapper.runner import Result

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# what the wrapper asks virt-v2v before a job (wrapper.v2vinfo.probe): not "other commands"
PROBES = (["--machine-readable"], ["--version"], ["--help"], v2vinfo.VDDK_QUERY)


class FakeConversion:
    """``launcher_factory``: a virt-v2v that starts nothing and has exited 0 at its first poll."""

    dedicated_cgroup = False

    def __init__(self, job):
        self.pid = os.getpid()       # alive and ours: nothing will reclaim it as a dead job's
        self.calls = []

    def start(self):
        self.calls.append("start")
        return self

    def release(self):
        self.calls.append("release")

    def pids(self):
        return []

    def poll(self):
        return 0

    def terminate(self):
        self.calls.append("terminate")

    def kill(self):
        self.calls.append("kill")

    def set_cpu_quota(self, value):
        self.calls.append(("cpu", value))

    def close(self, grace=10.0):
        self.calls.append("close")


class InProcessDaemon:
    """The role ``detach`` returns: this process is the daemon, and the caller got its answer."""

    is_daemon = True

    def __init__(self, before_ready):
        if before_ready is not None:
            before_ready()

    def wait_for_go(self):
        return True

    def done(self):
        pass


def agent_class(known_key):
    """A stand-in for ``wrapper.sshagent.SshAgent``: loads ``known_key`` (the one
    ssh-keygen made for the fuzz) and refuses any other text, as ssh-add refuses a
    mangled key; with no key, the user's ~/.ssh must hold one."""

    class FakeAgent:
        def __init__(self, socket_path, user, **_seams):
            self.socket, self.user = socket_path, user
            self.pid = self.start_time = None

        def start(self):
            pass

        def add_key(self, key):
            if key is None:
                if not glob.glob(os.path.join(self.user.home, ".ssh", "id_*")):
                    raise JobError("ssh_key", "not given, and no keys in ~%s/.ssh (in-process "
                                              "stand-in for ssh-add)" % self.user.name)
            elif known_key is None or key.reveal().rstrip("\n") != known_key.rstrip("\n"):
                raise JobError("ssh_key", "cannot be loaded into ssh-agent (in-process stand-in "
                                          "for ssh-add: not the key made for the test)")

        def stop(self):
            pass

    return FakeAgent


def fake_run_as(user, argv, *, env, timeout=30):
    """The pre-flight's probes, answered here: the oVirt SDK is there, the CA is
    read as this (root) process can, and nbdkit's python plugin loads."""
    if argv[0] == "nbdkit":
        return Result(tuple(argv), 0, "name=python\npython_version=3.11.2\n", "")
    cafile = argv[-1]
    found = {"python": "/usr/bin/python3", "version": "3.11.2", "sdk": "4.6.3"}
    if cafile:
        why = _unreadable(cafile)
        found.update({"ca_error": why} if why else {"ca": "ok"})
    return Result(tuple(argv), 0, json.dumps(found) + "\n", "")


def _unreadable(path):
    """Why one byte of ``path`` cannot be read (non-blocking, as the probe reads), or None."""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            f.read(1)
    except OSError as e:
        return e.strerror or str(e)
    return None


@contextlib.contextmanager
def nothing_real_starts(known_key=None):
    """Patch what ``main()`` has no seam for (see the module doc) while the block runs."""
    saved_agent = job_module.SshAgent
    defaults = preflight.check.__kwdefaults__
    saved_run_as = defaults["run_as"]
    job_module.SshAgent = agent_class(known_key)
    defaults["run_as"] = fake_run_as
    try:
        yield
    finally:
        job_module.SshAgent = saved_agent
        defaults["run_as"] = saved_run_as


@dataclass
class Outcome:
    returncode: Optional[int]
    stdout: str
    stderr: str
    daemonized: bool
    escaped: Optional[str] = None          # the traceback of an exception main() let out
    other_commands: list = field(default_factory=list)


def run_main(argv, raw, environ, virt_v2v, hang_after=60):
    """One job through ``cli.main``; a hang ends the whole test run (faulthandler
    prints where every thread was), rather than wait forever."""
    runner = RecordingRunner({(virt_v2v, "--machine-readable"): (0, CAPABILITIES, "")})
    daemonized = []

    def detach(caller_fds, before_ready=None):
        daemonized.append(True)
        return InProcessDaemon(before_ready)

    handlers = {s: signal.getsignal(s) for s in SIGNALS}
    logger = logging.getLogger("wrapper")
    level, propagate = logger.level, logger.propagate     # logsetup changes both
    stdout, stderr = io.StringIO(), io.StringIO()
    escaped = None
    faulthandler.dump_traceback_later(hang_after, exit=True, file=sys.__stderr__)
    try:
        rc = cli.main(argv, stdin=io.BytesIO(raw), stdout=stdout, stderr=stderr, environ=environ,
                      runner=runner, launcher_factory=FakeConversion, detach=detach)
    except BaseException:
        rc, escaped = None, traceback.format_exc()
    finally:
        faulthandler.cancel_dump_traceback_later()
        for s, h in handlers.items():
            signal.signal(s, h)
        for h in list(logger.handlers):
            logger.removeHandler(h)
            h.close()
        logger.setLevel(level)
        logger.propagate = propagate
    others = [c for c in runner.calls if c[0] != virt_v2v or c[1:] not in PROBES]
    return Outcome(rc, stdout.getvalue(), stderr.getvalue(), bool(daemonized), escaped, others)
