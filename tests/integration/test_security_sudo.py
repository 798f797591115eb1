"""The privilege boundary under a real sudo with the strictest rule
(docs/security.md, "the boundary"): a caller of ``sudo virt-v2v-wrapper``
makes root do nothing it could not do itself, except start virt-v2v as the
run-as user on its own job.

Each test is judged by what the attacker (the caller, ``v2vw-caller``) gets
(root-only files named by each key: test_security_boundary.py):
the bytes of a root-only file, a process running as root, a write in a
directory only root may write, or a password echoed back.
"""
import glob
import json
import os

import pytest

from tests.integration import attack
from tests.integration.fx_attack import *  # noqa: F401,F403
from tests.integration.fx_sudo import *  # noqa: F401,F403

pytestmark = pytest.mark.integration


@pytest.fixture
def world(real_sudo, scratch, attack_users):
    """Directories an administrator would set up, the fake virt-v2v, and a
    home of the caller's own; the launcher fixed to them."""
    caller = attack_users.caller
    w = type("World", (), {})()
    w.caller = caller
    w.sudo = real_sudo
    w.state = scratch.dir("state", 0o1777)
    w.logs = scratch.dir("logs", 0o755)
    w.home = scratch.dir("home", 0o700, owner=caller)
    w.record = os.path.join(w.home, "record.json")
    w.out = scratch.dir("out", 0o700, owner=caller)
    w.exe = scratch.fake(exit_code=0, record=w.record)
    real_sudo.configure(state_dir=w.state, log_dir=w.logs, virt_v2v=w.exe, lock_dir=scratch.lock,
                        systemd_marker=scratch.nosystemd)
    w.scratch = scratch
    return w


def _everything_written(w):
    """What the caller could come to read: stdout/stderr of the run and every
    file the wrapper wrote in the state and log directories."""
    texts = []
    for d in (w.state, w.logs):
        for path in glob.glob(os.path.join(d, "**"), recursive=True):
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    texts.append(f.read())
    return b"\n".join(texts)


def test_the_rule_admits_no_arguments(world):
    """The strict rule is real: the caller cannot choose root's settings."""
    job = attack.vddk_job(world.out, daemonize=False)
    r = world.sudo.run(job, "--run-as", "root")
    assert r.returncode == 1
    assert b"sudo" in r.stderr
    assert not os.path.exists(world.record)


def test_the_callers_own_secret_file_is_used_and_virt_v2v_runs_as_the_caller(world):
    marker = "CALLERPW-" + os.urandom(6).hex()
    # a Kubernetes-style chain of the caller's own links: the caller can follow it
    data = os.path.join(world.home, "..data")
    attack.as_user(world.caller, "import os,sys\nos.mkdir(sys.argv[1], 0o700)\n"
                   "fd=os.open(os.path.join(sys.argv[1],'pw'),os.O_WRONLY|os.O_CREAT|os.O_EXCL,0o600)\n"
                   "os.write(fd,sys.argv[2].encode())\nos.close(fd)\n"
                   "os.symlink('..data/pw', os.path.join(os.path.dirname(sys.argv[1]),'pw'))\n",
                   data, marker)
    job = attack.vddk_job(world.out, vmware_password_file="pw", daemonize=False)
    del job["vmware_password"]
    r = world.sudo.run(job, cwd=world.home)       # a relative path: the caller's directory
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    with open(world.record) as f:
        rec = json.load(f)
    assert rec["uid"] == world.caller.uid          # never root: nobody configured root
    pwfile = rec["argv"][rec["argv"].index("-ip") + 1]
    assert rec["files"][pwfile]["content"] == marker
    assert marker.encode() not in r.stdout + r.stderr + _everything_written(world)


def test_a_directory_only_root_may_write_stays_untouched(world):
    closed = world.scratch.dir("rootonly", 0o700)
    job = attack.vddk_job(closed, daemonize=False)
    r = world.sudo.run(job, cwd=world.home)
    assert r.returncode != 0
    assert os.listdir(closed) == []
    if os.path.exists(world.record):                 # if virt-v2v ran at all, not as root
        with open(world.record) as f:
            assert json.load(f)["uid"] == world.caller.uid


def test_a_password_inside_the_source_uri_is_refused_and_not_echoed(world):
    pw = "URIPW" + os.urandom(5).hex()
    job = attack.vddk_job(world.out, vmware_uri="esx://root:%s@127.0.0.1?no_verify=1" % pw,
                          daemonize=False)
    r = world.sudo.run(job, cwd=world.home)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 1, err
    attack.assert_one_error_line(err, "vmware_uri")
    assert pw.encode() not in r.stdout + r.stderr + _everything_written(world)
    assert not os.path.exists(world.record)
