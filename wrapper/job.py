"""One conversion job from a validated Config to ``finished: true``.

Lifetimes are managed in one place, with an ExitStack: secret directory,
ssh-agent, the virt-v2v process/unit, throttling artefacts.  Cleanup runs on
every way out; ``finished`` is written only after it.
"""
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from wrapper import targets, v2v
from wrapper.config import ExportDomainTarget, LocalTarget, RhvUploadTarget, SshSource, VddkSource
from wrapper.errors import ConversionError, WrapperError
from wrapper.launch import ChildProcess, Gate
from wrapper.monitor import Monitor
from wrapper.netlimit import NetLimiter
from wrapper.runner import quote
from wrapper.secrets import SecretDir
from wrapper.sshagent import SshAgent
from wrapper.state import State, StateFile
from wrapper.throttle import Throttler

log = logging.getLogger(__name__)

OVIRT_LOG_DIR = "/var/log/vdsm/import"
SOCKET_PATH_MAX = 100       # sun_path is 108 bytes; keep a margin
DEFAULT_LOG_DIR = "/var/log/virt-v2v"


@dataclass(frozen=True)
class JobFiles:
    tag: str
    v2v_log: str
    mr_log: str
    wrapper_log: str
    state_file: str
    throttle_file: str

    def announcement(self):
        """The one JSON line printed on stdout (SPEC §4)."""
        return json.dumps({"v2v_log": self.v2v_log, "wrapper_log": self.wrapper_log,
                           "state_file": self.state_file, "throttling_file": self.throttle_file})


def make_tag(now=None, pid=None):
    return "%s-%d" % (time.strftime("%Y%m%dT%H%M%S", time.localtime(now)),
                      os.getpid() if pid is None else pid)


def log_dir_for(settings, job):
    if settings.log_dir:
        return settings.log_dir
    ovirt = isinstance(job, dict) and ("rhv_url" in job or "export_domain" in job)
    return OVIRT_LOG_DIR if ovirt else DEFAULT_LOG_DIR


def job_files(settings, log_dir, tag):
    base = "v2v-import-%s" % tag
    return JobFiles(tag=tag,
                    v2v_log=os.path.join(log_dir, base + ".log"),
                    mr_log=os.path.join(log_dir, base + "-mr.log"),
                    wrapper_log=os.path.join(log_dir, base + "-wrapper.log"),
                    state_file=os.path.join(settings.state_dir, base + ".state"),
                    throttle_file=os.path.join(settings.state_dir, base + ".throttle"))


def create_log_file(path, owner=None):
    """Create ``path`` (0644, readable by the sudo caller) and chown it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    try:
        os.fchmod(fd, 0o644)
        if owner is not None and (owner[0] != os.geteuid()):
            os.fchown(fd, owner[0], owner[1])
    finally:
        os.close(fd)


def describe_target(target):
    if isinstance(target, RhvUploadTarget):
        parts = urlsplit(target.url or "")
        host = parts.hostname or ""
        return "oVirt %s, storage %s, cluster %s" % (host, target.storage, target.cluster)
    if isinstance(target, ExportDomainTarget):
        return "export domain %s" % target.path
    if isinstance(target, LocalTarget):
        return "local directory %s" % target.path
    return str(target)


def short_vm_name(vm_name):
    if vm_name.startswith("ssh://"):
        base = os.path.basename(urlsplit(vm_name).path)
        return base[:-4] if base.endswith(".vmx") else base
    return vm_name


def initial_state(config, files):
    return State(config.source_disks, extra={
        "vm": short_vm_name(config.vm_name),
        "target": describe_target(config.target),
        "transport": config.source.name,
        "wrapper_pid": os.getpid(),
        "started_at": round(time.time(), 3),
        "tag": files.tag,
    })


def safe(fn, what):
    """A cleanup callback that logs its failure instead of masking others."""
    def callback():
        try:
            fn()
        except Exception as e:     # cleanup must go on whatever happens
            log.warning("cleanup: %s failed: %s", what, e)
    return callback


class Job:
    """Prepared resources + the run.  Built by :func:`prepare`."""

    def __init__(self, config, settings, files, user, caps, stack, runner, launcher_factory,
                 allowed_uids, clock=time.monotonic, sleep=time.sleep):
        self.config = config
        self.settings = settings
        self.files = files
        self.user = user
        self.caps = caps
        self.stack = stack
        self.runner = runner
        self.launcher_factory = launcher_factory
        self.allowed_uids = allowed_uids
        self.clock = clock
        self.sleep = sleep
        self.state = initial_state(config, files)
        self.state_file = StateFile(files.state_file)
        self.paths = None
        self.argv = None
        self.env = None
        self.allocation = config.allocation
        self.process = None
        self.gate = None
        self.hooks = targets.module_for(config.target)

    # -- before the caller gets its answer ------------------------------------
    def prepare(self):
        """Secrets, agent, command, state file.  A failure here refuses the job."""
        if hasattr(self.hooks, "prepare"):
            self.allocation = self.hooks.prepare(self.config, self) or self.allocation
        secrets = SecretDir(self.settings.state_dir, self.user.uid, self.user.gid)
        self.stack.callback(safe(secrets.remove, "removing the secret directory"))
        vmware_pw = rhv_pw = sock = None
        if isinstance(self.config.source, VddkSource):
            vmware_pw = secrets.write("vmware_password", self.config.source.password)
        if isinstance(self.config.target, RhvUploadTarget):
            rhv_pw = secrets.write("rhv_password", self.config.target.password)
        self.gate = Gate(secrets.fifo("gate"), clock=self.clock, sleep=self.sleep)
        key_files = tuple((device, secrets.write("luks_key_%d" % i, key))
                          for i, (device, key) in enumerate(self.config.luks_keys))
        if isinstance(self.config.source, SshSource):
            agent = SshAgent(self._agent_socket(secrets), self.user)
            self.stack.callback(safe(agent.stop, "stopping ssh-agent"))
            agent.start()
            agent.add_key(self.config.source.key)
            sock = agent.socket
        self.paths = v2v.RunPaths(machine_readable_log=self.files.mr_log,
                                  vmware_password_file=vmware_pw, rhv_password_file=rhv_pw,
                                  luks_key_files=key_files, ssh_auth_sock=sock)
        self.argv = v2v.build_command(self.config, self.caps, self.paths,
                                      virt_v2v=self.settings.virt_v2v_path(),
                                      allocation=self.allocation)
        self.env = v2v.build_env(self.config, self.settings.environ, self.user, self.paths)
        for path in (self.files.v2v_log, self.files.mr_log):
            create_log_file(path, (self.user.uid, self.user.gid))
        self.state_file.write(self.state, force=True)

    def _agent_socket(self, secrets):
        """Unix socket paths are limited to 108 bytes: under a deep state
        directory, the agent gets a private directory of its own in TMPDIR."""
        path = os.path.join(secrets.path, "agent.sock")
        if len(path.encode()) < SOCKET_PATH_MAX:
            return path
        own = SecretDir(None, self.user.uid, self.user.gid)
        self.stack.callback(safe(own.remove, "removing the ssh-agent directory"))
        return os.path.join(own.path, "agent.sock")

    def discard_state(self):
        """A refused job leaves no state file behind."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.files.state_file)

    # -- the run ------------------------------------------------------------
    def run(self, signals):
        """Launch, monitor, finish.  Returns True on success."""
        try:
            with self.stack:
                self._run(signals)
        except Exception as e:            # an error in the wrapper itself
            log.exception("wrapper error")
            self.state.error("virt-v2v-wrapper failed: %s" % (e,))
            self.state.set("failed", True)
        self.state.set("finished", True)
        self.state.set("finished_at", round(time.time(), 3))
        self.state_file.write(self.state)
        log.info("finished: %s", "failed: %s" % self.state.get("last_message", {}).get("message")
                 if self.state.get("failed") else "success")
        return not self.state.get("failed")

    def _run(self, signals):
        rc = None
        try:
            if signals.received:
                raise ConversionError("cancelled by %s before virt-v2v started" % signals.received)
            log.info("virt-v2v command: %s", quote(self.argv))
            log.info("virt-v2v environment: %s", " ".join(
                "%s=%s" % (k, v) for k, v in sorted(self.env.items())))
            limiter = NetLimiter(self.files.tag, runner=self.runner,
                                 cgroup_root=self.settings.cgroup_root, lock_dir=self.settings.lock_dir)
            # ExitStack unwinds in reverse: virt-v2v stops before its limits go
            self.stack.callback(safe(limiter.close, "removing network limits"))
            self.process = self.launcher_factory(self)
            self.stack.callback(safe(self.process.close, "stopping virt-v2v"))
            self.process.start()
            # virt-v2v waits at its gate: an initial network limit classifies
            # its cgroup before it sends a single packet
            throttler = self._throttler(limiter)
            self.process.release()
            self.state.set("started", True)
            self.state.set("pid", self.process.pid)
            self.state_file.write(self.state)
            monitor = Monitor(self.process, self.state, self.state_file, self.files.v2v_log,
                              self.files.mr_log, throttler=throttler, signals=signals,
                              clock=self.clock, sleep=self.sleep, dialect=self.caps.major)
            rc = monitor.run()
            self.state.set("return_code", rc)
            log.info("virt-v2v exited with status %s", rc)
        except WrapperError as e:
            log.error("%s", e)
            self.state.error(str(e))
        self._judge(rc, signals)
        if self.state.get("failed") and hasattr(self.hooks, "on_failure"):
            self.hooks.on_failure(self.config, self)

    def _throttler(self, limiter):
        appliers = {"cpu": self.process.set_cpu_quota,
                    "network": lambda value: self._set_network(limiter, value)}
        throttler = Throttler(self.files.throttle_file, self.state, appliers, self.allowed_uids)
        if self.config.throttling:
            throttler.apply(self.config.throttling)
        return throttler

    def _set_network(self, limiter, value):
        """Classification (nft table, cgroup) is set up with the first limit,
        so a conversion that is never limited leaves the host's firewall
        alone.  Later, every running process of the conversion is classified:
        with the unit's own cgroup (or net_cls) their sockets are caught too."""
        if value is not None and not limiter.started:
            limiter.start(self.process.pids(), self.process.dedicated_cgroup)
        limiter.set_rate(None if value is None else int(value))

    def _judge(self, rc, signals):
        if rc == 0 and not signals.received:
            return
        self.state.set("failed", True)
        cause = signals.received or self.state.signal
        if cause:
            self.state.error("Conversion cancelled: virt-v2v was stopped by %s" % cause)
        elif self.state.v2v_errors:
            self.state.error(self.state.v2v_errors[0])
        elif rc is not None and rc > 128:
            self.state.error("virt-v2v was killed by signal %d" % (rc - 128))
        elif rc is not None:
            self.state.error("virt-v2v exited with status %d" % rc)
        else:
            self.state.error("virt-v2v did not run")


def child_launcher(job):
    return ChildProcess(job.argv, job.env, job.files.v2v_log, job.user, gate=job.gate)
