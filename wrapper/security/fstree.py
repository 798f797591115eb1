"""Removing a directory tree another user may have filled, without recursion
and by descriptor (docs/security.md rules 1 and 2).

The ssh-agent directory belongs to the run-as user and the throttling
directory to the sudo caller: either can plant thousands of nested
directories, links and FIFOs before the wrapper removes the tree.  A
recursive walk hits Python's recursion limit (or the limit on open files)
and leaves the tree behind; following a link would remove someone else's
files.  So the tree is *flattened* instead of walked: each subdirectory is
opened ``O_DIRECTORY|O_NOFOLLOW`` under the top directory's descriptor, its
entries are renamed up into the top directory under fresh names, and the
emptied subdirectory is removed (``unlinkat(AT_REMOVEDIR)``).  At most two
directory descriptors are open at any time, whatever the depth.  ``rename``,
``unlink`` and ``rmdir`` act on the entry itself and never follow a link.
The work is bounded (:data:`MAX_STEPS`): a tree that keeps growing, or one
that cannot be emptied (a mount point), raises OSError instead of spinning.

**With the owner's rights, never root's.**  Whoever owns the top directory
can move anything it may rename into it: a directory of its own that holds
root's files, or (as a link target's parent) another user's private
directory.  Root emptying such a tree would delete files the owner could not
delete, and the flattening would hand their entries to the owner.  So a root
process empties a directory owned by someone else in a short-lived child
that has dropped to that owner's uid and gid (no supplementary groups), the
descriptor inherited and every other descriptor closed: the kernel then
removes exactly what the owner could remove itself.  What it cannot is left
behind and reported, never removed on its behalf.
"""
import errno
import os
import secrets
import stat

from wrapper.security import aschild
from wrapper.security.fsafe import ident, lstat_at, open_dir

MAX_STEPS = 1_000_000        # entries removed or moved, per tree


class _Budget:
    def __init__(self, steps):
        self.left = steps

    def spend(self):
        self.left -= 1
        if self.left < 0:
            raise OSError(errno.EBUSY, "too many entries, or the tree keeps changing")


# seconds for a child emptying a tree as its owner: 3 000 nested directories take ~8 s on
# a slow disk; the owner can stop its own child, so this bounds what it can delay
OWNER_TIMEOUT = 60.0


def empty_dir(fd, max_steps=MAX_STEPS, timeout=OWNER_TIMEOUT):
    """Remove every entry of the open directory ``fd``, never following a
    link, never recursing -- with the rights of the directory's owner (see
    the module's docstring)."""
    st = os.fstat(fd)
    if os.geteuid() == 0 and st.st_uid != 0:
        _empty_as(fd, st.st_uid, st.st_gid, max_steps, timeout)
    else:
        _empty(fd, max_steps)


def _empty_as(fd, uid, gid, max_steps, timeout):
    """:func:`_empty` in a child with ``uid``/``gid`` only
    (:func:`wrapper.security.aschild.run_as`); OSError if it could not empty
    the directory (its errno), or did not end in time."""
    try:
        aschild.run_as(uid, gid, [], lambda: _empty(fd, max_steps), keep=(fd,), timeout=timeout,
                       what="emptying the directory as uid %d" % uid)
    except OSError as e:
        if e.errno == errno.ETIMEDOUT:
            raise
        raise OSError(e.errno, "cannot empty the directory as its owner (uid %d): %s"
                      % (uid, os.strerror(e.errno))) from None


def _empty(fd, max_steps):
    """Pass after pass until the directory is empty; an entry this process
    may not remove (EACCES, EPERM, ENOTEMPTY of a directory it cannot empty)
    is skipped, and once a pass finds nothing but such entries, the first
    error is raised: everything removable is gone by then."""
    budget = _Budget(max_steps)
    stuck, first = set(), None
    while True:
        with os.scandir(fd) as entries:
            names = [e.name for e, _ in zip(entries, range(4096))]
        todo = [n for n in names if n not in stuck]
        if not todo:
            if first is not None:
                raise first
            return
        for name in todo:
            budget.spend()
            try:
                _remove_or_flatten(fd, name, budget)
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EPERM, errno.ENOTEMPTY, errno.EEXIST):
                    raise
                stuck.add(name)
                first = first or e


def _remove_or_flatten(fd, name, budget):
    st = lstat_at(fd, name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        _quiet(os.unlink, name, fd)
        return
    try:
        sub = open_dir(name, dir_fd=fd)
    except (FileNotFoundError, NotADirectoryError):
        return                   # gone or swapped meanwhile: the next pass sees it
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        return
    try:
        if ident(os.fstat(sub)) != ident(st):
            return
        _move_entries_up(sub, fd, budget)
    finally:
        os.close(sub)
    try:
        os.rmdir(name, dir_fd=fd)            # emptied (refilled meanwhile: the next pass)
    except FileNotFoundError:
        pass


def _move_entries_up(sub, top, budget):
    with os.scandir(sub) as entries:
        names = [e.name for e, _ in zip(entries, range(4096))]
    refused = None
    for name in names:
        budget.spend()
        for _ in range(10):
            try:
                os.rename(name, ".rm-" + secrets.token_hex(8), src_dir_fd=sub, dst_dir_fd=top)
                break
            except FileNotFoundError:
                break
            except PermissionError as e:     # not this owner's to move: the others still go
                refused = refused or e
                break
            except OSError as e:         # the fresh name exists (a directory): another one
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                    raise
    if refused is not None:
        raise refused


def _quiet(op, name, fd):
    try:
        op(name, dir_fd=fd)
    except FileNotFoundError:
        pass


def remove_tree_at(dir_fd, name, identity=None, max_steps=MAX_STEPS):
    """Remove the directory ``name`` in ``dir_fd`` and everything in it, if
    it still is ``identity`` (dev, ino); True when it is gone, False when the
    entry is not that directory (left alone)."""
    st = lstat_at(dir_fd, name)
    if st is None:
        return True
    if not stat.S_ISDIR(st.st_mode) or (identity is not None and ident(st) != tuple(identity)):
        return False
    try:
        fd = open_dir(name, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            return e.errno == errno.ENOENT
        raise
    try:
        if ident(os.fstat(fd)) != ident(st):
            return False
        name = move_aside(dir_fd, name, ident(st)) or name
        empty_dir(fd, max_steps)
    finally:
        os.close(fd)
    lst = lstat_at(dir_fd, name)
    if lst is not None and ident(lst) == ident(st):
        os.rmdir(name, dir_fd=dir_fd)        # refilled through a descriptor: the owner's doing
    return True


def move_aside(dir_fd, name, identity):
    """When the directory ``name`` (still ``identity``) belongs to someone
    else, rename it to a fresh hidden name in the parent (ours): whoever keeps
    creating entries by the old path (a throttling file written in a loop)
    can no longer refill it while it is emptied.  The name it now has (the
    old one when it was not moved), or None when ``name`` is not it."""
    st = lstat_at(dir_fd, name)
    if st is None or not stat.S_ISDIR(st.st_mode) or ident(st) != tuple(identity):
        return None
    if os.geteuid() != 0 or st.st_uid == 0:
        return name
    hidden = ".rm-" + secrets.token_hex(8)
    try:
        os.rename(name, hidden, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        return name
    moved = lstat_at(dir_fd, hidden)
    return hidden if moved is not None and ident(moved) == ident(st) else name
