"""One conversion job from a validated Config to ``finished: true``.

Lifetimes are managed in one place, with an ExitStack: secret directory,
ssh-agent, the virt-v2v process/unit, throttling artefacts.  Cleanup runs on
every way out — a refusal (:meth:`Job.refuse`), an answer that could not be
given (:meth:`Job.abort`), the run's end — and ``finished`` is written only
after it.  A lease (wrapper.leases) names what this job holds, so that if
the wrapper is killed outright a later start can reclaim it.
"""
import dataclasses
import logging
import os
import tempfile
import time
from urllib.parse import urlsplit

from wrapper import causes, parallel, procinfo, targets, v2v, vddkconf, vmname
from wrapper.security import fsafe
from wrapper.config import ExportDomainTarget, LocalTarget, RhvUploadTarget, SshSource, VddkSource
from wrapper.errors import ConversionError, JobError, WrapperError
from wrapper.launch import MACHINE_FD, Gate, Launch
from wrapper.monitor import Monitor
from wrapper.throttling.netlimit import NetLimiter
from wrapper.throttling.network import NetworkLimit
from wrapper.runner import quote
from wrapper.security.secrets import AgentDir, SecretDir
from wrapper.sshagent import SshAgent
from wrapper.state import State, StateFile
from wrapper.throttling.throttle import Throttler

log = logging.getLogger(__name__)

SOCKET_PATH_MAX = 100       # sun_path is 108 bytes; keep a margin


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


def initial_state(config, files):
    return State(config.source_disks, extra={
        "vm": vmname.display_name(config.vm_name, config.source.name),
        "target": describe_target(config.target),
        "transport": config.source.name,
        "source_host": vmname.source_host(config.vm_name, config.source.name,
                                          getattr(config.source, "uri", None)),
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


def private_ca(config, secrets):
    """A CA file the job named was read once with the caller's rights
    (config); from here on the wrapper's own engine calls, the pre-flight
    and virt-v2v (or the inspector) all use a copy in the private directory,
    so nobody can swap the caller's path for something root would then open.
    Returns the config pointing at the copy."""
    target = config.target
    if isinstance(target, RhvUploadTarget) and target.ca_pem is not None:
        copy = secrets.write("rhv_cafile", target.ca_pem.decode("utf-8", "replace"))
        return dataclasses.replace(config, target=dataclasses.replace(target, cafile=copy))
    return config


def source_preflight(config, settings, user):
    """A vddk job's pre-flight (wrapper.vmware.preflight), as the run-as user
    with virt-v2v's environment, before anything is created: what it found,
    or None (not a vddk job, or ``VIRT_V2V_WRAPPER_VDDK_PREFLIGHT`` off); a
    JobError (its ``.problems`` each with a failure code) refuses the job.
    A conversion and an inspection run this one (docs/contract.md §3.1, §10)."""
    if not isinstance(config.source, VddkSource):
        return None
    from wrapper.vmware import preflight
    return preflight.check_job(config, settings, user,
                               v2v.build_env(config, settings.environ, user))


def source_secrets(config, settings, secrets):
    """The source's files in the private directory: ``(vmware password file,
    vddk_config copy)`` for a vddk job (the copy only when the administrator
    set ``vddk_config``: checked, and virt-v2v reads what was validated,
    wrapper.vddkconf), ``(None, None)`` otherwise.  A conversion and an
    inspection make the same ones (docs/contract.md §7, §10)."""
    if not isinstance(config.source, VddkSource):
        return None, None
    vddk_config = None
    if settings.vddk_config:
        vddk_config = secrets.write("vddk_config", vddkconf.read(settings.vddk_config))
    return secrets.write("vmware_password", config.source.password), vddk_config


def start_agent(settings, user, key, stack, record=lambda **fields: None):
    """The job's ssh-agent as ``user``, loaded with ``key`` (None: the user's
    own keys); its stop and its directory's removal go on ``stack``; ``record``
    gets what a lease keeps.  The agent's socket directory is its own (the
    agent must create the socket in it); Unix socket paths are limited to 108
    bytes, so under a deep state directory it goes to TMPDIR.  Returns the
    socket's path."""
    parent = settings.state_dir
    longest = os.path.join(parent, AgentDir.prefix + "x" * fsafe.RANDOM_NAME_LEN, "agent.sock")
    if len(longest.encode()) >= SOCKET_PATH_MAX:
        parent = tempfile.gettempdir()
    own = AgentDir(parent, user.uid, user.gid)
    stack.callback(safe(own.remove, "removing the ssh-agent directory"))
    record(agent_dir=own.path, agent_ident=list(own.identity))
    agent = SshAgent(os.path.join(own.path, "agent.sock"), user)
    stack.callback(safe(agent.stop, "stopping ssh-agent"))
    agent.start()
    record(agent_pid=agent.pid, agent_start=agent.start_time)
    agent.add_key(key)
    return agent.socket


class Job:
    """Prepared resources + the run.  Built by :func:`prepare`."""

    def __init__(self, config, settings, reserved, user, caps, stack, runner, launcher_factory,
                 allowed_uids, leases=None, lease=None, clock=time.monotonic, sleep=time.sleep,
                 target_seen=None):
        self.config = config
        self.settings = settings
        self.reserved = reserved
        self.files = reserved.files
        self.user = user
        self.caps = caps
        self.stack = stack
        self.runner = runner
        self.launcher_factory = launcher_factory
        self.allowed_uids = allowed_uids
        self.leases = leases        # the lease book, closed when the job is over (cli._release)
        self.lease = lease          # taken with the job's names (cli._take_lease)
        self.clock = clock
        # (device, inode) of the output directory the caller's own check saw
        self.target_seen = target_seen
        self.sleep = sleep
        self.state = initial_state(config, self.files)
        self.network = NetworkLimit(self.state, NetLimiter(
            self.files.tag, runner=runner, cgroup_root=settings.cgroup_root,
            lock_dir=settings.lock_dir))
        # the name was taken with a first document (jobfiles.reserve): replaced from here on
        self.state_file = StateFile(self.files.state_file, dir_fd=reserved.state_dir_fd,
                                    adopt=reserved.state)
        self.paths = None
        self.argv = None
        self.env = None
        self.allocation = config.allocation
        self.process = None
        self.parallel = parallel.SERIAL
        self.gate = None
        self.hooks = targets.module_for(config.target)

    # -- before the caller gets its answer ------------------------------------
    def prepare(self):
        """Secrets, agent, command, state file.  A failure here refuses the job."""
        self._source_preflight()
        self._attach_metrics()
        self._lease_update(run_uid=self.user.uid)
        secrets = SecretDir(self.settings.state_dir, self.user.uid, self.user.gid)
        self.stack.callback(safe(secrets.remove, "removing the secret directory"))
        self._lease_update(secret_dir=secrets.name, secret_ident=list(secrets.identity))
        self._private_ca(secrets)
        if hasattr(self.hooks, "prepare"):
            env = v2v.build_env(self.config, self.settings.environ, self.user)
            self.allocation = self.hooks.prepare(self.config, self.settings, self.user, env) \
                or self.allocation
        rhv_pw = sock = None
        vmware_pw, vddk_config = source_secrets(self.config, self.settings, secrets)
        if isinstance(self.config.target, RhvUploadTarget):
            rhv_pw = secrets.write("rhv_password", self.config.target.password)
        self.gate = Gate(secrets.fifo("gate"), clock=self.clock, sleep=self.sleep,
                         open_writer=lambda: secrets.open_entry("gate", os.O_WRONLY | os.O_NONBLOCK),
                         expect=self._log_identities())
        key_files = tuple((device, secrets.write("luks_key_%d" % i, key))
                          for i, (device, key) in enumerate(self.config.luks_keys))
        if isinstance(self.config.source, SshSource):
            sock = self._start_agent()
        self.network.open_source_read(self.caps, secrets)
        self.parallel = parallel.plan(self.settings, self.caps, len(self.config.source_disks))
        self.state.parallel = self.parallel.parallel
        # the stack unwinds in reverse: virt-v2v stops before its limits go
        self.stack.callback(safe(self.network.close, "removing network limits"))
        # the log is handed over as a descriptor (launch.gate_script), never by name
        self.paths = v2v.RunPaths(machine_readable_log="/dev/fd/%d" % MACHINE_FD,
                                  vmware_password_file=vmware_pw, rhv_password_file=rhv_pw,
                                  luks_key_files=key_files, ssh_auth_sock=sock,
                                  bandwidth_file=self.network.source_read_path,
                                  vddk_config_file=vddk_config)
        self.argv = v2v.build_command(self.config, self.caps, self.paths,
                                      virt_v2v=self.settings.virt_v2v_path(),
                                      allocation=self.allocation,
                                      tuning=v2v.Tuning.of(self.settings))
        self.env = v2v.build_env(self.config, self.settings.environ, self.user, self.paths)
        self.argv = parallel.command(self.argv, self.parallel)
        self.env = parallel.environment(self.env, self.parallel)
        if not self.state_file.write(self.state, force=True):
            raise ConversionError("cannot write the state file %s" % self.files.state_file)

    def _source_preflight(self):
        source_preflight(self.config, self.settings, self.user)

    def _private_ca(self, secrets):
        self.config = private_ca(self.config, secrets)

    def _log_identities(self):
        """What virt-v2v's stdout and machine-readable descriptor must be: the
        files the wrapper created (launch.Gate checks before letting it run)."""
        idents = {}
        for number, fd in ((1, self.reserved.v2v_log_fd), (MACHINE_FD, self.reserved.mr_log_fd)):
            st = os.fstat(fd)
            idents[number] = (st.st_dev, st.st_ino)
        return idents

    def _attach_metrics(self):
        """--metrics-dir: the state file's every write also rewrites the .prom file."""
        if self.settings.metrics_dir:
            from wrapper.observe import metrics
            try:
                self.state_file = metrics.metered(self.state_file, self.settings, self.files.tag)
            except OSError as e:
                raise JobError("--metrics-dir", "%s: cannot create the metrics file: %s"
                               % (self.settings.metrics_dir, e.strerror or e)) from None

    def _start_agent(self):
        return start_agent(self.settings, self.user, self.config.source.key, self.stack,
                           self._lease_update)

    # -- the lease --------------------------------------------------------
    def _lease_update(self, **fields):
        if self.lease is not None:
            try:
                self.lease.update(**fields)
            except (OSError, ValueError) as e:
                log.warning("cannot update the job's lease: %s", e)

    def _lease_release(self):
        if self.lease is not None:
            try:
                self.lease.release()
            except OSError as e:
                log.warning("cannot remove the job's lease: %s", e)
            self.lease = None

    def daemon_started(self):
        """In the daemon, before the caller is told it exists."""
        log.info("detached: daemon pid %d", os.getpid())
        self._lease_update(wrapper_pid=os.getpid(), wrapper_start=procinfo.start_time(os.getpid()))
        self.state.set("wrapper_pid", os.getpid())
        self.state_file.write(self.state)

    # -- ways out ----------------------------------------------------------
    def refuse(self):
        """A refused job: everything undone, no state file, no virt-v2v logs."""
        self.stack.close()
        self.state_file.discard()
        self.reserved.give_back()
        self._lease_release()

    def abort(self, message):
        """Accepted but never run (the answer could not be given): clean up
        and finish the state file as a failure, so a client that did learn
        the paths stops waiting."""
        log.error("%s", message)
        try:
            self.stack.close()
        finally:
            self.state.error(message, "not_started")
            self.state.set("failed", True)
            self._finish()

    def _finish(self):
        self.state.set("finished", True)
        self.state.set("finished_at", round(time.time(), 3))
        self.state_file.write_final(self.state, sleep=self.sleep)
        self.state_file.close()
        self._lease_release()
        log.info("finished: %s", "failed: %s" % self.state.get("last_message", {}).get("message")
                 if self.state.get("failed") else "success")

    # -- the run ------------------------------------------------------------
    def run(self, signals):
        """Launch, monitor, finish.  Returns True on success."""
        try:
            with self.stack:
                self._run(signals)
        except Exception as e:            # an error in the wrapper itself
            log.exception("wrapper error")
            self.state.error("virt-v2v-wrapper failed: %s" % (e,), "internal_error")
            self.state.set("failed", True)
        self._finish()
        return not self.state.get("failed")

    def _run(self, signals):
        rc = None
        try:
            if signals.received:
                raise ConversionError("cancelled by %s before virt-v2v started" % signals.received,
                                      code="cancelled")
            log.info("virt-v2v command: %s", quote(self.argv))
            log.info("virt-v2v environment: %s", " ".join(
                "%s=%s" % (k, v) for k, v in sorted(self.env.items())))
            self._watch_target()
            self.process = self.launcher_factory(self._launch())
            self.stack.callback(safe(self.process.close, "stopping virt-v2v"))
            unit = getattr(self.process, "unit", None)
            if unit:                 # named before it exists: a death in between still leaves it found
                self._lease_update(unit=unit)
            self.process.start()
            if not unit:
                self._lease_update(child_pid=self.process.pid,
                                   child_start=procinfo.start_time(self.process.pid))
            # virt-v2v waits at its gate: an initial network limit classifies
            # its cgroup before it sends a single packet
            throttler = self._throttler()
            self.process.release()
            self.state.set("started", True)
            self.state.set("pid", self.process.pid)
            self.state_file.write(self.state)
            monitor = Monitor(self.process, self.state, self.state_file, self.reserved.v2v_log_fd,
                              self.reserved.mr_log_fd, throttler=throttler, signals=signals,
                              clock=self.clock, sleep=self.sleep, dialect=self.caps.major,
                              # disks read at once share the source-read limit
                              copying=self.network.share_source_read if self.parallel.parallel
                              else None)
            rc = monitor.run()
            self.state.set("return_code", rc)
            log.info("virt-v2v exited with status %s", rc)
        except WrapperError as e:
            log.error("%s", e)
            self.state.error(causes.from_error(e, causes.GENERIC))
        self._judge(rc, signals)
        if self.state.get("failed") and hasattr(self.hooks, "on_failure"):
            self.hooks.on_failure(self.config.target, tuple(self.state.disk_ids), self.settings)

    def _watch_target(self):
        """Record the local directories virt-v2v will write; their removal
        goes on the stack before virt-v2v's stop, so it runs after it, on
        every way out (docs/contract.md §8).  Nothing here stops the job."""
        if not hasattr(self.hooks, "watch"):
            return
        try:
            watched = self.hooks.watch(self.config.target, self.state.get("vm"), self.user,
                                      seen=self.target_seen)
        except OSError as e:
            log.warning("cannot record the target directory before the conversion (a failure's "
                        "partial output will not be removed): %s", e)
            return
        if watched is not None:
            self.stack.callback(safe(lambda: watched.finish(self._succeeded()),
                                     "removing the partial output"))

    def _succeeded(self):
        return self.state.get("return_code") == 0 and not self.state.get("failed")

    def _launch(self):
        return Launch(argv=tuple(self.argv), env=dict(self.env), user=self.user,
                      log=self.reserved.v2v_log_fd, log_path=self.files.v2v_log, gate=self.gate,
                      tag=self.files.tag, machine_log=self.reserved.mr_log_fd,
                      machine_log_path=self.files.mr_log)

    def _throttler(self):
        appliers = {"cpu": self.process.set_cpu_quota,
                    "network": lambda rate: self.network.set(rate, self.process)}
        throttler = Throttler(self.reserved.throttle_dir_fd, self.reserved.throttle_name, self.state,
                              appliers, self.allowed_uids)
        if self.config.throttling:
            throttler.apply(self.config.throttling)
        return throttler

    def _judge(self, rc, signals):
        self.state.conclude(rc, signals.received)
