"""Leases: what a running wrapper holds, written down so that the next wrapper
start or ``virt-v2v-wrapper status`` can reclaim it once the wrapper is dead.

SIGKILL (the OOM killer, ``kill -9``) cannot be handled: a wrapper killed so
leaves its secret directory (password files), ssh-agent and agent directory,
maybe a running virt-v2v (unit or plain child), and a state file that never
says ``finished`` (a polling client waits 36 h).  So each wrapper keeps a
lease, a JSON record ``<tag>.lease`` of what it holds, in the private
``<lock_dir>/jobs``, and :func:`reclaim` cleans up after every dead one.

A live conversion must never be taken for a dead one.  The wrapper holds an
``flock`` on ``<tag>.lock`` all its life (the descriptor survives the fork into
the daemon; the kernel drops it when the last holder dies, however): held
means alive, and it keeps two reclaimers off one lease.  Otherwise a PID alone
proves nothing, numbers are reused: the recorded (pid, start time)
(:mod:`wrapper.procinfo`) must still be running, in the same boot (``boot_id``;
after a reboot every recorded process is gone, whatever has those numbers now).
What is removed is checked again first: processes by start time, directories
by (st_dev, st_ino), the state file must be a regular file of ours.  A step
that fails is logged and the lease kept for the next try.
"""
import errno
import fcntl
import json
import os
import stat

from wrapper import procinfo
from wrapper.security import fsafe

JOBS, LEASE, LOCK = "jobs", ".lease", ".lock"
MAX_LEASE = 64 << 10
REQUIRED = (("tag", str), ("wrapper_pid", int), ("wrapper_start", int), ("boot_id", str))
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | fsafe.O_CLOEXEC


def open_lock_dir(lock_dir):
    """``lock_dir`` as a descriptor, created 0700 if missing (its parent too,
    e.g. a container without /run); :class:`fsafe.Refused` if another user
    owns it or may write it.  Root keeps it only where no one else can
    create it first: its parent must be root's and writable by nobody else
    (not even sticky, as /run/lock is on many hosts)."""
    parent = os.path.dirname(os.path.abspath(lock_dir))
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755, exist_ok=True)
    if os.geteuid() == 0:
        st = os.stat(parent)
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise fsafe.Refused(lock_dir, "is in %s, where users other than root can create "
                                          "entries (owner uid %d, mode %04o)"
                                % (parent, st.st_uid, st.st_mode & 0o7777))
    return fsafe.ensure_private_dir(lock_dir)


def take_lock(dir_fd, name):
    """An exclusive flock on the regular file ``name`` in ``dir_fd`` (created
    if missing, never through a symlink): its descriptor, or None when another
    process holds it."""
    for _ in range(10):
        fd = os.open(name, _LOCK_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise fsafe.Refused(name, "is not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        st = fsafe.lstat_at(dir_fd, name)
        if st is not None and fsafe.ident(st) == fsafe.ident(os.fstat(fd)):
            return fd
        os.close(fd)             # its last holder unlinked it meanwhile: take the new one
    raise OSError(errno.EAGAIN, "the lock file keeps changing", name)


def abs_dir(value):
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ValueError("not an absolute path: %r" % (value,))
    return value


def remove_files(dir_fd, tag):
    """The lease, its temporary files, then its lock file (held by the caller)."""
    fsafe.unlink_quietly(dir_fd, tag + LEASE)
    for name in os.listdir(dir_fd):
        if name.startswith("." + tag + LEASE + ".") and name.endswith(".tmp"):
            fsafe.unlink_quietly(dir_fd, name)
    fsafe.unlink_quietly(dir_fd, tag + LOCK)


class Lease:
    """One wrapper's lease: ``update()`` rewrites it (OSError if it cannot),
    ``release()`` removes it (idempotent), ``forget()`` only closes it."""

    def __init__(self, dir_fd, tag, record, lock_fd):
        self.tag, self.record = tag, record
        self._dir, self._lock = dir_fd, lock_fd

    def _write(self):
        # one AtomicFile per write: no spare temporary file outlives it, so a
        # forked copy of this object never shares one with the original
        out = fsafe.AtomicFile(self._dir, self.tag + LEASE, 0o600, reserve=0)
        try:
            out.write(json.dumps(self.record, sort_keys=True) + "\n")
        finally:
            out.close()

    def update(self, **fields):
        if self._dir is None:
            raise ValueError("lease %s was released" % self.tag)
        self.record.update(fields)
        self._write()

    def release(self):
        if self._dir is not None:
            remove_files(self._dir, self.tag)
        self.forget()

    def forget(self):
        """Close the descriptors, keep the files: for the caller's copy once the
        daemon has forked (whose copy still holds the lock)."""
        for fd in (self._lock, self._dir):
            if fd is not None:
                os.close(fd)
        self._lock = self._dir = None


class LeaseBook:
    """The directory of leases, ``<lock_dir>/jobs``, open by descriptor."""

    def __init__(self, dir_fd, path):
        self.dir_fd, self.path = dir_fd, path

    @classmethod
    def open(cls, lock_dir, create=True):
        """Raises OSError (:class:`fsafe.Refused`: not ours alone).  With
        ``create=False`` nothing is made: FileNotFoundError if no wrapper ever
        made the directory (nothing to reclaim)."""
        path = os.path.join(lock_dir, JOBS)
        if not create:
            os.stat(path)
        top = open_lock_dir(lock_dir)
        try:
            fd = fsafe.ensure_private_dir(path)
            if fsafe.ident(os.stat("..", dir_fd=fd)) != fsafe.ident(os.fstat(top)):
                os.close(fd)
                raise fsafe.Refused(path, "was moved while it was opened")
        finally:
            os.close(top)
        return cls(fd, path)

    def create(self, tag, record):
        """Take the lease ``tag`` and write ``record`` (``wrapper_pid``,
        ``wrapper_start`` and ``boot_id`` default to this process)."""
        if not fsafe.plain_name(tag) or tag.startswith("."):
            raise ValueError("bad lease tag %r" % (tag,))
        lock = take_lock(self.dir_fd, tag + LOCK)
        if lock is None:
            raise FileExistsError(errno.EEXIST, "a live wrapper holds this lease", tag)
        pid = os.getpid()
        record = dict({"wrapper_pid": pid, "wrapper_start": procinfo.start_time(pid),
                       "boot_id": procinfo.boot_id()}, **record)
        record["tag"] = tag
        lease = Lease(os.dup(self.dir_fd), tag, record, lock)
        try:
            lease._write()
        except BaseException:
            lease.release()
            raise
        return lease

    def tags(self):
        """Tags of every lease, lock file or leftover temporary lease file."""
        found = set()
        for name in os.listdir(self.dir_fd):
            if name.startswith(".") and name.endswith(".tmp") and LEASE + "." in name:
                name = name[1:].rsplit(LEASE + ".", 1)[0] + LEASE
            for suffix in (LEASE, LOCK):
                tag = name[:-len(suffix)]
                if name.endswith(suffix) and fsafe.plain_name(tag) and not tag.startswith("."):
                    found.add(tag)
        return sorted(found)

    def read(self, tag):
        """(record, None), (None, why it is unusable), or (None, None): no lease."""
        try:
            raw, _st = fsafe.read_untrusted(tag + LEASE, {os.geteuid()}, MAX_LEASE, self.dir_fd)
            record = json.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as e:
            return None, str(e)
        if not isinstance(record, dict):
            return None, "not a JSON object"
        for key, kind in REQUIRED:
            if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
                return None, "%s is missing or not of type %s" % (key, kind.__name__)
        if record["tag"] != tag:
            return None, "it names another tag (%r)" % record["tag"]
        return record, None

    def close(self):
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
