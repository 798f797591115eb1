"""Command line, stdin/stdout and exit codes (SPEC §2, §4).

The only place that wires real parts together.  ``main()`` returns the exit
status; only :func:`console_main` calls ``sys.exit``.
"""
import argparse
import contextlib
import json
import logging
import os
import sys

from wrapper import __version__, checks, config as jobconfig, daemon, systemd, users, v2v
from wrapper.errors import JobError, WrapperError
from wrapper.job import Job, child_launcher, create_log_file, job_files, log_dir_for, make_tag
from wrapper.monitor import SignalFlag
from wrapper.runner import run as default_runner
from wrapper.settings import LOCATIONS, env_name, resolve

log = logging.getLogger("wrapper")
PROG = "virt-v2v-wrapper"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

EXIT_OK, EXIT_REFUSED, EXIT_FAILED = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise JobError(None, message)


def build_parser(check_names):
    p = _Parser(prog=PROG, description=(
        "Run one virt-v2v conversion described by a JSON job on stdin. Prints one JSON line "
        "with the paths of the logs, the state file and the throttling file, then (unless "
        "\"daemonize\": false) detaches and runs virt-v2v in a transient systemd unit."),
        epilog="Each location option can also be set by the environment variable shown; "
               "the option wins. Exit status: 0 job started (or conversion succeeded in the "
               "foreground), 1 job refused, 2 conversion failed (foreground). "
               "To watch conversions: virt-v2v-wrapper status [--watch] [--json] [STATE_FILE...]; "
               "see virt-v2v-wrapper(1).")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--checks", action="store_true", help="list the host checks and exit")
    for name in check_names:
        p.add_argument("--check-" + name, action="append_const", const=name, dest="run_checks",
                       help="run the %s host check: exit 0 if it passes, 1 if not" % name)
    p.add_argument("--validate", action="store_true",
                   help="validate the job on stdin, report every problem, start nothing")
    for opt, attr, meta, text, _default in LOCATIONS:
        p.add_argument("--" + opt, dest=attr, metavar=meta,
                       help="%s [env %s]" % (text, env_name(attr)))
    return p


def _setup_logging(path):
    logger = logging.getLogger("wrapper")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fh = logging.FileHandler(path, encoding="utf-8")
    fh.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(fh)
    return logger


def _log_to_stderr(stderr):
    """Foreground mode, once the job is accepted: administrators watch the log
    on the terminal (a refused job still gets its single line only)."""
    sh = logging.StreamHandler(stderr)
    sh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
    sh.setLevel(logging.INFO)
    logging.getLogger("wrapper").addHandler(sh)


def _refuse(stderr, error):
    stderr.write("%s: error: %s\n" % (PROG, error))
    stderr.flush()
    return EXIT_REFUSED


def main(argv=None, stdin=None, stdout=None, stderr=None, environ=None, runner=default_runner,
         launcher_factory=None, detach=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    environ = dict(os.environ if environ is None else environ)
    caller_fds = daemon.inherited_fds()
    if argv and argv[0] == "status":
        from wrapper import status
        return status.main(argv[1:], stdout=stdout, stderr=stderr, environ=environ)
    registry = checks.registry()
    try:
        opts = build_parser(sorted(registry)).parse_args(argv)
    except JobError as e:
        return _refuse(stderr, e)
    if opts.version:
        stdout.write("%s %s\n" % (PROG, __version__))
        return EXIT_OK
    settings = resolve(vars(opts), environ)
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
    try:
        job = json.loads(stdin.read())
    except ValueError as e:
        return _refuse(stderr, "the job on stdin is not valid JSON (%s)" % e)
    except OSError as e:
        return _refuse(stderr, "cannot read the job from stdin (%s)" % e)
    if opts.validate:
        from wrapper import validate
        return validate.report(job, settings, stdout)
    return run_job(job, settings, stdout, stderr, runner, launcher_factory,
                   detach or daemon.detach, caller_fds)


def run_job(job, settings, stdout, stderr, runner, launcher_factory, detach, caller_fds):
    log_dir = log_dir_for(settings, job)
    try:
        os.makedirs(log_dir, mode=0o755, exist_ok=True)
        os.makedirs(settings.state_dir, mode=0o755, exist_ok=True)
        files = job_files(settings, log_dir, make_tag())
        sudo = users.sudo_caller(settings.environ)
        create_log_file(files.wrapper_log, sudo)
    except OSError as e:
        return _refuse(stderr, "cannot create the log file in %s: %s" % (log_dir, e.strerror or e))
    _setup_logging(files.wrapper_log)
    log.info("%s %s starting (pid %d)", PROG, __version__, os.getpid())
    signals = SignalFlag().install()
    job_obj = None
    stack = contextlib.ExitStack()
    try:
        config = jobconfig.parse_job(job, settings)
        if config.ignored_keys:
            log.info("ignoring unknown job keys: %s", ", ".join(config.ignored_keys))
        for note in config.notes:
            log.info("%s", note)
        user = users.resolve_run_as(settings, config.target)
        log.info("job: vm %s, transport %s, target %s, virt-v2v runs as %s (%d:%d)",
                 config.vm_name, config.source.name, config.target.name, user.name, user.uid, user.gid)
        caps = v2v.probe_capabilities(settings.virt_v2v_path(), runner,
                                      env=dict(settings.environ, LANG="C"))
        log.info("virt-v2v capabilities: %s", " ".join(caps.lines))
        allowed = {0, os.geteuid()} | ({sudo[0]} if sudo else set())
        job_obj = Job(config, settings, files, user, caps, stack, runner,
                      launcher_factory or _default_launcher(config, settings), allowed)
        job_obj.prepare()
        if signals.received:
            raise JobError(None, "interrupted by %s before the conversion started" % signals.received)
    except WrapperError as e:
        log.error("job refused: %s", e)
        stack.close()
        if job_obj is not None:
            job_obj.discard_state()
        return _refuse(stderr, e)
    except BaseException:
        log.exception("job refused: internal error")
        stack.close()
        if job_obj is not None:
            job_obj.discard_state()
        raise
    stdout.write(files.announcement() + "\n")
    stdout.flush()
    if config.daemonize:
        keep = [h.stream.fileno() for h in log.handlers if hasattr(h, "stream")]
        detach([fd for fd in caller_fds if fd not in keep])
        log.info("detached: daemon pid %d", os.getpid())
        job_obj.state.set("wrapper_pid", os.getpid())
        job_obj.state_file.write(job_obj.state)
    else:
        _log_to_stderr(stderr)
    ok = job_obj.run(signals)
    if config.daemonize:
        return EXIT_OK
    return EXIT_OK if ok else EXIT_FAILED


def _default_launcher(config, settings):
    """Daemon mode runs virt-v2v in a transient systemd unit when systemd runs."""
    if not config.daemonize:
        return child_launcher
    if systemd.available(settings):
        return systemd.unit_launcher
    log.info("systemd is not running (no %s): running virt-v2v as a plain child process",
             settings.systemd_marker)
    return child_launcher


def console_main():
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
