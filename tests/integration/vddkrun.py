"""One wrapper run of a ``transport_method: "vddk"`` job against a VDDK stand-in
(tests/integration/vddk/), as an orchestrator drives it: the JSON job on stdin, the one
announced line, then only the state file (docs/contract.md §3-§5).

Shared by test_vddk_real.py and the log capture (tests/integration/vddk/capture.py).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from tests import wrapperrun as wr
from tests.integration.fx_vddk import vddk_path, with_libdir

CONVERSION_TIMEOUT = 1500
# passed on by the wrapper to virt-v2v and inherited by all it starts: finds this run's
# processes without matching anyone else's
MARKER_VAR = "LIBGUESTFS_V2VW_VDDK_RUN"


def vddk_job(sim, vm, uri=None, **kw):
    job = {"vm_name": vm, "transport_method": "vddk", "vmware_uri": uri or sim.esx_uri(),
           "vmware_password": sim.password, "vmware_fingerprint": sim.thumbprint}
    job.update(kw)
    return job


class VddkRun:
    """Directories of one run (0755, the run-as user reaches them; its output dir is the
    user's own), the wrapper process, and the states seen."""

    def __init__(self, name, sim, run_as=None, libdir="standin"):
        self.name, self.sim, self.run_as = name, sim, run_as
        self.libdir = sim.libdir if libdir == "standin" else libdir
        self.root = tempfile.mkdtemp(prefix="v2vw-vr-", dir="/var/tmp")
        os.chmod(self.root, 0o755)
        self.state_dir = os.path.join(self.root, "state")
        self.log_dir = os.path.join(self.root, "logs")
        self.out = os.path.join(self.root, "out")
        for d in (self.state_dir, self.log_dir, self.out):
            os.makedirs(d)
        if run_as is not None:
            os.chown(self.out, run_as.uid, run_as.gid)
        self.marker = "%s-%s" % (name, os.urandom(6).hex())
        self.proc = self.announced = self.t0 = None
        self.states = []
        self.argv = None

    def command(self):
        args = ["--state-dir", self.state_dir, "--log-dir", self.log_dir]
        if self.run_as is not None:
            args += ["--run-as", self.run_as.name]
        return with_libdir(wr.wrapper_cmd(*args), self.libdir)

    def env(self):
        return wr.env(PATH=vddk_path(self.sim.world), LANG="C",
                      LIBGUESTFS_BACKEND=os.environ.get("LIBGUESTFS_BACKEND", "direct"),
                      LIBGUESTFS_BACKEND_SETTINGS=os.environ.get("LIBGUESTFS_BACKEND_SETTINGS",
                                                                 "force_tcg"),
                      **{MARKER_VAR: self.marker})

    def start(self, job):
        self.t0 = time.monotonic()
        self.argv = self.command()
        self.stderr_path = os.path.join(self.root, "stderr.txt")
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True, cwd=wr.ROOT, env=self.env())
        self.proc.stdin.write(json.dumps(job))
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=60)
            return None            # refused: one line on stderr
        self.announced = json.loads(line)
        return self.announced

    @property
    def state_file(self):
        return self.announced["state_file"]

    def wait(self, predicate, timeout=CONVERSION_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = wr.read_state(self.state_file)
            except (FileNotFoundError, ValueError):
                last = None
            if last is not None:
                if not self.states or self.states[-1][1] != last:
                    self.states.append((time.monotonic() - self.t0, last))
                if predicate(last):
                    return last
            time.sleep(0.05)
        raise AssertionError("%s: no such state within %d s; last %r\n%s"
                             % (self.name, timeout, last, self.text("wrapper_log")[-3000:]))

    def wait_finished(self, timeout=CONVERSION_TIMEOUT):
        state = self.wait(lambda s: s.get("finished"), timeout)
        if self.proc.poll() is None:
            self.proc.wait(timeout=120)
        return state

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def text(self, key):
        try:
            with open(self.announced[key], errors="replace") as f:
                return f.read()
        except (OSError, KeyError, TypeError):
            return ""

    def machine_readable(self):
        path = self.announced["v2v_log"][:-4] + "-mr.log"
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def disk_progress(self, path):
        """The progress of disk ``path`` in every state seen (absent ones skipped)."""
        out = []
        for _, s in self.states:
            out += [d["progress"] for d in s.get("disks", []) if d["path"] == path]
        return out

    def print_sequence(self):
        print("\n--- %s: %d states" % (self.name, len(self.states)))
        for t, s in self.states:
            disks = " ".join("%s=%s" % (d["path"], d["progress"]) for d in s.get("disks", []))
            flags = ",".join(k for k in ("started", "failed", "finished") if s.get(k))
            print("%7.2fs %-28.28s %s [%s] %s" % (t, s.get("stage", "-"), s.get("progress", "-"),
                                                 disks, flags))

    def processes(self):
        """Live processes of this run (its marker in their environment)."""
        found = {}
        env_marker = ("%s=%s" % (MARKER_VAR, self.marker)).encode()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                with open("/proc/%s/environ" % name, "rb") as f:
                    environ = f.read().split(b"\0")
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if env_marker in environ and wr.pid_alive(int(name)):
                found[int(name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
        return found

    def wait_no_processes(self, timeout=30):
        deadline = time.monotonic() + timeout
        found = self.processes()
        while found and time.monotonic() < deadline:
            time.sleep(0.1)
            found = self.processes()
        return found

    def secret_hits(self, secret):
        """Files under the run's directories, and argv of its live processes, holding
        ``secret``; plus the wrapper's own argv and stderr."""
        hits = []
        needle = secret.encode()
        for top in (self.state_dir, self.log_dir, self.out):
            for dirpath, _, files in os.walk(top):
                for f in files:
                    path = os.path.join(dirpath, f)
                    try:
                        with open(path, "rb") as fh:
                            if needle in fh.read():
                                hits.append(path)
                    except OSError:
                        pass
        hits += ["argv of %d" % pid for pid, cmd in self.processes().items() if secret in cmd]
        if any(secret in a for a in self.argv or ()):
            hits.append("the wrapper's argv")
        if secret in self.stderr():
            hits.append("the wrapper's stderr")
        return hits

    def cleanup(self):
        state = None
        if self.announced:
            try:
                state = wr.read_state(self.state_file)
            except (OSError, ValueError):
                state = None
        if state is not None and not state.get("finished"):
            pid = state.get("wrapper_pid")
            if pid and wr.pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
                wr.wait_gone(pid, timeout=60)
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------ log tokens

def tokenize(text, run, sim):
    """Replace what differs between runs by tokens: directories, ports, temp names."""
    text = text.replace(run.root, "<RUN>").replace(str(sim.root), "<SIM>")
    text = text.replace(str(sim.world.cache), "<WORLD>")
    text = text.replace(sim.address, "127.0.0.1:<PORT>")
    text = text.replace(sim.thumbprint, "<THUMBPRINT>")
    text = re.sub(r"/tmp/(v2vnbdkit\.|v2vqemu\.|v2v\.|nbdkit|libguestfs)[A-Za-z0-9]{6}\b",
                  r"/tmp/\1<TMP>", text)
    text = text.replace(os.environ.get("PATH", "/usr/bin:/bin"), "<PATH>")
    return text
