"""The ssh-agent virt-v2v authenticates through (SPEC §3.1).

Started as the user that runs virt-v2v, loaded with the job's ``ssh_key``
(through ssh-add's stdin: the key never touches a command line or a file) or
with that user's own ``~/.ssh`` keys, and stopped at the end.
"""
import logging
import os
import re
import signal
import subprocess

from wrapper.errors import CommandError, ConversionError

log = logging.getLogger(__name__)


class SshAgent:
    def __init__(self, socket_path, user, popen=subprocess.Popen):
        self.socket = socket_path
        self.user = user
        self.pid = None
        self._popen = popen

    def _env(self):
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.user.home,
                "USER": self.user.name, "LOGNAME": self.user.name, "SSH_AUTH_SOCK": self.socket}

    def _run(self, argv, input_text=None):
        kw = {}
        if self.user.uid != os.geteuid():
            kw = {"user": self.user.uid, "group": self.user.gid, "extra_groups": []}
        proc = self._popen(argv, stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env(),
                           text=True, close_fds=True, start_new_session=True, **kw)
        out, err = proc.communicate(input_text, timeout=60)
        return proc.returncode, out, err

    def start(self):
        rc, out, err = self._run(["ssh-agent", "-s", "-a", self.socket])
        m = re.search(r"SSH_AGENT_PID=(\d+)", out or "")
        if rc != 0 or not m:
            raise ConversionError("cannot start ssh-agent: %s" % ((err or out).strip() or rc))
        self.pid = int(m.group(1))
        log.info("ssh-agent started (pid %d, socket %s)", self.pid, self.socket)
        return self

    def add_key(self, key):
        """Load ``key`` (a Secret) or, when None, the user's default keys."""
        if key is not None:
            text = key.reveal()
            if not text.endswith("\n"):
                text += "\n"     # OpenSSH refuses a key without its final newline
            rc, out, err = self._run(["ssh-add", "-q", "-"], input_text=text)
        else:
            rc, out, err = self._run(["ssh-add", "-q"])
        if rc != 0:
            what = "the ssh_key of the job" if key is not None else "the keys in ~%s/.ssh" % self.user.name
            detail = (err or out or "").strip().splitlines()
            raise CommandError(["ssh-add"], rc, "", "cannot load %s into ssh-agent%s" % (
                what, (": " + detail[-1]) if detail else ""))
        log.info("ssh-agent loaded with %s", "the job's ssh_key" if key is not None
                 else "the default keys of %s" % self.user.name)

    def stop(self):
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
                log.info("ssh-agent stopped (pid %d)", self.pid)
            except ProcessLookupError:
                pass
            self.pid = None
        try:
            os.unlink(self.socket)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
