"""Descriptor-safe file handling for a root process working in directories
other users can write (docs/security.md).

The rules every writer in the wrapper follows, through these helpers only:

* Inside a directory another user can write, nothing is opened, chmod-ed,
  chown-ed or unlinked by name.  The directory is opened once
  (:func:`open_dir`); entries are created relative to its descriptor with
  ``O_CREAT|O_EXCL|O_NOFOLLOW`` (:func:`create`), and ``fchmod``/``fchown``
  act on the new descriptor.
* A file another user supplies in a shared directory (the throttling file) is
  opened with ``O_NOFOLLOW|O_NONBLOCK`` (a symlink fails, a FIFO cannot
  block), then ``fstat``-ed: a regular file, one link, an allowed owner,
  a bounded size (:func:`read_untrusted`).  What the CALLER names (job file,
  secret files, LUKS vault, drivers ISO, CA file) is not opened here but with
  the caller's own rights: wrapper/security/boundary.py.
* An entry is removed only if it is still the inode we identified
  (:func:`unlink_same`): unlink never follows a symlink, and a swapped-in
  entry is left alone.
"""
import errno
import os
import stat

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | O_CLOEXEC
CREATE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | O_CLOEXEC
RANDOM_NAME_LEN = 12         # hex digits after a private directory's prefix
UNTRUSTED_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


class Refused(OSError):
    """A path is not what it must be (wrong kind, owner, mode, size)."""

    def __init__(self, path, why):
        super().__init__(errno.EPERM, why, path)
        self.path = path
        self.why = why

    def __str__(self):
        return "%s %s" % (self.path, self.why)


def ident(st):
    return (st.st_dev, st.st_ino)


def open_dir(path, dir_fd=None):
    """Open a directory (never through a symlink as its last component)."""
    return os.open(path, DIR_FLAGS, dir_fd=dir_fd)


def dir_problem(st, euid=None):
    """Why a directory is unfit to hold the wrapper's files, or None.

    Another user who can rename entries in it could swap what clients read
    (the state file) under the announced name: a directory writable by group
    or others must have the sticky bit, as /tmp has.
    """
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return "is writable by other users without the sticky bit (mode %04o)" % (st.st_mode & 0o7777)
    return None


def create(dir_fd, name, flags=os.O_WRONLY, mode=0o600, owner=None):
    """Create ``name`` in the directory ``dir_fd``, exclusively, and return its
    descriptor with ``mode`` and ``owner`` (uid, gid) already set on it."""
    _check_name(name)
    fd = os.open(name, flags | CREATE_FLAGS, mode & 0o777, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, owner[0], owner[1])
    except BaseException:
        os.close(fd)
        unlink_quietly(dir_fd, name)
        raise
    return fd


def mkdir_private(dir_fd, prefix, mode=0o700, owner=None, attempts=100):
    """Make a new directory with a random name in ``dir_fd``; return
    ``(name, fd)``.  The directory is verified to be the one we made (owned by
    us, a directory) before its mode and owner are set through its descriptor."""
    for _ in range(attempts):
        name = prefix + os.urandom(RANDOM_NAME_LEN // 2).hex()
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            continue
        fd = open_dir(name, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode):
                raise Refused(name, "was replaced while it was being created")
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, owner[0], owner[1])
        except BaseException:
            os.close(fd)
            raise
        return name, fd
    raise FileExistsError(errno.EEXIST, "no free name", prefix)


def ensure_private_dir(path, mode=0o700):
    """``path`` as a directory only we can write: created if missing, refused
    if it exists with another owner or writable by others.  Returns its fd."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    fd = open_dir(path)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        raise Refused(path, "must be owned by uid %d and writable only by it (owner %d, mode %04o)"
                      % (os.geteuid(), st.st_uid, st.st_mode & 0o7777))
    return fd


def read_untrusted(path, allowed_uids=None, max_size=1 << 20, dir_fd=None, max_links=1):
    """Read a file someone else may control: ``(bytes, stat)``.

    Refused (:class:`Refused`) unless it is a regular file with at most
    ``max_links`` links, owned by one of ``allowed_uids`` (None: anyone) and
    no larger than ``max_size``.  Symlinks fail to open (ELOOP), FIFOs and
    devices are refused without ever blocking.
    """
    return _read_checked(os.open(path, UNTRUSTED_FLAGS, dir_fd=dir_fd), path, allowed_uids,
                         max_size, max_links)


def _read_checked(fd, path, allowed_uids, max_size, max_links):
    try:
        st = os.fstat(fd)
        why = untrusted_problem(st, allowed_uids, max_size, max_links)
        if why:
            raise Refused(path, why)
        data = b""
        while len(data) <= max_size:
            chunk = os.read(fd, max_size + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > max_size:
            raise Refused(path, "is larger than %d bytes" % max_size)
        return data, st
    finally:
        os.close(fd)


def untrusted_problem(st, allowed_uids=None, max_size=1 << 20, max_links=1):
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if allowed_uids is not None and st.st_uid not in allowed_uids:
        return "is owned by uid %d, not by an allowed user" % st.st_uid
    if max_links is not None and st.st_nlink > max_links:
        return "has %d hard links" % st.st_nlink
    if st.st_size > max_size:
        return "is larger than %d bytes" % max_size
    return None


def lstat_at(dir_fd, name):
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def unlink_same(dir_fd, name, identity):
    """Unlink ``name`` if it still is the inode ``identity`` (dev, ino).
    Returns True when it was removed (or already gone)."""
    st = lstat_at(dir_fd, name)
    if st is None:
        return True
    if ident(st) != tuple(identity):
        return False
    try:
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    return True


def unlink_quietly(dir_fd, name):
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class AtomicFile:
    """A file in ``dir_fd`` replaced atomically on every write, that can still
    be written when the filesystem is full.

    Each write goes to a temporary file created beforehand (``O_EXCL``) and
    given ``reserve`` bytes with ``posix_fallocate``: it is filled, fsync-ed,
    fchmod-ed, renamed over ``name``, and the next temporary file is reserved.
    When the disk fills up, the reserved one is still there for the final
    ``finished`` (docs/contract.md §5, §8).  ``owner`` (uid, gid; -1 keeps
    one) is set on each temporary file when it is created, before anything
    is in it.  With ``exclusive`` the first write ``link()``s the complete
    file into place and fails (FileExistsError) if the name exists: the name
    never appears empty or torn, and nobody's entry is replaced; until then
    the temporary file's name does not carry ``name`` either (``.<random>.tmp``),
    so a watcher of the directory cannot learn the name before it is taken.
    """

    def __init__(self, dir_fd, name, mode=0o644, reserve=64 << 10, owner=None, exclusive=False):
        _check_name(name)
        self.dir_fd = dir_fd
        self.name = name
        self.mode = mode
        self.reserve = reserve
        self.owner = owner
        self.exclusive = exclusive
        self._spare = None           # (name, fd)
        self.identity = None         # (dev, ino) of what the last write put under ``name``

    def _new_spare(self):
        hidden = self.exclusive and self.identity is None
        for _ in range(100):
            tmp = ((".%s.tmp" % os.urandom(8).hex()) if hidden
                   else ".%s.%s.tmp" % (self.name, os.urandom(4).hex()))
            try:
                fd = create(self.dir_fd, tmp, os.O_RDWR, 0o600, self.owner)
            except FileExistsError:
                continue
            try:
                if self.reserve:
                    os.posix_fallocate(fd, 0, self.reserve)
            except OSError:
                os.close(fd)
                unlink_quietly(self.dir_fd, tmp)
                raise
            return tmp, fd
        raise FileExistsError(errno.EEXIST, "no free temporary name", self.name)

    def write(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        if self._spare is None:
            self._spare = self._new_spare()
        tmp, fd = self._spare
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            write_all(fd, data)
            os.ftruncate(fd, len(data))
            os.fchmod(fd, self.mode)
            os.fsync(fd)
            if self.exclusive and self.identity is None:
                os.link(tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd,
                        follow_symlinks=False)
                unlink_same(self.dir_fd, tmp, ident(os.fstat(fd)))
            else:
                os.replace(tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except BaseException:
            self.discard_spare()
            raise
        self._spare = None
        self.identity = ident(os.fstat(fd))
        os.close(fd)
        try:
            self._spare = self._new_spare()
        except OSError:
            self._spare = None       # full now: the next write tries again

    def discard_spare(self):
        if self._spare is not None:
            tmp, fd = self._spare
            self._spare = None
            os.close(fd)
            unlink_quietly(self.dir_fd, tmp)

    def remove(self):
        """Remove the file we last wrote (if it is still ours)."""
        if self.identity is not None:
            unlink_same(self.dir_fd, self.name, self.identity)
            self.identity = None

    def close(self):
        self.discard_spare()


def plain_name(name):
    """A single entry name: no directory part, not '.' or '..', no NUL."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name \
        and "\0" not in name


def _check_name(name):
    if not plain_name(name):
        raise ValueError("bad file name %r" % (name,))
