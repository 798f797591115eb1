"""The privilege boundary (wrapper/security/boundary.py): who the caller is, and
opening what the caller names with the caller's rights.

Fakes: an injected opener records who it opened as and what it returns.  Real:
the fork/SCM_RIGHTS opener run as root for the caller ``nobody`` (a uid with a
passwd entry) and for a uid without one, against root-only files."""
import errno
import json
import os
import stat

import pytest

from wrapper import config, jobinput, luks
from wrapper.errors import JobError
from wrapper.security import aschild, boundary
from wrapper.security.boundary import Boundary, Caller, CallerOpenError
from wrapper.settings import Settings

NOBODY = Caller(65534, 65534, "nobody", "/nonexistent", True)
NO_PASSWD = Caller(54321, 54321, None, None, True)
HOMELESS = Caller(65534, 65534, "nobody", None, True)       # no default LUKS vault to look for
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to another uid needs root")


# -- who the caller is ----------------------------------------------------------------------
def test_the_sudo_caller_when_root_runs_us_through_sudo():
    c = boundary.caller_from({"SUDO_UID": "65534", "SUDO_GID": "65534", "HOME": "/root"},
                             getuid=lambda: 0, getgid=lambda: 0)
    assert (c.uid, c.gid, c.name, c.via_sudo) == (65534, 65534, "nobody", True)
    assert c.home == "/nonexistent"              # the caller's home, not root's HOME


def test_root_without_sudo_and_a_plain_user():
    c = boundary.caller_from({"HOME": "/srv/h"}, getuid=lambda: 0, getgid=lambda: 0)
    assert (c.uid, c.gid, c.via_sudo, c.home, c.is_root) == (0, 0, False, "/srv/h", True)
    # a plain user cannot claim to be someone else with SUDO_UID
    c = boundary.caller_from({"SUDO_UID": "0", "HOME": "/h"}, getuid=lambda: 1234, getgid=lambda: 99)
    assert (c.uid, c.gid, c.via_sudo, c.home) == (1234, 99, False, "/h")
    c = boundary.caller_from({"SUDO_UID": "bogus"}, getuid=lambda: 0, getgid=lambda: 0)
    assert c.uid == 0 and not c.via_sudo


def test_groups_of_a_uid_without_passwd_entry():
    assert NO_PASSWD.groups() == [54321]
    assert 65534 in NOBODY.groups()


# -- the opener seam ------------------------------------------------------------------------
class FakeOpener:
    def __init__(self, result, dirs_too=False):
        self.result, self.calls, self.dirs_too = result, [], dirs_too

    def __call__(self, caller, path, flags=boundary.OPEN_FLAGS):
        if flags == boundary.DIR_FLAGS and not self.dirs_too:
            return os.open(path, flags)          # directories: see test_output_dirs_...
        self.calls.append((caller.uid, path))
        if isinstance(self.result, int):
            raise OSError(self.result, os.strerror(self.result))
        return os.open(self.result, os.O_RDONLY | os.O_NONBLOCK)


def test_root_uses_the_opener_for_another_caller_and_not_for_itself(tmp_path):
    f = tmp_path / "f"
    f.write_text("data")
    opener = FakeOpener(str(f))
    assert Boundary(NOBODY, opener=opener, euid=0).read("/any/name", 10)[0] == b"data"
    assert opener.calls == [(65534, "/any/name")]
    root = Caller(0, 0, "root", "/root")
    assert Boundary(root, opener=opener, euid=0).read(str(f), 10)[0] == b"data"
    assert Boundary(NOBODY, opener=opener, euid=65534).read(str(f), 10)[0] == b"data"
    assert len(opener.calls) == 1                # root's own caller and an unprivileged run: direct


@pytest.mark.parametrize("code, text", [(errno.EACCES, "Permission denied"),
                                        (errno.ENOENT, "No such file or directory"),
                                        (errno.ELOOP, "Too many levels of symbolic links")])
def test_the_message_is_the_callers_own_errno(code, text):
    b = Boundary(NOBODY, opener=FakeOpener(code), euid=0)
    with pytest.raises(CallerOpenError) as e:
        b.read("/root/secret", 10)
    assert e.value.errno == code and str(e.value) == text


def test_what_the_caller_opened_is_checked(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * 11)
    for name, words in (("fifo", "not a regular file"), ("big", "larger than 10 bytes"),
                        ("", "not a regular file")):
        with pytest.raises(CallerOpenError, match=words):
            Boundary(NOBODY, opener=FakeOpener(str(tmp_path / name)), euid=0).read("/x", 10)
    assert Boundary(NOBODY, opener=FakeOpener(str(tmp_path)), euid=0).check("/x", dirs=True)
    with pytest.raises(CallerOpenError, match="valid file name"):
        Boundary(NOBODY, opener=FakeOpener(str(tmp_path)), euid=0).read("/a\0b", 10)


def test_integrity_problems_speak_of_the_callers_own_descriptor():
    def st(uid, mode):
        return os.stat_result((stat.S_IFREG | mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))
    owners = frozenset({0, 1000})
    assert boundary.integrity_problem(st(1000, 0o600), owners, private=True) is None
    assert boundary.integrity_problem(st(0, 0o644), owners) is None
    assert "owned by uid 4242, not by you or root" in boundary.integrity_problem(st(4242, 0o600), owners)
    assert "writable by group or others" in boundary.integrity_problem(st(1000, 0o620), owners)
    assert "accessible by others" in boundary.integrity_problem(st(0, 0o644), owners, private=True)


# -- the real child: fork, drop, open, SCM_RIGHTS ---------------------------------------------
@pytest.fixture
def public(tmp_path_factory):
    """A 0755 directory every user can reach (pytest's own tmp is root's 0700)."""
    import pathlib
    import shutil
    import tempfile
    d = pathlib.Path(tempfile.mkdtemp(prefix="v2vw-boundary-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


@pytest.fixture
def root_only(public):
    f = public / "root-only"
    f.write_text("ROOT-SECRET")
    f.chmod(0o600)
    return f


@needs_root
@pytest.mark.parametrize("caller", [NOBODY, NO_PASSWD])
def test_the_child_opens_with_the_callers_rights(public, root_only, caller):
    tmp_path = public
    with pytest.raises(CallerOpenError) as e:
        Boundary(caller).read(str(root_only), 100)
    assert e.value.errno == errno.EACCES and "ROOT" not in str(e.value)
    readable = tmp_path / "readable"
    readable.write_text("shared")
    readable.chmod(0o644)
    data, st = Boundary(caller).read(str(readable), 100)
    assert data == b"shared" and st.st_uid == 0
    with pytest.raises(CallerOpenError) as e:
        Boundary(caller).read(str(tmp_path / "missing"), 100)
    assert e.value.errno == errno.ENOENT


@needs_root
def test_the_child_uses_the_supplementary_groups(public):
    """A file readable only through a group the caller has as a supplementary one."""
    import grp
    import pwd
    name = next((pw.pw_name for pw in pwd.getpwall() if pw.pw_uid != 0 and
                 any(pw.pw_name in g.gr_mem and g.gr_gid != pw.pw_gid for g in grp.getgrall())), None)
    if name is None:
        pytest.skip("no user with a supplementary group here")
    pw = pwd.getpwnam(name)
    extra = next(g.gr_gid for g in grp.getgrall() if name in g.gr_mem and g.gr_gid != pw.pw_gid)
    f = public / "group-file"
    f.write_text("g")
    os.chown(f, 0, extra)
    f.chmod(0o640)
    caller = Caller(pw.pw_uid, pw.pw_gid, name, pw.pw_dir, True)
    assert Boundary(caller).read(str(f), 10)[0] == b"g"


@needs_root
def test_the_child_passes_no_descriptor_it_should_not(root_only):
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(CallerOpenError):
            Boundary(NOBODY).read(str(root_only), 100)
    assert set(os.listdir("/proc/self/fd")) == before        # nothing leaked in the parent


# -- through the job readers (fake opener) -----------------------------------------------------
def test_read_supplied_file_refuses_with_the_errno_only():
    b = Boundary(NOBODY, opener=FakeOpener(errno.EACCES), euid=0)
    with pytest.raises(JobError) as e:
        jobinput.read_supplied_file(b, "/root/.ssh/id_rsa", "the ssh_key file", "ssh_key_file", private=True)
    assert e.value.key == "ssh_key_file"
    assert str(e.value).endswith("cannot open the ssh_key file /root/.ssh/id_rsa: Permission denied")


def test_a_descriptor_that_cannot_be_read_is_a_one_line_refusal(tmp_path):
    """Review F7 (fake): reading what the caller opened fails (here EBADF: a
    write-only descriptor); the job readers refuse naming the key, with the
    errno text only, no traceback."""
    f = tmp_path / "f"
    f.write_text("secret-bytes")
    f.chmod(0o600)

    def write_only(_caller, _path, _flags=boundary.OPEN_FLAGS):
        return os.open(str(f), os.O_WRONLY)
    b = Boundary(NOBODY, opener=write_only, euid=0)
    b.owners = lambda: frozenset({0, os.geteuid()})
    with pytest.raises(boundary.CallerReadError, match="^cannot be read: Bad file descriptor$"):
        b.read("/x", 100)
    with pytest.raises(JobError) as e:
        jobinput.read_supplied_file(b, "/x", "the vmware_password file", "vmware_password_file")
    assert e.value.key == "vmware_password_file" and "secret" not in str(e.value)
    assert str(e.value).endswith("the vmware_password file /x cannot be read: Bad file descriptor")
    with pytest.raises(JobError) as e:
        luks.read_vault(b, "/x", "vm1")
    assert str(e.value).endswith("the LUKS keys vault /x cannot be read: Bad file descriptor")


@needs_root
@pytest.mark.parametrize("key", ["vmware_password_file", "ssh_key_file", "luks_keys_vault"])
def test_a_proc_file_of_the_boundary_child_is_refused_not_a_crash(tmp_path, key):
    """Review F7 (real): /proc/self/maps opened by the boundary's child, which
    has exited when the parent reads it (ESRCH)."""
    job = {"vm_name": "vm1", "transport_method": "vddk", "vmware_uri": "esx://root@h?no_verify=1",
           "vmware_password": "pw", "vmware_fingerprint": ":".join(["AB"] * 20),
           "output_dir": str(tmp_path / "out"), key: "/proc/self/maps"}
    if key == "vmware_password_file":
        del job["vmware_password"]
    if key == "ssh_key_file":
        job.update(vm_name="ssh://root@h/vmfs/volumes/ds/vm/vm.vmx", transport_method="ssh")
    _cfg, problems = config.collect(job, _settings(tmp_path), Boundary(HOMELESS))
    mine = [p for p in problems if p.key == key]          # (nobody cannot reach root's tmp_path)
    assert len(mine) == 1 and str(mine[0]).endswith("/proc/self/maps cannot be read: No such process")


def _settings(tmp_path):
    (tmp_path / "out").mkdir(exist_ok=True)
    return Settings(state_dir=str(tmp_path), iso_domain_root=str(tmp_path / "mnt"),
                    vdsm_ca=str(tmp_path / "ca.pem"), environ={})


@pytest.mark.parametrize("key", ["vmware_password_file", "luks_keys_vault", "virtio_win"])
def test_every_named_path_of_the_job_goes_through_the_boundary(tmp_path, key):
    opener = FakeOpener(errno.EACCES)
    b = Boundary(HOMELESS, opener=opener, euid=0)
    job = {"vm_name": "vm1", "transport_method": "vddk", "vmware_uri": "esx://root@h?no_verify=1",
           "vmware_password": "pw", "vmware_fingerprint": ":".join(["AB"] * 20),
           "output_dir": str(tmp_path / "out"), key: "/root/named"}
    if key == "vmware_password_file":
        del job["vmware_password"]
    _cfg, problems = config.collect(job, _settings(tmp_path), b)
    assert ("/root/named" in [p for _u, p in opener.calls])
    assert [p.key for p in problems] == [key]
    assert str(problems[0]).endswith("/root/named: Permission denied")


def test_rhv_cafile_and_ssh_key_file_go_through_the_boundary(tmp_path):
    opener = FakeOpener(errno.EACCES)
    b = Boundary(HOMELESS, opener=opener, euid=0)
    job = {"vm_name": "ssh://root@h/vmfs/volumes/ds/vm/vm.vmx", "transport_method": "ssh",
           "ssh_key_file": "/etc/ssh/ssh_host_ed25519_key", "rhv_url": "https://engine/ovirt-engine/api",
           "rhv_password": "pw", "rhv_cluster": "c", "rhv_storage": "s", "rhv_cafile": "/root/ca.pem"}
    _cfg, problems = config.collect(job, _settings(tmp_path), b)
    assert sorted(p.key for p in problems) == ["rhv_cafile", "ssh_key_file"]
    assert all(str(p).endswith("Permission denied") for p in problems)
    assert [p for _u, p in opener.calls] == ["/etc/ssh/ssh_host_ed25519_key", "/root/ca.pem"]


@pytest.mark.parametrize("key", ["output_dir", "export_domain"])
def test_output_directories_are_reached_with_the_callers_rights(tmp_path, key):
    opener = FakeOpener(errno.EACCES, dirs_too=True)
    job = {"vm_name": "vm1", "transport_method": "vddk", "vmware_uri": "esx://root@h?no_verify=1",
           "vmware_password": "pw", "vmware_fingerprint": ":".join(["AB"] * 20), key: "/root/private"}
    _cfg, problems = config.collect(job, _settings(tmp_path), Boundary(HOMELESS, opener=opener, euid=0))
    assert opener.calls == [(65534, "/root/private")]
    assert [p.key for p in problems] == [key] and str(problems[0]).endswith("/root/private: Permission denied")


@needs_root
def test_a_directory_the_caller_may_only_search_is_usable(public):
    d = public / "drop"
    d.mkdir(mode=0o733)
    d.chmod(0o733)                                  # write and search, no read
    assert stat.S_ISDIR(Boundary(NOBODY).check_dir(str(d)).st_mode)
    (public / "file").write_text("x")
    with pytest.raises(CallerOpenError, match="Not a directory"):
        Boundary(NOBODY).check_dir(str(public / "file"))


def test_the_default_vault_is_in_the_callers_home_and_optional():
    opener = FakeOpener(errno.ENOENT)
    b = Boundary(NOBODY, opener=opener, euid=0)
    assert luks.default_vault(NOBODY) == "/nonexistent/.v2v_luks_keys_vault.json"
    assert luks.read_vault(b, luks.default_vault(NOBODY), "vm1", optional=True) == ()
    assert luks.default_vault(NO_PASSWD) is None
    denied = Boundary(NOBODY, opener=FakeOpener(errno.EACCES), euid=0)
    with pytest.raises(JobError, match="Permission denied"):
        luks.read_vault(denied, "/nonexistent/.v2v_luks_keys_vault.json", "vm1", optional=True)


def test_a_vault_the_caller_may_read_but_others_can_too_is_refused(tmp_path):
    v = tmp_path / "v.json"
    v.write_text(json.dumps({"vm1": []}))
    v.chmod(0o640)
    with pytest.raises(JobError, match="accessible by group or others"):
        luks.read_vault(Boundary(Caller(os.geteuid(), os.getegid())), str(v), "vm1")
    v.chmod(0o600)
    assert luks.read_vault(Boundary(Caller(os.geteuid(), os.getegid())), str(v), "vm1") == ()


# -- passwords inside URIs ---------------------------------------------------------------------
@pytest.mark.parametrize("uri, has", [
    ("esx://root:PW@host?no_verify=1", True), ("esx://root:@host", True),
    ("ssh://root:p%40ss@h:22/vmfs/volumes/ds/vm/vm.vmx", True), ("https://a:b@engine/api", True),
    ("esx://root@host?no_verify=1", False), ("esx://host:443/dc?x=a:b@c", False),
    ("ssh://root@[fd00::1]:22/vmfs/vm.vmx", False), ("vm1", False), ("esx://root@h/p:q@r", False),
])
def test_uri_has_password(uri, has):
    assert config.uri_has_password(uri) is has


PW = "Sup3r-S3cret"


@pytest.mark.parametrize("key, value, job_kind", [
    ("vmware_uri", "esx://root:%s@10.2.0.20?no_verify=1" % PW, "vddk"),
    ("vm_name", "ssh://root:%s@127.0.0.1/vmfs/volumes/ds/vm/vm.vmx" % PW, "ssh"),
    ("vm_name", "esx://root:%s@h/vm" % PW, "vddk"),
    ("rhv_url", "https://admin:%s@[engine/ovirt-engine/api" % PW, "vddk"),   # not even parseable
    ("vmware_uri", "esx://root:%s\uff03@h" % PW, "vddk"),    # urlsplit's NFKC error repeats netlocs
])
def test_a_password_in_a_uri_is_refused_without_repeating_it(tmp_path, key, value, job_kind):
    job = {"vm_name": "vm1", "transport_method": job_kind, "output_dir": str(tmp_path / "out"),
           "vmware_uri": "esx://root@h?no_verify=1", "vmware_password": "x",
           "vmware_fingerprint": ":".join(["AB"] * 20)}
    if job_kind == "ssh":
        job = {"vm_name": "ssh://root@h/vmfs/vm.vmx", "transport_method": "ssh", "output_dir": job["output_dir"]}
    if key == "rhv_url":
        job.update(rhv_password="p", rhv_cluster="c", rhv_storage="s", insecure_connection=True)
        del job["output_dir"]
    job[key] = value
    _cfg, problems = config.collect(job, _settings(tmp_path), Boundary(HOMELESS, opener=FakeOpener(2), euid=0))
    assert [p.key for p in problems] == [key]
    assert "must not contain a password" in str(problems[0])
    assert all(PW not in str(p) for p in problems)


def test_a_password_in_a_uri_never_reaches_stderr_the_log_or_argv(tmp_path):
    """Through the real command line, foreground: one line, exit 1, and the
    password in no file the wrapper wrote and no process it started."""
    from tests import wrapperrun as wr
    from tests.fakes import make_fake_v2v
    dirs = wr.WrapperDirs(tmp_path)
    record = tmp_path / "record.json"
    exe = make_fake_v2v(dirs.bin, record=str(record))
    job = {"vm_name": "vm1", "transport_method": "vddk", "vmware_uri": "esx://root:%s@127.0.0.1?no_verify=1" % PW,
           "vmware_password": "x", "vmware_fingerprint": ":".join(["AB"] * 20), "output_dir": dirs.out,
           "daemonize": False}
    r = wr.run(dirs.args(exe), job)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "vmware_uri" in r.stderr and "must not contain a password" in r.stderr
    assert PW not in r.stdout + r.stderr
    assert not record.exists()                  # virt-v2v never ran: nothing had it in argv
    for d in (dirs.logs, dirs.state):
        for name in os.listdir(d):
            assert PW not in (pathlib_read(os.path.join(d, name)))
    r = wr.run(dirs.args(exe) + ["--validate"], job)
    assert r.returncode == 1 and PW not in r.stdout + r.stderr


def pathlib_read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def _hang():
    import time
    time.sleep(60)


def _die():
    os._exit(3)


def _children():
    """PIDs of this process's children, zombies included (from /proc)."""
    me, found = str(os.getpid()), set()
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me:
            found.add(int(pid))
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_a_child_that_hangs_is_killed_and_one_that_dies_is_an_error():
    before = _children()          # other tests' children are not this test's business
    with pytest.raises(OSError) as e:
        aschild.run_as(65534, 65534, [], _hang, timeout=0.5)
    assert e.value.errno == errno.ETIMEDOUT
    with pytest.raises(OSError) as e:
        aschild.run_as(65534, 65534, [], _die)
    assert e.value.errno == errno.EIO
    assert _children() <= before                     # both children were reaped


def _report_descriptors():
    # what the child keeps after its cleanup, reported as an "errno"
    fds = sorted(int(n) for n in os.listdir("/proc/self/fd"))
    targets = [os.readlink("/proc/self/fd/%d" % fd) for fd in (0, 1, 2)]
    raise OSError(len(fds) if all(t == os.devnull for t in targets) else 99, "report")


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_the_child_keeps_none_of_roots_descriptors(tmp_path):
    held = [os.open(str(tmp_path), os.O_RDONLY) for _ in range(5)]
    try:
        with pytest.raises(OSError) as e:
            aschild.run_as(65534, 65534, [], _report_descriptors, keep=(held[0],))
        # /dev/null as stdin, stdout and stderr, the socket, the kept descriptor, and
        # listdir's own descriptor
        assert e.value.errno == 6
    finally:
        for fd in held:
            os.close(fd)


def _in_a_child(fn):
    """What ``fn()`` returns (bytes), run in a forked child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, fn())
        finally:
            os._exit(0)
    os.close(w)
    answer = os.read(r, 200)
    os.close(r)
    os.waitpid(pid, 0)
    return answer


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_a_child_that_became_another_user_is_not_dumpable():
    """Whatever fs.suid_dumpable says, the user a root child becomes can
    neither ptrace it nor read its memory (second review)."""
    def child():
        aschild.become(65534, 65534, [])
        return str(aschild._PRCTL(aschild.PR_GET_DUMPABLE, 0, 0, 0, 0)).encode()
    assert _in_a_child(child) == b"0"


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root")
def test_become_asks_for_not_dumpable_itself():
    """The kernel clears "dumpable" on a uid change only while fs.suid_dumpable
    is 0 (as here): become() asks for it itself, after the change."""
    def child():
        calls = []
        aschild.become(65534, 65534, [], prctl=lambda *a: calls.append((a, os.getuid())))
        return repr(calls).encode()
    assert _in_a_child(child) == repr([((aschild.PR_SET_DUMPABLE, 0, 0, 0, 0), 65534)]).encode()
