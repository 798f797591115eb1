"""The privilege boundary: who the caller is, and opening what the caller names
with the caller's own rights (docs/security.md, rule 3; docs/contract.md §3).

The wrapper runs as root for a caller who may be held to one sudo rule.  It
must not open, read or probe a path that caller names with root's rights:
whatever the caller names is opened by a short-lived child that has dropped
to the caller's uid, gid and supplementary groups (OpenSSH's privilege
separation; systemd's ``chase()``).  The child sends the descriptor back over
a socket pair (SCM_RIGHTS) or the errno of its ``open()``; the parent then
checks the descriptor (a regular file, bounded in size) and reads it.  So:

* the kernel decides what may be opened, exactly as for the caller itself:
  links are followed normally (Kubernetes mounts Secrets as link chains),
  ``protected_symlinks``, ACLs and LSMs apply to the caller, not to root;
* every message is built from what the caller's own ``open()`` returned (its
  errno text) or from the ``fstat`` of a descriptor the caller could open
  itself: never a mode, an owner or the existence of something the caller
  cannot see, never a byte of content.

When the caller is root (no sudo) or the wrapper already runs as the caller
(not root), there is nothing to drop: the path is opened directly.  The
child's opener is a seam (:class:`Boundary` ``opener=``) for unit tests.
"""
import errno
import os
import pwd
import stat
from dataclasses import dataclass
from typing import Optional

from wrapper.security import aschild

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
# a directory is checked for reaching it (search rights on the way), not for
# listing it: a caller may write into a 0711 directory it cannot read
DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
CHILD_TIMEOUT = 30.0        # an open() that hangs (a dead NFS server) must not hang the job


class CallerOpenError(OSError):
    """The caller could not open a path, or what it opened is not acceptable.
    ``str()`` is a short reason the caller may see (errno text or a fact about
    a file the caller itself opened)."""

    def __init__(self, errnum, why):
        super().__init__(errnum, why)
        self.why = why

    def __str__(self):
        return self.why


class CallerReadError(CallerOpenError):
    """The caller opened the file but reading its descriptor failed; ``str()``
    is a phrase about the file ("cannot be read: <errno text>")."""


@dataclass(frozen=True)
class Caller:
    """The person the wrapper acts for: the sudo caller, or the invoking user."""
    uid: int
    gid: int
    name: Optional[str] = None
    home: Optional[str] = None
    via_sudo: bool = False

    @property
    def is_root(self):
        return self.uid == 0

    def groups(self):
        """Supplementary groups as a login would give them (just the primary
        group for a uid with no passwd entry)."""
        if self.name is None:
            return [self.gid]
        try:
            return os.getgrouplist(self.name, self.gid)
        except OSError:
            return [self.gid]


def caller_from(environ, getuid=os.getuid, getgid=os.getgid):
    """Who the caller is: the sudo caller (SUDO_UID/SUDO_GID) when the real
    uid is 0 and sudo set them; root when invoked by root without sudo; the
    invoking user when not root (then SUDO_* means nothing: the wrapper has
    no more rights than its user anyway)."""
    uid, gid, via_sudo = getuid(), getgid(), False
    if uid == 0:
        try:
            uid = int(environ["SUDO_UID"])
            gid = int(environ.get("SUDO_GID", uid))
            via_sudo = True
        except (KeyError, ValueError):
            uid = 0
    try:
        pw = pwd.getpwuid(uid)
        name, home = pw.pw_name, pw.pw_dir
    except (KeyError, OverflowError):
        name, home = None, None
    if not via_sudo and uid == getuid():
        home = environ.get("HOME") or home       # the invoking user's own HOME
    return Caller(uid, gid, name, home, via_sudo)


def fork_open(caller, path, flags=OPEN_FLAGS, timeout=CHILD_TIMEOUT, do_open=os.open):
    """Open ``path`` in a child that runs with ``caller``'s credentials
    (:func:`wrapper.security.aschild.run_as`: uid, gid, supplementary groups,
    none of root's descriptors, not dumpable); return the descriptor, or
    raise OSError with the child's errno."""
    fd = aschild.run_as(caller.uid, caller.gid, caller.groups(), lambda: do_open(path, flags),
                        timeout=timeout, what="opening it")
    if fd is None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    return fd


def open_writable_dir(path, flags=DIR_FLAGS):
    """Open the directory ``path`` and keep it only if whoever runs this may
    create files in it: the kernel's ``faccessat(W_OK|X_OK)`` on the very
    directory opened (ACLs, read-only mounts included); EACCES otherwise."""
    fd = os.open(path, flags)
    try:
        writable = os.access(".", os.W_OK | os.X_OK, dir_fd=fd)
    except OSError:
        writable = False
    if not writable:
        os.close(fd)
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))
    return fd


def fork_writable_dir(caller, path, timeout=CHILD_TIMEOUT):
    """:func:`open_writable_dir` in a child with ``caller``'s credentials
    (uid, gid, supplementary groups; not dumpable, so the caller cannot
    steer its answer): the descriptor, or OSError with the child's errno."""
    return fork_open(caller, path, DIR_FLAGS, timeout, do_open=open_writable_dir)


def direct_writable_dir(_caller, path):
    return open_writable_dir(path)


def direct_open(_caller, path, flags=OPEN_FLAGS):
    return os.open(path, flags)


@dataclass(frozen=True)
class Opened:
    fd: int
    st: os.stat_result


class Boundary:
    """Opens and reads what ``caller`` names, with ``caller``'s rights.

    ``opener(caller, path, flags) -> fd`` is used when the wrapper has more rights
    than the caller (it is root, the caller is not); it raises OSError."""

    def __init__(self, caller, opener=fork_open, euid=None, writable_opener=fork_writable_dir):
        self.caller = caller
        euid = os.geteuid() if euid is None else euid
        dropping = euid == 0 and not caller.is_root
        self._open = opener if dropping else direct_open
        self._open_writable = writable_opener if dropping else direct_writable_dir

    @classmethod
    def of(cls, environ, **kw):
        return cls(caller_from(environ), **kw)

    def owners(self):
        """Who may own a file the caller hands in: the caller, or root."""
        return frozenset({0, self.caller.uid})

    def open(self, path, dirs=False, flags=OPEN_FLAGS):
        """Open ``path`` as the caller; a regular file (or, with ``dirs``, a
        directory) or CallerOpenError.  The caller owns the result's fd."""
        if not isinstance(path, str) or "\0" in path:
            raise CallerOpenError(errno.EINVAL, "is not a valid file name")
        try:
            fd = self._open(self.caller, path, flags)
        except OSError as e:
            raise CallerOpenError(e.errno or errno.EIO, e.strerror or os.strerror(e.errno or errno.EIO)) from None
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) or (dirs and stat.S_ISDIR(st.st_mode)):
            return Opened(fd, st)
        os.close(fd)
        raise CallerOpenError(errno.EINVAL, "is not a %s" % ("regular file or directory" if dirs else "regular file"))

    def check(self, path, dirs=False):
        """Whether the caller can open ``path``: the stat of what it opened."""
        opened = self.open(path, dirs)
        os.close(opened.fd)
        return opened.st

    def check_dir(self, path):
        """Whether the caller can reach the directory ``path`` (search rights
        on the way; ENOTDIR when it is something else): its stat."""
        opened = self.open(path, dirs=True, flags=DIR_FLAGS)
        os.close(opened.fd)
        return opened.st

    def check_writable_dir(self, path):
        """Whether the caller itself may create files in the directory
        ``path`` (reaching it with its rights, then ``faccessat(W_OK|X_OK)``
        on the directory it opened): its stat, or CallerOpenError with the
        errno the caller's own attempt got (EACCES when it may not write)."""
        if not isinstance(path, str) or "\0" in path:
            raise CallerOpenError(errno.EINVAL, "is not a valid file name")
        try:
            fd = self._open_writable(self.caller, path)
        except OSError as e:
            code = e.errno or errno.EIO
            raise CallerOpenError(code, e.strerror or os.strerror(code)) from None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def read(self, path, max_size):
        """``(bytes, stat)`` of the regular file ``path``, read by descriptor,
        at most ``max_size`` bytes (larger is CallerOpenError)."""
        opened = self.open(path)
        try:
            if opened.st.st_size > max_size:
                raise CallerOpenError(errno.EFBIG, "is larger than %s" % size_text(max_size))
            data = _read_bounded(opened.fd, max_size)
        finally:
            os.close(opened.fd)
        if len(data) > max_size:            # it grew after the fstat
            raise CallerOpenError(errno.EFBIG, "is larger than %s" % size_text(max_size))
        return data, opened.st


def _read_bounded(fd, limit):
    """At most ``limit + 1`` bytes of ``fd``.  Any read error is the caller's
    file's own (e.g. ESRCH: a /proc file of the boundary's child, which has
    exited): a CallerReadError with the errno text only, never a traceback."""
    chunks, size = [], 0
    while size <= limit:
        try:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
        except BlockingIOError:             # O_NONBLOCK on a regular file: not expected
            raise CallerReadError(errno.EAGAIN, "cannot be read without blocking") from None
        except OSError as e:
            code = e.errno or errno.EIO
            raise CallerReadError(code, "cannot be read: %s" % os.strerror(code)) from None
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def size_text(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return "%d MiB" % (n >> 20)
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return "%d KiB" % (n >> 10)
    return "%d bytes" % n


def integrity_problem(st, owners, private=False) -> Optional[str]:
    """Why a file the caller opened must still not be used, or None.  These
    are facts about the caller's own descriptor (it could ``fstat`` it too):

    * owned by someone other than the caller or root: another user put it
      where the caller looked (a name in a shared directory), and would be
      choosing the job or its secrets for the caller;
    * writable by group or others: someone else could change it;
    * ``private`` (a secret) and accessible by others: it has leaked already,
      and refusing tells the caller to fix it (chmod 0600, defaultMode 0400).
    """
    mode = st.st_mode & 0o7777
    if st.st_uid not in owners:
        return "is owned by uid %d, not by you or root" % st.st_uid
    if mode & 0o022:
        return "must not be writable by group or others (mode %04o)" % mode
    if private and mode & 0o007:
        return "must not be accessible by others (mode %04o: chmod 0600 it, or mount it with " \
               "defaultMode 0400)" % mode
    return None
