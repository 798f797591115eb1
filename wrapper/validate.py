"""``virt-v2v-wrapper --validate``: report every problem of a job, start nothing.

The job checks are :func:`wrapper.config.collect` (the same code the real run
uses, so the two cannot disagree).  On top of them come the host facts the
real run would trip over before starting virt-v2v: the user that would run it
and the virt-v2v program itself.  Nothing here writes a file or runs a
program; config.collect may read the ISO domain and the LUKS vault.
"""
import logging
import os

from wrapper import config as jobconfig
from wrapper.errors import JobError, WrapperError

log = logging.getLogger(__name__)

EXIT_VALID, EXIT_INVALID = 0, 1


def host_problems(config, settings, resolve_user=None):
    """Problems the job would meet on this host; [] when none.  ``config`` may
    be None (the job has problems): what does not depend on it is still checked."""
    problems = []
    if resolve_user is None:
        from wrapper import users
        resolve_user = users.resolve_run_as
    if config is not None or settings.run_as:
        try:
            resolve_user(settings, config.target if config is not None else None)
        except WrapperError as e:
            problems.append(e)
    program = settings.virt_v2v_path()
    if not (os.path.isfile(program) and os.access(program, os.X_OK)):
        problems.append(JobError(None, "virt-v2v program %s not found or not executable "
                                       "(set --virt-v2v or VIRT_V2V_WRAPPER_VIRT_V2V)" % program))
    return problems


def check(job, settings, resolve_user=None):
    """Return ``(config_or_None, problems)``: job problems first, then host ones."""
    config, problems = jobconfig.collect(job, settings)
    return config, list(problems) + host_problems(config, settings, resolve_user)


def describe(config):
    from wrapper.job import describe_target, short_vm_name
    return "vm %s, transport %s, target %s" % (short_vm_name(config.vm_name), config.source.name,
                                               describe_target(config.target))


def report(job, settings, stdout, resolve_user=None):
    """Print every problem (one a line) or a one-line summary; return the exit code."""
    config, problems = check(job, settings, resolve_user)
    if problems:
        stdout.write("job is invalid: %d problem%s\n" % (len(problems), "" if len(problems) == 1 else "s"))
        for p in problems:
            stdout.write("  %s\n" % p)
        stdout.flush()
        return EXIT_INVALID
    stdout.write("job is valid: %s\n" % describe(config))
    for note in config.notes:
        stdout.write("  note: %s\n" % note)
    if config.ignored_keys:
        stdout.write("  note: unknown keys ignored: %s\n" % ", ".join(config.ignored_keys))
    stdout.flush()
    return EXIT_VALID
