"""Secrets: a type that never prints its value, and the private directory
where secret files live for the lifetime of one job.
"""
import logging
import os
import stat
import tempfile

from wrapper.security import fsafe, fstree

log = logging.getLogger(__name__)

MASK = "******"


class Secret:
    """A string that prints as ``******``.

    The value is only revealed through :meth:`reveal`, which is called when a
    secret file is written (and by the oVirt SDK connection).
    """

    __slots__ = ("_value",)

    def __init__(self, value):
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError("a Secret wraps a string")
        self._value = value

    def reveal(self):
        return self._value

    def __str__(self):
        return MASK

    __repr__ = __str__

    def __format__(self, spec):
        return MASK

    def __eq__(self, other):
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self):
        return hash(self._value)

    def __bool__(self):
        return bool(self._value)

    def __reduce__(self):  # never pickled/serialised by accident
        raise TypeError("a Secret cannot be serialised")


class PrivateDir:
    """A new directory with a random name in ``parent`` (a path; None: the
    temporary directory), held open for its whole life and removed through
    its descriptor (docs/security.md: nothing by name in a shared directory).

    ``owner``/``mode`` are set on the descriptor right after ``mkdir``.
    :meth:`remove` empties it without following any symlink, then removes it
    only if the entry still is the directory we made; it is idempotent.
    """

    prefix = "v2v-wrapper-dir-"

    def __init__(self, parent=None, mode=0o700, owner=None):
        self.parent = os.path.abspath(parent or tempfile.gettempdir())
        self._parent_fd = fsafe.open_dir(self.parent)
        try:
            self.name, self.fd = fsafe.mkdir_private(self._parent_fd, self.prefix, mode, owner)
        except BaseException:
            os.close(self._parent_fd)
            raise
        self.identity = fsafe.ident(os.fstat(self.fd))
        self.path = os.path.join(self.parent, self.name)

    def remove(self):
        if self.fd is None:
            return
        try:
            fstree.empty_dir(self.fd)
            fsafe.unlink_same(self._parent_fd, self.name, self.identity)
            log.debug("removed %s", self.path)
        finally:
            os.close(self.fd)
            os.close(self._parent_fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


class SecretDir(PrivateDir):
    """The private directory holding one file per secret (docs/contract.md §7).

    The directory belongs to the wrapper (root), never to the user that runs
    virt-v2v: that user may traverse it (group ``gid``, mode 0710) but cannot
    create, rename or replace anything in it, so root never acts on an entry
    that user could have swapped.  Files are created exclusively, mode 0600,
    owned by ``uid:gid`` through their descriptor, without a trailing newline.
    """

    prefix = "v2v-wrapper-secrets-"

    def __init__(self, parent=None, uid=None, gid=None):
        self.uid = uid
        self.gid = gid
        other = uid is not None and uid != os.geteuid()
        super().__init__(parent, 0o710 if other else 0o700,
                         (-1, gid) if other and gid is not None else None)

    def _owner(self):
        if self.uid is None or (self.uid == os.geteuid() and self.gid in (None, os.getegid())):
            return None
        return (self.uid, -1 if self.gid is None else self.gid)

    def write(self, name, secret):
        """Write ``secret`` (a Secret or str) to ``<dir>/<name>``; return the path."""
        if os.sep in name or name in ("", ".", ".."):
            raise ValueError("bad secret file name %r" % name)
        value = secret.reveal() if isinstance(secret, Secret) else secret
        fd = fsafe.create(self.fd, name, os.O_WRONLY, 0o600, self._owner())
        try:
            fsafe.write_all(fd, value.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return os.path.join(self.path, name)

    def create(self, name, flags=os.O_RDWR | os.O_APPEND):
        """A new empty file ``<dir>/<name>``, mode 0600, owned like the
        secret files: its descriptor (virt-v2v-wrapper inspect hands the
        inspector its report and logs this way, as ``/dev/fd/N``)."""
        if os.sep in name or name in ("", ".", ".."):
            raise ValueError("bad file name %r" % name)
        return fsafe.create(self.fd, name, flags, 0o600, self._owner())

    def fifo(self, name):
        """A FIFO in the private directory, readable by the virt-v2v user."""
        os.mkfifo(name, 0o600, dir_fd=self.fd)
        fd = self.open_entry(name, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise fsafe.Refused(name, "is not the FIFO just made")
            owner = self._owner()
            if owner:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
        return os.path.join(self.path, name)

    def open_entry(self, name, flags):
        """Open an entry of the directory through its descriptor."""
        return os.open(name, flags | os.O_NOFOLLOW | fsafe.O_CLOEXEC, dir_fd=self.fd)


class AgentDir(PrivateDir):
    """The ssh-agent's socket directory: the agent runs as the virt-v2v user
    and must create its socket, so this one belongs to that user (0700) and
    holds nothing root writes."""

    prefix = "v2v-wrapper-agent-"

    def __init__(self, parent=None, uid=None, gid=None):
        owner = None
        if uid is not None and uid != os.geteuid():
            owner = (uid, -1 if gid is None else gid)
        super().__init__(parent, 0o700, owner)
