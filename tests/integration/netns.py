"""Two network namespaces joined by a veth pair, for bandwidth tests.

``<name>a`` holds ``va`` 198.18.0.1/24 (the sender side) and ``<name>b`` holds ``vb``
198.18.0.2/24 (the receiver).  The veth pair is created directly between the two namespaces, so
no interface ever exists in the host's namespace; 198.18.0.0/15 is the range reserved for
benchmarking (RFC 2544) and never routed.  Deleting the namespaces removes the veth, its qdiscs
and every nft table in them.

Use ``nsenter --net=/run/netns/X`` (:meth:`NetnsPair.prefix`), not ``ip netns exec``: the latter
remounts /sys, and /sys/fs/cgroup then looks empty.
"""
import os
import subprocess
import uuid

from wrapper.runner import run as host_run

PREFIX = "v2vwn"
OWNERS = "/tmp/v2vw-netns-owners"       # <netns name> -> PID of the test process that made it
NETNS_DIR = "/run/netns"
SENDER_IP = "198.18.0.1"
RECEIVER_IP = "198.18.0.2"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ip(*argv, check=True):
    return subprocess.run(["ip", *argv], capture_output=True, text=True, check=check)


def clean_stale():
    """Delete namespaces of ours left by a test run that died (owner PID gone)."""
    if not os.path.isdir(OWNERS):
        return
    for name in os.listdir(OWNERS):
        path = os.path.join(OWNERS, name)
        try:
            with open(path) as f:
                owner = int(f.read().strip() or 0)
        except (OSError, ValueError):
            owner = 0
        if owner and _alive(owner):
            continue
        if os.path.exists(os.path.join(NETNS_DIR, name)):
            _ip("netns", "del", name, check=False)
        os.unlink(path)


def unique_name():
    return "%s%s" % (PREFIX, uuid.uuid4().hex[:6])


def prefix(netns):
    """argv prefix running a command in network namespace ``netns`` (mount namespace unchanged)."""
    return ["nsenter", "--net=%s/%s" % (NETNS_DIR, netns), "--"]


def runner_in(netns, base=host_run):
    """A ``runner`` (wrapper.runner signature) that runs every command inside ``netns``."""
    def run(argv, **kw):
        return base(prefix(netns) + [str(a) for a in argv], **kw)
    run.netns = netns
    return run


class NetnsPair:
    """``up()`` / ``down()`` (idempotent), or a context manager."""

    def __init__(self, name=None):
        self.name = name or unique_name()
        self.a = self.name + "a"            # sender
        self.b = self.name + "b"            # receiver
        self.dev_a, self.dev_b = "va", "vb"
        self.ip_a, self.ip_b = SENDER_IP, RECEIVER_IP

    def _own(self, ns):
        os.makedirs(OWNERS, exist_ok=True)
        with open(os.path.join(OWNERS, ns), "w") as f:
            f.write(str(os.getpid()))

    def up(self):
        try:
            for ns in (self.a, self.b):
                self._own(ns)
                _ip("netns", "add", ns)
            _ip("-n", self.a, "link", "add", self.dev_a, "type", "veth", "peer", "name", self.dev_b,
                "netns", self.b)
            _ip("-n", self.a, "addr", "add", self.ip_a + "/24", "dev", self.dev_a)
            _ip("-n", self.b, "addr", "add", self.ip_b + "/24", "dev", self.dev_b)
            for ns, dev in ((self.a, self.dev_a), (self.b, self.dev_b)):
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "link", "set", dev, "up")
        except subprocess.CalledProcessError as e:
            self.down()
            raise RuntimeError("netns pair %s: %s failed: %s" % (self.name, e.cmd, e.stderr)) from None
        return self

    def down(self):
        for ns in (self.a, self.b):
            if os.path.exists(os.path.join(NETNS_DIR, ns)):
                _ip("netns", "del", ns, check=False)
            try:
                os.unlink(os.path.join(OWNERS, ns))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(OWNERS)                # only when no other test run has namespaces up
        except OSError:
            pass

    def exists(self):
        return any(os.path.exists(os.path.join(NETNS_DIR, ns)) for ns in (self.a, self.b))

    def runner(self, side="a", base=host_run):
        return runner_in(self.a if side == "a" else self.b, base)

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    def __repr__(self):
        return "NetnsPair(%r)" % self.name


class Receiver:
    """Receiver-side meter (scripts/netmeter.py recv) running in a namespace.

    ``samples`` is a list of ``(monotonic seconds, total bytes)``, appended every 50 ms; the
    clock is the same as ``time.monotonic()`` in the test.
    """

    def __init__(self, netns, port, cgroup=None):
        """``cgroup``: a cgroup directory the receiver joins before it opens its socket (the
        sockets it accepts are then that cgroup's)."""
        self.netns, self.port, self.cgroup = netns, port, cgroup
        self.samples = []
        self.proc = None
        self._thread = None

    def start(self):
        import threading
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts", "netmeter.py")
        argv = prefix(self.netns) + ["python3", script, "recv", str(self.port)]
        if self.cgroup:
            argv = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.cgroup] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError("netmeter receiver on port %s did not start" % self.port)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            t, n = line.split()
            self.samples.append((float(t), int(n)))

    def total_at(self, t):
        """Bytes received by time ``t`` (linear between samples)."""
        s = list(self.samples)
        if not s or t <= s[0][0]:
            return s[0][1] if s else 0
        for (t0, n0), (t1, n1) in zip(s, s[1:]):
            if t0 <= t <= t1:
                return n0 + (n1 - n0) * (t - t0) / (t1 - t0)
        return s[-1][1]

    def rate(self, t0, t1):
        """Mean bytes per second received between monotonic times t0 and t1."""
        return (self.total_at(t1) - self.total_at(t0)) / (t1 - t0)

    def wait_until(self, t, timeout=30):
        """Block until a sample at or after monotonic time ``t`` exists."""
        import time
        end = time.monotonic() + timeout
        while not (self.samples and self.samples[-1][0] >= t):
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError("receiver on port %s stopped reporting" % self.port)
            time.sleep(0.02)

    def settle_time(self, t_change, target, lo=0.85, hi=1.02, window=0.5, until=None):
        """Seconds from ``t_change`` until the rate over every later ``window`` (up to ``until``)
        stays within [lo, hi] x target; None if it never does."""
        until = until or self.samples[-1][0]
        ts = [t for t, _ in self.samples if t_change <= t <= until - window]
        for i, t in enumerate(ts):
            if all(lo * target <= self.rate(u, u + window) <= hi * target for u in ts[i:]):
                return t - t_change
        return None

    def took_effect(self, t_change, target, window=0.25, deadline=20.0):
        """Seconds from ``t_change`` until two ``window``s in a row whose rate is within
        0.5-1.5x ``target`` (the new limit is in force: clearly off the old one, with
        room for the meter's 50 ms jitter; two, so that one burst does not count),
        polling the meter; None if that did not happen within ``deadline`` s."""
        t = t_change
        while t + 2 * window <= t_change + deadline:
            self.wait_until(t + 2 * window)
            if all(0.5 * target <= self.rate(u, u + window) <= 1.5 * target
                   for u in (t, t + window)):
                return t - t_change
            t += 0.05                 # the meter's sampling interval
        return None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._thread:
            self._thread.join(2)
