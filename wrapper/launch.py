"""Running virt-v2v: process handles with one interface.

* :class:`ChildProcess`: a plain child in its own process group (foreground
  mode, and the fallback when systemd is not running).
* ``wrapper.systemd.SystemdUnit``: a transient systemd unit (daemon mode).

A launcher is a function ``Launch -> handle``: it gets a :class:`Launch`,
the few things starting virt-v2v needs, never the whole job.

A handle offers ``start()``, ``pid`` (as seen from the host), ``poll()``
(exit status or None; 128+N for signal N, like a shell), ``terminate()``,
``kill()``, ``set_cpu_quota()`` and ``close()`` (never leaves virt-v2v
running).
"""
import errno
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from wrapper import procinfo
from wrapper.errors import ConversionError, ThrottleError

log = logging.getLogger(__name__)


# virt-v2v writes its machine-readable log to this descriptor
# (``--machine-readable=file:/dev/fd/3``): the wrapper created the file, so
# no privileged process opens it by name in the log directory.
MACHINE_FD = 3


def gate_script(fifo, argv, log=None, machine_log=None, machine_fd=None):
    """The ``/bin/sh -c`` command line that runs ``argv`` unchanged (``exec "$@"``).

    First the shell, already running as the virt-v2v user, opens what the
    program writes: ``log`` (stdout and stderr) and ``machine_log`` (on
    :data:`MACHINE_FD`) by name, or the inherited descriptor ``machine_fd``
    through ``/dev/fd`` (dash takes single-digit descriptors only in
    redirections).  Then, with a ``fifo``, it waits for a line on it
    (:meth:`Gate.open`).  Every value is a positional parameter, never
    part of the script text (only the integer ``machine_fd`` is)."""
    params, opens = [], []
    if log:
        params.append(log)
        opens.append('>>"$%d" 2>&1' % len(params))
    if machine_log:
        params.append(machine_log)
        opens.append('%d>>"$%d"' % (MACHINE_FD, len(params)))
    elif machine_fd is not None and int(machine_fd) != MACHINE_FD:
        opens.append("%d>>/dev/fd/%d" % (MACHINE_FD, int(machine_fd)))
    steps = ["exec %s || exit 125" % " ".join(opens)] if opens else []
    if fifo:
        steps.append('read _ < "$0" || exit 125')
    if params:
        steps.append("shift %d" % len(params))
    steps.append('exec "$@"')
    return ["/bin/sh", "-c", "; ".join(steps), fifo or "sh"] + params + list(argv)


class Gate:
    """Holds a newly started program until :meth:`open`: a shell blocks
    reading a FIFO, then execs the program (same PID).  Whatever keys on the
    process's cgroup (network classification) is in place before it runs.

    ``open_writer`` opens the FIFO for writing, non-blocking (the FIFO lives
    in the secret directory and is opened through its descriptor); with
    ``log`` and ``machine_log``, the shell — already running as the virt-v2v
    user — opens the program's logs (a systemd unit: systemd itself would
    open the paths as root); with ``machine_fd`` (a plain child that
    inherits it), it puts that descriptor at :data:`MACHINE_FD`.

    ``expect`` maps a descriptor number of the held program to the
    ``(st_dev, st_ino)`` of the file the wrapper created for it: the shell
    opened the logs by name before waiting at the gate, so before letting
    the program run, :meth:`open` checks through ``/proc/<pid>/fd`` that
    each is the wrapper's file and not one swapped in under its name; a
    mismatch closes the gate unopened (the shell exits 125)."""

    def __init__(self, fifo, clock=time.monotonic, sleep=time.sleep, open_writer=None,
                 expect=None, proc="/proc"):
        self.fifo = fifo
        self.clock = clock
        self.sleep = sleep
        self.opened = False
        self.expect = dict(expect or {})
        self.proc = proc
        self._open_writer = open_writer or (lambda: os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    def wrap(self, argv, log=None, machine_log=None, machine_fd=None):
        return gate_script(self.fifo, argv, log=log, machine_log=machine_log,
                           machine_fd=machine_fd)

    def swapped(self, pid):
        """The descriptors of ``pid`` that are not the files expected (a list)."""
        wrong = []
        for number, ident in sorted(self.expect.items()):
            try:
                st = os.stat("%s/%d/fd/%d" % (self.proc, pid, number))
                if (st.st_dev, st.st_ino) != tuple(ident):
                    wrong.append(number)
            except OSError:
                wrong.append(number)
        return wrong

    def open(self, poll, timeout=10.0, pid=None):
        """The shell may not have opened the FIFO yet: a non-blocking writer
        open fails with ENXIO until it has (by then it has opened the logs)."""
        if self.opened:
            return
        deadline = self.clock() + timeout
        while True:
            try:
                fd = self._open_writer()
                break
            except OSError as e:
                if e.errno != errno.ENXIO or self.clock() > deadline or poll() is not None:
                    raise ConversionError("cannot start virt-v2v past its gate: %s" % e) from None
                self.sleep(0.02)
        try:
            wrong = self.swapped(pid) if self.expect and pid else []
            if wrong:
                raise ConversionError("virt-v2v was not started: descriptor %s of its gate shell "
                                      "is not the log file the wrapper created (a log's name was "
                                      "replaced)" % ", ".join(map(str, wrong)))
            os.write(fd, b"go\n")
        finally:
            os.close(fd)
        self.opened = True


@dataclass(frozen=True)
class Launch:
    """What a launcher needs to start virt-v2v (built by wrapper.job)."""
    argv: tuple                  # virt-v2v's command line (no secrets: paths to secret files)
    env: Mapping[str, str]
    user: Any                    # wrapper.users.RunUser
    log: int                     # descriptor of the virt-v2v log, for a plain child
    log_path: str                # its path, opened by the gate shell as ``user`` (systemd)
    gate: Optional[Gate]
    tag: str                     # the job's tag (names the systemd unit)
    machine_log: Optional[int] = None       # descriptor of the machine-readable log (a child
    machine_log_path: Optional[str] = None  # inherits it); its path, for the gate shell (systemd)


def child_launcher(launch, popen=subprocess.Popen):
    """A plain child process (foreground, or no systemd)."""
    return ChildProcess(launch.argv, launch.env, launch.log, launch.user, popen=popen,
                        gate=launch.gate, machine_fd=launch.machine_log)


def parent_death_signal(sig=signal.SIGTERM):
    """A preexec_fn: the child gets ``sig`` when the wrapper dies, even by
    SIGKILL, so a plain-child virt-v2v never outlives it (the setting
    survives exec; subprocess calls preexec_fn after changing the user, which
    would otherwise clear it).  ctypes and libc are loaded here, in the
    wrapper: the child already runs as the run-as user, who may not be able
    to read the wrapper's Python library."""
    import ctypes
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    number = int(sig)

    def set_in_child():
        if prctl(1, number, 0, 0, 0) != 0:              # PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return set_in_child


def stop_gracefully(handle, grace, clock=time.monotonic, sleep=time.sleep):
    """SIGTERM a running process handle, SIGKILL it if it outlives ``grace``."""
    if handle.poll() is not None:
        return
    handle.terminate()
    deadline = clock() + grace
    while handle.poll() is None and clock() < deadline:
        sleep(0.1)
    if handle.poll() is None:
        handle.kill()


def exit_status(returncode):
    """Popen returncode -> shell-style status (-15 -> 143)."""
    return 128 - returncode if returncode < 0 else returncode


class ChildProcess:
    kind = "child process"
    dedicated_cgroup = False

    def __init__(self, argv, env, log, user, popen=subprocess.Popen, gate=None, machine_fd=None,
                 extra_fds=()):
        """``machine_fd``: the machine-readable log's descriptor, inherited
        by the child and put at :data:`MACHINE_FD`; ``extra_fds``: more
        descriptors it inherits at their own numbers (``/dev/fd/N``)."""
        self.gate = gate
        self.pass_fds = (() if machine_fd is None else (machine_fd,)) + tuple(extra_fds)
        if gate:
            self.argv = gate.wrap(argv, machine_fd=machine_fd)
        elif machine_fd is not None:
            self.argv = gate_script(None, argv, machine_fd=machine_fd)
        else:
            self.argv = list(argv)
        self.env = dict(env)
        self.log = log                  # a descriptor (or a path, in tests)
        self.user = user
        self._popen = popen
        self.proc = None
        self.pid = None

    def start(self):
        kw = self.user.popen_kwargs()
        fd = self.log if isinstance(self.log, int) else os.open(
            self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self.proc = self._popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=fd, stderr=subprocess.STDOUT, close_fds=True,
                                    pass_fds=self.pass_fds,
                                    start_new_session=True, cwd="/",
                                    preexec_fn=parent_death_signal(), **kw)
        except OSError as e:
            raise ConversionError("cannot start %s: %s" % (self.argv[0], e.strerror or e)) from None
        finally:
            if not isinstance(self.log, int):
                os.close(fd)
        self.pid = self.proc.pid
        log.info("virt-v2v started as a child process, pid %d", self.pid)
        return self

    def release(self):
        if self.gate:
            self.gate.open(self.poll, pid=self.pid)

    def pids(self):
        """Every process of the conversion: virt-v2v's process group."""
        return [self.pid] + [p for p in procinfo.process_group_members(self.pid) if p != self.pid]

    def poll(self):
        rc = self.proc.poll()
        return None if rc is None else exit_status(rc)

    def _signal_group(self, sig):
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(self.pid, sig)

    def terminate(self):
        self._signal_group(signal.SIGTERM)

    def kill(self):
        self._signal_group(signal.SIGKILL)

    def set_cpu_quota(self, value):
        raise ThrottleError("CPU limits need virt-v2v in a systemd unit; it runs as a plain "
                            "child process here (in a container, the container's CPU limit "
                            "applies)")

    def close(self, grace=10.0):
        if self.proc is None:
            return
        stop_gracefully(self, grace)
        self.proc.wait()
        # children left in virt-v2v's process group (nbdkit, qemu) go too
        self._signal_group(signal.SIGKILL)
