"""``virt-v2v-wrapper --validate``: every problem reported, nothing started or written."""
import io
import json
import os
import subprocess

import pytest

from tests import wrapperrun as wr
from tests.fakes import make_fake_v2v
from wrapper import cli, validate
from wrapper.errors import JobError
from wrapper.settings import resolve

FP = ":".join(["AB"] * 20)
MARKER = "S3CRET-validate-marker"


@pytest.fixture
def dirs(tmp_path):
    return wr.WrapperDirs(tmp_path)


@pytest.fixture
def exe(dirs):
    return make_fake_v2v(dirs.bin)


def settings_for(dirs, exe, **options):
    opts = {"state_dir": dirs.state, "log_dir": dirs.logs, "virt_v2v": exe,
            "run_as": str(os.geteuid()), "iso_domain_root": os.path.join(dirs.root, "mnt")}
    opts.update(options)
    return resolve(opts, {"HOME": dirs.root, "PATH": os.environ.get("PATH", "")})


def good_job(dirs, **kw):
    job = {"vm_name": "vm1", "transport_method": "vddk", "vmware_uri": "esx://root@h?no_verify=1",
           "vmware_password": MARKER, "vmware_fingerprint": FP, "output_dir": dirs.out}
    job.update(kw)
    return job


def report(job, settings, **kw):
    out = io.StringIO()
    rc = validate.report(job, settings, out, **kw)
    return rc, out.getvalue()


def test_valid_job(dirs, exe):
    rc, out = report(good_job(dirs, install_drivers=True, vm_uuid="x", two_phase=True),
                     settings_for(dirs, exe))
    lines = out.splitlines()
    assert rc == validate.EXIT_VALID
    assert lines[0] == "job is valid: vm vm1, transport vddk, target local directory %s" % dirs.out
    assert any("no drivers ISO found" in line for line in lines[1:])
    assert lines[-1] == "  note: unknown keys ignored: two_phase, vm_uuid"
    assert MARKER not in out


def test_every_problem_is_reported(dirs, exe):
    job = {"vm_name": "", "transport_method": "vddk", "vmware_password": 5,
           "vmware_fingerprint": "AB", "output_format": "vmdk", "daemonize": "no",
           "network_mappings": [{"source": "a"}, {"source": "b", "destination": "c", "mac_address": "x"}],
           "throttling": {"cpu": "half", "network": "10M"}, "source_disks": [1]}
    rc, out = report(job, settings_for(dirs, exe))
    assert rc == validate.EXIT_INVALID
    lines = out.splitlines()
    assert lines[0] == "job is invalid: %d problems" % (len(lines) - 1)
    keys = [line.strip().split(":")[0] for line in lines[1:]]
    assert keys == ["vm_name", "vmware_uri", "vmware_password", "vmware_fingerprint",
                    "no output target", "output_format", "network_mappings[0]",
                    "network_mappings[1]", "source_disks", "throttling.cpu", "throttling.network",
                    "daemonize"]


def test_one_problem_is_singular(dirs, exe):
    rc, out = report(good_job(dirs, daemonize="no"), settings_for(dirs, exe))
    assert rc == 1 and out == "job is invalid: 1 problem\n  daemonize: must be true or false, not a string\n"


def test_host_problems_come_with_job_problems(dirs):
    settings = settings_for(dirs, os.path.join(dirs.root, "no-virt-v2v"), run_as="no-such-user-x")
    rc, out = report(good_job(dirs, allocation="thin"), settings)
    assert rc == 1
    assert "  allocation: must be one of preallocated, sparse, not 'thin'" in out
    assert "  run_as: no such user 'no-such-user-x'" in out
    assert "virt-v2v program %s not found or not executable" % os.path.join(dirs.root, "no-virt-v2v") in out


def test_run_as_default_is_resolved_for_the_target(dirs, exe):
    calls = []

    def resolve_user(settings, target):
        calls.append(target.name)
        raise JobError("run_as", "no such user 'vdsm'")

    rc, out = report(good_job(dirs), settings_for(dirs, exe, run_as=None), resolve_user=resolve_user)
    assert rc == 1 and calls == ["local"] and "run_as: no such user 'vdsm'" in out


def test_secrets_never_printed(dirs, exe):
    # problems next to every secret key, and in the secrets' own types
    for job in (good_job(dirs, ssh_key=MARKER, rhv_password=MARKER, vmware_fingerprint="x",
                         throttling={"cpu": "x"}),
                good_job(dirs, transport_method="ssh", ssh_key=MARKER, vm_name="vm1"),
                good_job(dirs, rhv_url="https://e/api", rhv_password=MARKER, rhv_cluster=5)):
        rc, out = report(job, settings_for(dirs, exe))
        assert rc == 1 and out.startswith("job is invalid") and MARKER not in out


def listing(root):
    found = []
    for base, subdirs, files in os.walk(root):
        found += [os.path.join(base, n) for n in subdirs + files]
    return sorted(found)


@pytest.mark.parametrize("good", [True, False])
def test_validate_through_cli_starts_nothing_and_writes_nothing(dirs, exe, monkeypatch, good):
    def forbidden(*_a, **_kw):
        raise AssertionError("--validate must not start a process")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(os, "fork", forbidden)
    monkeypatch.setattr(os, "posix_spawn", forbidden)
    before = listing(dirs.root)
    job = good_job(dirs) if good else good_job(dirs, output_dir=os.path.join(dirs.root, "nope"))
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(["--validate", "--state-dir", dirs.state, "--log-dir", dirs.logs, "--virt-v2v", exe,
                   "--run-as", str(os.geteuid())], stdin=io.StringIO(json.dumps(job)), stdout=out,
                  stderr=err, environ={"HOME": dirs.root, "PATH": os.environ.get("PATH", "")})
    assert rc == (0 if good else 1)
    assert out.getvalue().startswith("job is valid" if good else "job is invalid: 1 problem")
    assert err.getvalue() == ""
    assert listing(dirs.root) == before


def test_validate_as_a_program(dirs, exe):
    job = good_job(dirs, output_format="vmdk", daemonize=1)
    r = wr.run(["--validate", "--virt-v2v", exe, "--run-as", str(os.geteuid())], job)
    assert r.returncode == 1 and r.stderr == ""
    assert r.stdout.splitlines()[1:] == ["  output_format: must be one of raw, qcow2, not 'vmdk'",
                                         "  daemonize: must be true or false, not a number"]
    assert MARKER not in r.stdout
    r = wr.run(["--validate"], "{not json")
    assert r.returncode == 1 and "not valid JSON" in r.stderr and "Traceback" not in r.stderr


# -- the state and log directories ------------------------------------------------------
def dir_lines(out):
    return [line.strip() for line in out.splitlines() if line.strip().startswith(("--state-dir", "--log-dir"))]


def test_missing_dirs_that_can_be_created_are_fine(dirs, exe):
    settings = settings_for(dirs, exe, state_dir=os.path.join(dirs.root, "new", "state"),
                            log_dir=os.path.join(dirs.root, "new", "logs"))
    before = listing(dirs.root)
    rc, out = report(good_job(dirs), settings)
    assert rc == 0, out
    assert listing(dirs.root) == before          # nothing was created


def test_unusable_dirs_are_reported(dirs, exe):
    afile = os.path.join(dirs.root, "afile")
    open(afile, "w").close()
    settings = settings_for(dirs, exe, state_dir=afile, log_dir=os.path.join(afile, "sub"))
    before = listing(dirs.root)
    rc, out = report(good_job(dirs), settings)
    assert rc == 1
    assert dir_lines(out) == ["--state-dir: %s is not a directory" % afile,
                              "--log-dir: %s cannot be created: %s is not a directory"
                              % (os.path.join(afile, "sub"), afile)]
    assert listing(dirs.root) == before


def test_dir_writable_by_others_without_sticky_bit(dirs, exe):
    open_dir = os.path.join(dirs.root, "open")
    os.mkdir(open_dir)
    os.chmod(open_dir, 0o777)
    sticky = os.path.join(dirs.root, "sticky")
    os.mkdir(sticky)
    os.chmod(sticky, 0o1777)
    rc, out = report(good_job(dirs), settings_for(dirs, exe, state_dir=open_dir, log_dir=sticky))
    assert rc == 1
    assert dir_lines(out) == ["--state-dir: %s is writable by other users without the sticky bit (mode 0777)"
                              % open_dir]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_dirs_we_cannot_write(dirs, exe):
    locked = os.path.join(dirs.root, "locked")
    os.mkdir(locked, 0o500)
    rc, out = report(good_job(dirs), settings_for(dirs, exe, state_dir=locked,
                                                  log_dir=os.path.join(locked, "logs")))
    assert rc == 1 and len(dir_lines(out)) == 2


def test_default_log_dir_depends_on_the_target(dirs, exe, monkeypatch):
    seen = []
    monkeypatch.setattr(validate, "dir_problem", lambda path: seen.append(path))
    report(good_job(dirs), settings_for(dirs, exe, log_dir=None))
    report(good_job(dirs, export_domain="nfs:/e"), settings_for(dirs, exe, log_dir=None))
    report([1], settings_for(dirs, exe, log_dir=None))        # not even an object
    assert seen == [dirs.state, "/var/log/virt-v2v", dirs.state, "/var/log/vdsm/import",
                    dirs.state, "/var/log/virt-v2v"]


def test_dir_problem_unit(tmp_path):
    assert validate.dir_problem(str(tmp_path)) is None
    assert validate.dir_problem(str(tmp_path / "a" / "b" / "c")) is None
    f = tmp_path / "f"
    f.write_text("")
    assert validate.dir_problem(str(f)) == "%s is not a directory" % f
    odd = tmp_path / "x\ny"
    odd.write_text("")
    assert validate.dir_problem(str(odd / "z")) == "%s cannot be created: %s is not a directory" % (
        str(odd / "z").replace("\n", "\\n"), str(odd).replace("\n", "\\n"))
    assert validate.dir_problem(str(f / "z")) == "%s cannot be created: %s is not a directory" % (f / "z", f)


def test_host_problems_signature_still_takes_a_config_only(dirs, exe):
    assert validate.host_problems(None, settings_for(dirs, exe)) == []


# -- one line per problem, whatever the job holds -----------------------------------------
def test_every_problem_line_is_one_line(dirs, exe):
    job = good_job(dirs, vm_name="a\nb", vmware_uri="esx://[h", output_format="x\u2028" * 1000,
                   network_mappings=[{"source": "a\rb", "destination": "c"}],
                   throttling={"cpu": "9" * 401, "network": "1\n"}, **{"\x1bname\n": "\x00"})
    rc, out = report(job, settings_for(dirs, exe))
    lines = out.splitlines()
    assert rc == 1 and lines[0] == "job is invalid: %d problems" % (len(lines) - 1)
    assert len(lines) == 7      # a bad string in throttling hides its other problems
    out.encode("utf-8")


def test_valid_job_summary_is_one_line(dirs, exe):
    rc, out = report(good_job(dirs, **{"x\ny": 1, "\ud800": 2}), settings_for(dirs, exe))
    assert rc == 0
    assert out.splitlines()[-1] == "  note: unknown keys ignored: \\ud800, x\\ny"


def test_dir_symlinks(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert validate.dir_problem(str(tmp_path / "link")) is None       # ours: followed, as the real run does
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert validate.dir_problem(str(tmp_path / "dangling")) == \
        "%s cannot be used: No such file or directory" % (tmp_path / "dangling")
    if os.geteuid() == 0:
        os.lchown(tmp_path / "link", 12345, 12345)
        assert validate.dir_problem(str(tmp_path / "link")) == \
            "%s is a symbolic link owned by uid 12345" % (tmp_path / "link")
