"""Running short external commands (systemctl, ssh-agent, tc, ...).

Everything that runs a command takes a ``runner`` with the signature of
:func:`run`, so tests inject a recording fake instead of patching modules.
"""
import logging
import os
import selectors
import shlex
import subprocess
import time
from dataclasses import dataclass

from wrapper.errors import CommandError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    argv: tuple
    rc: int
    out: str
    err: str


# What a command may print on each of stdout and stderr before it is killed: root
# keeps the output in memory, and some commands run as a user who can make them
# print without end (the run-as user can ptrace its own probe; a VMware host the
# caller names answers the VDDK pre-flight's probe).  rc 125 then.
MAX_OUTPUT = 16 << 20
RC_TOO_MUCH = 125


class _TooMuch(Exception):
    pass


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
        res = capture(argv, input=input, env=env, timeout=timeout, **as_user)
    except FileNotFoundError as e:
        raise CommandError(argv, 127, "", str(e)) from None
    except PermissionError as e:
        raise CommandError(argv, 126, "", str(e)) from None
    except subprocess.TimeoutExpired:
        raise CommandError(argv, 124, "", "timed out after %ss" % timeout) from None
    except _TooMuch:
        raise CommandError(argv, RC_TOO_MUCH, "", "printed more than %d bytes" % MAX_OUTPUT) from None
    if check and res.rc != 0:
        raise CommandError(argv, res.rc, res.out, res.err)
    return res


def capture(argv, *, input=None, env=None, timeout=60, limit=MAX_OUTPUT, **popen_kwargs):
    """Run ``argv`` with ``input`` (text) on its stdin, within ``timeout``
    seconds, keeping at most ``limit`` bytes of each output: a :class:`Result`
    (text, undecodable bytes replaced).  Raises what Popen raises,
    ``subprocess.TimeoutExpired``, or ``_TooMuch``; the process is killed then."""
    proc = subprocess.Popen(argv, env=env, close_fds=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                            **popen_kwargs)
    try:
        out, err = _collect(proc, None if input is None else input.encode(), timeout, limit)
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()
    return Result(tuple(argv), rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def _collect(proc, data, timeout, limit):
    """stdout and stderr of ``proc`` until both end, writing ``data`` to its stdin."""
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for fd in bufs:
            sel.register(fd, selectors.EVENT_READ)
        if data is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout)
            for key, _events in sel.select(left):
                if key.fd in bufs:
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fd)
                    bufs[key.fd] += chunk
                    if len(bufs[key.fd]) > limit:
                        raise _TooMuch()
                    continue
                data = _feed(key.fd, data)
                if not data:
                    sel.unregister(key.fd)
                    proc.stdin.close()
    left = deadline - time.monotonic()
    if proc.poll() is None:
        proc.wait(max(left, 0.001))          # raises TimeoutExpired
    return bufs[proc.stdout.fileno()], bufs[proc.stderr.fileno()]


def _feed(fd, data):
    """Write what the pipe takes now; what is left (empty when done or the reader went)."""
    try:
        return data[os.write(fd, data[:65536]):]
    except BlockingIOError:
        return data
    except BrokenPipeError:
        return b""


def run_as(user, argv, *, env, timeout=30, input=None):
    """:func:`run` as ``user`` (a wrapper.users.RunUser), never raising for the program's exit status:
    a :class:`Result` with rc 127 when it cannot be started, 124 on timeout.  ``input``
    (text) goes to its stdin through a pipe: how a secret reaches a probe, never argv."""
    argv = [str(a) for a in argv]
    try:
        return capture(argv, env=env, timeout=timeout, input=input, cwd="/", **user.popen_kwargs())
    except (FileNotFoundError, PermissionError) as e:
        return Result(tuple(argv), 127, "", e.strerror or str(e))
    except subprocess.TimeoutExpired:
        return Result(tuple(argv), 124, "", "timed out after %ss" % timeout)
    except _TooMuch:
        return Result(tuple(argv), RC_TOO_MUCH, "", "printed more than %d bytes" % MAX_OUTPUT)
