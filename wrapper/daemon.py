"""Detaching from the caller (SPEC §4): double fork, new session, stdio on
/dev/null, none of the caller's file descriptors kept.

Over SSH the channel closes only when every descriptor it handed over is
closed, so the daemon must not keep stdin/stdout/stderr or anything else it
inherited.
"""
import os


def inherited_fds():
    """Descriptors open right now besides stdio: call this first thing in main."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        return ()
    return tuple(fd for fd in fds if fd > 2 and _is_open(fd))


def _is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def detach(caller_fds=()):
    """Return in the daemon (grandchild); the caller's process exits 0 at once."""
    if os.fork() > 0:
        os._exit(0)          # the caller: exit now, skipping cleanup handlers
    os.setsid()
    if os.fork() > 0:
        os._exit(0)          # the session leader: the daemon can never reacquire a tty
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    for fd in caller_fds:
        try:
            os.close(fd)
        except OSError:
            pass
