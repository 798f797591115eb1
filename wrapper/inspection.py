"""``virt-v2v-wrapper inspect``: would this job run, and what would it take?
(docs/contract.md §10)

The job goes through the conversion's own code paths, in the conversion's
order: :func:`wrapper.config.collect` (validation, every path the job names
opened with the caller's rights), :func:`wrapper.users.resolve_run_as` and
the output directory checks, the virt-v2v capability probe, the secret
directory and the private CA copy (:func:`wrapper.job.private_ca`), the
oVirt pre-flight (:func:`wrapper.targets.rhv_upload.facts`), the password
and LUKS key files, the job's ssh-agent (:func:`wrapper.job.start_agent`).
Then ``virt-v2v-inspector`` runs on the job's source as the run-as user
(:mod:`wrapper.inspector`), and the document is put together from what it
found (:mod:`wrapper.inspectreport`).

Nothing is written but the secret directory (which also holds the
inspector's report and logs, handed to it as descriptors, ``/dev/fd/N``),
the agent's directory and a lease (wrapper.leases: after a SIGKILL the next
start or ``status`` as root reclaims them): all of them go on every way out.
No state file, no log file: an inspection is not a conversion.
"""
import contextlib
import json
import logging
import os
import time

from wrapper import (causes, config as jobconfig, inspector, inspectreport as rep, jobfiles, procinfo,
                     reclaim, users, v2v, vmname)
from wrapper.config import RhvUploadTarget, SshSource
from wrapper.errors import JobError, WrapperError
from wrapper.job import (describe_target, private_ca, safe, source_preflight, source_secrets,
                         start_agent)
from wrapper.monitor import SignalFlag
from wrapper.observe import history
from wrapper.security.boundary import Boundary
from wrapper.security.secrets import SecretDir
from wrapper.security.text import oneline
from wrapper.settings import LOCATIONS, TUNING, env_name, resolve, sudo_caller, tuning_problem
from wrapper.usage import Parser, UsageError

log = logging.getLogger(__name__)
PROG = "virt-v2v-wrapper inspect"
MAX_LOG = 64 << 20              # the inspector's verbose log read for disks and the cause


def build_parser():
    p = Parser(prog=PROG, description=(
        "Read a job like a conversion (stdin or --job FILE), check it the same way, run "
        "virt-v2v-inspector on its source as the run-as user and print one JSON document: "
        "guest, disks, sizes, free space on the target, a copy time estimate, the pre-flight "
        "results and the problems found. Nothing is converted or copied."),
        epilog="Exit status: 0 the job would run, 1 it would be refused (see \"problems\"), "
               "2 the inspection itself failed. See virt-v2v-wrapper(1), INSPECT.")
    for opt, attr, meta, text, _default in LOCATIONS + TUNING:
        if attr in ("metrics_dir",):
            continue
        if attr == "log_dir":       # a conversion's options can be reused as they are
            text = "taken and unused: an inspection writes no log"
        p.add_argument("--" + opt, dest=attr, metavar=meta,
                       help="%s [env %s]" % (text, env_name(attr)))
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="stop the inspector after this long (default 1800) "
                        "[env VIRT_V2V_WRAPPER_INSPECT_TIMEOUT]")
    return p


def classify(message, code=None):
    """``(code, hint)`` of a problem: the failure-code catalogue's
    (wrapper.causes), from the code the finder named or from the words."""
    if code is not None:
        cause = causes.make(code, message)
    else:
        cause = causes.classify(message)
    return cause.code, cause.hint


class Inspection:
    """One inspection: its checks, problems and the document's parts."""

    def __init__(self, settings, runner, signals, timeout, clock=time.monotonic,
                 run_inspector=inspector.run):
        self.settings = settings
        self.runner = runner
        self.signals = signals
        self.timeout = timeout
        self.clock = clock
        self.run_inspector = run_inspector
        self.checks = []
        self.problems = rep.Problems(classify)
        self.warnings = []
        self.parts = {"job": None}

    # -- the checks ----------------------------------------------------------
    def check(self, name, fn, code=None, optional=False, describe=lambda value: None):
        """Run one check; a WrapperError is its problem (the job would be
        refused), or its problems, each with its own code, when it carries
        several (``.problems``: the VDDK pre-flight's).  ``optional``: a None
        value means the check did not run (no entry); ``describe`` makes the
        entry's message from the value.  Returns fn's value, or raises _Stop."""
        t0 = self.clock()
        try:
            value = fn()
        except WrapperError as e:
            self._record(name, False, str(e), t0)
            for problem in getattr(e, "problems", None) or (e,):
                self.problems.add(str(problem), getattr(problem, "code", None) or code or "job_refused")
            raise _Stop() from None
        if value is None and optional:
            return None
        self._record(name, True, describe(value), t0)
        return value

    def _record(self, name, passed, message, t0):
        self.checks.append({"check": name, "passed": passed,
                            "message": oneline(message, 1000) if message else None,
                            "seconds": round(self.clock() - t0, 2)})

    def warn(self, message, code):
        cause_code, hint = classify(message, code)
        self.warnings.append({"code": cause_code, "hint": hint, "message": oneline(message, 1000)})

    def cancelled(self):
        if self.signals is not None and self.signals.received:
            self.problems.add("inspection cancelled by %s" % self.signals.received, "cancelled",
                              failed=True)
            raise _Stop()

    # -- the run -------------------------------------------------------------
    def run(self, job):
        try:
            self._run(job)
        except _Stop:
            pass
        except Exception as e:           # a bug: one problem, never a traceback on stdout
            log.exception("inspection failed")
            self.problems.add("internal error (%s: %s)" % (type(e).__name__, e), "internal_error",
                              failed=True)
        return self.document()

    def document(self):
        return rep.document(job=self.parts.get("job"), checks=self.checks, problems=self.problems,
                            warnings=self.warnings, report=self.parts.get("report"),
                            firmware=self.parts.get("firmware"), disks=self.parts.get("disks"),
                            target=self.parts.get("target"), estimate=self.parts.get("estimate"),
                            inspector=self.parts.get("inspector"))

    def _run(self, job):
        self.check("state directory", lambda: _state_dir(self.settings))
        config = self.check("job", lambda: _parse(job, self.settings))
        self.parts["job"] = rep.job_summary(config, describe_target(config.target))
        user = self.check("run-as user", lambda: users.resolve_run_as(self.settings, config.target))
        self.check("output directory", lambda: _output_dir(self.settings, user, config.target))
        caps = self.check("virt-v2v", lambda: v2v.probe_for_job(config, self.settings, self.runner,
                                                                 user))
        program = inspector.program_path(self.settings)
        self.check("virt-v2v-inspector", lambda: _executable(program))
        self.cancelled()
        self.check("VDDK pre-flight", lambda: source_preflight(config, self.settings, user),
                   optional=True, describe=_vddk_facts)
        self.cancelled()
        env = v2v.build_env(config, self.settings.environ, user)
        with contextlib.ExitStack() as stack:
            self._prepared_run(config, user, env, program, caps, stack)

    def _prepared_run(self, config, user, env, program, caps, stack):
        record = self._lease(stack)
        secrets = SecretDir(self.settings.state_dir, user.uid, user.gid)
        stack.callback(safe(secrets.remove, "removing the secret directory"))
        record(secret_dir=secrets.name, secret_ident=list(secrets.identity))
        config = private_ca(config, secrets)
        facts = None
        if isinstance(config.target, RhvUploadTarget):
            from wrapper.targets import rhv_upload
            facts = self.check("oVirt pre-flight",
                               lambda: rhv_upload.facts(config, self.settings, user, env))
        self.cancelled()
        vmware_pw, vddk_config, key_files = self.check("secret files", lambda: _secret_files(
            config, self.settings, secrets))
        sock = None
        if isinstance(config.source, SshSource):
            sock = self.check("ssh key", lambda: start_agent(
                self.settings, user, config.source.key, stack, record))
        self.cancelled()
        fds = _files(secrets, stack)
        paths = v2v.RunPaths(machine_readable_log="/dev/fd/%d" % fds["mr"],
                             vmware_password_file=vmware_pw, luks_key_files=key_files,
                             ssh_auth_sock=sock, vddk_config_file=vddk_config)
        argv = inspector.build_command(config, paths, program, "/dev/fd/%d" % fds["report"],
                                       caps=caps, tuning=v2v.Tuning.of(self.settings))
        run_env = v2v.build_env(config, self.settings.environ, user, paths)
        log.info("inspector command: %s", " ".join(argv))
        outcome = self.run_inspector(argv, run_env, user, fds["log"], (fds["mr"], fds["report"]),
                                     self.timeout, self.signals, on_start=lambda pid: record(
                                         child_pid=pid, child_start=procinfo.start_time(pid)))
        self._judge(config, outcome, fds, facts, user)

    def _lease(self, stack):
        """A lease like a conversion's (wrapper.leases): killed outright, the
        inspection's secret directory, agent and inspector are reclaimed by
        the next wrapper start or ``status`` as root.  Returns the function
        that records what it holds (a no-op without a lease book)."""
        book = reclaim.open_book(self.settings, log)
        if book is None:
            return lambda **fields: None
        stack.callback(book.close)
        lease = book.create("inspect-" + jobfiles.make_tag(), {"state_dir": self.settings.state_dir})
        stack.callback(safe(lease.release, "removing the inspection's lease"))

        def record(**fields):
            try:
                lease.update(**fields)
            except (OSError, ValueError) as e:
                log.warning("cannot update the inspection's lease: %s", e)
        return record

    # -- what the inspector found -------------------------------------------------
    def _judge(self, config, outcome, fds, facts, user):
        log_bytes = inspector.read_fd(fds["log"], MAX_LOG)
        self.parts["inspector"] = {"exit_status": outcome.rc, "seconds": round(outcome.seconds, 1),
                                   "timed_out": outcome.timed_out}
        t0 = self.clock()
        if outcome.cancelled_by:
            self._record("inspection", False, "cancelled by %s" % outcome.cancelled_by, t0)
            self.problems.add("inspection cancelled by %s" % outcome.cancelled_by, "cancelled",
                              failed=True)
            return
        if outcome.timed_out:
            message = "virt-v2v-inspector did not finish within %g s" % self.timeout
            self._record("inspection", False, message, t0)
            self.problems.add(message, "internal_error", failed=True)
            return
        if outcome.rc != 0:
            cause = rep.failure_cause(outcome, log_bytes, inspector.read_fd(fds["mr"], 1 << 20))
            self._record("inspection", False, cause.message, t0)
            # a cause the catalogue knows is a reason to refuse the job; an unknown one
            # means the inspection could not tell
            self.problems.add(cause.message, cause.code, failed=cause.code == causes.GENERIC)
            return
        try:
            report = inspector.parse_report(inspector.read_fd(fds["report"]))
        except inspector.ReportError as e:
            self._record("inspection", False, str(e), t0)
            self.problems.add(str(e), "internal_error", failed=True)
            return
        self._record("inspection", True, None, t0)
        self._found(config, report, log_bytes, facts, user)

    def _found(self, config, report, log_bytes, facts, user):
        self.parts["report"] = report
        self.parts["inspector"]["version"] = report.version
        sources, self.parts["firmware"] = rep.log_facts(log_bytes)
        allocation = config.allocation or (facts.allocation if facts is not None else None)
        disks, unmatched = rep.match_disks(report.disks, sources, config.source_disks,
                                           allocation, config.output_format)
        self.parts["disks"] = disks
        for path in unmatched:
            self.warn("source_disks entry %s matches no disk of the VM: its progress will stay "
                      "at 0" % oneline(path, 300), "job_refused")
        needed = sum(d["needed"] for d in disks if d["needed"] is not None) if disks else None
        target = rep.target_space(config.target, needed, Boundary.of(self.settings.environ), facts)
        self.parts["target"] = target
        if target["enough"] is False:
            self.problems.add("the target has %d bytes free, the converted disks need about %d "
                              "(%s)" % (target["free"], needed, target["where"]), "target_full")
        host = vmname.source_host(config.vm_name, config.source.name,
                                  getattr(config.source, "uri", None))
        total = sum(d["virtual_size"] or 0 for d in disks)
        self.parts["estimate"] = rep.copy_estimate(history.last_rate(self.settings.state_dir, host),
                                                   total)


class _Stop(Exception):
    """The inspection ends here; the problem is recorded."""


def _state_dir(settings):
    """The state directory, created and checked as a conversion does
    (docs/contract.md §4): the secret and work directories go there."""
    mode, owner = jobfiles.state_dir_mode(sudo_caller(settings.environ))
    os.close(jobfiles.open_job_dir(settings.state_dir, "--state-dir", mode,
                                   settings.trusted_uids(), owner))
    book = reclaim.open_book(settings, log)       # a lock directory root may not use refuses
    if book is not None:
        book.close()


def _parse(job, settings):
    config, problems = jobconfig.collect(job, settings)
    if problems:
        first = problems[0]
        rest = "".join("; also %s" % p for p in problems[1:])
        raise JobError(first.key, first.message + rest)
    return config


def _secret_files(config, settings, secrets):
    """The conversion's secret files (docs/contract.md §7): the source's
    (wrapper.job.source_secrets) and the LUKS keys."""
    vmware_pw, vddk_config = source_secrets(config, settings, secrets)
    key_files = tuple((device, secrets.write("luks_key_%d" % i, key))
                      for i, (device, key) in enumerate(config.luks_keys))
    return vmware_pw, vddk_config, key_files


def _vddk_facts(facts):
    """The VDDK pre-flight's entry message: what it found."""
    text = "VDDK %s (%s)" % (facts.get("version") or "?", facts.get("library") or "?")
    if facts.get("server"):
        text += "; %s, certificate %s, VM shut off" % (facts["server"], facts.get("fingerprint"))
    return oneline(text, 1000)


def _output_dir(settings, user, target):
    users.check_target_dir(user, target)
    users.check_caller_can_write(Boundary.of(settings.environ), target)


def _executable(program):
    if not (os.path.isfile(program) and os.access(program, os.X_OK)):
        raise JobError(None, "%s not found or not executable (install virt-v2v 2.1 or later, "
                             "or set VIRT_V2V_WRAPPER_INSPECTOR)" % oneline(program, 300))


def _files(secrets, stack):
    """The inspector's report, machine-readable log and verbose log: files
    of the secret directory, given to the run-as user, reached by the
    inspector only through the descriptors it inherits (``/dev/fd/N``)."""
    fds = {}
    for key in ("report", "mr", "log"):
        fd = secrets.create("inspect-" + key)
        stack.callback(os.close, fd)
        fds[key] = fd
    return fds


# ---------------------------------------------------------------- the command

def main(argv, stdin, stdout, stderr, environ, runner, read_job, signals=None):
    """``virt-v2v-wrapper inspect [options]``; returns the exit status."""
    try:
        opts = build_parser().parse_args(argv)
    except UsageError as e:
        stderr.write("%s: error: %s\n" % (PROG, e))
        return rep.EXIT_REFUSED
    settings = resolve(vars(opts), environ)
    if tuning_problem(settings):          # the conversion's settings, refused as it refuses them
        stderr.write("%s: error: %s\n" % (PROG, tuning_problem(settings)))
        return rep.EXIT_REFUSED
    timeout = opts.timeout if opts.timeout is not None else _env_timeout(settings)
    if timeout is None or not timeout > 0:
        stderr.write("%s: error: --timeout (VIRT_V2V_WRAPPER_INSPECT_TIMEOUT) must be a number "
                     "of seconds above 0\n" % PROG)
        return rep.EXIT_REFUSED
    signals = signals or SignalFlag().install()
    inspection = Inspection(settings, runner, signals, timeout)
    try:
        job = read_job(stdin, settings)
    except JobError as e:
        inspection.checks.append({"check": "job", "passed": False, "message": oneline(e, 1000),
                                  "seconds": 0.0})
        inspection.problems.add(str(e), "job_refused")
        doc = inspection.document()
    else:
        doc = inspection.run(job)
    return _print(doc, stdout, stderr)


def _env_timeout(settings):
    try:
        return float(settings.inspect_timeout)
    except (TypeError, ValueError):
        return None


def _print(doc, stdout, stderr):
    try:
        stdout.write(json.dumps(doc, sort_keys=True) + "\n")
        stdout.flush()
    except (OSError, ValueError, AttributeError) as e:
        stderr.write("%s: error: cannot write the result to stdout: %s\n" % (PROG, oneline(e, 200)))
        return rep.EXIT_FAILED
    status = doc["exit_status"]
    if status != rep.EXIT_WOULD_RUN and doc["problems"]:
        first = doc["problems"][0]
        stderr.write("%s: %s: %s (%s)\n" % (PROG, "would be refused" if status == 1 else
                                              "failed", first["message"], first["code"]))
    return status
