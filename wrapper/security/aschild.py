"""Work done with another user's rights, in a short-lived forked child
(docs/security.md rules 1 and 3).

Root must open what the caller names with the caller's rights
(:mod:`wrapper.security.boundary`) and empty a directory another user owns
with that owner's rights (:mod:`wrapper.security.fstree`).  Both fork a child
that drops to the user for good and does one piece of work; this module is
the one way they do it:

* the child takes the default action for SIGTERM and SIGINT (the parent's
  handlers must not run in a process of another uid);
* it keeps none of root's descriptors: everything is closed but the
  channel back to the parent and the descriptors the work needs; stdin,
  stdout and stderr become ``/dev/null`` (root's may be the caller's SSH
  pipes or root's log);
* it becomes the user (:func:`become`: uid, gid, supplementary groups, and
  not dumpable, so the user can neither ptrace it nor read its memory);
* it reports back over a socket pair: a descriptor (SCM_RIGHTS), success,
  or the errno of the ``OSError`` that stopped it;
* the parent waits at most ``timeout`` seconds, then kills the child; a
  child stuck in an uninterruptible ``open()`` (a dead NFS server) is left,
  not waited for forever.

Nothing in the child looks anything up (NSS after fork is not safe): the
parent resolves the groups.
"""
import ctypes
import errno
import os
import signal
import socket
import struct
import time

_ANSWER = struct.Struct("i")
_NO_FD = -1


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# resolved once, in the parent: a forked child must not dlopen (the loader's
# lock may be held by another thread at fork time)
_PRCTL = _load_prctl()
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4


def become(uid, gid, groups, prctl=_PRCTL):
    """In a child forked from root: become ``uid``/``gid`` with ``groups``
    for good, and not dumpable -- so that user can neither ptrace it nor read
    its memory (which holds root's copy of everything the parent had read),
    whatever ``fs.suid_dumpable`` says."""
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if prctl is not None:
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def close_inherited(keep):
    """Close every descriptor but those in ``keep``; 0-2 become /dev/null."""
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        if std != null and std not in keep:
            os.dup2(null, std)
    keep = set(keep) | {0, 1, 2}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _child(uid, gid, groups, work, keep, sock):    # pragma: no cover (runs in the child)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        close_inherited(set(keep) | {sock.fileno()})
        try:
            become(uid, gid, groups)
            fd = work()
        except OSError as e:
            sock.sendall(_ANSWER.pack(e.errno or errno.EIO))
            return
        if isinstance(fd, int) and fd >= 0:
            socket.send_fds(sock, [_ANSWER.pack(0)], [fd])
        else:
            sock.sendall(_ANSWER.pack(0))
    except BaseException:
        pass
    finally:
        os._exit(0)


def run_as(uid, gid, groups, work, keep=(), timeout=30.0, what="the work"):
    """Run ``work()`` in a child that became ``uid``/``gid``/``groups`` with
    only ``keep`` of this process's descriptors.  ``work`` returns a
    descriptor to hand back (returned here, owned by the caller) or None.
    Raises OSError: the child's errno; ETIMEDOUT when it did not answer in
    ``timeout`` seconds (it is killed); EIO when it died without answering."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = os.fork()
        if pid == 0:                       # pragma: no cover (the child)
            mine.close()
            _child(uid, gid, groups, work, keep, theirs)
        theirs.close()
        try:
            mine.settimeout(timeout)
            data, fds, _flags, _addr = socket.recv_fds(mine, _ANSWER.size, 1)
        except socket.timeout:
            os.kill(pid, signal.SIGKILL)
            _reap(pid, wait=False)
            raise OSError(errno.ETIMEDOUT, "%s did not finish within %g s" % (what, timeout)) from None
        _reap(pid, wait=True)
    finally:
        mine.close()
        theirs.close()
    code = _ANSWER.unpack(data)[0] if len(data) == _ANSWER.size else errno.EIO
    if code:
        for fd in fds:
            os.close(fd)
        raise OSError(code, os.strerror(code))
    return fds[0] if fds else None


def _reap(pid, wait):
    """Collect the child.  A child killed inside an open() that cannot be
    interrupted (a hard NFS mount) may not die: then it is left, not waited
    for forever."""
    for _ in range(1 if wait else 20):
        try:
            done, _status = os.waitpid(pid, 0 if wait else os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.05)
