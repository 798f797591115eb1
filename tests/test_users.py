"""Who runs virt-v2v by default (issue 20, class 3): never root unless an
administrator chose it; an NFS export domain (which needs root) is refused
without that choice."""
import os

import pytest

from tests import wrapperrun as wr
from wrapper import users
from wrapper.config import ExportDomainTarget, LocalTarget
from wrapper.errors import JobError
from wrapper.settings import Settings
from wrapper.users import RunUser

NFS = ExportDomainTarget("nfs.example:/export")
LOCAL = LocalTarget("/var/tmp")


def settings(run_as=None, **environ):
    return Settings(run_as=run_as, environ=environ)


def test_administrator_choice_wins():
    assert users.resolve_run_as(settings("nobody"), LOCAL, ovirt_host=True, euid=0).uid == 65534
    assert users.resolve_run_as(settings("0:0", SUDO_UID="65534"), NFS, euid=0).uid == 0


def test_sudo_caller_is_the_default_off_ovirt_hosts():
    user = users.resolve_run_as(settings(SUDO_UID="65534", SUDO_GID="65533"), LOCAL,
                                ovirt_host=False, euid=0)
    assert (user.uid, user.gid, user.name) == (65534, 65533, "nobody")


def test_sudo_caller_without_a_passwd_entry():
    assert users.resolve_run_as(settings(SUDO_UID="424242"), LOCAL, ovirt_host=False, euid=0) == \
        RunUser(424242, 424242, "424242", "/")


def test_vdsm_on_ovirt_hosts_even_under_sudo(monkeypatch):
    monkeypatch.setattr(users, "lookup", lambda spec, key="run_as": RunUser(36, 36, spec, "/v"))
    user = users.resolve_run_as(settings(SUDO_UID="65534"), LOCAL, ovirt_host=True, euid=0)
    assert (user.uid, user.name) == (36, "vdsm:kvm")


def test_root_itself_without_sudo_runs_as_itself():
    assert users.resolve_run_as(settings(), LOCAL, ovirt_host=False, euid=0).uid == os.geteuid()


def test_not_root_runs_as_itself():
    assert users.resolve_run_as(settings(SUDO_UID="65534"), LOCAL, ovirt_host=True,
                                euid=1000).uid == os.geteuid()


@pytest.mark.parametrize("ovirt", [True, False])
def test_nfs_export_domain_needs_an_administrator(monkeypatch, ovirt):
    monkeypatch.setattr(users, "lookup", lambda spec, key="run_as": RunUser(36, 36, spec, "/v"))
    with pytest.raises(JobError) as e:
        users.resolve_run_as(settings(SUDO_UID="65534"), NFS, ovirt_host=ovirt, euid=0)
    assert "--run-as root" in str(e.value) and "\n" not in str(e.value)


def test_local_export_domain_runs_as_the_default_user():
    user = users.resolve_run_as(settings(SUDO_UID="65534"), ExportDomainTarget("/var/tmp"),
                                ovirt_host=False, euid=0)
    assert user.uid == 65534


def test_nfs_export_domain_as_root_itself_is_allowed():
    assert users.resolve_run_as(settings(), NFS, ovirt_host=False, euid=0).uid == 0


def _run_as_nobody_under_sudo(tmp_path, **target):
    """The real CLI with ``nobody`` as the (simulated) sudo caller and no
    administrator-chosen run-as user; a vddk job with ``target``."""
    d = wr.WrapperDirs(tmp_path)
    job = dict({"vm_name": "vm", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1",
                "vmware_password": "pw", "vmware_fingerprint": ":".join(["AB"] * 20)}, **target)
    env = wr.env(SUDO_UID="65534", SUDO_GID="65534",
                 VIRT_V2V_WRAPPER_LOCK_DIR=str(tmp_path / "lock"))
    env.pop("VIRT_V2V_WRAPPER_RUN_AS", None)
    return d, wr.run(d.args("/bin/false"), job, env=env)


@pytest.mark.skipif(os.geteuid() != 0, reason="the sudo default needs root")
def test_cli_refuses_nfs_export_domain_under_sudo_in_one_line(tmp_path):
    d, r = _run_as_nobody_under_sudo(tmp_path, export_domain="nfs.example:/export")
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "--run-as root" in r.stderr
    assert "Traceback" not in r.stderr
    assert wr.secret_dirs(d.state) == [] and os.listdir(d.state) == []


@pytest.fixture
def reachable():
    """A directory nobody can reach (pytest's tmp_path has 0700 parents)."""
    import pathlib
    import shutil
    import tempfile
    root = tempfile.mkdtemp(prefix="v2vw-users-", dir="/var/tmp")
    os.chmod(root, 0o755)
    yield pathlib.Path(root)
    shutil.rmtree(root, ignore_errors=True)


NOBODY = RunUser(65534, 65534, "nobody", "/nonexistent")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root")
def test_root_only_directory_is_refused_for_a_caller_default(reachable):
    """Asked as the run-as user, with the kernel's answer: root may write
    /root, nobody may not (whatever the modes would suggest to root)."""
    tmp_path = reachable
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    assert users.writable_dir_as(NOBODY, str(open_dir))
    assert not users.writable_dir_as(NOBODY, "/root")
    assert users.writable_dir_as(users.current(), "/root")          # root itself
    shut = tmp_path / "shut"
    shut.mkdir()
    shut.chmod(0o755)                        # root-owned: writable by root only
    assert not users.writable_dir_as(NOBODY, str(shut))
    os.chown(str(shut), 65534, 65534)
    assert users.writable_dir_as(NOBODY, str(shut))
    assert not users.writable_dir_as(NOBODY, str(tmp_path / "missing"))
    assert not users.writable_dir_as(NOBODY, str(tmp_path / "open" / ".." / "shut" / "x"))
    link = tmp_path / "link"
    link.symlink_to("/root")
    assert not users.writable_dir_as(NOBODY, str(link))
    with pytest.raises(JobError) as e:
        users.check_target_dir(NOBODY, LocalTarget("/root"))
    assert str(e.value).startswith("output_dir: /root is not a directory nobody (uid 65534) can write")
    with pytest.raises(JobError):
        users.check_target_dir(NOBODY, ExportDomainTarget("/root"))
    users.check_target_dir(NOBODY, LocalTarget(str(open_dir)))
    users.check_target_dir(NOBODY, NFS)       # virt-v2v mounts it: nothing local to check


def test_check_target_dir_uses_the_run_as_user():
    asked = []
    users.check_target_dir(NOBODY, LocalTarget("/d"), writable=lambda u, p: asked.append((u, p)) or True)
    assert asked == [(NOBODY, "/d")]


@pytest.mark.skipif(os.geteuid() != 0, reason="the sudo default needs root")
def test_cli_refuses_a_root_only_output_dir_for_the_sudo_caller(tmp_path):
    d, r = _run_as_nobody_under_sudo(tmp_path, output_dir="/root")
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert "output_dir: /root is not a directory nobody (uid 65534) can write" in r.stderr
    assert wr.secret_dirs(d.state) == []


# -- the caller must be able to write the directory too (review F10) ---------------------
def test_check_caller_can_write_asks_the_caller_and_names_the_key():
    from wrapper.security.boundary import Boundary, Caller
    import errno
    asked = []

    def denied(caller, path):
        asked.append((caller.uid, path))
        raise OSError(errno.EACCES, "Permission denied")
    caller = Caller(65534, 65534, "nobody", "/nonexistent", True)
    b = Boundary(caller, euid=0, writable_opener=denied)
    with pytest.raises(JobError) as e:
        users.check_caller_can_write(b, LocalTarget("/etc/sudoers.d"))
    assert e.value.key == "output_dir" and asked == [(65534, "/etc/sudoers.d")]
    assert str(e.value) == ("output_dir: /etc/sudoers.d is not a directory you (uid 65534) can "
                            "write: Permission denied")
    with pytest.raises(JobError) as e:
        users.check_caller_can_write(b, ExportDomainTarget("/etc/sudoers.d"))
    assert e.value.key == "export_domain"
    users.check_caller_can_write(b, NFS)                   # nothing local: virt-v2v mounts it
    root = Boundary(Caller(0, 0, "root", "/root"), euid=0, writable_opener=denied)
    users.check_caller_can_write(root, LocalTarget("/etc/sudoers.d"))     # root may
    assert len(asked) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root")
def test_the_caller_check_is_the_kernels_answer_for_the_caller(reachable):
    from wrapper.security.boundary import Boundary, Caller, CallerOpenError
    caller = Boundary(Caller(65534, 65534, "nobody", "/nonexistent", True))
    shut = reachable / "shut"                    # root 0755: reachable, not writable
    shut.mkdir()
    shut.chmod(0o755)
    sticky = reachable / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (reachable / "file").write_text("x")
    with pytest.raises(CallerOpenError, match="^Permission denied$"):
        caller.check_writable_dir(str(shut))
    assert caller.check_writable_dir(str(sticky)).st_uid == 0
    with pytest.raises(CallerOpenError, match="^No such file or directory$"):
        caller.check_writable_dir(str(reachable / "missing"))
    with pytest.raises(CallerOpenError, match="^Not a directory$"):
        caller.check_writable_dir(str(reachable / "file"))
    with pytest.raises(CallerOpenError, match="^Permission denied$"):
        caller.check_writable_dir("/root")
    os.chown(str(shut), 65534, 65534)
    assert caller.check_writable_dir(str(shut)).st_uid == 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="the sudo default needs root")
def test_run_as_root_does_not_write_where_the_caller_cannot(tmp_path, reachable):
    """Review F10: with --run-as root, output_dir a root 0755 directory the
    sudo caller can reach but not write (/etc/sudoers.d in the review):
    refused in one line before virt-v2v or its probe runs."""
    shut = reachable / "shut"
    shut.mkdir()
    shut.chmod(0o755)
    record = reachable / "ran"
    exe = reachable / "virt-v2v"
    exe.write_text("#!/bin/sh\ntouch %s\necho virt-v2v\n" % record)
    exe.chmod(0o755)
    d = wr.WrapperDirs(tmp_path)
    job = {"vm_name": "vm", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1",
           "vmware_password": "pw", "vmware_fingerprint": ":".join(["AB"] * 20),
           "output_dir": str(shut), "daemonize": False}
    env = wr.env(SUDO_UID="65534", SUDO_GID="65534", VIRT_V2V_WRAPPER_LOCK_DIR=str(tmp_path / "lock"),
                 VIRT_V2V_WRAPPER_SYSTEMD_MARKER=str(tmp_path / "no-systemd"))
    r = wr.run(d.args(str(exe)) + ["--run-as", "root"], job, env=env)
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert ("output_dir: %s is not a directory you (uid 65534) can write: Permission denied"
            % shut) in r.stderr
    assert not record.exists() and os.listdir(str(shut)) == [] and wr.secret_dirs(d.state) == []
    shut.chmod(0o777)                            # the caller may write: accepted, runs as root
    r = wr.run(d.args(str(exe)) + ["--run-as", "root"], job, env=env)
    assert "is not a directory you" not in r.stderr and record.exists(), r.stderr
