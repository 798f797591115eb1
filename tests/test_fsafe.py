"""The descriptor-safe file helpers every writer uses (docs/security.md)."""
import os
import stat
import subprocess
import time

import pytest

from wrapper.security import fsafe, fstree


@pytest.fixture
def d(tmp_path):
    fd = fsafe.open_dir(str(tmp_path))
    yield tmp_path, fd
    os.close(fd)


def test_create_is_exclusive_and_never_follows(d):
    path, fd = d
    target = path / "target"
    target.write_text("root only")
    os.symlink(target, path / "link")
    with pytest.raises(FileExistsError):
        fsafe.create(fd, "link")                       # a symlink is an existing name
    with pytest.raises(FileExistsError):
        fsafe.create(fd, "target")
    assert target.read_text() == "root only"
    new = fsafe.create(fd, "new", mode=0o640)
    assert stat.S_IMODE(os.fstat(new).st_mode) == 0o640
    os.close(new)
    with pytest.raises(ValueError):
        fsafe.create(fd, "../escape")


def test_open_dir_refuses_a_symlink(d):
    path, _ = d
    (path / "real").mkdir()
    os.symlink(path / "real", path / "sym")
    with pytest.raises(OSError):
        fsafe.open_dir(str(path / "sym"))


def test_dir_problem_needs_sticky_when_shared(tmp_path):
    assert fsafe.dir_problem(os.stat(tmp_path)) is None
    os.chmod(tmp_path, 0o777)
    assert "sticky" in fsafe.dir_problem(os.stat(tmp_path))
    os.chmod(tmp_path, 0o1777)
    assert fsafe.dir_problem(os.stat(tmp_path)) is None
    os.chmod(tmp_path, 0o700)


def test_mkdir_private(d):
    path, fd = d
    name, dfd = fsafe.mkdir_private(fd, "p-", 0o710)
    assert name.startswith("p-") and stat.S_IMODE(os.fstat(dfd).st_mode) == 0o710
    os.close(dfd)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "dir", "hardlink", "big", "owner"])
def test_read_untrusted_refuses(d, kind):
    path, fd = d
    (path / "real").write_text('{"cpu": "10"}')
    p = path / "x"
    if kind == "symlink":
        os.symlink(path / "real", p)
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "dir":
        p.mkdir()
    elif kind == "hardlink":
        os.link(path / "real", p)
    elif kind == "big":
        p.write_bytes(b"x" * 2000)
    else:
        p.write_text("{}")
    start = time.monotonic()
    allowed = {os.geteuid() + 1} if kind == "owner" else {os.geteuid()}
    with pytest.raises(OSError):
        fsafe.read_untrusted("x", allowed, max_size=1000, dir_fd=fd)
    assert time.monotonic() - start < 30               # a FIFO never blocks (it would: forever)


def test_read_untrusted_reads(d):
    path, fd = d
    (path / "x").write_bytes(b"abc")
    data, st = fsafe.read_untrusted("x", {os.geteuid()}, dir_fd=fd)
    assert data == b"abc" and st.st_size == 3


def test_unlink_same_leaves_a_swapped_entry(d):
    path, fd = d
    (path / "x").write_text("mine")
    ident = fsafe.ident(os.stat(path / "x"))
    os.rename(path / "x", path / "moved")
    (path / "x").write_text("someone else's")         # swapped in under the same name
    assert fsafe.unlink_same(fd, "x", ident) is False
    assert (path / "x").read_text() == "someone else's"
    assert fsafe.unlink_same(fd, "x", fsafe.ident(os.stat(path / "x"))) and not (path / "x").exists()


def _tree_beside_outside(d):
    """A private tree to remove, and beside it a directory ``outside`` with a
    file ``keep`` that no removal may reach."""
    path, fd = d
    outside = path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    name, dfd = fsafe.mkdir_private(fd, "t-")
    os.close(dfd)
    return path, fd, outside, name, path / name


def test_remove_tree_never_follows_symlinks(d):
    path, fd, outside, name, tree = _tree_beside_outside(d)
    os.symlink(outside, tree / "link")
    (tree / "sub").mkdir()
    os.symlink(outside / "keep", tree / "sub" / "f")
    assert fstree.remove_tree_at(fd, name, fsafe.ident(os.stat(tree)))
    assert not tree.exists() and (outside / "keep").read_text() == "keep"


def test_atomic_file_replaces_and_cleans_up(d):
    path, fd = d
    af = fsafe.AtomicFile(fd, "s", 0o644)
    af.write("one\n")
    af.write("two\n")
    assert (path / "s").read_text() == "two\n" and stat.S_IMODE(os.stat(path / "s").st_mode) == 0o644
    assert len(os.listdir(path)) == 2                  # the state and one reserved spare
    af.close()
    assert os.listdir(path) == ["s"]
    af.remove()
    assert os.listdir(path) == []


@pytest.mark.integration
def test_atomic_file_writes_on_a_full_filesystem(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    fd = fsafe.open_dir(str(mnt))
    try:
        af = fsafe.AtomicFile(fd, "s", 0o644, reserve=16 << 10)
        af.write("first\n")
        with pytest.raises(OSError):
            with open(mnt / "fill", "wb") as f:        # a real ENOSPC
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        assert os.statvfs(str(mnt)).f_bfree == 0
        for i in range(5):                            # the reserved spare takes each write,
            af.write('{"finished": true, "n": %d}\n' % i)     # and its freed tail the next one
            assert (mnt / "s").read_text() == '{"finished": true, "n": %d}\n' % i
        af.close()
    finally:
        os.close(fd)
        subprocess.run(["umount", str(mnt)], check=False)


# ---- tree removal: iterative, by descriptor (wrapper/security/fstree.py) -------------------
def _nested(top, depth):
    """``depth`` nested directories under ``top``, built by descriptor (a path
    3000 levels deep is longer than PATH_MAX)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(depth):
        os.mkdir("d", dir_fd=fd)
        if i % 500 == 0:
            with open(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as f:
                f.write("x")
        new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = new
    os.symlink("/", "root-link", dir_fd=fd)
    os.close(fd)


def test_remove_tree_of_3000_nested_directories(d):
    path, fd = d
    name, dfd = fsafe.mkdir_private(fd, "t-")
    os.close(dfd)
    _nested(str(path / name), 3000)
    assert fstree.remove_tree_at(fd, name, fsafe.ident(os.stat(path / name)))
    assert not (path / name).exists() and os.listdir(path) == []


def test_empty_dir_is_bounded(d):
    path, fd = d
    for i in range(50):
        (path / ("f%d" % i)).write_text("")
    with pytest.raises(OSError) as e:
        fstree.empty_dir(fd, max_steps=10)
    assert "too many entries" in str(e.value)
    assert 0 < len(os.listdir(path)) <= 40


def test_remove_tree_leaves_a_swapped_entry_alone(d):
    path, fd = d
    name, dfd = fsafe.mkdir_private(fd, "t-")
    os.close(dfd)
    identity = fsafe.ident(os.stat(path / name))
    os.rename(path / name, path / "moved")
    (path / name).mkdir()
    (path / name / "theirs").write_text("keep")
    assert fstree.remove_tree_at(fd, name, identity) is False
    assert (path / name / "theirs").read_text() == "keep"
    os.symlink(path / "moved", path / "link")
    assert fstree.remove_tree_at(fd, "link") is False and (path / "moved").is_dir()


def test_remove_tree_never_follows_fifos_or_links_to_directories(d):
    path, fd, outside, name, tree = _tree_beside_outside(d)
    os.mkfifo(tree / "fifo")
    (tree / "a" / "b").mkdir(parents=True)
    os.symlink(outside, tree / "a" / "b" / "out")
    os.link(outside / "keep", tree / "a" / "hard")
    assert fstree.remove_tree_at(fd, name)
    assert not tree.exists() and (outside / "keep").read_text() == "keep"
    assert os.stat(outside / "keep").st_nlink == 1


# -- a tree owned by someone else is emptied with that owner's rights ------------------------
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="root empties another user's tree")


def _owned(path, uid, mode=0o700):
    os.chown(path, uid, uid)
    os.chmod(path, mode)


@needs_root
def test_a_tree_owned_by_another_user_is_emptied_by_that_user_alone(d):
    """The attack of the review (F4): the owner of a throttling or agent
    directory moves into it a directory of its own holding root's files and
    a private directory of root's.  Root must not delete them for it, nor
    flatten their entries into the owner's reach."""
    path, fd = d
    top = path / "top"
    top.mkdir()
    _owned(top, NOBODY)
    deep = top / "own"
    for i in range(50):                       # the owner's own nested tree: removed
        deep = deep / str(i)
    deep.mkdir(parents=True)
    for p in [top / "own", *(top / "own").rglob("*")]:
        os.chown(p, NOBODY, NOBODY)
    moved = top / "moved"
    moved.mkdir()
    _owned(moved, NOBODY, 0o755)
    (moved / "root-owned").mkdir()                            # root's directory, 0755
    (moved / "root-owned" / "important.conf").write_text("root's")
    private = moved / "private"
    private.mkdir(mode=0o700)
    (private / "thesis.tex").write_text("root's private")
    tfd = fsafe.open_dir(str(top))
    try:
        with pytest.raises(OSError):
            fstree.empty_dir(tfd)
    finally:
        os.close(tfd)
    assert (moved / "root-owned" / "important.conf").read_text() == "root's"
    assert (private / "thesis.tex").read_text() == "root's private"
    assert not (top / "own").exists()
    assert sorted(p.name for p in top.iterdir()) == ["moved"]   # nothing flattened up
    assert sorted(p.name for p in moved.iterdir()) == ["private", "root-owned"]


@needs_root
def test_the_owners_own_tree_is_removed_whole(d):
    path, fd = d
    top = path / "top"
    top.mkdir()
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f").write_text("x")
    os.symlink("/etc/passwd", top / "a" / "link")
    for p in [top, *top.rglob("*")]:
        os.lchown(p, NOBODY, NOBODY)
    st = os.lstat(top)
    assert fstree.remove_tree_at(fd, "top", (st.st_dev, st.st_ino)) is True
    assert not top.exists() and os.path.exists("/etc/passwd")
