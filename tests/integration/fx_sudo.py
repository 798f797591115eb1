"""A real sudo with the strictest rule an orchestrator gets, for the attack suite.

    v2vw-caller ALL=(root) NOPASSWD: <launcher> ""

(``""``: no argument may be given.)  The launcher stands for the installed
``/usr/bin/virt-v2v-wrapper``: a root-owned script an administrator controls,
which fixes the settings (state, log and lock directories, the fake virt-v2v)
the way a root-owned configuration would, and starts this checkout's wrapper
with ``python3 -I`` (neither the caller's directory nor PYTHON* variables can
put code in front of it).  sudo resets the environment, so nothing the caller
exports reaches the wrapper.

Not a registered plugin: test modules import the fixture explicitly.
"""
import json
import os
import shlex
import shutil
import subprocess

import pytest

from tests.integration import attack

__all__ = ["real_sudo"]

SUDOERS = "/etc/sudoers.d/v2vw-test"
LAUNCHER_DIR = "/var/tmp/v2vw-sudo"


class SudoWorld:
    """The sudoers rule and the launcher; :meth:`configure` rewrites the
    launcher's fixed settings (root-owned, like an administrator's file)."""

    def __init__(self, users):
        self.users = users
        self.launcher = os.path.join(LAUNCHER_DIR, "virt-v2v-wrapper")

    def install(self):
        shutil.rmtree(LAUNCHER_DIR, ignore_errors=True)
        os.mkdir(LAUNCHER_DIR, 0o755)
        self.configure()
        rule = "%s ALL=(root) NOPASSWD: %s \"\"\n" % (self.users.caller.name, self.launcher)
        tmp = SUDOERS + ".new"
        with open(tmp, "w") as f:
            f.write(rule)
        os.chmod(tmp, 0o440)
        subprocess.run(["visudo", "-cf", tmp], check=True, capture_output=True)
        os.rename(tmp, SUDOERS)

    def remove(self):
        for path in (SUDOERS, SUDOERS + ".new"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        shutil.rmtree(LAUNCHER_DIR, ignore_errors=True)

    def configure(self, **settings):
        """Settings as VIRT_V2V_WRAPPER_<NAME> values fixed by root."""
        lines = ["#!/bin/sh", "# written by the test suite: an administrator's settings"]
        settings.setdefault("vddk_preflight", "off")     # no VMware host answers (conftest)
        lines += ["export VIRT_V2V_WRAPPER_%s=%s" % (k.upper(), shlex.quote(str(v)))
                  for k, v in sorted(settings.items())]
        code = ("import sys; sys.path.insert(0, %r); from wrapper.cli import console_main; "
                "console_main()" % attack.SOURCE_ROOT)
        lines.append('exec %s -I -c %s "$@"' % (attack.SYSTEM_PYTHON, shlex.quote(code)))
        tmp = self.launcher + ".new"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o755)
        os.rename(tmp, self.launcher)

    def run(self, job, *args, cwd="/", timeout=60):
        """``sudo -n <launcher> [args]`` as the caller, the job on stdin."""
        caller = self.users.caller
        data = job if isinstance(job, (bytes, str)) else json.dumps(job)
        argv = ["runuser", "-u", caller.name, "--", "sudo", "-n", self.launcher, *args]
        return subprocess.run(argv, input=data if isinstance(data, bytes) else data.encode(),
                              capture_output=True, cwd=cwd, timeout=timeout,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})


@pytest.fixture(scope="session")
def real_sudo(attack_users):
    if not shutil.which("sudo") or not shutil.which("visudo"):
        pytest.skip("sudo is not installed (tests/run-all.sh installs it)")
    world = SudoWorld(attack_users)
    world.install()
    yield world
    world.remove()
