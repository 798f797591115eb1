"""wrapper.targets.leftovers: the caller cannot aim a failed job's removal of
its partial output at a directory it could not clean itself -- a link inside
its export domain, a directory swapped after the caller's check, a shared
(sticky or other-writable) output_dir (docs/contract.md §8,
docs/security.md "Partial output").  Fakes run the work in this process; the
real tests drop to ``nobody`` as the wrapper does."""
import logging
import os
import pathlib
import shutil
import tempfile

import pytest

from wrapper.targets import leftovers
from wrapper.users import RunUser
from wrapper.security.boundary import Boundary, Caller
from wrapper.config import LocalTarget
from wrapper import users

ME = RunUser(os.geteuid(), os.getegid(), "me", "/")
NOBODY = RunUser(65534, 65534, "nobody", "/")
SD = "0f0f0f0f-1111-2222-3333-444444444444"
NEW = "11111111-2222-3333-4444-555555555555"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")


def in_process(uid, gid, groups, work, keep=(), timeout=None, what=None):
    return work()


def touch(path, data=b"x"):
    with open(path, "wb") as f:
        f.write(data)


def identity(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def _domain_with_linked(tmp_path, linked):
    """An export domain whose ``<sd>/<linked>`` is a link to ``victim``."""
    domain, victim = tmp_path / "esd", tmp_path / "victim"
    victim.mkdir()
    (victim / "vms").mkdir()
    (domain / SD / "master").mkdir(parents=True)
    if linked == "images":
        (domain / SD / "master" / "vms").mkdir()
        os.symlink(victim, domain / SD / "images")
    else:
        (domain / SD / "images").mkdir()
        os.rmdir(domain / SD / "master")
        os.symlink(victim, domain / SD / "master")
    return domain, victim


@pytest.mark.parametrize("linked", ["images", "master"])
def test_a_linked_export_domain_directory_is_not_watched(tmp_path, caplog, linked):
    domain, victim = _domain_with_linked(tmp_path, linked)
    caplog.set_level(logging.INFO)
    watched = leftovers.watch_export_domain(str(domain), ME, runner=in_process)
    assert len(watched.watches) == 1                        # the honest one only
    assert "a link or not a directory (links are not followed)" in caplog.text
    (victim / NEW).mkdir()                                  # someone's, made during the job
    (victim / "vms" / NEW).mkdir()
    watched.finish(success=False)
    assert (victim / NEW).is_dir() and (victim / "vms" / NEW).is_dir()


def test_a_linked_storage_domain_directory_is_not_watched(tmp_path, caplog):
    domain, victim = tmp_path / "esd", tmp_path / "victim"
    (victim / "images").mkdir(parents=True)
    (victim / "master" / "vms").mkdir(parents=True)
    domain.mkdir()
    os.symlink(victim, domain / SD)
    caplog.set_level(logging.INFO)
    watched = leftovers.watch_export_domain(str(domain), ME, runner=in_process)
    assert watched.watches == []
    (victim / "images" / NEW).mkdir()
    watched.finish(success=False)
    assert (victim / "images" / NEW).is_dir()
    assert "not watching %s/%s/images: a link" % (domain, SD) in caplog.text


def test_walk_at_refuses_links_and_files_at_any_depth(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    os.symlink(tmp_path / "a", tmp_path / "link")
    touch(tmp_path / "a" / "file")
    top = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = leftovers.walk_at(top, ("a", "b"))
        assert os.fstat(fd).st_ino == os.stat(tmp_path / "a" / "b").st_ino
        os.close(fd)
        for parts in (("link",), ("link", "b"), ("a", "file"), ("a", "nope")):
            with pytest.raises(OSError):
                leftovers.walk_at(top, parts)
    finally:
        os.close(top)


def _half_written(domain):
    (domain / SD / "images" / NEW).mkdir()
    (domain / SD / "master" / "vms" / NEW).mkdir()


def _domain(tmp_path):
    domain = tmp_path / "esd"
    (domain / SD / "images").mkdir(parents=True)
    (domain / SD / "master" / "vms").mkdir(parents=True)
    return domain


def test_a_directory_swapped_after_the_callers_check_is_not_watched(tmp_path, caplog):
    checked, swapped = _domain(tmp_path), tmp_path / "swapped"
    seen = identity(checked)
    os.rename(checked, swapped)
    _domain(tmp_path)                                # another directory under the checked name
    os.rename(tmp_path / "esd", tmp_path / "other")
    os.symlink(tmp_path / "other", checked)
    caplog.set_level(logging.INFO)
    for watched in (leftovers.watch_export_domain(str(checked), ME, runner=in_process, seen=seen),
                    leftovers.watch_local(str(checked), "vm", ME, runner=in_process, seen=seen)):
        assert watched.watches == []
        watched.finish(success=False)
    assert "no longer the directory checked as writable by the caller" in caplog.text


def test_the_checked_directory_is_watched_and_cleaned(tmp_path, caplog):
    domain = _domain(tmp_path)
    watched = leftovers.watch_export_domain(str(domain), ME, runner=in_process,
                                            seen=identity(domain))
    _half_written(domain)
    watched.finish(success=False)
    assert os.listdir(domain / SD / "images") == [] == os.listdir(domain / SD / "master" / "vms")
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    local = leftovers.watch_local(str(out), "vm", ME, runner=in_process, seen=identity(out))
    touch(out / "vm-sda")
    local.finish(success=False)
    assert os.listdir(out) == []


@pytest.mark.parametrize("mode, why", [(0o1777, "sticky"), (0o1755, "sticky"),
                                       (0o775, "writable by group or others"),
                                       (0o757, "writable by group or others")])
def test_a_shared_output_dir_keeps_what_is_named_like_the_output(tmp_path, caplog, mode, why):
    out = tmp_path / "shared"
    out.mkdir()
    os.chmod(out, mode)
    watched = leftovers.watch_local(str(out), "vm", ME, runner=in_process)
    touch(out / "vm-sda")                     # maybe another job's, same run-as user
    caplog.set_level(logging.INFO)
    watched.finish(success=False)
    assert (out / "vm-sda").exists()
    assert "left vm-sda in %s: the directory is %s" % (out, why) in caplog.text


def test_an_output_dir_made_shared_during_the_job_keeps_it(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    watched = leftovers.watch_local(str(out), "vm", ME, runner=in_process)
    os.chmod(out, 0o1777)
    touch(out / "vm-sda")
    caplog.set_level(logging.INFO)
    watched.finish(success=False)
    assert (out / "vm-sda").exists() and "sticky" in caplog.text


def test_an_output_dir_another_job_holds_keeps_it(tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    other_job = leftovers.watch_local(str(out), "vm", ME, runner=in_process)
    watched = leftovers.watch_local(str(out), "vm", ME, runner=in_process)
    touch(out / "vm-sda")
    caplog.set_level(logging.INFO)
    watched.finish(success=False)
    assert (out / "vm-sda").exists()
    assert "another job holds this directory" in caplog.text
    other_job.finish(success=False)            # alone now: its own failure removes it
    assert not (out / "vm-sda").exists()


def test_the_callers_check_returns_what_it_found_writable(tmp_path):
    out = tmp_path / "out"
    out.mkdir()

    def opener(caller, path):
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    b = Boundary(Caller(65534, 65534, "nobody", "/nonexistent", True), euid=0,
                 writable_opener=opener)
    assert users.check_caller_can_write(b, LocalTarget(str(out))) == identity(out)
    root = Boundary(Caller(0, 0, "root", "/root"), euid=0, writable_opener=opener)
    assert users.check_caller_can_write(root, LocalTarget(str(out))) is None


# -- the real child, as the run-as user ---------------------------------------------
@pytest.fixture
def scratch():
    top = pathlib.Path(tempfile.mkdtemp(dir="/var/tmp", prefix="v2vw-leftreach-"))
    os.chmod(top, 0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top)


def as_nobody(path):
    for p in [path] + [pathlib.Path(r) / n for r, ds, fs in os.walk(path) for n in ds + fs]:
        os.lchown(p, NOBODY.uid, NOBODY.gid)


@root_only
def test_real_a_link_to_the_run_as_users_own_directory_is_not_cleaned(scratch, caplog):
    """The review's reproducer: ``<sd>/images`` -> a directory only the
    run-as user may write; an image directory it makes there during the
    job survives the job's failure."""
    victim, domain = scratch / "victim-images", scratch / "esd"
    victim.mkdir(mode=0o755)
    os.chown(victim, NOBODY.uid, NOBODY.gid)
    (domain / SD / "master" / "vms").mkdir(parents=True)
    os.chmod(domain / SD / "master" / "vms", 0o777)
    os.symlink(victim, domain / SD / "images")
    caplog.set_level(logging.INFO)
    watched = leftovers.watch_export_domain(str(domain), NOBODY, seen=identity(domain))
    assert [w.path for w in watched.watches] == [str(domain / SD / "master" / "vms")]
    (victim / NEW).mkdir()
    touch(victim / NEW / "disk.img", b"precious")
    as_nobody(victim)
    (domain / SD / "master" / "vms" / NEW).mkdir()            # the job's own: removed
    os.chown(domain / SD / "master" / "vms" / NEW, NOBODY.uid, NOBODY.gid)
    watched.finish(success=False)
    assert (victim / NEW / "disk.img").read_bytes() == b"precious"
    assert os.listdir(domain / SD / "master" / "vms") == []
    assert "not watching %s/%s/images: a link" % (domain, SD) in caplog.text


@root_only
def test_real_a_sticky_shared_output_dir_keeps_another_jobs_file(scratch, caplog):
    """The review's reproducer: a /var/tmp-like output_dir; another job of
    the same run-as user wrote ``prodvm-sda`` during this one."""
    shared = scratch / "sticky"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    watched = leftovers.watch_local(str(shared), "prodvm", NOBODY, seen=identity(shared))
    touch(shared / "prodvm-sda", b"converted-disk")
    os.chown(shared / "prodvm-sda", NOBODY.uid, NOBODY.gid)
    caplog.set_level(logging.INFO)
    watched.finish(success=False)
    assert (shared / "prodvm-sda").read_bytes() == b"converted-disk"
    assert "the directory is sticky" in caplog.text


@root_only
def test_real_a_swapped_output_dir_is_not_cleaned(scratch, caplog):
    checked, other = scratch / "out", scratch / "nobodys"
    checked.mkdir(mode=0o755)
    other.mkdir(mode=0o755)
    os.chown(other, NOBODY.uid, NOBODY.gid)
    seen = identity(checked)
    os.rmdir(checked)
    os.symlink(other, checked)                  # after the caller's check, before the watch
    caplog.set_level(logging.INFO)
    watched = leftovers.watch_local(str(checked), "vm", NOBODY, seen=seen)
    touch(other / "vm-sda")
    os.chown(other / "vm-sda", NOBODY.uid, NOBODY.gid)
    watched.finish(success=False)
    assert (other / "vm-sda").exists()
    assert "no longer the directory checked" in caplog.text
