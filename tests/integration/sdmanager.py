"""A real, throw-away systemd for integration tests (see scripts/sd-start.sh for the recipe).

The manager is PID 1 of its own pid/mount/uts/ipc namespaces, optionally inside a network
namespace, with its cgroup root at ``/NAME`` of every hierarchy.  It never sees or moves a host
process.  Host code reaches it through :attr:`TestSystemd.bin` (``systemctl``/``systemd-run``
wrappers, put first in ``PATH``) or :meth:`TestSystemd.run`.

PIDs that systemd reports (``ExecMainPID``, ``MainPID``) are PIDs *inside* the manager's pid
namespace; :meth:`host_pids` gives the host's view.
"""
import contextlib
import os
import re
import shutil
import subprocess
import time

from wrapper.runner import run as host_run

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "scripts")
CGFS = "/sys/fs/cgroup"
RUNDIR = "/tmp"
PREFIX = "v2vwsd"          # every manager name starts with this (stale clean-up looks for it)
TOOLS = ("nsenter", "unshare", "script", "setsid", "pgrep", "systemctl", "systemd-run")


def missing_prerequisites():
    """One sentence naming what this machine lacks to run a test systemd, or ``None``."""
    if os.geteuid() != 0:
        return "the test systemd needs root"
    lacking = [t for t in TOOLS if shutil.which(t) is None]
    if not os.access("/lib/systemd/systemd", os.X_OK):
        lacking.append("/lib/systemd/systemd")
    if lacking:
        return "missing for the test systemd: " + ", ".join(lacking)
    if not os.path.isdir(CGFS + "/systemd") or os.path.exists(CGFS + "/cgroup.controllers"):
        return "the test systemd recipe needs the hybrid cgroup layout (%s/systemd + v1 hierarchies)" % CGFS
    return None


def v2_root():
    """Where the cgroup2 hierarchy is mounted on the host (hybrid: .../unified), or None."""
    for d in (CGFS, CGFS + "/unified"):
        if os.path.exists(d + "/cgroup.controllers"):
            return d
    return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_int(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def clean_stale(rundir=RUNDIR):
    """Stop managers left by a test run that died (their owner PID is gone).

    Managers of other, still running test sessions are left alone.
    """
    for name in sorted(os.listdir(rundir)):
        if not name.startswith(PREFIX):
            continue
        owner = _read_int(os.path.join(rundir, name, "owner.pid"))
        if owner is not None and _alive(owner):
            continue
        subprocess.run([os.path.join(SCRIPTS, "sd-stop.sh"), name],
                       env=dict(os.environ, SD_RUNDIR=rundir), capture_output=True)


class TestSystemd:
    """One manager.  ``start()``/``stop()`` or use it as a context manager."""

    __test__ = False        # not a pytest test class

    def __init__(self, name, *, netns=None, net_cls=False, rundir=RUNDIR):
        if not name.startswith(PREFIX):
            raise ValueError("manager names must start with %r" % PREFIX)
        self.name = name
        self.netns = netns
        self.net_cls = net_cls
        self.rundir = os.path.join(rundir, name)
        self._parent_rundir = rundir
        self.bin = os.path.join(self.rundir, "bin")
        self.pid = None
        self.start_seconds = None

    # -- life cycle ---------------------------------------------------------------------------
    def _env(self):
        env = dict(os.environ, SD_OWNER=str(os.getpid()), SD_RUNDIR=self._parent_rundir)
        env.pop("SD_NETNS", None)
        env.pop("SD_NET_CLS", None)
        if self.netns:
            env["SD_NETNS"] = self.netns
        if self.net_cls:
            env["SD_NET_CLS"] = "1"
        return env

    def start(self):
        t0 = time.monotonic()
        p = subprocess.run([os.path.join(SCRIPTS, "sd-start.sh"), self.name], env=self._env(),
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("sd-start.sh %s failed (rc=%s): %s" % (self.name, p.returncode, p.stderr))
        self.pid = int(p.stdout.split()[-1])
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self):
        """Idempotent.  Raises if a cgroup of the manager could not be removed."""
        p = subprocess.run([os.path.join(SCRIPTS, "sd-stop.sh"), self.name], env=self._env(),
                           capture_output=True, text=True, timeout=60)
        self.pid = None
        if p.returncode != 0:
            raise RuntimeError("sd-stop.sh %s: %s" % (self.name, p.stderr.strip()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- using it -----------------------------------------------------------------------------
    def prefix(self):
        """argv prefix that runs a command inside the manager's mount+pid namespaces."""
        return ["nsenter", "-t", str(self.pid), "-m", "-p", "--"]

    def run(self, *argv, check=True, input=None, timeout=60):
        """Run ``argv`` inside the manager's namespaces; a ``wrapper.runner.Result``."""
        return host_run(self.prefix() + [str(a) for a in argv], check=check, input=input, timeout=timeout)

    def env(self, base=None):
        """Environment for host code that should talk to this manager with plain ``systemctl``."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = self.bin + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        return env

    def systemd_run(self, *argv):
        """``systemd-run ARGV``; returns the unit name from "Running as unit: X" (stderr)."""
        r = self.run("systemd-run", *argv)
        m = re.search(r"Running as unit: (\S+)", r.err + r.out)
        if not m:
            raise RuntimeError("no unit name in systemd-run output: %r" % (r.err,))
        return m.group(1)

    def prop(self, unit, name):
        return self.run("systemctl", "show", "-p", name, "--value", unit).out.strip()

    def cgroup_dir(self, unit, hierarchy=None):
        """Host path of the unit's cgroup: cgroup2 by default, or a v1 hierarchy (e.g. 'cpu')."""
        cg = self.prop(unit, "ControlGroup")
        if not cg:
            raise RuntimeError("unit %s has no ControlGroup" % unit)
        base = os.path.join(CGFS, hierarchy) if hierarchy else (v2_root() or CGFS + "/systemd")
        return base + cg

    def host_pids(self, unit):
        """Host PIDs of the unit's processes (systemd's own PIDs are namespace-relative)."""
        with open(os.path.join(self.cgroup_dir(unit), "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]

    def host_pid(self, ns_pid):
        """Host PID of the process that has ``ns_pid`` inside the manager's pid namespace."""
        ns = os.readlink("/proc/%d/ns/pid" % self.pid)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink("/proc/%s/ns/pid" % entry) != ns:
                    continue
                with open("/proc/%s/status" % entry) as f:
                    nspid = [line.split()[1:] for line in f if line.startswith("NSpid:")][0]
            except (OSError, IndexError):
                continue
            if int(nspid[-1]) == int(ns_pid):
                return int(entry)
        raise LookupError("no process with pid %s in %s" % (ns_pid, self.name))

    @property
    def cgroup_root(self):
        """``/sys/fs/cgroup`` as the manager sees it (e.g. its private net_cls mount), from the host."""
        return "/proc/%d/root%s" % (self.pid, CGFS)

    @contextlib.contextmanager
    def cpu_priority(self):
        """Give the manager's own cgroup /NAME 10x the default CPU weight meanwhile.

        Other load on the machine (a shared 2-CPU box: other test suites, apt) can leave an
        unthrottled loop below 50 % of a CPU, and then a quota has nothing to cut.  /NAME is
        the test's own subtree.
        """
        for f, boost in ((os.path.join(CGFS, "cpu", self.name, "cpu.shares"), "10240"),
                         (os.path.join(CGFS, self.name, "cpu.weight"), "1000")):
            if os.path.exists(f):
                with open(f) as fh:
                    old = fh.read().strip()
                with open(f, "w") as fh:
                    fh.write(boost)
                try:
                    yield
                finally:
                    with open(f, "w") as fh:
                        fh.write(old)
                return
        yield

    def __repr__(self):
        return "TestSystemd(%r, pid=%r, netns=%r, net_cls=%r)" % (self.name, self.pid, self.netns, self.net_cls)
