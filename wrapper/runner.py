"""Running short external commands (systemctl, ssh-agent, tc, ...).

Everything that runs a command takes a ``runner`` with the signature of
:func:`run`, so tests inject a recording fake instead of patching modules.
"""
import logging
import shlex
import subprocess
from dataclasses import dataclass

from wrapper.errors import CommandError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    argv: tuple
    rc: int
    out: str
    err: str


def quote(argv):
    """The argv as shell-pasteable text (callers pass secret-free argv)."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def run(argv, *, input=None, env=None, timeout=60, check=True, quiet=False, user=None):
    """Run ``argv`` to completion and return a :class:`Result`.

    Raises :class:`CommandError` when ``check`` and the exit status is not 0,
    or when the program cannot be started (rc 127, like a shell; 126 when
    ``user`` may not run it).  ``quiet`` keeps frequent polls (systemctl
    show) out of the log.  ``user`` (a wrapper.users.RunUser) runs it as
    that user, from ``/`` (the capability probe of a program the caller may
    have named: never root's unless the run-as user is root).
    """
    argv = [str(a) for a in argv]
    if not quiet:
        log.debug("running: %s%s", quote(argv), "" if user is None else " (as %s)" % user.name)
    as_user = {} if user is None else dict(user.popen_kwargs(), cwd="/")
    try:
        proc = subprocess.run(argv, input=input, env=env, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, close_fds=True, **as_user)
    except FileNotFoundError as e:
        raise CommandError(argv, 127, "", str(e)) from None
    except PermissionError as e:
        raise CommandError(argv, 126, "", str(e)) from None
    except subprocess.TimeoutExpired:
        raise CommandError(argv, 124, "", "timed out after %ss" % timeout) from None
    res = Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    return res


def run_as(user, argv, *, env, timeout=30, input=None):
    """:func:`run` as ``user`` (a wrapper.users.RunUser), never raising for the program's exit status:
    a :class:`Result` with rc 127 when it cannot be started, 124 on timeout.  ``input``
    (text) goes to its stdin through a pipe: how a secret reaches a probe, never argv."""
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.run(argv, env=env, timeout=timeout, input=input,
                              stdin=subprocess.DEVNULL if input is None else None,
                              capture_output=True, text=True, errors="replace",
                              close_fds=True, cwd="/", **user.popen_kwargs())
    except (FileNotFoundError, PermissionError) as e:
        return Result(tuple(argv), 127, "", e.strerror or str(e))
    except subprocess.TimeoutExpired:
        return Result(tuple(argv), 124, "", "timed out after %ss" % timeout)
    return Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
