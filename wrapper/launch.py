"""Running virt-v2v: process handles with one interface.

* :class:`ChildProcess`: a plain child in its own process group (foreground
  mode, and the fallback when systemd is not running).
* ``wrapper.systemd.SystemdUnit``: a transient systemd unit (daemon mode).

A handle offers ``start()``, ``pid`` (as seen from the host), ``poll()``
(exit status or None; 128+N for signal N, like a shell), ``terminate()``,
``kill()``, ``set_cpu_quota()`` and ``close()`` (never leaves virt-v2v
running).
"""
import logging
import os
import signal
import subprocess
import time

from wrapper.errors import ConversionError, ThrottleError

log = logging.getLogger(__name__)


def exit_status(returncode):
    """Popen returncode -> shell-style status (-15 -> 143)."""
    return 128 - returncode if returncode < 0 else returncode


class ChildProcess:
    kind = "child process"
    dedicated_cgroup = False

    def __init__(self, argv, env, log_path, user, popen=subprocess.Popen):
        self.argv = list(argv)
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
        """Nothing holds a plain child back (see SystemdUnit)."""

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
        if self.proc.poll() is None:
            self.terminate()
            deadline = time.monotonic() + grace
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.proc.poll() is None:
                self.kill()
                self.proc.wait()
        # children left in virt-v2v's process group (nbdkit, qemu) go too
        self._signal_group(signal.SIGKILL)
