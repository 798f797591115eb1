"""The privilege boundary, attacked the way issue 20 found it broken: a real
unprivileged caller, held to a real strict sudo rule
(``v2vw-caller ALL=(root) NOPASSWD: <launcher> ""``: no options, the job on
stdin, the environment reset by sudo), names files it cannot read itself.

Judged by what the caller gets: every such job is refused in one line that
ends with the caller's own errno text (no mode, no owner, no existence, no
byte of content), virt-v2v never starts, and the secret is in no output, log
or record.  The caller's own 0600 file and a Kubernetes-style link chain of
its own work.  (docs/security.md rule 3, wrapper/security/boundary.py)
"""
import json
import os
import subprocess

import pytest

from tests.integration import attack
from tests.integration.attack import FP
from tests.integration.fx_attack import *  # noqa: F401,F403 (fixtures)

pytestmark = pytest.mark.integration
SECRET = "ROOT-ONLY-%s" % os.urandom(6).hex()


class StrictSudo:
    """An administrator's launcher (root's, 0755, options fixed inside) and a
    sudoers drop-in that lets the caller run it with no arguments at all."""

    def __init__(self, scratch, caller, runas):
        tag = os.path.basename(scratch.root)
        self.state = scratch.dir("state", 0o1777)
        self.logs = scratch.dir("logs")
        self.out = scratch.dir("out", 0o777)
        self.record = os.path.join(self.out, "record.json")
        exe = scratch.fake(record=self.record)
        self.launcher = "/usr/local/sbin/%s" % tag
        self.rule = "/etc/sudoers.d/%s" % tag.replace(".", "_")
        env = ("PYTHONPATH=%s VIRT_V2V_WRAPPER_LOCK_DIR=%s VIRT_V2V_WRAPPER_SYSTEMD_MARKER=%s "
               "VIRT_V2V_WRAPPER_VDDK_PREFLIGHT=off TMPDIR=%s") % (
            attack.SOURCE_ROOT, scratch.lock, scratch.nosystemd, scratch.tmp)
        with open(self.launcher, "w") as f:
            f.write("#!/bin/sh\nexport %s\nexec %s -m wrapper --state-dir %s --log-dir %s --virt-v2v %s "
                    "--run-as %s\n" % (env, attack.WRAPPER_PYTHON, self.state, self.logs, exe, runas.name))
        os.chmod(self.launcher, 0o755)
        with open(self.rule + ".tmp", "w") as f:
            f.write('%s ALL=(root) NOPASSWD: %s ""\n' % (caller.name, self.launcher))
        os.chmod(self.rule + ".tmp", 0o440)
        subprocess.run(["visudo", "-cqf", self.rule + ".tmp"], check=True)
        os.rename(self.rule + ".tmp", self.rule)
        self.caller = caller

    def run(self, job, *args):
        return subprocess.run(["sudo", "-n", self.launcher, *args], input=json.dumps(job), text=True,
                              capture_output=True, timeout=120, env=attack.user_env(self.caller), cwd="/",
                              **attack.demote(self.caller))

    def remove(self):
        for p in (self.rule, self.launcher):
            if os.path.exists(p):
                os.unlink(p)


@pytest.fixture
def sudo(scratch, attack_users):
    s = StrictSudo(scratch, attack_users.caller, attack_users.runas)
    yield s
    s.remove()


def vddk(out, **kw):
    job = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1?no_verify=1",
           "vmware_password": "pw", "vmware_fingerprint": FP, "output_dir": out, "daemonize": False}
    job.update(kw)
    return job


def named_jobs(out, path):
    """One job per key that names a file, each naming ``path``."""
    pw_job = vddk(out, vmware_password_file=path)
    del pw_job["vmware_password"]
    return {
        "vmware_password_file": pw_job,
        "ssh_key_file": {"vm_name": attack.SSH_VM, "transport_method": "ssh", "ssh_key_file": path,
                         "output_dir": out, "daemonize": False},
        "rhv_password_file": dict({k: v for k, v in vddk(out).items() if k != "output_dir"},
                                  rhv_url="https://127.0.0.1:9/ovirt-engine/api", rhv_password_file=path,
                                  rhv_cluster="c", rhv_storage="s", insecure_connection=True),
        "rhv_cafile": dict({k: v for k, v in vddk(out).items() if k != "output_dir"},
                           rhv_url="https://127.0.0.1:9/ovirt-engine/api", rhv_password="p",
                           rhv_cluster="c", rhv_storage="s", rhv_cafile=path),
        "luks_keys_vault": vddk(out, luks_keys_vault=path),
        "virtio_win": vddk(out, virtio_win=path),
    }


def assert_refused_revealing_nothing(r, key, path, sudo):
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    line = attack.assert_one_error_line(r.stderr, key)
    assert line.endswith("%s: Permission denied" % path), line
    assert SECRET not in text and "mode" not in line and "uid" not in line and "exist" not in line, line
    assert not os.path.exists(sudo.record), "virt-v2v ran"
    for d in (sudo.logs, sudo.state):
        for name in os.listdir(d):
            p = os.path.join(d, name)
            if os.path.isfile(p):
                with open(p, errors="replace") as f:
                    assert SECRET not in f.read(), p
    return line


def test_root_only_files_named_by_a_strict_sudo_caller_are_refused(scratch, sudo):
    """The issue's attack: every key that names a file, pointed at a root-only
    0600 file (which exists) and at a missing name in the same root-only
    directory.  Both get the same refusal: the caller learns nothing, not even
    which of the two exists."""
    r = sudo.run({}, "--validate")          # the rule is strict: no option gets through
    assert r.returncode != 0 and "wrapper" not in r.stdout, r.stdout + r.stderr
    scratch.dir("rootonly", 0o700)
    existing = scratch.file("rootonly/shadow", SECRET + "\n", 0o600)
    missing = scratch.path("rootonly", "nothing-here")
    outcomes = {}
    for path in (existing, missing):
        for key, job in named_jobs(sudo.out, path).items():
            r = sudo.run(job)
            line = assert_refused_revealing_nothing(r, key, path, sudo)
            outcomes.setdefault(key, []).append(line.replace(path, "PATH"))
    for key, (a, b) in outcomes.items():
        assert a == b, "existence leaked for %s: %r vs %r" % (key, a, b)
    attack.note("boundary-root-only-files", keys=sorted(outcomes))


def test_a_root_only_file_in_a_readable_directory_is_refused_too(scratch, sudo):
    """No directory in the way: the file itself is 0600 root (like the host's SSH key)."""
    path = scratch.file("host_key", SECRET + "\n", 0o600)
    for key, job in named_jobs(sudo.out, path).items():
        assert_refused_revealing_nothing(sudo.run(job), key, path, sudo)


def test_the_callers_own_file_and_link_chain_work(scratch, sudo, attack_users):
    """The caller's own 0600 password file, and a Kubernetes-style Secret
    volume the caller owns (key -> ..data/key -> ..<stamp>/key), both reach
    virt-v2v (the fake records what the run-as user read)."""
    caller = attack_users.caller
    home = scratch.dir("home", 0o700, owner=caller)
    attack.as_user(caller, "import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT|os.O_EXCL,0o600)\n"
                           "os.write(fd,b'caller-pw\\n')\n", os.path.join(home, "pw"))
    vol = os.path.join(home, "vol")
    attack.as_user(caller, "import os,sys\nv=sys.argv[1]\nos.mkdir(v, 0o755)\n"
                           "os.mkdir(v+'/..2026_12_06_01_00_00.1', 0o755)\n"
                           "fd=os.open(v+'/..2026_12_06_01_00_00.1/pw',os.O_WRONLY|os.O_CREAT|os.O_EXCL,0o400)\n"
                           "os.write(fd,b'k8s-pw')\nos.close(fd)\n"
                           "os.symlink('..2026_12_06_01_00_00.1', v+'/..data')\n"
                           "os.symlink('..data/pw', v+'/pw')\n", vol)
    for path, expected in ((os.path.join(home, "pw"), "caller-pw"), (os.path.join(vol, "pw"), "k8s-pw")):
        if os.path.exists(sudo.record):
            os.unlink(sudo.record)
        job = vddk(sudo.out, vmware_password_file=path)
        del job["vmware_password"]
        r = sudo.run(job)
        assert r.returncode == 0, r.stderr[-2000:]
        rec = json.load(open(sudo.record))
        pw_file = rec["argv"][rec["argv"].index("-ip") + 1]
        assert rec["files"][pw_file]["content"] == expected
        assert expected not in r.stdout + r.stderr


def test_job_file_named_under_sudo_is_opened_with_the_callers_rights(scratch, attack_users):
    """``--job`` / VIRT_V2V_WRAPPER_JOB cannot pass a strict rule, but an
    administrator's wrapper run for the caller (SUDO_UID set) must still read
    the job file as the caller: a root-only job file is refused, the caller's
    own one is read."""
    caller = attack_users.caller
    state, logs, out = scratch.dir("state", 0o1777), scratch.dir("logs"), scratch.dir("out", 0o777)
    exe = scratch.fake()
    root_job = scratch.file("root-job.json", json.dumps(vddk(out, vm_name=SECRET)), 0o600)
    args = attack.wrapper_args(state, logs, exe, "--validate")
    for how in ("option", "environment"):
        extra = ["--job", root_job] if how == "option" else []
        env = scratch.env(sudo=caller, **({} if how == "option" else {"VIRT_V2V_WRAPPER_JOB": root_job}))
        run = attack.Run(scratch, args + extra, "", env=env)
        assert run.wait(30) == 1
        line = attack.assert_one_error_line(run.stderr, "the job file")
        assert line.endswith("%s: Permission denied" % root_job) and SECRET not in run.stdout + run.stderr
    theirs = scratch.dir("callers", 0o755, owner=caller)
    job_path = os.path.join(theirs, "job.json")
    attack.write_as(caller, job_path, json.dumps(vddk(out)))
    run = attack.Run(scratch, args + ["--job", job_path], "", env=scratch.env(sudo=caller))
    assert run.wait(30) == 0, run.stdout + run.stderr
    assert "job is valid" in run.stdout
