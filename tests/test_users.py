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
