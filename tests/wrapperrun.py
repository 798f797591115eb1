"""Running the real CLI (``python3 -m wrapper``) the way clients do."""
import glob
import json
import os
import subprocess
import sys
import time

from wrapper import procinfo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WrapperDirs:
    def __init__(self, tmp_path):
        self.root = str(tmp_path)
        self.state = os.path.join(self.root, "state")
        self.logs = os.path.join(self.root, "logs")
        self.out = os.path.join(self.root, "out")
        self.bin = os.path.join(self.root, "bin")
        for d in (self.state, self.logs, self.out, self.bin):
            os.makedirs(d, exist_ok=True)

    def args(self, virt_v2v):
        return ["--state-dir", self.state, "--log-dir", self.logs, "--virt-v2v", virt_v2v]


def wrapper_cmd(*args):
    return [sys.executable, "-m", "wrapper", *args]


def env(**extra):
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra)
    return e


def run(args, job, timeout=120, **kw):
    """Run to completion; stdin is the job (a dict or raw text)."""
    text = job if isinstance(job, str) else json.dumps(job)
    return subprocess.run(wrapper_cmd(*args), input=text, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=kw.pop("env", env()), **kw)


def start(args, job, **kw):
    """Start like an SSH client: pipes for stdin/stdout/stderr."""
    p = subprocess.Popen(wrapper_cmd(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT, env=kw.pop("env", env()), **kw)
    p.stdin.write(job if isinstance(job, str) else json.dumps(job))
    p.stdin.close()
    return p


def read_state(path):
    with open(path) as f:
        return json.load(f)


def wait_state(path, predicate, timeout=60, interval=0.05, seen=None):
    """Poll the state file like a client until predicate(state) holds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = read_state(path)
        except FileNotFoundError:
            last = None
        if last is not None:
            if seen is not None and (not seen or seen[-1] != last):
                seen.append(last)
            if predicate(last):
                return last
        time.sleep(interval)
    raise AssertionError("state never satisfied the condition; last: %r" % (last,))


def secret_dirs(state_dir):
    return glob.glob(os.path.join(state_dir, "v2v-wrapper-secrets-*"))


def pid_alive(pid):
    return procinfo.running(pid)


def wait_gone(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_alive(pid)
