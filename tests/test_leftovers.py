"""wrapper.targets.leftovers: a failed conversion's partial output removed,
exactly what it created and nothing else (docs/contract.md §8)."""
import logging
import os
import pathlib
import shutil
import tempfile

import pytest

from wrapper.targets import leftovers
from wrapper.users import RunUser

ME = RunUser(os.geteuid(), os.getegid(), "me", "/")
NOBODY = RunUser(65534, 65534, "nobody", "/")
UUID1 = "11111111-2222-3333-4444-555555555555"
UUID2 = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
SD = "0f0f0f0f-1111-2222-3333-444444444444"


def in_process(uid, gid, groups, work, keep=(), timeout=None, what=None):
    """A runner that does the work here (the real one forks and drops rights)."""
    return work()


def touch(path, data=b"x"):
    with open(path, "wb") as f:
        f.write(data)


def test_local_match_names_only_this_vms_output():
    match = leftovers.local_match("vm")
    assert match("vm-sda") and match("vm-sdb") and match("vm-sdaa") and match("vm.xml")
    for other in ("vm", "vm-sd", "vm-sdA", "vm-sda.tmp", "vm-sda1", "vm2-sda", "other-sda",
                  "xvm-sda", "vm.xml~", ".vm-sda", "vm-hda"):
        assert not match(other), other


def test_uuid_names():
    assert leftovers.is_uuid(UUID1)
    assert not leftovers.is_uuid(UUID2.upper()) and not leftovers.is_uuid(UUID1 + "x")
    assert not leftovers.is_uuid("images")


def test_failure_removes_new_output_and_keeps_the_rest(tmp_path, caplog):
    touch(tmp_path / "vm-sdb", b"kept")          # there before: same name, same inode
    touch(tmp_path / "notes.txt")
    watched = leftovers.watch_local(str(tmp_path), "vm", ME, runner=in_process)
    touch(tmp_path / "vm-sda")
    touch(tmp_path / "vm.xml")
    touch(tmp_path / "vm-sdb", b"rewritten in place")   # same inode: still the user's old file
    touch(tmp_path / "other-sda")                        # another VM's
    caplog.set_level(logging.INFO)
    watched.finish(success=False)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "other-sda", "vm-sdb"]
    assert "removed its partial output in %s: vm-sda, vm.xml" % tmp_path in caplog.text
    assert "left vm-sdb" in caplog.text and "was there before" in caplog.text
    assert watched.watches[0].fd is None                 # closed


def test_success_keeps_everything(tmp_path):
    watched = leftovers.watch_local(str(tmp_path), "vm", ME, runner=in_process)
    touch(tmp_path / "vm-sda")
    touch(tmp_path / "vm.xml")
    watched.finish(success=True)
    assert sorted(os.listdir(tmp_path)) == ["vm-sda", "vm.xml"]


def test_a_planted_symlink_is_left_and_its_target_kept(tmp_path, caplog):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    touch(elsewhere / "precious")
    watched = leftovers.watch_local(str(out), "vm", ME, runner=in_process)
    os.symlink(elsewhere / "precious", out / "vm-sda")
    os.symlink(elsewhere, out / "vm.xml")
    caplog.set_level(logging.INFO)
    watched.finish(success=False)
    assert (elsewhere / "precious").read_bytes() == b"x"
    assert os.path.islink(out / "vm-sda") and os.path.islink(out / "vm.xml")
    assert "not a regular file" in caplog.text


def test_a_pre_existing_file_replaced_by_a_new_one_is_new(tmp_path):
    """Same name, another inode: virt-v2v replaced it (it was the user's own
    to replace), so the new file is this run's output."""
    touch(tmp_path / "vm-sda", b"old")
    watched = leftovers.watch_local(str(tmp_path), "vm", ME, runner=in_process)
    touch(tmp_path / "new", b"new partial")      # created first: a fresh inode
    os.rename(tmp_path / "new", tmp_path / "vm-sda")
    watched.finish(success=False)
    assert not (tmp_path / "vm-sda").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_another_users_file_under_the_name_is_left(tmp_path, caplog):
    watched = leftovers.watch_local(str(tmp_path), "vm", ME, runner=in_process)
    touch(tmp_path / "vm-sda")
    os.chown(tmp_path / "vm-sda", 4242, 4242)
    caplog.set_level(logging.INFO)
    watched.finish(success=False)
    assert (tmp_path / "vm-sda").exists()
    assert "owned by uid 4242" in caplog.text


def test_a_name_swapped_after_the_plan_is_not_removed(tmp_path):
    """Between the plan and the removal the name is swapped for another
    file: the removal checks the inode again and leaves it."""
    touch(tmp_path / "vm-sda")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        remove, _left = leftovers.plan(frozenset(), leftovers.listing(fd),
                                       leftovers.local_match("vm"), False, ME.uid)
        assert [e.name for e in remove] == ["vm-sda"]
        touch(tmp_path / "other")
        os.unlink(tmp_path / "vm-sda")
        os.link(tmp_path / "other", tmp_path / "vm-sda")   # someone else's inode, same name
        leftovers._remove_planned(fd, remove)
    finally:
        os.close(fd)
    assert (tmp_path / "vm-sda").exists() and (tmp_path / "other").exists()


def test_a_missing_directory_is_one_oserror(tmp_path):
    with pytest.raises(OSError):
        leftovers.watch_local(str(tmp_path / "nope"), "vm", ME, runner=in_process)


def _export_domain(tmp_path):
    domain = tmp_path / "esd"
    for sub in ("images", "master/vms", "dom_md"):
        (domain / SD / sub).mkdir(parents=True)
    (domain / SD / "images" / UUID2).mkdir()            # another VM's, from before
    touch(domain / SD / "images" / UUID2 / "vol")
    return domain


def _half_written(domain):
    image = domain / SD / "images" / UUID1
    (image / "deep").mkdir(parents=True)
    touch(image / "vol")
    touch(image / "vol.meta")
    (domain / SD / "images" / "tmp-not-a-uuid").mkdir()
    (domain / SD / "master" / "vms" / UUID1).mkdir()


def test_export_domain_failure_removes_new_uuid_directories(tmp_path):
    domain = _export_domain(tmp_path)
    watched = leftovers.watch_export_domain(str(domain), ME, runner=in_process)
    assert len(watched.watches) == 2
    _half_written(domain)
    watched.finish(success=False)
    assert sorted(os.listdir(domain / SD / "images")) == [UUID2, "tmp-not-a-uuid"]
    assert os.listdir(domain / SD / "master" / "vms") == []
    assert (domain / SD / "images" / UUID2 / "vol").exists()


def test_export_domain_with_another_job_writing_removes_nothing(tmp_path, caplog):
    domain = _export_domain(tmp_path)
    other_job = leftovers.watch_export_domain(str(domain), ME, runner=in_process)
    watched = leftovers.watch_export_domain(str(domain), ME, runner=in_process)
    _half_written(domain)
    caplog.set_level(logging.INFO)
    watched.finish(success=False)
    assert (domain / SD / "images" / UUID1 / "vol").exists()
    assert "another job holds this directory" in caplog.text
    other_job.finish(success=True)


def test_export_domain_without_its_directories_watches_nothing(tmp_path):
    (tmp_path / SD).mkdir()
    watched = leftovers.watch_export_domain(str(tmp_path), ME, runner=in_process)
    assert watched.watches == []
    watched.finish(success=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_removal_runs_with_the_run_as_users_rights(caplog):
    """The real child: a file the run-as user owns in a directory it cannot
    write (root's, 0755) is left -- root could remove it, the user cannot."""
    top = pathlib.Path(tempfile.mkdtemp(dir="/var/tmp", prefix="v2vw-leftovers-"))
    try:
        os.chmod(top, 0o755)
        _as_the_run_as_user(top / "out", caplog)
    finally:
        shutil.rmtree(top)


def _as_the_run_as_user(out, caplog):
    out.mkdir(mode=0o755)
    watched = leftovers.watch_local(str(out), "vm", NOBODY)
    touch(out / "vm-sda")
    os.chown(out / "vm-sda", NOBODY.uid, NOBODY.gid)
    caplog.set_level(logging.INFO)
    watched.finish(success=False)
    assert (out / "vm-sda").exists()
    assert "could not be removed as uid 65534" in caplog.text
    # and where the user may write, the same child removes it
    os.chown(out, NOBODY.uid, NOBODY.gid)
    again = leftovers.watch_local(str(out), "vm", NOBODY)
    touch(out / "new")
    os.rename(out / "new", out / "vm-sda")
    os.chown(out / "vm-sda", NOBODY.uid, NOBODY.gid)
    again.finish(success=False)
    assert not (out / "vm-sda").exists()


def test_export_domain_locked_by_someone_else_is_not_waited_for(tmp_path, caplog):
    """Anyone who can open the directory can hold an exclusive lock on it: the
    job neither waits for it nor removes anything there."""
    import fcntl
    domain = _export_domain(tmp_path)
    holder = os.open(domain / SD / "images", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        watched = leftovers.watch_export_domain(str(domain), ME, runner=in_process)
        _half_written(domain)
        caplog.set_level(logging.INFO)
        watched.finish(success=False)
    finally:
        os.close(holder)
    assert (domain / SD / "images" / UUID1 / "vol").exists()          # left: not ours to judge
    assert not (domain / SD / "master" / "vms" / UUID1).exists()      # that one was not locked
    assert "another job holds this directory" in caplog.text
