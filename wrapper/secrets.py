"""Secrets: a type that never prints its value, and the private directory
where secret files live for the lifetime of one job.
"""
import contextlib
import logging
import os
import shutil
import tempfile

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


class SecretDir:
    """A private directory (mode 0700) holding one file per secret.

    Files are mode 0600, owned by ``uid:gid`` (the user that runs virt-v2v),
    and have no trailing newline.  :meth:`remove` deletes everything and is
    safe to call more than once; use the object as a context manager so it
    runs on every way out.
    """

    def __init__(self, parent=None, uid=None, gid=None):
        self.path = tempfile.mkdtemp(prefix="v2v-wrapper-secrets-", dir=parent)
        self.uid = uid
        self.gid = gid
        self._chown(self.path)
        os.chmod(self.path, 0o700)

    def _chown(self, path):
        if self.uid is not None and (self.uid != os.geteuid() or
                                     (self.gid is not None and self.gid != os.getegid())):
            os.chown(path, self.uid, -1 if self.gid is None else self.gid)

    def write(self, name, secret):
        """Write ``secret`` (a Secret or str) to ``<dir>/<name>``; return the path."""
        if os.sep in name or name in ("", ".", ".."):
            raise ValueError("bad secret file name %r" % name)
        value = secret.reveal() if isinstance(secret, Secret) else secret
        path = os.path.join(self.path, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, value.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        self._chown(path)
        return path

    def fifo(self, name):
        """A FIFO in the private directory, usable by the virt-v2v user."""
        path = os.path.join(self.path, name)
        os.mkfifo(path, 0o600)
        self._chown(path)
        return path

    def remove(self):
        if self.path and os.path.exists(self.path):
            shutil.rmtree(self.path, ignore_errors=True)
            log.debug("removed secret directory %s", self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


@contextlib.contextmanager
def secret_dir(parent=None, uid=None, gid=None):
    d = SecretDir(parent, uid, gid)
    try:
        yield d
    finally:
        d.remove()
