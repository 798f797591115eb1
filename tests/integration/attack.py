"""Helpers for the attack / fault suites (test_security_*.py): real local users,
racing processes run as those users, a pty session leader, small tmpfs mounts,
tag prediction, and a wrapper runner that can point at any source tree.

``V2VW_SOURCE_ROOT`` picks the wrapper source tree the tests run (default: this
checkout), ``V2VW_WRAPPER_PYTHON`` the interpreter of a root wrapper (default:
the one running pytest); the tests, the fakes and these helpers always come from this
checkout.  Everything lives under ``/var/tmp/v2vw-*`` (mode 0755, so the test
users reach the fake virt-v2v) and is removed at teardown: mounts, processes
started by a test (by PID), directories.  Users are ``v2vw-*`` and deleted at
the end of the session.
"""
import errno
import glob
import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import namedtuple

from tests import wrapperrun as wr
from tests.fakes import data, make_fake_v2v

SOURCE_ROOT = os.path.abspath(os.environ.get("V2VW_SOURCE_ROOT") or wr.ROOT)
SYSTEM_PYTHON = "/usr/bin/python3"       # reachable by the test users (pyenv's is under /root)
# the interpreter of a wrapper run as root (V2VW_WRAPPER_PYTHON=/usr/bin/python3: as installed)
WRAPPER_PYTHON = os.environ.get("V2VW_WRAPPER_PYTHON") or sys.executable
PREFIX = "v2vw-"
FP = ":".join(["AB"] * 20)
ERROR_PREFIX = "virt-v2v-wrapper: error: "
SSH_VM = "ssh://root@127.0.0.1/vmfs/volumes/ds/vm/vm.vmx"
RESULTS = os.environ.get("V2VW_ATTACK_RESULTS")     # a JSON-lines file for the figures, if set

User = namedtuple("User", "name uid gid home")


def is_root():
    return os.geteuid() == 0


def note(test, **figures):
    """Record figures (race iterations, failures out of N) for the closing
    report: one JSON line per call, also printed (pytest -s shows it)."""
    rec = dict(test=test, source=SOURCE_ROOT, time=time.strftime("%H:%M:%S"), **figures)
    print("ATTACK-RESULT %s" % json.dumps(rec))
    if not RESULTS:
        return
    try:
        with open(RESULTS, "a") as f:
            f.write(json.dumps(rec) + "\n")
    except OSError:
        pass


# -- users ---------------------------------------------------------------------
ROLES = {"runas": PREFIX + "runas", "caller": PREFIX + "caller", "other": PREFIX + "other"}
_users = {"refs": 0, "made": []}


class Users:
    def __init__(self):
        for role, name in ROLES.items():
            pw = pwd.getpwnam(name)
            setattr(self, role, User(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir))


def acquire_users():
    """Create the test users once per session (several modules share them)."""
    if _users["refs"] == 0:
        for name in ROLES.values():
            try:
                pwd.getpwnam(name)
                continue                     # left by an interrupted session: reused, removed at the end
            except KeyError:
                pass
            subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/bin/sh", name],
                           check=True, capture_output=True, text=True)
        _users["made"] = list(ROLES.values())
    _users["refs"] += 1
    return Users()


def release_users():
    _users["refs"] -= 1
    if _users["refs"] > 0 or os.environ.get("V2VW_KEEP_TEST_USERS"):
        return                               # kept: another test session on this machine may use them
    for name in _users["made"]:
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True, text=True)
    _users["made"] = []


def demote(user):
    return {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}


def user_env(user, **extra):
    e = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": user.home, "USER": user.name,
         "LOGNAME": user.name, "LANG": "C.UTF-8"}
    e.update(extra)
    return e


def as_user(user, code, *args, timeout=30, check=True):
    """Run a small Python program as ``user`` (the system Python)."""
    r = subprocess.run([SYSTEM_PYTHON, "-c", code, *[str(a) for a in args]], env=user_env(user),
                       cwd="/", capture_output=True, text=True, timeout=timeout, **demote(user))
    if check and r.returncode != 0:
        raise AssertionError("as %s: rc %d: %s" % (user.name, r.returncode, r.stderr.strip()))
    return r


def write_as(user, path, text):
    """Create ``path`` as ``user`` (O_EXCL: never someone else's file)."""
    as_user(user, "import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT|os.O_EXCL,0o644)\n"
                  "os.write(fd,sys.argv[2].encode())\nos.close(fd)\n", path, text)


def read_as(user, path):
    return as_user(user, "import sys\nsys.stdout.write(open(sys.argv[1]).read())\n", path).stdout


# -- processes -------------------------------------------------------------------
def pid_alive(pid):
    return isinstance(pid, int) and pid > 0 and wr.pid_alive(pid)


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def procs_mentioning(text, name=None):
    """PIDs of live processes whose command line contains ``text``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        line = cmdline(int(entry))
        if text in line and (name is None or os.path.basename(line.split(" ", 1)[0]) == name):
            if wr.pid_alive(int(entry)):
                pids.append(int(entry))
    return pids


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def kill_pid(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# -- scratch space ---------------------------------------------------------------
class Scratch:
    """A 0755 directory under /var/tmp for one test, with helpers; its
    teardown unmounts, kills what the test started, and removes it."""

    def __init__(self, label):
        label = "".join(c if c.isalnum() else "-" for c in label)[:24]
        self.root = tempfile.mkdtemp(prefix="%s%s-" % (PREFIX, label), dir="/var/tmp")
        os.chmod(self.root, 0o755)
        self.mounts = []
        self.runs = []
        self.popens = []
        self.extra_pids = []
        self.lock = self.dir("lock", 0o700)
        self.tmp = self.dir("tmp", 0o755)
        self.nosystemd = os.path.join(self.root, "no-systemd-here")
        self._n = 0

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def dir(self, name, mode=0o755, owner=None):
        p = self.path(name)
        os.makedirs(p, exist_ok=True)
        os.chmod(p, mode)
        if owner is not None:
            os.chown(p, owner.uid, owner.gid)
        return p

    def file(self, name, text, mode=0o600, owner=None):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        if owner is not None:
            os.chown(p, owner.uid, owner.gid)
        return p

    def fifo(self, name, mode=0o600):
        p = self.path(name)
        os.mkfifo(p, mode)
        os.chmod(p, mode)
        return p

    def tmpfs(self, name, size="512k", mode="0755", ro=False):
        p = self.dir(name)
        opts = "size=%s,mode=%s%s" % (size, mode, ",ro" if ro else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", p], check=True,
                       capture_output=True, text=True)
        self.mounts.append(p)
        return p

    def unique(self, stem):
        self._n += 1
        return "%s-%d" % (stem, self._n)

    def fake(self, name="bin", **scenario):
        """The fake virt-v2v, run by the system Python (any user can run it)."""
        d = self.dir(name)
        return make_fake_v2v(d, python=SYSTEM_PYTHON, **scenario)

    def env(self, sudo=None, **extra):
        """The wrapper's environment: this source tree, private lock dir and
        TMPDIR, no systemd, optionally a simulated sudo caller."""
        e = {k: v for k, v in os.environ.items()
             if not k.startswith(("SUDO_", "VIRT_V2V_WRAPPER_", "PYTEST_", "SSH_AUTH_SOCK", "SSH_AGENT"))}
        e["PYTHONPATH"] = SOURCE_ROOT
        e["LANG"] = "C.UTF-8"
        e["TMPDIR"] = self.tmp
        e["VIRT_V2V_WRAPPER_LOCK_DIR"] = self.lock
        e["VIRT_V2V_WRAPPER_SYSTEMD_MARKER"] = self.nosystemd
        e["VIRT_V2V_WRAPPER_VDDK_PREFLIGHT"] = "off"      # no VMware host answers (conftest)
        if sudo is not None:
            e.update(SUDO_UID=str(sudo.uid), SUDO_GID=str(sudo.gid), SUDO_USER=sudo.name,
                     SUDO_COMMAND="/usr/bin/virt-v2v-wrapper")
        e.update(extra)
        return e

    def user_wrapper_env(self, user, sudo=None, **extra):
        """Environment for a wrapper run by a non-root test user."""
        e = self.env(sudo=sudo, **extra)
        e.update(HOME=user.home, USER=user.name, LOGNAME=user.name,
                 PATH="/usr/local/bin:/usr/bin:/bin")
        return e

    def start(self, args, job, **kw):
        r = Run(self, args, job, **kw)
        self.runs.append(r)
        return r

    def popen(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.popens.append(p)
        return p

    def cleanup(self):
        """Kill what this test started (by PID), unmount, remove."""
        for r in self.runs:
            r.kill()
        for p in self.popens:
            if p.poll() is None:
                kill_pid(p.pid)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        # daemons, fakes, agents, racers started through this test's runs:
        # each names this directory on its command line (or in its state file)
        pids = set(self.extra_pids)
        for state in glob.glob(self.path("**", "v2v-import-*.state"), recursive=True):
            try:
                with open(state) as f:
                    s = json.load(f)
            except (OSError, ValueError, RecursionError):     # planted files too
                continue
            for key in ("wrapper_pid", "pid"):
                pid = s.get(key) if isinstance(s, dict) else None
                if type(pid) is not int or not 0 < pid < 1 << 22:     # a planted file's
                    continue
                if pid_alive(pid) and ("wrapper" in cmdline(pid) or self.root in cmdline(pid)):
                    pids.add(pid)
        pids.update(procs_mentioning(self.root))
        for pid in pids:
            kill_pid(pid)
        for p in reversed(self.mounts):
            if subprocess.run(["umount", p], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", p], capture_output=True)
        self.mounts = []
        shutil.rmtree(self.root, ignore_errors=True)


def leftovers(*dirs):
    """The wrapper's private directories (secrets, agent, a job's throttling
    directory) and temporary files, and trees moved aside to be removed (``.rm-*``), left in ``dirs``."""
    found = []
    for d in dirs:
        for pattern in ("v2v-wrapper-*", "v2v-import-*.throttle.d", ".*.tmp", "*.tmp", ".rm-*"):
            found += glob.glob(os.path.join(d, pattern))
    return sorted(set(found))


# -- jobs ------------------------------------------------------------------------
def vddk_job(out, **kw):
    job = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1?no_verify=1",
           "vmware_password": "pw-" + os.urandom(4).hex(), "vmware_fingerprint": FP, "output_dir": out}
    job.update(kw)
    return job


def ssh_job(out, key_text, **kw):
    job = {"vm_name": SSH_VM, "transport_method": "ssh", "ssh_key": key_text, "output_dir": out}
    job.update(kw)
    return job


def ssh_key(scratch):
    path = scratch.path("id_test")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "v2vw-test", "-f", path],
                   check=True, capture_output=True)
    with open(path) as f:
        return f.read()


def wrapper_args(state, logs, exe, *more):
    return ["--state-dir", state, "--log-dir", logs, "--virt-v2v", exe, *more]


def progress_scenario(**kw):
    return dict(log=data("run05-vmx-ssh-port-uri.vx.log"), mr=data("run05-vmx-ssh-port-uri.vx.mr.log"), **kw)


# -- running the wrapper -----------------------------------------------------------
class Run:
    """One wrapper process; stdin is the job (from a file), stdout and stderr
    go to files (a pipe nobody drains could block a chatty wrapper).

    ``stdout``: "file" (default), "closed" (``>&-``), "broken" (a pipe whose
    read end is closed before the wrapper starts: writing gets EPIPE).
    ``prefix``: argv put in front (a gate, a shell).
    """

    def __init__(self, scratch, args, job, env=None, user=None, python=None, stdout="file",
                 prefix=(), cwd=None):
        self.scratch = scratch
        self.dir = scratch.dir(scratch.unique("run"), 0o755)
        self.job_path = os.path.join(self.dir, "job.json")
        with open(self.job_path, "w") as f:
            f.write(job if isinstance(job, str) else json.dumps(job))
        self.out_path = os.path.join(self.dir, "stdout")
        self.err_path = os.path.join(self.dir, "stderr")
        python = python or (SYSTEM_PYTHON if user else WRAPPER_PYTHON)
        argv = list(prefix) + [python, "-m", "wrapper", *args]
        if stdout == "closed":
            argv = ["/bin/sh", "-c", 'exec "$@" >&-', "sh"] + argv
        env = env if env is not None else scratch.env()
        self.started_at = time.monotonic()
        with open(self.job_path, "rb") as stdin, open(self.err_path, "wb") as err:
            if stdout == "broken":
                r, w = os.pipe()
                os.close(r)
                out = w
            else:
                out = open(self.out_path, "wb")
            try:
                self.proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err,
                                             cwd=cwd or SOURCE_ROOT, env=env, **demote(user))
            finally:
                if stdout == "broken":
                    os.close(out)
                else:
                    out.close()
        self.pid = self.proc.pid
        self.hung = False

    @property
    def stdout(self):
        try:
            with open(self.out_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    @property
    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def announce(self, timeout=30):
        """The JSON line on stdout (waits for it)."""
        def line():
            text = self.stdout
            if "\n" in text:
                return text
            if self.proc.poll() is not None:
                time.sleep(0.1)
                return self.stdout or "exited"
            return None
        text = wait_until(line, timeout)
        if text == "exited" or (text and "\n" not in text):
            text = None
        if not text:
            raise AssertionError("no answer on stdout after %ss (rc %s); stderr: %s"
                                 % (timeout, self.proc.poll(), self.stderr[-2000:]))
        return json.loads(text.splitlines()[0])

    def wait(self, timeout):
        """Exit status, or None when it did not end in time (it is killed then)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.hung = True
            self.kill()
            return None

    def kill(self):
        if self.proc.poll() is None:
            kill_pid(self.pid)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def stderr_lines(text):
    return [line for line in text.splitlines() if line.strip()]


def assert_one_error_line(text, *words):
    lines = stderr_lines(text)
    assert len(lines) == 1, "expected one stderr line, got %d:\n%s" % (len(lines), text[-3000:])
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    assert "Traceback" not in text
    for w in words:
        assert w in lines[0], "%r not in %r" % (w, lines[0])
    return lines[0]


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def wait_state(path, predicate, timeout):
    """The state once ``predicate`` holds, else None (never raises)."""
    last = [None]

    def check():
        s = read_json(path)
        if s is not None:
            last[0] = s
            if predicate(s):
                return s
        return None
    return wait_until(check, timeout) or None


def last_state(path):
    return read_json(path)


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)


# -- tag prediction -----------------------------------------------------------------
def tag_for(when, pid):
    return "%s-%d" % (time.strftime("%Y%m%dT%H%M%S", time.localtime(when)), pid)


class Gated:
    """Start the wrapper behind a FIFO: ``sh -c 'read _ < FIFO; exec python3 -m
    wrapper ...'``.  The PID (kept by exec) is known before the wrapper runs,
    so the tags of the next seconds can be predicted; :meth:`open` lets it go."""

    def __init__(self, scratch, args, job, **kw):
        self.fifo = scratch.fifo(scratch.unique("gate"), 0o600)
        self.run = scratch.start(args, job, prefix=["/bin/sh", "-c", 'read _ < "$0"; exec "$@"', self.fifo], **kw)
        self.pid = self.run.pid

    def tags(self, seconds=8):
        now = time.time()
        return [tag_for(now + i, self.pid) for i in range(0, seconds + 1)]

    def open(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        os.write(fd, b"go\n")
        os.close(fd)


# -- a pty whose slave is the controlling terminal of a session leader ----------------
class PtySession:
    """``setsid -c /bin/sh -c SCRIPT`` on a new pty: the shell is the session
    leader, the pty its controlling terminal; the master is drained by a
    thread until :meth:`hangup` closes it (the kernel then hangs the session up)."""

    def __init__(self, scratch, script, env, cwd=None):
        self.master, slave = os.openpty()
        self.buf = bytearray()
        self._stop = threading.Event()
        try:
            # a terminal session as a user has it: SIGHUP at its default even when the test run
            # itself ignores it (started under nohup, which the wrapper rightly honours)
            self.proc = scratch.popen(["setsid", "-c", "/bin/sh", "-c", script], stdin=slave, stdout=slave,
                                      stderr=slave, env=env, cwd=cwd or SOURCE_ROOT, close_fds=True,
                                      preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
        finally:
            os.close(slave)
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self):
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.1)
                if ready:
                    chunk = os.read(self.master, 65536)
                    if not chunk:
                        return
                    self.buf += chunk
            except OSError:          # EIO once the slave side is gone
                return

    def text(self):
        return bytes(self.buf).decode("utf-8", "replace")

    def answer(self, timeout=30):
        def find():
            for line in self.text().replace("\r", "\n").splitlines():
                line = line.strip()
                if line.startswith("{") and "state_file" in line:
                    try:
                        return json.loads(line)
                    except ValueError:
                        pass
            return None
        doc = wait_until(find, timeout)
        if not doc:
            raise AssertionError("no answer on the pty after %ss: %r" % (timeout, self.text()[-2000:]))
        return doc

    def hangup(self):
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)
        self.master = None


# -- racers (Python programs run as a test user) --------------------------------------
SECRET_RACER = r'''
import errno, json, os, sys
state_dir, target, stop_file, stats_file = sys.argv[1:5]
KNOWN = ("vmware_password", "rhv_password", "luks_key_0", "gate", "agent.sock")
st = {"loops": 0, "dirs_seen": 0, "listed": 0, "attempts": 0, "swaps": 0, "chmods": 0,
      "swapped": [], "errors": {}}
seen = set()
k = 0
def err(e):
    name = errno.errorcode.get(e.errno, str(e.errno))
    st["errors"][name] = st["errors"].get(name, 0) + 1
while True:
    st["loops"] += 1
    if st["loops"] % 500 == 0 and os.path.exists(stop_file):
        break
    try:
        entries = os.listdir(state_dir)
    except OSError:
        continue
    for d in entries:
        if not d.startswith("v2v-wrapper-secrets-"):
            continue
        dp = state_dir + "/" + d
        if d not in seen:
            seen.add(d)
            st["dirs_seen"] += 1
            try:
                os.chmod(dp, 0o777)
                st["chmods"] += 1
            except OSError as e:
                err(e)
        try:
            names = os.listdir(dp)
            st["listed"] += 1
        except OSError as e:
            if e.errno == errno.ENOENT:
                continue
            names = KNOWN
        for n in names:
            if n.startswith(".r"):
                continue
            p = dp + "/" + n
            if os.path.islink(p):
                continue
            k += 1
            tmp = "%s/.r%d" % (dp, k)
            st["attempts"] += 1
            try:
                os.symlink(target, tmp)
            except OSError as e:
                err(e)
                continue
            try:
                os.rename(tmp, p)
                st["swaps"] += 1
                if len(st["swapped"]) < 50:
                    st["swapped"].append(p)
            except OSError as e:
                err(e)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
with open(stats_file + ".tmp", "w") as f:
    json.dump(st, f)
os.rename(stats_file + ".tmp", stats_file)
'''

THROTTLE_RACER = r'''
import errno, json, os, sys
path, secret_link, root_file, stop_file, stats_file = sys.argv[1:6]
d = os.path.dirname(path)
good = json.dumps({"cpu": "50%"}).encode()
kinds = ("symlink", "fifo", "hardlink")
st = {"loops": 0, "good": 0, "symlink": 0, "fifo": 0, "hardlink": 0, "errors": {}}
tmpg = "%s/.race-good-%d" % (d, os.getpid())
tmpb = "%s/.race-bad-%d" % (d, os.getpid())
def err(kind, e):
    name = kind + ":" + errno.errorcode.get(e.errno, str(e.errno))
    st["errors"][name] = st["errors"].get(name, 0) + 1
i = 0
while True:
    st["loops"] += 1
    if st["loops"] % 200 == 0 and os.path.exists(stop_file):
        break
    try:
        fd = os.open(tmpg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, good)
        os.close(fd)
        os.rename(tmpg, path)
        st["good"] += 1
    except OSError as e:
        err("good", e)
    kind = kinds[i % 3]
    i += 1
    try:
        if kind == "symlink":
            os.symlink(secret_link, tmpb)
        elif kind == "fifo":
            os.mkfifo(tmpb, 0o644)
        else:
            os.link(root_file, tmpb)
        os.rename(tmpb, path)
        st[kind] += 1
    except OSError as e:
        err(kind, e)
        try:
            os.unlink(tmpb)
        except OSError:
            pass
for p in (tmpg, tmpb, path):
    try:
        os.unlink(p)
    except OSError:
        pass
with open(stats_file + ".tmp", "w") as f:
    json.dump(st, f)
os.rename(stats_file + ".tmp", stats_file)
'''

AGENT_RACER = r'''
import ctypes, errno, json, os, sys
state_dir, rootdir, target, stop_file, stats_file = sys.argv[1:6]
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
def exchange(a, b):
    if libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
st = {"loops": 0, "agent_dirs": 0, "planted": 0, "exchanges": 0, "dir_swaps": 0, "errors": {}}
def err(what, e):
    name = what + ":" + errno.errorcode.get(e.errno, str(e.errno))
    st["errors"][name] = st["errors"].get(name, 0) + 1
seen = set()
links = []
while True:
    st["loops"] += 1
    if st["loops"] % 200 == 0 and os.path.exists(stop_file):
        break
    try:
        entries = os.listdir(state_dir)
    except OSError:
        continue
    for d in entries:
        # the agent's own directory (older wrappers: the secret directory held the socket)
        if not d.startswith(("v2v-wrapper-agent-", "v2v-wrapper-secrets-")):
            continue
        dp = state_dir + "/" + d
        if d not in seen:
            seen.add(d)
            st["agent_dirs"] += 1
            try:
                os.mkdir(dp + "/p")
                os.symlink(target, dp + "/p/shadow")
                os.symlink(rootdir, dp + "/q")
                os.symlink(target, dp + "/agent.sock.x")
                st["planted"] += 1
            except OSError as e:
                err("plant", e)
        try:                      # a directory and a symlink to a root-only one trade places
            exchange(dp + "/p", dp + "/q")
            st["exchanges"] += 1
        except OSError as e:
            err("exchange", e)
        if st["loops"] % 25 == 0:  # the agent directory itself, for an instant
            link = "%s/.race-%d-%s" % (state_dir, os.getpid(), d)
            try:
                if not os.path.lexists(link):
                    os.symlink(rootdir, link)
                    links.append(link)
                exchange(dp, link)
                exchange(dp, link)
                st["dir_swaps"] += 1
            except OSError as e:
                err("dirswap", e)
for link in links:
    try:
        os.unlink(link)
    except OSError:
        pass
with open(stats_file + ".tmp", "w") as f:
    json.dump(st, f)
os.rename(stats_file + ".tmp", stats_file)
'''

FIFO_READER = r'''
import errno, json, os, sys, time
stop_file, stats_file = sys.argv[1:3]
fifos = sys.argv[3:]
fds = {}
for p in fifos:
    fds[p] = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
got = {p: 0 for p in fifos}
writers = {p: 0 for p in fifos}       # EAGAIN: a writer holds the FIFO open (EOF: none does)
sample = {}
while not os.path.exists(stop_file):
    for p, fd in fds.items():
        try:
            chunk = os.read(fd, 65536)
        except OSError as e:
            if e.errno == errno.EAGAIN:
                writers[p] += 1
                continue
            raise
        if chunk:
            got[p] += len(chunk)
            sample.setdefault(p, chunk[:300].decode("utf-8", "replace"))
    time.sleep(0.02)
with open(stats_file + ".tmp", "w") as f:
    json.dump({"bytes": got, "writer_seen": writers, "sample": sample}, f)
os.rename(stats_file + ".tmp", stats_file)
'''


class Racer:
    """A Python program run as a test user until :meth:`stop` (a stop file);
    its figures come back as JSON.  argv: SCRIPT ARGS... STOP STATS TAIL..."""

    def __init__(self, scratch, user, code, args, tail_args=()):
        work = scratch.dir(scratch.unique("racer"), 0o777)
        self.script = os.path.join(work, "racer.py")
        with open(self.script, "w") as f:
            f.write(code)
        os.chmod(self.script, 0o644)
        self.stop_file = os.path.join(work, "stop")
        self.stats_file = os.path.join(work, "stats.json")
        self.err_file = os.path.join(work, "stderr")
        with open(self.err_file, "wb") as err:
            self.proc = scratch.popen([SYSTEM_PYTHON, self.script, *[str(a) for a in args], self.stop_file,
                                       self.stats_file, *[str(a) for a in tail_args]],
                                      env=user_env(user), cwd="/", stdout=subprocess.DEVNULL, stderr=err,
                                      **demote(user))

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=15):
        with open(self.stop_file, "w"):
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_pid(self.proc.pid)
            self.proc.wait(timeout=5)
        stats = read_json(self.stats_file)
        if stats is None:
            with open(self.err_file) as f:
                raise AssertionError("racer died: %s" % f.read()[-2000:])
        return stats


def secret_racer(scratch, user, state_dir, target):
    return Racer(scratch, user, SECRET_RACER, [state_dir, target])


def throttle_racer(scratch, user, path, secret_link, root_file):
    return Racer(scratch, user, THROTTLE_RACER, [path, secret_link, root_file])


def agent_racer(scratch, user, state_dir, rootdir, target):
    return Racer(scratch, user, AGENT_RACER, [state_dir, rootdir, target])


def fifo_reader(scratch, user, fifos):
    return Racer(scratch, user, FIFO_READER, [], tail_args=list(fifos))


def file_facts(path):
    """What must not change about a file someone else owns."""
    st = os.lstat(path)
    facts = {"uid": st.st_uid, "gid": st.st_gid, "mode": oct(st.st_mode), "ino": st.st_ino,
             "nlink": st.st_nlink}
    if os.path.isfile(path) and not os.path.islink(path):
        with open(path, "rb") as f:
            facts["content"] = f.read()
    elif os.path.isdir(path) and not os.path.islink(path):
        facts["entries"] = sorted(os.listdir(path))
    return facts
