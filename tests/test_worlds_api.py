"""tests/integration/worlds.py without a world: the argv it builds, the bind rules, the
mount-point record, the ready marker and the wait for a running build."""
import fcntl
import os
import threading

import pytest

from tests.integration import worlds


def test_host_runs_the_command_itself():
    assert worlds.HOST.argv(["virt-v2v", "--version"]) == ["virt-v2v", "--version"]
    assert worlds.HOST.is_host and worlds.HOST.run_as_home() is None


def test_tree_command_enters_a_private_mount_namespace(tmp_path):
    w = worlds.World("sid", "2.10", tmp_path)
    argv = w.argv(["python3", "-m", "wrapper"], binds=["/var/tmp/r"], ro_binds=["/src", "/x"],
                  cwd="/src")
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert argv[-3:] == ["python3", "-m", "wrapper"]
    # root, binds, read-only binds and cwd are positional arguments, never spliced into
    # the script's text
    assert argv[8:12] == [str(tmp_path), "/var/tmp/r", "/src:/x", "/src"]
    assert str(tmp_path) not in argv[6]
    assert "chroot" in argv[6] and "remount,bind,ro" in argv[6]


@pytest.mark.parametrize("bad", ["relative/dir", "/a:b"])
def test_bind_must_be_absolute_without_colon(tmp_path, bad):
    w = worlds.World("sid", "2.10", tmp_path)
    with pytest.raises(ValueError):
        w.argv(["true"], binds=[bad])
    with pytest.raises(ValueError):
        w.argv(["true"], ro_binds=[bad])


def test_mount_points_made_are_the_only_ones_removed(tmp_path):
    (tmp_path / "var" / "tmp").mkdir(parents=True)
    w = worlds.World("sid", "2.10", tmp_path)
    w.prepare_mountpoints(["/var/tmp/run-1", "/work/src"])
    assert (tmp_path / "var/tmp/run-1").is_dir() and (tmp_path / "work/src").is_dir()
    w.forget_mountpoints(["/var/tmp/run-1", "/work/src"])
    assert not (tmp_path / "var/tmp/run-1").exists() and not (tmp_path / "work").exists()
    assert (tmp_path / "var" / "tmp").is_dir()        # the tree's own directory stays
    assert (tmp_path / worlds.MOUNTPOINTS).read_text() == ""


def test_a_mount_point_with_content_stays(tmp_path):
    w = worlds.World("sid", "2.10", tmp_path)
    w.prepare_mountpoints(["/work/src"])
    (tmp_path / "work/src/file").write_text("x")
    w.forget_mountpoints(["/work/src"])
    assert (tmp_path / "work/src/file").exists()
    assert "work/src" in (tmp_path / worlds.MOUNTPOINTS).read_text()


def test_get_needs_the_ready_marker(tmp_path):
    (tmp_path / "sid").mkdir()
    assert worlds.get("sid", base=tmp_path) is None
    (tmp_path / "sid" / ".ready").write_text("recipe x\n")
    w = worlds.get("sid", base=tmp_path)
    assert w.version == "2.10" and w.root == tmp_path / "sid"
    (tmp_path / "sid" / ".ready").write_text("recipe x\nvirt-v2v 2.12.1-1\nnbdkit 1.48.1-1\n")
    assert worlds.get("sid", base=tmp_path).version == "2.12"
    with pytest.raises(ValueError):
        worlds.get("buster", base=tmp_path)


def test_wait_for_build_waits_while_the_lock_is_held(tmp_path):
    lock = tmp_path / ".build.lock"
    fd = os.open(str(lock), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    slept = []
    assert worlds.wait_for_build(tmp_path, 0, sleep=slept.append) is False
    threading.Timer(0.3, lambda: fcntl.flock(fd, fcntl.LOCK_UN)).start()
    assert worlds.wait_for_build(tmp_path, 30, sleep=lambda s: threading.Event().wait(0.05))
    os.close(fd)
    assert worlds.wait_for_build(tmp_path / "none", 0)       # no build ever ran: no wait


def test_known_hosts_lines_come_and_go_for_the_run_as_user(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown to the run-as user needs root")
    w = worlds.World("sid", "2.10", tmp_path)
    w.run_as_home().mkdir(parents=True)
    kh = worlds.known_hosts(w)
    mine, other = ("[127.0.0.1]:%d ssh-ed25519 AAAA v2vw-fake-esxi:%d:%s" % (port, os.getpid(),
                                                                          tmp_path)
                   for port in (2222, 3333))
    kh.add(mine)
    kh.add(other)                # another session's fake host, same world
    kh.remove(mine)
    assert kh.path.read_text() == other + "\n"
    assert (tmp_path / "etc/ssh/ssh_known_hosts").read_text() == other + "\n"
    assert (kh.path.stat().st_mode & 0o777) == 0o644
    st = kh.path.parent.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (worlds.RUN_AS[1], 0o700)
    assert worlds.known_hosts(worlds.HOST) is None
