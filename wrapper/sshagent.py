"""The ssh-agent virt-v2v authenticates through (docs/contract.md §3.1).

Started as the user that runs virt-v2v, loaded with the job's ``ssh_key``
(through ssh-add's stdin: the key never touches a command line or a file) or
with that user's own ``~/.ssh`` keys, and stopped at the end.

The agent's life is tied to the wrapper's: it is started as
``ssh-agent -a SOCK /bin/sh -c ...``, so OpenSSH runs the shell as the
agent's parent and the agent exits (removing its socket) within about ten
seconds of that shell's death; the shell waits on a pipe only the wrapper
holds.  When the wrapper dies, even by SIGKILL, the pipe closes, the shell
exits and the key is gone — nothing the crash leaves can use it.
"""
import logging
import os
import selectors
import signal
import subprocess
import time

from wrapper import procinfo
from wrapper.errors import ConversionError, JobError

log = logging.getLogger(__name__)

# Prints the agent's PID (ssh-agent sets SSH_AGENT_PID for its command), then
# waits for EOF on stdin: the wrapper's end of the tie.
TIE_SCRIPT = 'echo "$SSH_AGENT_PID"; read _ || :'
START_TIMEOUT = 30.0


class SshAgent:
    def __init__(self, socket_path, user, popen=subprocess.Popen, clock=time.monotonic):
        self.socket = socket_path
        self.user = user
        self.pid = None
        self.start_time = None
        self._popen = popen
        self._clock = clock
        self._tie = None

    def _env(self):
        return dict(self.user.identity_env(), PATH=os.environ.get("PATH", "/usr/bin:/bin"),
                    SSH_AUTH_SOCK=self.socket)

    def _run(self, argv, input_text=None):
        proc = self._popen(argv, stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env(),
                           text=True, close_fds=True, start_new_session=True, **self.user.popen_kwargs())
        try:
            out, err = proc.communicate(input_text, timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return 124, "", "timed out"
        return proc.returncode, out, err

    def start(self):
        try:
            tie = self._popen(["ssh-agent", "-a", self.socket, "/bin/sh", "-c", TIE_SCRIPT],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=self._env(), close_fds=True, start_new_session=True,
                              **self.user.popen_kwargs())
        except OSError as e:
            raise ConversionError("cannot start ssh-agent: %s" % (e.strerror or e)) from None
        self._tie = tie
        line = self._first_line(tie.stdout)
        if not line.strip().isdigit():
            err = self._drain(tie.stderr)
            self.stop()
            raise ConversionError("cannot start ssh-agent: %s" % (err.strip() or "no agent PID"))
        tie.stdout.close()
        self.pid = int(line)
        self.start_time = procinfo.start_time(self.pid)
        log.info("ssh-agent started (pid %d, socket %s)", self.pid, self.socket)
        return self

    def _first_line(self, stream):
        sel = selectors.DefaultSelector()
        sel.register(stream, selectors.EVENT_READ)
        data = b""
        deadline = self._clock() + START_TIMEOUT
        try:
            while b"\n" not in data and self._clock() < deadline:
                if not sel.select(timeout=max(0.0, deadline - self._clock())):
                    break
                chunk = os.read(stream.fileno(), 64)
                if not chunk:
                    break
                data += chunk
        finally:
            sel.close()
        return data.decode("ascii", "replace").split("\n")[0]

    @staticmethod
    def _drain(stream):
        try:
            return stream.read(4096).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

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
            detail = (err or out or "").strip().splitlines()
            why = (": " + detail[-1]) if detail else " (ssh-add exited with status %s)" % rc
            if key is not None:
                raise JobError("ssh_key", "cannot be loaded into ssh-agent%s" % why)
            raise JobError("ssh_key", "not given, and the keys in ~%s/.ssh cannot be loaded into "
                                      "ssh-agent%s" % (self.user.name, why))
        log.info("ssh-agent loaded with %s", "the job's ssh_key" if key is not None
                 else "the default keys of %s" % self.user.name)

    def stop(self):
        if self.pid and (self.start_time is None or procinfo.alive(self.pid, self.start_time)):
            try:
                os.kill(self.pid, signal.SIGTERM)
                log.info("ssh-agent stopped (pid %d)", self.pid)
            except ProcessLookupError:
                pass
        self.pid = None
        tie, self._tie = self._tie, None
        if tie is not None:
            for stream in (tie.stdin, tie.stdout, tie.stderr):
                try:
                    stream.close()
                except (OSError, ValueError):
                    pass
            try:
                tie.wait(timeout=5)
            except (subprocess.TimeoutExpired, ChildProcessError):
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
