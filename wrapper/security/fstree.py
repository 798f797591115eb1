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
"""
import errno
import os
import secrets
import stat

from wrapper.security.fsafe import ident, lstat_at, open_dir

MAX_STEPS = 1_000_000        # entries removed or moved, per tree


class _Budget:
    def __init__(self, steps):
        self.left = steps

    def spend(self):
        self.left -= 1
        if self.left < 0:
            raise OSError(errno.EBUSY, "too many entries, or the tree keeps changing")


def empty_dir(fd, max_steps=MAX_STEPS):
    """Remove every entry of the open directory ``fd``, never following a
    link, never recursing."""
    budget = _Budget(max_steps)
    while True:
        with os.scandir(fd) as entries:
            names = [e.name for e, _ in zip(entries, range(4096))]
        if not names:
            return
        for name in names:
            budget.spend()
            _remove_or_flatten(fd, name, budget)


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
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise


def _move_entries_up(sub, top, budget):
    with os.scandir(sub) as entries:
        names = [e.name for e, _ in zip(entries, range(4096))]
    for name in names:
        budget.spend()
        for _ in range(10):
            try:
                os.rename(name, ".rm-" + secrets.token_hex(8), src_dir_fd=sub, dst_dir_fd=top)
                break
            except FileNotFoundError:
                break
            except OSError as e:         # the fresh name exists (a directory): another one
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                    raise


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
        empty_dir(fd, max_steps)
    finally:
        os.close(fd)
    lst = lstat_at(dir_fd, name)
    if lst is not None and ident(lst) == ident(st):
        _quiet(os.rmdir, name, dir_fd)
    return True
