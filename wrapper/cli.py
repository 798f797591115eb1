"""Command line, stdin/stdout and exit codes (docs/contract.md §2, §4).

The only place that wires real parts together.  ``main()`` returns the exit
status; only :func:`console_main` calls ``sys.exit``.
"""
import contextlib
import logging
import os
import sys

from wrapper import (__version__, checks, config as jobconfig, daemon, jobfiles, jobinput, logsetup,
                     parallel, reclaim, systemd, users, v2v)
from wrapper.errors import JobError, WrapperError
from wrapper.launch import child_launcher
from wrapper.monitor import SignalFlag
from wrapper.runner import run as default_runner
from wrapper.security.boundary import Boundary
from wrapper.security.text import oneline
from wrapper.settings import (LOCATIONS, SWITCHES, TUNING, env_name, resolve, sudo_caller,
                              switch_problem, tuning_problem)
from wrapper.usage import Parser, UsageError

log = logging.getLogger("wrapper")
PROG = "virt-v2v-wrapper"

EXIT_OK, EXIT_REFUSED, EXIT_FAILED = 0, 1, 2


def build_parser(check_names):
    p = Parser(prog=PROG, description=(
        "Run one virt-v2v conversion described by a JSON job on stdin (or in --job FILE). "
        "Prints one JSON line "
        "with the paths of the logs, the state file and the throttling file, then (unless "
        "\"daemonize\": false) detaches and runs virt-v2v in a transient systemd unit."),
        epilog="Each location option can also be set by the environment variable shown; "
               "the option wins. Exit status: 0 job started (or conversion succeeded in the "
               "foreground), 1 job refused, 2 conversion failed (foreground). "
               "To watch conversions: virt-v2v-wrapper status [--watch] [--json] [STATE_FILE...]; "
               "Prometheus metrics: --metrics-dir DIR (node_exporter textfiles) or "
               "virt-v2v-wrapper metrics --listen ADDR:PORT; see virt-v2v-wrapper(1).")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--checks", action="store_true", help="list the host checks and exit")
    for name in check_names:
        p.add_argument("--check-" + name, action="append_const", const=name, dest="run_checks",
                       help="run the %s host check: exit 0 if it passes, 1 if not" % name)
    p.add_argument("--validate", action="store_true",
                   help="validate the job on stdin, report every problem, start nothing")
    for opt, attr, meta, text, _default in LOCATIONS + TUNING:
        p.add_argument("--" + opt, dest=attr, metavar=meta,
                       help="%s [env %s]" % (text, env_name(attr)))
    for opt, attr, text in SWITCHES:
        p.add_argument("--" + opt, dest=attr, action="store_true",
                       help="%s [env %s=1]" % (text, env_name(attr)))
    return p


def _refuse(stderr, error):
    try:
        stderr.write("%s: error: %s\n" % (PROG, oneline(str(error), 1000)))
        stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass                     # nobody left to tell
    return EXIT_REFUSED


def _write_answer(stdout, text):
    """Write the one stdout line; return None, or why it could not be written.

    A stdout that fails is pointed at /dev/null afterwards, so that the
    interpreter's own flush at exit cannot add a second complaint."""
    try:
        if stdout is None:
            raise OSError("stdout is closed")
        stdout.write(text)
        stdout.flush()
        return None
    except (OSError, ValueError) as e:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
        return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _read_job(stdin, settings):
    if settings.job:
        # the caller names it: opened with the caller's rights, never root's
        return jobinput.read_job_file(settings.job, Boundary.of(settings.environ))
    if stdin is None:
        raise JobError(None, "cannot read the job: stdin is closed")
    return jobinput.read_job(getattr(stdin, "buffer", stdin))


def _open_dirs(settings, log_dir, sudo):
    state_mode, state_owner = jobfiles.state_dir_mode(sudo)
    owners = settings.trusted_uids()
    state_fd = jobfiles.open_job_dir(settings.state_dir, "--state-dir", state_mode, owners,
                                     state_owner)
    try:
        log_fd = jobfiles.open_job_dir(log_dir, "--log-dir", 0o755, owners)
    except BaseException:
        os.close(state_fd)
        raise
    return state_fd, log_fd


def reclaim_for_status(environ, runner):
    """Before ``status`` shows anything, clean up after wrappers that died
    without doing so, when this user owns the lease directory (normally
    root); silent otherwise.  Decided here: the view never changes anything."""
    book = reclaim.reclaim_at(resolve({}, environ), runner, log, create=False)
    if book is not None:
        book.close()


def _hold_stdio_numbers():
    """A closed stdin/stdout/stderr (``>&-``) is not a free descriptor number:
    put /dev/null there, or the first directory we open would get number 1
    and the daemon's dup2 onto its stdio would replace it.  A closed stream
    stays None for Python (the answer still cannot be written)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:           # a lower one was closed too and is held now
                os.dup2(null, fd)


def _remove_throttle_dir(reserved):
    try:
        reserved.remove_throttle_dir()
    except OSError as e:
        log.warning("cleanup: removing the throttling directory failed: %s", e)


def main(argv=None, stdin=None, stdout=None, stderr=None, environ=None, runner=default_runner,
         launcher_factory=None, detach=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = (sys.stderr if stderr is None else stderr) or open(os.devnull, "w")
    environ = dict(os.environ if environ is None else environ)
    caller_fds = daemon.inherited_fds()
    _hold_stdio_numbers()
    if argv and argv[0] == "status":
        from wrapper.observe import status
        reclaim_for_status(environ, runner)
        return status.main(argv[1:], stdout=stdout, stderr=stderr, environ=environ)
    if argv and argv[0] == "inspect":
        from wrapper import inspection
        return inspection.main(argv[1:], stdin, stdout, stderr, environ, runner, _read_job)
    if argv and argv[0] == "metrics":
        from wrapper.observe import exporter
        return exporter.main(argv[1:], stdout=stdout, stderr=stderr, environ=environ)
    registry = checks.registry()
    try:
        opts = build_parser(sorted(registry)).parse_args(argv)
    except UsageError as e:
        return _refuse(stderr, JobError(None, str(e)))
    settings = resolve(vars(opts), environ)
    if opts.version:
        stdout.write("%s %s\n%s\n" % (PROG, __version__, checks.virt_v2v_report(settings, runner)[1]))
        return EXIT_OK
    problem = switch_problem(settings) or parallel.settings_problem(settings)
    if problem:
        return _refuse(stderr, problem)
    if opts.checks:
        stdout.write("".join(name + "\n" for name in sorted(registry)))
        return EXIT_OK
    if opts.run_checks:
        status = EXIT_OK
        for name in opts.run_checks:
            ok, reason = registry[name](settings, runner)
            (stdout if ok else stderr).write("%s: %s\n" % (name, reason))
            status = status if ok else EXIT_REFUSED
        return status
    if tuning_problem(settings) and not opts.validate:      # --validate lists it with the rest
        return _refuse(stderr, tuning_problem(settings))
    try:
        job = _read_job(stdin, settings)
    except JobError as e:
        return _refuse(stderr, e)
    if opts.validate:
        from wrapper import validate
        return validate.report(job, settings, stdout)
    return run_job(job, settings, stdout, stderr, runner, launcher_factory,
                   detach or daemon.detach, caller_fds)


def _take_names(settings, log_dir, sudo):
    """The lease book (a lock directory root may not use refuses the job
    before anything is created), the directories, the job's names."""
    book = reclaim.open_book(settings, log)
    try:
        state_fd, log_fd = _open_dirs(settings, log_dir, sudo)
        return book, jobfiles.reserve(settings, log_dir, state_fd, log_fd,
                                      caller=jobfiles.caller_of(sudo))
    except BaseException:
        if book is not None:
            book.close()
        raise


def _take_lease(book, settings, reserved):
    """The job's lease, taken as soon as its names exist: a wrapper killed
    from here on leaves a lease that the next wrapper's reclaim follows to
    the reserved state file and throttling directory (None without a book)."""
    if book is None:
        return None
    try:
        # LeaseBook.create fills in this process's pid, start time and boot id
        return book.create(reserved.files.tag, {
            "state_dir": settings.state_dir, "state_name": reserved.state_name,
            "throttle_dir": reserved.throttle_dir_name,
            "throttle_ident": list(reserved.throttle_dir_ident)})
    except (OSError, ValueError) as e:
        log.warning("cannot record the job's lease: %s", e)
        return None


def run_job(job, settings, stdout, stderr, runner, launcher_factory, detach, caller_fds):
    """Accept the job (or refuse it: one line, exit 1), then run it in the
    foreground or detach and run it in the daemon (docs/contract.md §2, §4)."""
    signals = SignalFlag().install()
    accepted = _accept(job, settings, runner, launcher_factory, signals)
    if isinstance(accepted, WrapperError):
        return _refuse(stderr, accepted)
    answer = accepted.files.announcement() + "\n"
    try:
        if not accepted.config.daemonize:
            return _run_in_foreground(accepted, answer, stdout, stderr, signals)
        return _detach_and_run(accepted, answer, stdout, stderr, signals, detach, caller_fds)
    finally:
        _release(accepted.reserved, accepted.leases)


def _release(reserved, book):
    """The job is over in this process (caller or daemon alike): its
    descriptors go (a process that runs many jobs, as the tests do, would
    otherwise run out of them)."""
    reserved.close()
    if book is not None:
        book.close()


def _accept(job, settings, runner, launcher_factory, signals):
    """The prepared :class:`wrapper.job.Job`, or the WrapperError that refused
    it (everything undone: no state file, no secret, no log of virt-v2v)."""
    log_dir = jobfiles.log_dir_for(settings, job)
    try:
        book, reserved = _take_names(settings, log_dir, sudo_caller(settings.environ))
    except JobError as e:
        return e
    logsetup.setup(reserved.wrapper_log_fd)
    log.info("%s %s starting (pid %d)", PROG, __version__, os.getpid())
    lease = _take_lease(book, settings, reserved)
    reclaim.reclaim_book(book, settings, default_runner, log)
    job_obj = None
    stack = contextlib.ExitStack()
    stack.callback(_remove_throttle_dir, reserved)   # unwound last, on every way out
    try:
        config = _config(job, settings)
        from wrapper.job import Job   # the conversion's machinery, once the job is accepted
        user = users.resolve_run_as(settings, config.target)
        log.info("job: vm %s, transport %s, target %s, virt-v2v runs as %s (%d:%d)",
                 config.vm_name, config.source.name, config.target.name, user.name, user.uid, user.gid)
        users.check_target_dir(user, config.target)
        seen = users.check_caller_can_write(Boundary.of(settings.environ), config.target)
        reserved.hand_logs_to(user.uid, user.gid)
        caps = v2v.probe_for_job(config, settings, runner, user)
        job_obj = Job(config, settings, reserved, user, caps, stack, runner,
                      launcher_factory or _default_launcher(config, settings, runner),
                      settings.trusted_uids(), leases=book, lease=lease, target_seen=seen)
        job_obj.prepare()
        if signals.received:
            raise JobError(None, "interrupted by %s before the conversion started" % signals.received)
        return job_obj
    except BaseException as e:
        if job_obj is not None:
            job_obj.refuse()
        else:
            stack.close()
            reserved.give_back()
            if lease is not None:
                lease.release()
        refusal = _refusal(e, reserved.files.wrapper_log)
        _release(reserved, book)
        return refusal


def _config(job, settings):
    """The job's Config, with what the wrapper log should say about it."""
    config = jobconfig.parse_job(job, settings)
    if settings.foreground and config.daemonize:
        log.info("--foreground: staying in the foreground (the job's \"daemonize\" is ignored)")
        config = jobconfig.in_foreground(config)
    if config.ignored_keys:
        log.info("ignoring unknown job keys: %s", ", ".join(config.ignored_keys))
    for note in config.notes:
        log.info("%s", note)
    return config


def _refusal(e, wrapper_log):
    """The error to refuse a job with: a WrapperError as it is; anything else
    (a bug) as one line pointing at the wrapper log, which has the traceback."""
    if isinstance(e, WrapperError):
        log.error("job refused: %s", e)
        return e
    log.exception("job refused: internal error")
    return WrapperError("internal error (%s: %s); details in %s" % (type(e).__name__, e, wrapper_log))


def _run_in_foreground(job_obj, answer, stdout, stderr, signals):
    why = _write_answer(stdout, answer)
    if why:
        job_obj.abort("the answer could not be written to stdout (%s): nothing was started" % why)
        return _refuse(stderr, "cannot write the answer to stdout: %s" % why)
    logsetup.to_stderr(stderr)
    return EXIT_OK if job_obj.run(signals) else EXIT_FAILED


def _detach_and_run(job_obj, answer, stdout, stderr, signals, detach, caller_fds):
    """Fork the daemon; the caller prints the answer, then the daemon runs
    the job (it starts nothing until the caller says the answer went out)."""
    role = detach(caller_fds, before_ready=job_obj.daemon_started)
    if role.is_daemon:
        if not role.wait_for_go():
            job_obj.abort("the caller did not receive the answer (its stdout failed, or it was "
                          "interrupted): nothing was started")
            role.done()
            return EXIT_REFUSED
        role.done()
        job_obj.run(signals)
        return EXIT_OK
    if not role.started:
        job_obj.abort("the daemon process did not start: nothing was started")
        return _refuse(stderr, "cannot detach: the daemon process did not start")
    why = "interrupted by %s" % signals.received if signals.received else _write_answer(stdout, answer)
    if why:
        role.abandon()
        return _refuse(stderr, "cannot write the answer to stdout: %s" % why)
    role.hand_over(EXIT_OK)     # the daemon owns the job now: no cleanup here
    return EXIT_OK              # (only a stand-in for the caller's side comes back)


def _default_launcher(config, settings, runner):
    """Daemon mode runs virt-v2v in a transient systemd unit when systemd runs."""
    if not config.daemonize:
        return child_launcher
    if systemd.available(settings):
        return systemd.unit_launcher(runner, settings.cgroup_root)
    log.info("systemd is not running (no %s): running virt-v2v as a plain child process",
             settings.systemd_marker)
    return child_launcher


def console_main():
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
