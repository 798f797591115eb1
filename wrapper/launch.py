"""Running virt-v2v: process handles with one interface.

* :class:`ChildProcess`: a plain child in its own process group (foreground
  mode, and the fallback when systemd is not running).
* ``wrapper.systemd.SystemdUnit``: a transient systemd unit (daemon mode).

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

from wrapper.errors import ConversionError, ThrottleError

log = logging.getLogger(__name__)


class Gate:
    """Holds a newly started program until :meth:`open`: a shell blocks
    reading a FIFO, then execs the program (same PID).  Whatever keys on the
    process's cgroup (network classification) is in place before it runs."""

    def __init__(self, fifo, clock=time.monotonic, sleep=time.sleep):
        self.fifo = fifo
        self.clock = clock
        self.sleep = sleep
        self.opened = False

    def wrap(self, argv):
        return ["/bin/sh", "-c", 'read _ < "$0" && exec "$@"', self.fifo] + list(argv)

    def open(self, poll, timeout=10.0):
        """The shell may not have opened the FIFO yet: a non-blocking writer
        open fails with ENXIO until it has."""
        if self.opened:
            return
        deadline = self.clock() + timeout
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO or self.clock() > deadline or poll() is not None:
                    raise ConversionError("cannot start virt-v2v past its gate: %s" % e) from None
                self.sleep(0.02)
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)
        self.opened = True


def group_members(pgid, proc_root="/proc"):
    pids = []
    for entry in os.listdir(proc_root):
        if entry.isdigit():
            try:
                with open("%s/%s/stat" % (proc_root, entry)) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[2]) == pgid:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return pids


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

    def __init__(self, argv, env, log_path, user, popen=subprocess.Popen, gate=None):
        self.gate = gate
        self.argv = gate.wrap(argv) if gate else list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.user = user
        self._popen = popen
        self.proc = None
        self.pid = None

    def start(self):
        kw = {}
        if self.user.uid != os.geteuid() or self.user.gid != os.getegid():
            kw = {"user": self.user.uid, "group": self.user.gid, "extra_groups": []}
        with open(self.log_path, "ab", buffering=0) as logf:
            try:
                self.proc = self._popen(self.argv, env=self.env, stdin=subprocess.DEVNULL,
                                        stdout=logf, stderr=subprocess.STDOUT, close_fds=True,
                                        start_new_session=True, cwd="/", **kw)
            except OSError as e:
                raise ConversionError("cannot start %s: %s" % (self.argv[0], e.strerror or e)) from None
        self.pid = self.proc.pid
        log.info("virt-v2v started as a child process, pid %d", self.pid)
        return self

    def release(self):
        if self.gate:
            self.gate.open(self.poll)

    def pids(self):
        """Every process of the conversion: virt-v2v's process group."""
        return [self.pid] + [p for p in group_members(self.pid) if p != self.pid]

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
                            "child process here")

    def close(self, grace=10.0):
        if self.proc is None:
            return
        stop_gracefully(self, grace)
        self.proc.wait()
        # children left in virt-v2v's process group (nbdkit, qemu) go too
        self._signal_group(signal.SIGKILL)
