"""virt-v2v in a transient systemd unit (docs/contract.md §4, daemon mode).

The unit name is chosen here (``v2v-import-<tag>.service``), never scraped
from systemd-run's output.  ``RemainAfterExit=yes`` keeps the unit loaded
after virt-v2v exits so its exit status can still be read; :meth:`close`
stops it and resets a failed one so names never pile up.

PIDs: ``MainPID`` is systemd's view; when systemd lives in another PID
namespace (containers, the test systemd) it differs from ours.  The unit's
cgroup, read through our own cgroup mount, lists the PIDs as *we* see them,
and ``/proc/<pid>/status`` ``NSpid`` ties the two together.
"""
import glob
import logging
import os
import time

from wrapper.throttling import limits
from wrapper.errors import CommandError, ConversionError, ThrottleError
from wrapper.launch import stop_gracefully

log = logging.getLogger(__name__)

SHOW_PROPS = ("ActiveState", "SubState", "Result", "MainPID", "ExecMainPID", "ExecMainCode",
              "ExecMainStatus", "ControlGroup")
CLD_EXITED = 1


def available(settings):
    """Is systemd the running init?  (sd_booted(): /run/systemd/system exists.)"""
    return os.path.isdir(settings.systemd_marker)


def unit_name(tag):
    return "v2v-import-%s.service" % tag


def exec_arg(arg):
    """One argument as systemd must be given it to pass it on unchanged.

    systemd (252) rewrites ExecStart arguments when it starts the unit: an
    argument that is exactly ``$NAME`` is replaced by that variable's words
    (none when unset), ``${NAME}`` anywhere is replaced by its value, and
    ``$$`` becomes ``$``.  Doubling every ``$`` undoes all three.  Nothing
    else is touched for a transient unit: the argv travels over D-Bus as a
    list (no quoting, backslashes, spaces or newlines to escape) and ``%``
    specifiers are not expanded in it (measured on 252:
    tests/integration/test_systemd_argv.py).  Not for ``--setenv`` values,
    which systemd does not expand."""
    return str(arg).replace("$", "$$")


def exec_argv(argv):
    """Every argument through :func:`exec_arg`: what virt-v2v receives is ``argv``."""
    return [exec_arg(a) for a in argv]


def run_argv(unit, user, env, argv, tag):
    """The systemd-run command.  ``env`` must be secret-free: unit properties are public.

    No ``StandardOutput=append:<log>``: systemd would open that path as root,
    in a log directory the run-as user may own; the gate shell opens it as
    the run-as user instead (see :class:`wrapper.launch.Gate`).  ``argv`` is
    what the unit's process must receive, byte for byte (:func:`exec_argv`)."""
    cmd = ["systemd-run", "--unit=%s" % unit, "--description=virt-v2v conversion %s" % tag,
           "--uid=%d" % user.uid, "--gid=%d" % user.gid,
           "--property=RemainAfterExit=yes",
           "--property=StandardInput=null",
           "--property=StandardOutput=null",
           "--property=StandardError=null",
           "--property=CPUAccounting=yes",
           "--property=KillMode=control-group",
           "--property=TimeoutStopSec=30"]
    cmd += ["--setenv=%s=%s" % (k, v) for k, v in sorted(env.items())]
    return cmd + ["--"] + exec_argv(argv)


def parse_show(text):
    """``systemctl show`` key=value lines -> dict."""
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def exit_status(props):
    """Exit status of the main process, shell style, or None while it runs.

    ExecMainCode stays 0 until the main process has exited (then CLD_EXITED,
    CLD_KILLED or CLD_DUMPED), whatever RemainAfterExit makes of the unit.
    """
    try:
        code = int(props.get("ExecMainCode") or 0)
        status = int(props.get("ExecMainStatus") or 0)
    except ValueError:
        return None
    if code == 0:
        if props.get("ActiveState") in ("activating", "active", "deactivating", "reloading"):
            return None
        return 255                      # the unit vanished or never ran
    return status if code == CLD_EXITED else 128 + status


def cgroup_dirs(cgroup_root, control_group):
    """Directories of the unit's cgroup as seen through our cgroup mount.

    systemd's ControlGroup is relative to its own root: a systemd in a
    container has a prefix we do not know, so also look one level down.
    """
    found = []
    for hier in ("unified", "systemd", ""):
        base = os.path.join(cgroup_root, hier) if hier else cgroup_root
        direct = base + control_group
        if os.path.exists(os.path.join(direct, "cgroup.procs")):
            found.append(direct)
            continue
        found += [d for d in glob.glob(glob.escape(base) + "/*" + glob.escape(control_group))
                  if os.path.exists(os.path.join(d, "cgroup.procs"))]
    return found


def ns_pid(pid):
    """The innermost-namespace PID of our ``pid`` (last NSpid field)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def unit_pids(cgroup_root, control_group):
    """PIDs (as we see them) of the processes in the unit's cgroup."""
    for d in cgroup_dirs(cgroup_root, control_group):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            continue
    return []


def host_pid(cgroup_root, control_group, main_pid):
    pids = unit_pids(cgroup_root, control_group)
    # same PID namespace: the PID itself; otherwise the one whose innermost PID it is
    for pid in pids:
        if pid == main_pid and ns_pid(pid) == main_pid:
            return pid
    for pid in pids:
        if ns_pid(pid) == main_pid:
            return pid
    return None


class SystemdUnit:
    kind = "systemd unit"
    dedicated_cgroup = True

    def __init__(self, unit, run_cmd, runner, cgroup_root, gate=None, clock=time.monotonic,
                 sleep=time.sleep):
        self.unit = unit
        self.run_cmd = list(run_cmd)
        self.runner = runner
        self.cgroup_root = cgroup_root
        self.gate = gate
        self.clock = clock
        self.sleep = sleep
        self.pid = None
        self.main_pid = None
        self.control_group = None
        self.started = False
        self._status = None

    def show(self):
        res = self.runner(["systemctl", "show", "--property=" + ",".join(SHOW_PROPS), self.unit],
                          check=False, quiet=True)
        return parse_show(res.out)

    def start(self, timeout=30.0):
        try:
            self.runner(self.run_cmd, timeout=60)
        except CommandError as e:
            raise ConversionError("systemd-run could not start %s: %s" % (self.unit, e)) from None
        self.started = True
        deadline = self.clock() + timeout
        while True:
            props = self.show()
            self.main_pid = int(props.get("MainPID") or 0) or int(props.get("ExecMainPID") or 0)
            self.control_group = props.get("ControlGroup") or None
            if self.main_pid and self.control_group:
                self.pid = host_pid(self.cgroup_root, self.control_group, self.main_pid)
                if self.pid:
                    break
            if exit_status(props) is not None:
                self._status = exit_status(props)
                self.pid = self.pid or self.main_pid or None
                break
            if self.clock() > deadline:
                raise ConversionError("systemd unit %s started but its process was not found "
                                      "(MainPID %s, cgroup %s)" % (self.unit, self.main_pid,
                                                                   self.control_group))
            self.sleep(0.05)
        log.info("virt-v2v started in systemd unit %s: pid %s on the host (MainPID %s, cgroup %s)",
                 self.unit, self.pid, self.main_pid, self.control_group)
        return self

    def release(self):
        if self.gate:
            self.gate.open(self.poll, pid=self.pid)

    def pids(self):
        """Every process of the unit, as we see them (main process first)."""
        pids = unit_pids(self.cgroup_root, self.control_group or "")
        return [self.pid] + [p for p in pids if p != self.pid]

    def poll(self):
        if self._status is None:
            self._status = exit_status(self.show())
        return self._status

    def _kill(self, signal_name, whom):
        self.runner(["systemctl", "kill", "--signal=%s" % signal_name, "--kill-who=%s" % whom,
                     self.unit], check=False)

    def terminate(self):
        self._kill("SIGTERM", "main")

    def kill(self):
        self._kill("SIGKILL", "all")

    def set_cpu_quota(self, value):
        try:
            self.runner(["systemctl", "set-property", "--runtime", self.unit,
                         limits.cpu_quota_property(value)])
        except CommandError as e:
            raise ThrottleError("systemctl set-property failed: %s" % e) from None

    def close(self, grace=30.0):
        if not self.started:
            return
        stop_gracefully(self, grace, self.clock, self.sleep)
        self.runner(["systemctl", "stop", self.unit], check=False, timeout=60)
        self.runner(["systemctl", "reset-failed", self.unit], check=False)
        log.info("systemd unit %s stopped and reset", self.unit)
        self.started = False


def unit_launcher(runner, cgroup_root, clock=time.monotonic, sleep=time.sleep):
    """The launcher of daemon mode: ``Launch`` (wrapper.launch) -> a
    :class:`SystemdUnit` that systemd-run starts through ``runner``."""
    def launch(spec):
        unit = unit_name(spec.tag)
        # the gate shell opens both logs as the run-as user (the machine-readable
        # one at launch.MACHINE_FD): systemd would open them as root
        argv = spec.gate.wrap(spec.argv, log=spec.log_path,
                              machine_log=spec.machine_log_path) if spec.gate else spec.argv
        cmd = run_argv(unit, spec.user, spec.env, argv, spec.tag)
        return SystemdUnit(unit, cmd, runner, cgroup_root, gate=spec.gate, clock=clock, sleep=sleep)
    return launch
