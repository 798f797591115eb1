"""``virt-v2v-wrapper --validate``: report every problem of a job, start nothing.

The job checks are :func:`wrapper.config.collect` (the same code the real run
uses, so the two cannot disagree).  On top of them come the host facts the
real run would trip over before starting virt-v2v: the user that would run it,
the virt-v2v program itself, and the state and log directories.  Nothing
here writes a file, makes a directory or runs a program; config.collect may
read the ISO domain and the LUKS vault.  Every line printed is one line
(:func:`wrapper.security.text.oneline`), whatever the job holds.
"""
import logging
import os
import stat

from wrapper import config as jobconfig, vmname
from wrapper.security import fsafe
from wrapper.errors import JobError, WrapperError
from wrapper.security.text import oneline

log = logging.getLogger(__name__)

EXIT_VALID, EXIT_INVALID = 0, 1


def dir_problem(path):
    """Why the wrapper could not use ``path`` as a directory for its files, or
    None.  A missing directory is fine if it can be created (its nearest
    existing parent is a directory we can write and search).  Creates nothing."""
    shown = oneline(path, 200)
    try:
        link = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _creatable_problem(path, shown)
    except (OSError, ValueError) as e:
        return "%s cannot be used: %s" % (shown, oneline(getattr(e, "strerror", None) or e, 100))
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (0, os.geteuid()):
        return "%s is a symbolic link owned by uid %d" % (shown, link.st_uid)    # as the real run says
    try:
        st = os.stat(path)
    except OSError as e:                 # a dangling symlink, a loop
        return "%s cannot be used: %s" % (shown, oneline(e.strerror or e, 100))
    if not stat.S_ISDIR(st.st_mode):
        return "%s is not a directory" % shown
    if not os.access(path, os.W_OK | os.X_OK):
        return "%s is not writable by uid %d" % (shown, os.geteuid())
    why = fsafe.dir_problem(st)
    return "%s %s" % (shown, why) if why else None


def _creatable_problem(path, shown):
    parent = os.path.abspath(path)
    while True:
        up = os.path.dirname(parent)
        if up == parent:
            return "%s does not exist and cannot be created" % shown
        parent = up
        try:
            st = os.stat(parent)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            return "%s does not exist and cannot be created (%s: %s)" % (
                shown, oneline(parent, 200), oneline(e.strerror or e, 100))
        break
    if not stat.S_ISDIR(st.st_mode):
        return "%s cannot be created: %s is not a directory" % (shown, oneline(parent, 200))
    if not os.access(parent, os.W_OK | os.X_OK):
        return "%s does not exist and cannot be created (%s is not writable by uid %d)" % (
            shown, oneline(parent, 200), os.geteuid())
    return None


def directory_problems(settings, job):
    """The state directory and the log directory the job would use."""
    from wrapper.jobfiles import log_dir_for      # the one the real run uses
    problems = []
    for option, path in (("--state-dir", settings.state_dir), ("--log-dir", log_dir_for(settings, job))):
        why = dir_problem(path) if path else None
        if why:
            problems.append(JobError(option, why))
    return problems


def host_problems(config, settings, resolve_user=None, job=None):
    """Problems the job would meet on this host; [] when none.  ``config`` may
    be None (the job has problems): what does not depend on it is still checked.
    ``job`` (the decoded job) tells which log directory applies by default."""
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
                                       "(set --virt-v2v or VIRT_V2V_WRAPPER_VIRT_V2V)" % oneline(program, 200)))
    problems += directory_problems(settings, job)
    from wrapper.settings import tuning_problem
    if tuning_problem(settings):
        problems.append(JobError(None, tuning_problem(settings)))
    return problems


def check(job, settings, resolve_user=None):
    """Return ``(config_or_None, problems)``: job problems first, then host ones."""
    config, problems = jobconfig.collect(job, settings)
    return config, list(problems) + host_problems(config, settings, resolve_user, job)


def describe(config):
    from wrapper.job import describe_target
    name = vmname.display_name(config.vm_name, config.source.name)
    return oneline("vm %s, transport %s, target %s" % (
        name, config.source.name, describe_target(config.target)), 1000)


def report(job, settings, stdout, resolve_user=None):
    """Print every problem (one a line) or a one-line summary; return the exit code."""
    config, problems = check(job, settings, resolve_user)
    if problems:
        stdout.write("job is invalid: %d problem%s\n" % (len(problems), "" if len(problems) == 1 else "s"))
        for p in problems:
            stdout.write("  %s\n" % oneline(p, 1000))
        stdout.flush()
        return EXIT_INVALID
    stdout.write("job is valid: %s\n" % describe(config))
    for note in config.notes:
        stdout.write("  note: %s\n" % oneline(note, 1000))
    if config.ignored_keys:
        stdout.write("  note: unknown keys ignored: %s\n" % oneline(", ".join(config.ignored_keys), 6000))
    stdout.flush()
    return EXIT_VALID
