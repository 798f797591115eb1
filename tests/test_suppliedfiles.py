"""Files the caller names: ``--job FILE`` and the ``*_file`` secrets (a mounted ConfigMap or
Secret).  Opened WITH THE CALLER'S RIGHTS through wrapper/security/boundary.py and read
once, by descriptor (jobinput.read_supplied_file, config's secret files).

These tests used to check the old root-side walk (fsafe.open_trusted_path): every
directory and link on the way owned by a trusted uid, one link, owner checks as root.
That walk is gone: the kernel now decides what may be opened, with the caller's own
uid, gid and groups (links followed as the caller's open() follows them,
protected_symlinks applied to the caller).  What is left to check on the descriptor
-- a regular file, bounded, owned by the caller or root, not writable by group or
others, a secret closed to others -- is tested here; the real-user attacks are in
tests/integration/test_security_boundary.py."""
import json
import os
import pathlib
import shutil
import tempfile

import pytest

from tests import wrapperrun as wr
from tests.fakes import data, make_fake_v2v
from wrapper import config, jobinput
from wrapper.errors import JobError
from wrapper.security.boundary import Boundary, Caller, CallerOpenError
from wrapper.settings import resolve

ME = Boundary(Caller(os.geteuid(), os.getegid()))
OTHER = 65534          # nobody: another user
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")


def write(path, text, mode=0o600):
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def public():
    """A 0755 directory any user can reach (pytest's tmp is root's and 0700)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="v2vw-supplied-", dir="/var/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


# -- the boundary's reader ---------------------------------------------------------------------
def read(path, boundary=ME):
    return boundary.read(str(path), 1 << 20)[0]


def test_a_plain_file_is_read(tmp_path):
    assert read(write(tmp_path / "f", "x")) == b"x"


def test_kubernetes_style_links_are_followed(tmp_path):
    """A ConfigMap/Secret volume: key -> ..data/key, ..data -> ..<timestamp>/, in a sticky
    world-writable root (what the kubelet makes), every link owned by root."""
    vol = tmp_path / "vol"
    vol.mkdir()
    vol.chmod(0o1777)
    stamp = vol / "..2026_12_02_01_00_00.123"
    stamp.mkdir()
    write(stamp / "ssh_key", "KEY", 0o400)
    os.symlink(stamp.name, vol / "..data")
    os.symlink("..data/ssh_key", vol / "ssh_key")
    assert read(vol / "ssh_key") == b"KEY"
    # and an absolute link, and .. in a path
    os.symlink(str(stamp / "ssh_key"), tmp_path / "abs")
    assert read(tmp_path / "abs") == b"KEY"
    assert read(str(stamp) + "/../..data/ssh_key") == b"KEY"


@needs_root
def test_a_link_another_user_placed_in_a_sticky_dir_leads_nowhere_for_the_caller(public):
    """Another user's link to a root-only file: the caller (nobody, for real) cannot
    follow it to anything it could not read itself."""
    shared = public / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    rootonly = public / "rootonly"
    rootonly.mkdir(mode=0o700)
    write(rootonly / "secret", "SECRET")
    link = shared / "job.json"
    os.symlink(str(rootonly / "secret"), link)
    os.lchown(link, 65533, 65533)
    with pytest.raises(CallerOpenError) as e:
        read(link, Boundary(Caller(OTHER, OTHER, "nobody", None, True)))
    assert str(e.value) == "Permission denied"


@needs_root
def test_the_file_itself_is_checked(tmp_path):
    theirs = write(tmp_path / "theirs", "{}", 0o644)
    os.chown(theirs, OTHER, OTHER)
    with pytest.raises(JobError, match="owned by uid 65534, not by you or root"):
        jobinput.read_supplied_file(ME, str(theirs), "the job file")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CallerOpenError, match="not a regular file"):   # and it did not block
        read(tmp_path / "fifo")
    with pytest.raises(CallerOpenError, match="not a regular file"):
        read(tmp_path)
    with pytest.raises(CallerOpenError, match="No such file or directory"):
        read(tmp_path / "nope")


def test_a_link_loop_ends(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(CallerOpenError, match="Too many levels of symbolic links"):
        read(tmp_path / "a")


# -- jobinput.read_supplied_file / read_job_file ---------------------------------------------
def test_modes_are_checked(tmp_path):
    f = write(tmp_path / "f", "x", 0o664)
    with pytest.raises(JobError, match="must not be writable by group or others"):
        jobinput.read_supplied_file(ME, str(f), "the job file")
    f.chmod(0o644)
    assert jobinput.read_supplied_file(ME, str(f), "the job file") == b"x"
    with pytest.raises(JobError, match=r"must not be accessible by others \(mode 0644"):
        jobinput.read_supplied_file(ME, str(f), "the ssh_key file", "ssh_key_file", private=True)


def test_job_file_problems_are_one_line(tmp_path):
    with pytest.raises(JobError, match="cannot open the job file .*/nope: No such file or directory"):
        jobinput.read_job_file(str(tmp_path / "nope"), ME)
    bad = write(tmp_path / "bad.json", "{nope", 0o644)
    with pytest.raises(JobError, match="the job file .*bad.json is not valid JSON"):
        jobinput.read_job_file(str(bad), ME)
    big = write(tmp_path / "big.json", " " * (jobinput.MAX_JOB_BYTES + 1), 0o644)
    with pytest.raises(JobError, match="larger than"):
        jobinput.read_job_file(str(big), ME)
    with pytest.raises(JobError, match="not a valid file name"):
        jobinput.read_job_file(str(tmp_path) + "/a\x00b", ME)


# -- config: the *_file secrets --------------------------------------------------------------
VDDK = {"vm_name": "vm1", "transport_method": "vddk", "vmware_uri": "esx://root@h?no_verify=1",
        "vmware_fingerprint": ":".join(["AB"] * 20)}


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "out").mkdir()
    return resolve({"state_dir": str(tmp_path)}, {"HOME": str(tmp_path)})


def collect(job, settings, tmp_path):
    return config.collect(dict(job, output_dir=str(tmp_path / "out")), settings)


@pytest.mark.parametrize("content, password", [("pw\n", "pw"), ("pw\r\n", "pw"), ("pw", "pw"),
                                               ("", ""), ("\n", ""), ("p w\t\n", "p w\t")])
def test_password_file(tmp_path, settings, content, password):
    f = write(tmp_path / "pw", content, 0o400)
    cfg, problems = collect(dict(VDDK, vmware_password_file=str(f)), settings, tmp_path)
    assert problems == []
    assert cfg.source.password.reveal() == password


@pytest.mark.parametrize("content, words", [
    ("pw\nsecond line\n", "must not contain line breaks"),
    (b"\xff\xfe", "is not valid UTF-8"),
    ("a\x00b", "NUL"),
])
def test_bad_password_files_never_show_the_content(tmp_path, settings, content, words):
    f = tmp_path / "pw"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    f.chmod(0o600)
    _cfg, problems = collect(dict(VDDK, vmware_password_file=str(f)), settings, tmp_path)
    assert [p.key for p in problems] == ["vmware_password_file"]
    assert words in str(problems[0])
    assert "second line" not in str(problems[0])


def test_ssh_key_file(tmp_path, settings):
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
    f = write(tmp_path / "id", key, 0o400)
    job = {"vm_name": "ssh://root@h/vmfs/volumes/ds/vm/vm.vmx", "transport_method": "ssh",
           "ssh_key_file": str(f)}
    cfg, problems = collect(job, settings, tmp_path)
    assert problems == [] and cfg.source.key.reveal() == key
    write(f, "\n \n", 0o400)
    _cfg, problems = collect(job, settings, tmp_path)
    assert "is empty" in str(problems[0])


def test_both_forms_or_a_bad_file_are_refused(tmp_path, settings):
    f = write(tmp_path / "pw", "pw", 0o644)
    _cfg, problems = collect(dict(VDDK, vmware_password="x", vmware_password_file=str(f)), settings, tmp_path)
    assert [p.key for p in problems] == ["vmware_password_file"] and "together" in str(problems[0])
    _cfg, problems = collect(dict(VDDK, vmware_password_file=str(f)), settings, tmp_path)
    assert "must not be accessible by others" in str(problems[0])
    _cfg, problems = collect(VDDK, settings, tmp_path)
    assert [p.key for p in problems] == ["vmware_password"]


@needs_root
def test_the_sudo_caller_may_own_a_secret_file(public):
    f = write(public / "pw", "pw", 0o600)
    os.chown(f, OTHER, OTHER)
    (public / "out").mkdir()           # the caller must reach it too
    job = dict(VDDK, vmware_password_file=str(f), output_dir=str(public / "out"))
    as_sudo = resolve({}, {"SUDO_UID": str(OTHER), "SUDO_GID": str(OTHER)})
    cfg, problems = config.collect(job, as_sudo)
    assert problems == [] and cfg.source.password.reveal() == "pw"
    # root without sudo is its own caller: another user's file is not root's
    _cfg, problems = config.collect(job, resolve({}, {}))
    assert "owned by uid 65534, not by you or root" in str(problems[0])
    # and a root-only file is nothing the sudo caller can name
    os.chown(f, 0, 0)
    _cfg, problems = config.collect(job, as_sudo)
    assert str(problems[0]).endswith("cannot open the vmware_password file %s: Permission denied" % f)


# -- the command line ------------------------------------------------------------------------
@pytest.fixture
def dirs(tmp_path):
    return wr.WrapperDirs(tmp_path)


def fake_ok(dirs):
    return make_fake_v2v(dirs.bin, log=data("run05-vmx-ssh-port-uri.vx.log"),
                         mr=data("run05-vmx-ssh-port-uri.vx.mr.log"), duration=0.5)


def job_file(dirs, tmp_path, **kw):
    pw = write(tmp_path / "pw", "s3cret-pw\n", 0o400)
    job = dict(VDDK, vmware_password_file=str(pw), output_dir=dirs.out, **kw)
    return write(tmp_path / "job.json", json.dumps(job), 0o644)


def test_job_file_and_foreground_switch(dirs, tmp_path):
    exe = fake_ok(dirs)
    f = job_file(dirs, tmp_path)            # "daemonize" not given: true
    r = wr.run(dirs.args(exe) + ["--job", str(f), "--foreground"], "this stdin is not read")
    assert r.returncode == 0, r.stderr
    state = wr.read_state(json.loads(r.stdout)["state_file"])
    assert state["finished"] is True and "failed" not in state
    assert "virt-v2v exited with status 0" in r.stderr          # the foreground's stderr log
    assert "s3cret-pw" not in r.stderr
    assert wr.secret_dirs(dirs.state) == []


def test_job_file_by_environment(dirs, tmp_path):
    exe = fake_ok(dirs)
    f = job_file(dirs, tmp_path, daemonize=True)
    env = wr.env(VIRT_V2V_WRAPPER_JOB=str(f), VIRT_V2V_WRAPPER_FOREGROUND="yes")
    r = wr.run(dirs.args(exe), "", env=env)
    assert r.returncode == 0, r.stderr
    assert "--foreground: staying in the foreground" in open(json.loads(r.stdout)["wrapper_log"]).read()


@pytest.mark.parametrize("setup, words", [
    (lambda tmp: ["--job", str(tmp / "missing.json")], "the job file"),
    (lambda tmp: ["--job", str(write(tmp / "j", "{}", 0o666))], "writable by group or others"),
    (lambda tmp: ["--job", str(tmp)], "is not a regular file"),
])
def test_bad_job_files_are_refused_with_one_line(dirs, tmp_path, setup, words):
    r = wr.run(dirs.args(fake_ok(dirs)) + setup(tmp_path), "")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and words in r.stderr, r.stderr
    assert os.listdir(dirs.state) == []


def test_a_bad_switch_word_is_refused(dirs, tmp_path):
    r = wr.run(dirs.args(fake_ok(dirs)) + ["--job", str(job_file(dirs, tmp_path))], "",
               env=wr.env(VIRT_V2V_WRAPPER_FOREGROUND="maybe"))
    assert r.returncode == 1 and "VIRT_V2V_WRAPPER_FOREGROUND must be one of" in r.stderr
    assert os.listdir(dirs.state) == []
