"""The partial output a failed conversion leaves in a local target, and its
removal (docs/contract.md §8).

virt-v2v writes ``<name>-sdX`` files and, at the very end, ``<name>.xml``
into an ``output_dir``, and UUID-named directories under
``<domain>/<sd uuid>/images/`` and ``…/master/vms/`` of a local export
domain.  A conversion that fails, is cancelled or killed leaves what it had
written.  So, before virt-v2v starts, each directory it will write is opened
(as the run-as user, :func:`wrapper.security.aschild.run_as`) and its entries
recorded by name and (device, inode) -- a :class:`Watch`.  When the run ends
without success, only entries that are

* NEW (their name and inode were not there before),
* named as virt-v2v names this job's output (:func:`local_match`,
  :func:`is_uuid`),
* of the kind virt-v2v creates (a regular file; a real directory, never a
  link, FIFO or device), owned by the run-as user,

are removed, by a child that has become the run-as user and works with
``*at()`` calls on the descriptor opened before (:func:`_remove_planned`;
trees through :func:`wrapper.security.fstree.remove_tree_at`): it can remove
nothing that user could not remove itself, and follows no link.  What was
removed and what was left (and why) is logged; success keeps everything.

Several jobs may convert into the same directory at once, and their
UUID-named directories (or same-named files) cannot be told apart: each
watched directory holds a shared ``flock`` for the run, and a job removes
nothing there while another job holds one, nor when it could not take its
own at once (it never waits for a lock another user may hold forever); it
says so.

The directories are reached so that the caller cannot aim the removal at a
directory only the run-as user may write (docs/security.md, "Partial
output"): the top directory is opened once and must be the very directory
the caller's own check found writable (its (device, inode), ``seen``), and
an export domain's ``<sd uuid>``, ``images``, ``master`` and ``vms`` are
opened one at a time under it, never through a link.  In an ``output_dir``
other users may write too (sticky, or writable by group or others, such as
``/var/tmp``) a file named like this job's output may be another job's:
nothing is removed there.
"""
import dataclasses
import errno
import fcntl
import logging
import os
import re
import stat

from wrapper.security import aschild, fstree
from wrapper.security.fsafe import ident, lstat_at, unlink_same

log = logging.getLogger(__name__)

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_DISK_SUFFIX = re.compile(r"-sd[a-z]{1,3}\Z")
OPEN_TIMEOUT = 30.0
REMOVE_TIMEOUT = fstree.OWNER_TIMEOUT


def is_uuid(name):
    return bool(_UUID.match(name))


def local_match(vm_name):
    """The names virt-v2v ``-o local`` gives the output of the VM ``vm_name``:
    ``<name>-sda`` … and ``<name>.xml``."""
    def match(name):
        if name == vm_name + ".xml":
            return True
        return name.startswith(vm_name) and bool(_DISK_SUFFIX.fullmatch(name[len(vm_name):]))
    return match


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    identity: tuple
    is_dir: bool


def listing(fd):
    """{name: lstat result} of the open directory ``fd`` (never following a link)."""
    found = {}
    with os.scandir(fd) as entries:
        for entry in entries:
            st = lstat_at(fd, entry.name)
            if st is not None:
                found[entry.name] = st
    return found


def plan(before, after, match, want_dir, uid):
    """Pure: which entries of ``after`` ({name: stat}) to remove, and which
    matching ones to leave with why.  ``before``: the set of (name, identity)
    recorded before virt-v2v started.  Returns (remove, left)."""
    remove, left = [], []
    for name in sorted(after):
        if not match(name):
            continue
        st = after[name]
        if (name, ident(st)) in before:
            left.append((name, "was there before the conversion"))
        elif stat.S_ISDIR(st.st_mode) != want_dir or not (
                stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            left.append((name, "not a %s" % ("directory" if want_dir else "regular file")))
        elif st.st_uid != uid:
            left.append((name, "owned by uid %d, not the run-as user" % st.st_uid))
        else:
            remove.append(Entry(name, ident(st), want_dir))
    return remove, left


def _remove_planned(fd, entries):      # runs in the run-as user's child
    for entry in entries:
        try:
            if entry.is_dir:
                fstree.remove_tree_at(fd, entry.name, entry.identity)
            else:
                st = lstat_at(fd, entry.name)
                if st is not None and stat.S_ISREG(st.st_mode):
                    unlink_same(fd, entry.name, entry.identity)
        except OSError:
            pass                 # the parent sees what is left and says so


def _try_flock(fd, how):
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        return False


def open_to_others(fd):
    """Why the open directory ``fd`` is shared with other users (sticky, or
    writable by group or others), or None."""
    mode = os.fstat(fd).st_mode
    if mode & stat.S_ISVTX:
        return "the directory is sticky, shared with other users (the file may be another job's)"
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return ("the directory is writable by group or others (the file may be another job's)")
    return None


class Watch:
    """One directory virt-v2v writes, opened and listed before it starts."""

    def __init__(self, path, fd, match, want_dir, user, shared=False, runner=aschild.run_as,
                 private=False):
        self.path, self.fd, self.match, self.want_dir = path, fd, match, want_dir
        self.user, self.shared, self.runner = user, shared, runner
        # private: remove nothing in a directory other users may write too
        self.private = private
        self.open_to_others = open_to_others(fd) if private else None
        # never waits: anyone who can open the directory can hold a lock on it
        self.locked = shared and _try_flock(fd, fcntl.LOCK_SH)
        self.before = frozenset((name, ident(st)) for name, st in listing(fd).items())
        log.info("recorded %d entries of %s before the conversion", len(self.before), path)

    def _alone(self):
        """No other job holds this directory (export domains)."""
        if not self.shared:
            return True
        return self.locked and _try_flock(self.fd, fcntl.LOCK_EX)

    def clean(self):
        """Remove this job's new entries (see the module's docstring); returns
        (removed names, [(name, why left)])."""
        remove, left = plan(self.before, listing(self.fd), self.match, self.want_dir, self.user.uid)
        shared_by = remove and self.private and (self.open_to_others or open_to_others(self.fd))
        if shared_by:
            return [], left + [(e.name, shared_by) for e in remove]
        if remove and not self._alone():
            return [], left + [(e.name, "another job holds this directory (a conversion may be writing to it)")
                               for e in remove]
        if remove:
            try:
                self.runner(self.user.uid, self.user.gid, list(self.user.groups),
                            lambda: _remove_planned(self.fd, remove), keep=(self.fd,),
                            timeout=REMOVE_TIMEOUT, what="removing the partial output")
            except OSError as e:
                log.warning("cleanup: removing the partial output in %s: %s", self.path, e)
        removed = []
        for entry in remove:
            st = lstat_at(self.fd, entry.name)
            if st is not None and ident(st) == entry.identity:
                left.append((entry.name, "could not be removed as uid %d" % self.user.uid))
            else:
                removed.append(entry.name)
        return removed, left

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def open_dir_as(user, path, runner=aschild.run_as):
    """``path`` opened as a directory with ``user``'s rights (a child that
    became the user), close-on-exec; OSError when that user cannot."""
    fd = runner(user.uid, user.gid, list(user.groups), lambda: os.open(path, _DIR),
                timeout=OPEN_TIMEOUT, what="opening %s" % path)
    os.set_inheritable(fd, False)
    return fd


def walk_at(top, parts):
    """The directory ``top/parts[0]/parts[1]/…``, each component opened
    relative to the one before and never through a link (O_NOFOLLOW:
    ENOTDIR for a link or anything else not a directory)."""
    fd = top
    try:
        for part in parts:
            below = os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
            if fd != top:
                os.close(fd)
            fd = below
    except BaseException:
        if fd != top:
            os.close(fd)
        raise
    return fd


def open_below_as(user, top, parts, runner=aschild.run_as):
    """:func:`walk_at` in a child that became ``user``, on the descriptor
    ``top`` (never the path again); OSError when that user cannot."""
    fd = runner(user.uid, user.gid, list(user.groups), lambda: walk_at(top, parts),
                keep=(top,), timeout=OPEN_TIMEOUT, what="opening %s" % "/".join(parts))
    os.set_inheritable(fd, False)
    return fd


def _why_not(e):
    if e.errno == errno.ENOTDIR:
        return "a link or not a directory (links are not followed)"
    return os.strerror(e.errno or errno.EIO)


def _top(path, user, seen, runner):
    """``path`` opened as ``user``, or None (said why) when it is not the
    directory the caller's check saw: (device, inode) ``seen`` (None: the
    caller was not asked, e.g. root)."""
    fd = open_dir_as(user, path, runner)
    try:
        found = ident(os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    if seen is None or found == tuple(seen):
        return fd
    os.close(fd)
    log.warning("not watching %s: it is no longer the directory checked as writable by the "
                "caller (device/inode %s, now %s): a failure's partial output there is not "
                "removed", path, tuple(seen), found)
    return None


class Leftovers:
    """The watched directories of one job; :meth:`finish` at its end."""

    def __init__(self, watches):
        self.watches = list(watches)

    def finish(self, success):
        """Keep everything on success; else remove and log.  Closes the
        directories either way."""
        try:
            if not success:
                for watch in self.watches:
                    self._clean(watch)
        finally:
            for watch in self.watches:
                watch.close()

    @staticmethod
    def _clean(watch):
        removed, left = watch.clean()
        if removed:
            log.info("conversion failed: removed its partial output in %s: %s",
                     watch.path, ", ".join(removed))
        for name, why in left:
            log.info("left %s in %s: %s", name, watch.path, why)
        if not removed and not left:
            log.info("conversion failed: no partial output in %s", watch.path)


def watch_local(path, vm_name, user, runner=aschild.run_as, seen=None):
    """``output_dir``: the files virt-v2v names after ``vm_name``."""
    fd = _top(path, user, seen, runner)
    if fd is None:
        return Leftovers([])
    try:
        return Leftovers([Watch(path, fd, local_match(vm_name), False, user, shared=True,
                                runner=runner, private=True)])
    except BaseException:
        os.close(fd)
        raise


def watch_export_domain(path, user, runner=aschild.run_as, seen=None):
    """A local export domain: ``<sd uuid>/images`` and ``<sd uuid>/master/vms``
    of each storage-domain directory in it (virt-v2v picks the one there is),
    reached from the top directory one component at a time."""
    top = _top(path, user, seen, runner)
    if top is None:
        return Leftovers([])
    watches = []
    try:
        for sd in sorted(name for name in listing(top) if is_uuid(name)):
            for sub in (("images",), ("master", "vms")):
                watches.extend(_watch_below(path, top, (sd,) + sub, user, runner))
    except BaseException:
        for watch in watches:
            watch.close()
        raise
    finally:
        os.close(top)
    return Leftovers(watches)


def _watch_below(path, top, parts, user, runner):
    where = os.path.join(path, *parts)
    try:
        fd = open_below_as(user, top, parts, runner)
    except OSError as e:
        log.info("not watching %s: %s", where, _why_not(e))
        return []
    try:
        return [Watch(where, fd, is_uuid, True, user, shared=True, runner=runner)]
    except BaseException:
        os.close(fd)
        raise
