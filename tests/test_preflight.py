"""wrapper.ovirt.preflight: the host half of the rhv_url pre-flight.

Pure readers of the probes' results with made-up results, then the probes
run for real: the venv's python3 (which has the SDK), Debian's python3
(which has not), as root and as the unprivileged ``nobody``.
"""
import logging
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.fakes import Clock
from wrapper import runner
from wrapper.ovirt import preflight
from wrapper.config import Config, RhvUploadTarget, SshSource, VddkSource
from wrapper.errors import JobError
from wrapper.ovirt.api import TargetFacts
from wrapper.runner import Result
from wrapper.security.secrets import Secret
from wrapper.settings import Settings
from wrapper.users import RunUser

VENV_BIN = os.path.dirname(sys.executable)
ROOT_USER = RunUser(0, 0, "root", "/root")
CA = "/etc/ssl/certs/ca-certificates.crt"


def result(rc=0, out="", err=""):
    return Result(("x",), rc, out, err)


def probe_out(**kw):
    import json
    d = {"python": "/opt/py/bin/python3", "version": "3.11.2", "sdk": "4.6.3", "ca": "ok"}
    d.update(kw)
    return json.dumps({k: v for k, v in d.items() if v is not None}) + "\n"


# ---------------------------------------------------------------- pure readers

def test_probe_all_good():
    problems, found = preflight.read_probe(result(out=probe_out()), ROOT_USER, "/usr/bin", CA)
    assert problems == [] and found["sdk"] == "4.6.3"


def test_probe_without_the_sdk_names_the_package_and_the_python():
    out = probe_out(sdk=None, sdk_error="ModuleNotFoundError: No module named 'ovirtsdk4'")
    problems, _ = preflight.read_probe(result(out=out), ROOT_USER, "/usr/bin:/bin", CA)
    [p] = problems
    assert p.key is None
    text = str(p)
    assert text.startswith("/opt/py/bin/python3 (the first python3 on virt-v2v's PATH")
    assert "ovirt-engine-sdk-python" in text and "No module named 'ovirtsdk4'" in text


def test_unreadable_ca_names_rhv_cafile_and_the_user():
    user = RunUser(36, 36, "vdsm", "/var/lib/vdsm")
    problems, _ = preflight.read_probe(result(out=probe_out(ca=None, ca_error="Permission denied")),
                                       user, "/usr/bin", CA)
    [p] = problems
    assert p.key == "rhv_cafile" and "vdsm (uid 36)" in p.message and "Permission denied" in p.message


def test_no_cafile_to_check_when_insecure():
    problems, _ = preflight.read_probe(result(out=probe_out(ca=None)), ROOT_USER, "/usr/bin", None)
    assert problems == []


@pytest.mark.parametrize("res,words", [
    (result(127, err="No such file or directory"), ("no python3", "ovirt-engine-sdk-python")),
    (result(124), ("did not finish", "30 s")),
    (result(1, err="Traceback...\nSyntaxError: bad\n"), ("exit status 1", "SyntaxError: bad")),
    (result(0, out="not json\n"), ("exit status 0", "no output")),
    (result(0, out="[1, 2]\n"), ("exit status 0",)),
])
def test_probe_failures_are_one_sentence(res, words):
    problems, found = preflight.read_probe(res, ROOT_USER, "/usr/bin", CA)
    [p] = problems
    assert found == {} and "\n" not in str(p)
    for w in words:
        assert w in str(p)


@pytest.mark.parametrize("res,words", [
    (result(127), ("nbdkit is not installed", "nbdkit-plugin-python")),
    (result(1, err="nbdkit: error: cannot open plugin 'python': x.so: cannot open shared object "
                   "file: No such file or directory\nUse 'nbdkit --help'\n"),
     ("Use 'nbdkit --help'", "install nbdkit-plugin-python")),
    (result(1, err="Traceback (most recent call last):\n  File x\nImportError: x.so: undefined "
                   "symbol: _PyModule_Add\nnbdkit: error: /t/p.py: error running this script\n"),
     ("(ImportError: x.so: undefined symbol: _PyModule_Add)", "venv of")),
    (result(124), ("did not start",)),
    (result(0, out="path=/usr/lib/x\nname=python\n"), ("nbdkit-plugin-python",)),
])
def test_nbdkit_failures(res, words):
    [p] = preflight.read_nbdkit(res, ROOT_USER)
    for w in words:
        assert w in str(p)


def test_nbdkit_ok():
    assert preflight.read_nbdkit(result(out="name=python\npython_version=3.11.2\n"), ROOT_USER) == []


def _config(source, vm_name="vm1", cafile=CA, insecure=False):
    target = RhvUploadTarget(url="https://engine/ovirt-engine/api", password=Secret("pw"),
                             cluster="Default", storage="data", cafile=cafile, insecure=insecure)
    return Config(vm_name=vm_name, source=source, target=target)


SSH = SshSource(key=None)
VDDK = VddkSource(uri="esx://h", password=Secret("p"), fingerprint="AB")


# ---------------------------------------------------------------- check(): all problems, one line

def test_every_problem_in_one_error_the_first_ones_key(caplog):
    calls = []

    def run_as(user, argv, env, timeout):
        calls.append((argv[0], env["PATH"], timeout))
        if argv[0] == "python3":
            return result(out=probe_out(ca=None, ca_error="Permission denied"))
        return result(127)

    def check_target(access, storage, cluster, vm_name, timeout):
        raise JobError("vm_name", "a VM named 'vm1' already exists", code="vm_name_taken")

    caplog.set_level(logging.INFO)
    with pytest.raises(JobError) as e:
        preflight.check(_config(VDDK), Settings(), ROOT_USER, {"PATH": "/p"}, object(),
                        run_as=run_as, check_target=check_target, clock=Clock(now=100.0, tick=0.25))
    assert e.value.key == "rhv_cafile"
    text = str(e.value)
    assert "\n" not in text and "; also nbdkit is not installed" in text
    assert text.endswith("; also vm_name: a VM named 'vm1' already exists")
    # the failure codes: the first problem names none, the VM name taken does
    assert e.value.code is None
    assert [(p.key, p.code) for p in e.value.problems] == [
        ("rhv_cafile", None), (None, None), ("vm_name", "vm_name_taken")]
    assert [c[0] for c in calls] == ["python3", "nbdkit"] and calls[0][1] == "/p"
    assert "pre-flight checks took 0.2 s" in caplog.text


def test_sdk_missing_in_the_wrapper_itself_is_a_job_error():
    from wrapper.errors import WrapperError

    def check_target(*a, **kw):
        raise WrapperError("the oVirt SDK (ovirt-engine-sdk-python) is needed for rhv_url jobs")

    with pytest.raises(JobError) as e:
        preflight.check(_config(VDDK), Settings(), ROOT_USER, {"PATH": "/p"}, object(),
                        run_as=lambda *a, **kw: result(
                            out=probe_out() if a[1][0] == "python3" else "python_version=3\n"),
                        check_target=check_target)
    assert e.value.key is None and "ovirt-engine-sdk-python" in str(e.value)


def test_all_passed_returns_the_engine_facts():
    facts = TargetFacts("dc1", "sd-id", "nfs", "cl-id", "x86_64")
    seen = {}

    def check_target(access, storage, cluster, vm_name, timeout):
        seen.update(storage=storage, cluster=cluster, vm_name=vm_name, timeout=timeout)
        return facts

    got = preflight.check(_config(SSH, vm_name="ssh://root@h/vmfs/volumes/d/vm7/vm7.vmx"),
                          Settings(ovirt_preflight_timeout="12"), ROOT_USER, {"PATH": "/p"},
                          object(), check_target=check_target,
                          run_as=lambda *a, **kw: result(
                              out=probe_out() if a[1][0] == "python3" else "python_version=3\n"))
    assert got is facts and got.allocation == "sparse"
    assert seen == {"storage": "data", "cluster": "Default", "vm_name": "vm7", "timeout": 12.0}


# ---------------------------------------------------------------- the probe, for real

def _real_probe(user, path, cafile):
    res = runner.run_as(user, preflight.probe_argv(cafile), env={"PATH": path, "LANG": "C"},
                        timeout=60)
    return preflight.read_probe(res, user, path, cafile)


def test_real_probe_with_the_venv_python():
    pytest.importorskip("ovirtsdk4")
    problems, found = _real_probe(ROOT_USER, VENV_BIN + ":/usr/bin:/bin", CA)
    assert problems == []
    assert found["python"].startswith(VENV_BIN) and found["sdk"].startswith("4.")


def test_real_probe_with_a_python_lacking_the_sdk():
    if subprocess.run(["/usr/bin/python3", "-c", "import ovirtsdk4"],
                      capture_output=True).returncode == 0:
        pytest.skip("Debian's python3 has ovirtsdk4 here")
    problems, _ = _real_probe(ROOT_USER, "/usr/bin:/bin", CA)
    [p] = problems
    assert "/usr/bin/python3" in str(p) and "No module named 'ovirtsdk4'" in str(p)


def test_real_probe_with_no_python3_on_path(tmp_path):
    problems, _ = _real_probe(ROOT_USER, str(tmp_path), CA)
    [p] = problems
    assert str(p).startswith("no python3 on virt-v2v's PATH (%s)" % tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the probe as another user")
def test_real_probe_as_nobody_who_cannot_read_a_private_ca():
    pytest.importorskip("ovirtsdk4")
    nobody = pwd.getpwnam("nobody")
    user = RunUser(nobody.pw_uid, nobody.pw_gid, "nobody", "/nonexistent")
    top = tempfile.mkdtemp(prefix="v2vw-pf-", dir="/var/tmp")     # pytest's tmp is 0700
    request_cleanup = lambda: shutil.rmtree(top, ignore_errors=True)  # noqa: E731
    os.chmod(top, 0o755)
    try:
        _as_nobody(user, nobody, os.path.join(top, "ca.pem"))
    finally:
        request_cleanup()


def _as_nobody(user, nobody, ca):
    # Debian's python3: one that nobody can run (a pyenv python under /root is not)
    shutil.copy(CA, ca)
    os.chmod(ca, 0o600)
    problems, found = _real_probe(user, "/usr/bin:/bin", ca)
    ca_problems = [p for p in problems if p.key == "rhv_cafile"]
    [p] = ca_problems
    assert "nobody (uid %d)" % nobody.pw_uid in p.message and "Permission denied" in p.message
    assert found["python"] == "/usr/bin/python3"
    os.chmod(ca, 0o644)
    assert [p for p in _real_probe(user, "/usr/bin:/bin", ca)[0] if p.key == "rhv_cafile"] == []


def _nbdkit_or_skip():
    if shutil.which("nbdkit") is None:
        pytest.skip("nbdkit is not installed")
    plugin = "/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-python-plugin.so"
    if not os.path.exists(plugin) and os.environ.get("CI"):
        raise AssertionError("CI installs nbdkit-plugin-python (.ci/deps-ovirt.sh)")
    return os.path.exists(plugin)


def test_real_nbdkit_probe_plugin(tmp_path):
    have_plugin = _nbdkit_or_skip()
    res = preflight.run_nbdkit_probe(str(tmp_path), ROOT_USER, {"PATH": "/usr/bin:/bin"},
                                     runner.run_as)
    problems = preflight.read_nbdkit(res, ROOT_USER)
    if have_plugin:
        assert problems == [], res
    else:
        [p] = problems
        assert "cannot open plugin 'python'" in str(p) and "nbdkit-plugin-python" in str(p)
    assert os.listdir(tmp_path) == []          # the probe's directory is gone


def test_real_nbdkit_probe_with_a_foreign_venv_first_on_path(tmp_path):
    """A venv of another Python build first on PATH breaks the plugin's
    ``import ssl`` (the embedded interpreter takes that venv's home): said."""
    if not _nbdkit_or_skip():
        pytest.skip("no nbdkit python plugin")
    if os.path.realpath(sys.executable).startswith("/usr/"):
        pytest.skip("the test's python is the system's: no foreign venv here")
    res = preflight.run_nbdkit_probe(str(tmp_path), ROOT_USER,
                                     {"PATH": VENV_BIN + ":/usr/bin:/bin"}, runner.run_as)
    [p] = preflight.read_nbdkit(res, ROOT_USER)
    assert "Error: " in str(p) and "venv of, the Python nbdkit embeds" in str(p)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the probe as another user")
def test_real_nbdkit_probe_as_nobody():
    if not _nbdkit_or_skip():
        pytest.skip("no nbdkit python plugin")
    nobody = pwd.getpwnam("nobody")
    user = RunUser(nobody.pw_uid, nobody.pw_gid, "nobody", "/nonexistent")
    top = tempfile.mkdtemp(prefix="v2vw-pf-", dir="/var/tmp")
    try:
        os.chmod(top, 0o755)
        res = preflight.run_nbdkit_probe(top, user, {"PATH": "/usr/bin:/bin"}, runner.run_as)
        assert preflight.read_nbdkit(res, user) == [], res
        assert os.listdir(top) == []
    finally:
        shutil.rmtree(top, ignore_errors=True)
