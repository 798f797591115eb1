"""Detaching from the caller (docs/contract.md §4): double fork, new session, stdio on
/dev/null, none of the caller's file descriptors kept — and a handshake, so
the caller answers only once the daemon exists, and the daemon starts the
conversion only once the caller has answered.

Over SSH the channel closes only when every descriptor it handed over is
closed, so the daemon must not keep stdin/stdout/stderr or anything else it
inherited.  When the caller leads a terminal session, the hang-up that
follows its exit can kill a child that has not called ``setsid()`` yet: the
caller therefore waits for the daemon's "ready" (sent after ``setsid`` and
the second fork) before it prints anything.  If printing fails, or the
caller dies, the daemon sees no "go" and cleans up like a refused job.

    caller                      first child            daemon
    fork ───────────────────────▶ setsid, fork ────────▶ stdio -> /dev/null
    wait for "ready" ◀────────────────────────────────── "ready <pid>"
    print the answer
    "go" (or nothing: EOF) ─────────────────────────────▶ run (or abort)
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


def _read_line(fd):
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = os.read(fd, 64)
        except InterruptedError:      # pragma: no cover  (PEP 475 retries)
            continue
        if not chunk:
            break
        data += chunk
    return data


class Caller:
    """The caller's side: ``started`` tells whether a daemon exists."""

    is_daemon = False

    def __init__(self, ready_fd, go_fd, daemon_pid):
        self._ready = ready_fd
        self._go = go_fd
        self.daemon_pid = daemon_pid
        self.started = daemon_pid is not None

    def release(self):
        """The answer went out: the daemon owns the job from now on."""
        try:
            os.write(self._go, b"go\n")
        except OSError:
            pass
        self._close()

    def hand_over(self, status=0):
        """:meth:`release`, then leave at once with ``status``: the daemon
        owns the job, so this process runs no cleanup (``os._exit``)."""
        self.release()
        os._exit(status)

    def abandon(self):
        """The answer could not be given: the daemon cleans up; wait (bounded
        by the daemon's own cleanup) until it has, so nothing is left when
        the caller exits."""
        os.close(self._go)
        self._go = None
        _read_line(self._ready)      # EOF once the daemon has cleaned up
        self._close()

    def _close(self):
        for fd in (self._ready, self._go):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._ready = self._go = None


class Daemon:
    """The daemon's side."""

    is_daemon = True

    def __init__(self, ready_fd, go_fd):
        self._ready = ready_fd
        self._go = go_fd

    def wait_for_go(self):
        """True once the caller has answered; False if it gave up or died."""
        verdict = _read_line(self._go)
        os.close(self._go)
        self._go = None
        return verdict == b"go\n"

    def done(self):
        """Tell a waiting caller that the daemon has finished with the job's
        resources (after an abort)."""
        if self._ready is not None:
            os.close(self._ready)
            self._ready = None


def detach(caller_fds=(), before_ready=None):
    """Fork the daemon.  Returns a :class:`Caller` in the caller's process and
    a :class:`Daemon` in the daemon; ``before_ready()`` runs in the daemon
    before it announces itself (e.g. to record its PID)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(ready_w)
        os.close(go_r)
        os.waitpid(pid, 0)               # the first child exits at once
        line = _read_line(ready_r)
        daemon_pid = int(line) if line.strip().isdigit() else None
        return Caller(ready_r, go_w, daemon_pid)
    try:
        os.close(ready_r)
        os.close(go_w)
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
        if before_ready is not None:
            before_ready()
        os.write(ready_w, b"%d\n" % os.getpid())
    except BaseException:
        os._exit(1)              # no daemon: the caller sees EOF and cleans up itself
    return Daemon(ready_w, go_r)
