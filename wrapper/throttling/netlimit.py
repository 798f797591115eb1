"""Outbound bandwidth limits for one conversion: an HTB class per interface, fed by nftables.

Design (why it looks like this)
-------------------------------
HTB can put a packet straight into leaf class ``MAJ:MIN`` when ``skb->priority == MAJ:MIN``;
no tc filter is needed.  That matters: many kernels (this CI's included) have neither the
``cgroup`` nor the ``fw`` tc classifier, and cgroup v2 hosts have no ``net_cls`` at all.  So:

* **Classification** is one nftables table per conversion, chain on the ``output`` hook:
  ``<match> meta priority set 7632:MIN``, where ``<match>`` is

  - cgroup v1 hosts (a ``net_cls`` hierarchy is mounted): ``meta cgroup 0x7632MMMM``; we make
    our own ``net_cls`` cgroup with that classid and move the conversion's first process into
    it.  Preferred whenever net_cls is mounted: on hybrid hosts with kernels before 5.15, any
    use of net_cls classids disables cgroup2 socket matching kernel-wide.
  - cgroup v2 (no net_cls): ``socket cgroupv2 level N "<path>"`` on the systemd unit's own
    cgroup (or a cgroup of ours when the process has no dedicated one).  Needs kernel >= 5.13.

  Both are netfilter facilities in every distribution kernel and nftables is the distributions'
  firewall tool; removal is one ``nft delete table``.  The alternative for v2, an eBPF
  ``cgroup_skb`` program attached through systemd's ``IPEgressFilterPath=``, would need a
  hand-assembled program loaded through ``ctypes`` (architecture-specific syscall numbers and
  struct layouts), a bpffs mount and pinning on the host, and it fixes the class at unit
  creation; nft needs none of that.  The catch with nft is that a cgroup2 socket stays with
  the cgroup it was created in and a rule needs an existing cgroup, so the rule must exist
  after the cgroup does but before the first socket: :meth:`NetLimiter.start` is called while
  the launcher holds the conversion at a gate, and nothing escapes the limit at the start.
  Children inherit the cgroup, so every process and socket of the conversion is caught.

* **Shaping**: on every interface that is up, not loopback and not enslaved to a bridge/bond
  (its master is shaped instead), a root ``htb`` with handle ``7632:`` shared by all wrappers
  (the handle marks it as ours: a root qdisc with another handle or kind is someone else's
  configuration and that interface is skipped and named in the log; handle ``0:`` is the
  kernel's default qdisc, i.e. nothing configured).  Each conversion gets class ``7632:MIN``
  with ``rate = ceil = limit``.  There is no ``default`` class: unclassified traffic takes
  HTB's direct queue, which is never shaped and dequeued first, so it is not starved and we
  need not guess a line rate.  ``tc class change`` applies a new rate at once.  Rates are
  bytes/s on the wire; TCP payload is about 95.6 % of that at MTU 1500.

* **Concurrency**: the minor number is reserved by a file ``netlimit-MIN.owner`` under
  ``lock_dir``, created under an ``flock``; every change of the shared root qdisc or of classes
  happens under the same lock, and the root qdisc is deleted (the kernel restores the default)
  when the last class under it is gone.  A reservation whose owner process is dead (its PID and
  start time, :mod:`wrapper.procinfo`) is reclaimed and its leftovers (classes, nft table,
  cgroup) removed.  ``lock_dir`` must be ours alone (anyone can pre-create it in /run/lock):
  files in it are opened by descriptor, never through a symlink, owner files read as untrusted.

What the host offers (cgroup hierarchies, tools, interfaces, root qdiscs) is looked up by
:mod:`wrapper.throttling.host`; the commands are built by :mod:`wrapper.throttling.tcnft`.
Everything runs through the injected ``runner`` (``wrapper.runner.run`` signature), so a test
can wrap it in ``nsenter --net=...``; cgroup files are found under ``cgroup_root``.  Note that
nft resolves a ``socket cgroupv2`` path under ``/sys/fs/cgroup`` of its own mount namespace.
"""
import contextlib
import fcntl
import json
import logging
import os
import re

from wrapper import procinfo
from wrapper.security import fsafe
from wrapper.errors import CommandError, ThrottleError
from wrapper.leases import open_lock_dir
from wrapper.throttling.host import Mechanism, detect, devices, minors, nft_path, root_of
from wrapper.throttling.tcnft import (
    MAX_MINOR, classid, net_cls_classid, table_name, cgroup_name, tc_root_add_argv,
    tc_root_del_argv, tc_class_argv, tc_class_del_argv, match_cgroupv2, match_net_cls,
    nft_ruleset, nft_delete_argv, parse_proc_cgroup, cgroup_level)

log = logging.getLogger(__name__)


# ---- the limiter ----------------------------------------------------------------------------
class NetLimiter:
    """Network limit of one conversion.  ``start()`` once (at the gate), ``set_rate()`` any
    number of times, ``close()`` on every way out (or use it as a context manager)."""

    def __init__(self, tag, *, runner, cgroup_root="/sys/fs/cgroup",
                 lock_dir="/run/virt-v2v-wrapper", log=log, proc_root="/proc", prefer=None):
        self.tag = tag
        self._run = self.runner = runner
        self.cgroup_root = cgroup_root
        self.lock_dir = lock_dir
        self.log = log
        self.proc_root = proc_root
        self.prefer = prefer
        self.mechanism = None
        self.minor = None
        self.table = None
        self.match = None           # the nft match on the conversion's cgroup (once started)
        self.rate = None            # in force (a NetworkRate) or None
        self.devices = []           # interfaces that carry our class now
        self._wanted = None         # asked for before start()
        self._cgroup = None         # cgroup dir we created (removed at close)
        self._home = None           # where to put leftover processes back
        self._started = False
        self._skipped = None
        self._owner = None          # our reservation's content
        self._closed = False

    # -- locking and reservations ---------------------------------------------------------------
    @contextlib.contextmanager
    def _dir(self):
        """The lock directory's descriptor; ThrottleError when it is not ours alone."""
        try:
            fd = open_lock_dir(self.lock_dir)
        except OSError as e:
            raise ThrottleError("cannot apply network limits: %s" % e) from None
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self):
        with self._dir() as dfd:
            try:
                fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | fsafe.O_CLOEXEC,
                             0o600, dir_fd=dfd)
            except OSError as e:
                raise ThrottleError("cannot apply network limits: %s/%s: %s"
                                    % (self.lock_dir, LOCK_FILE, e.strerror or e)) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield dfd
            finally:
                os.close(fd)            # closing drops the flock

    def _read_owner(self, dfd, minor):
        """The reservation's content; {} when unreadable (never reclaimed: owner unknown)."""
        try:
            raw, _st = fsafe.read_untrusted(_owner_name(minor), {os.geteuid()}, 64 << 10, dfd)
            owner = json.loads(raw.decode("utf-8"))
            if not isinstance(owner, dict) or not owner:
                raise ValueError("not a JSON object with content")
            return owner
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            self.log.warning("network limit: unreadable reservation %s/%s: %s", self.lock_dir,
                             _owner_name(minor), e)
            return {}

    def _write_owner(self, dfd, minor, owner):
        # atomic: another wrapper may read it under the lock while we update it outside
        out = fsafe.AtomicFile(dfd, _owner_name(minor), 0o600, reserve=0)
        try:
            out.write(json.dumps(owner))
        finally:
            out.close()

    def _owner_alive(self, owner):
        return procinfo.alive(owner.get("pid"), owner.get("start"), self.proc_root)

    def _kernel_minors(self):
        used = set()
        for dev in self._devices(shapeable=False):
            used |= minors(self._run, dev)
        return used

    def _allocate(self, dfd):
        """Under the lock: reserve the lowest free minor, reclaiming dead owners' leftovers."""
        used = self._kernel_minors()
        reserved = set()
        for name in os.listdir(dfd):
            m = re.fullmatch(r"netlimit-([0-9a-f]+)\.owner", name)
            if not m:
                continue
            minor = int(m.group(1), 16)
            owner = self._read_owner(dfd, minor)
            if owner == {} or (owner and self._owner_alive(owner)):
                reserved.add(minor)
            else:
                self.log.info("network limit: reclaiming class %s left by a dead wrapper (%s)",
                              classid(minor), (owner or {}).get("tag"))
                self._reclaim(dfd, minor, owner or {})
                used.discard(minor)
        for minor in range(1, MAX_MINOR + 1):
            if minor not in used and minor not in reserved:
                break
        else:
            raise ThrottleError("no free traffic class left for the network limit")
        self.minor = minor
        self.table = table_name(self.tag, minor)
        pid = os.getpid()
        self._owner = {"pid": pid, "start": procinfo.start_time(pid, self.proc_root),
                       "tag": self.tag, "table": self.table, "cgroup": None}
        self._write_owner(dfd, minor, self._owner)

    def _reclaim(self, dfd, minor, owner):
        for dev in self._devices(shapeable=False):
            self._run(tc_class_del_argv(dev, minor), check=False)
            self._drop_root_if_empty(dev)
        if owner.get("table"):
            self._run(nft_delete_argv(owner["table"]), check=False)
        if owner.get("cgroup"):
            self._remove_cgroup(owner["cgroup"], None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_owner_name(minor), dir_fd=dfd)

    def _record_cgroup(self):
        self._owner["cgroup"] = self._cgroup
        with self._dir() as dfd:
            self._write_owner(dfd, self.minor, self._owner)

    # -- interfaces -------------------------------------------------------------------------------
    def _devices(self, shapeable=True):
        return devices(self._run, shapeable)

    def _root(self, dev):
        return root_of(self._run, dev)

    def _drop_root_if_empty(self, dev):
        if self._root(dev) == "ours" and not minors(self._run, dev):
            self._run(tc_root_del_argv(dev), check=False)

    # -- cgroups ----------------------------------------------------------------------------------
    def _write(self, path, value):
        with open(path, "w") as f:
            f.write(str(value))

    def _own_cgroup(self, hierarchy, pids):
        path = os.path.join(hierarchy, cgroup_name(self.tag))
        os.makedirs(path, exist_ok=True)
        self._cgroup = path
        self._record_cgroup()
        if self.mechanism.name == "net_cls":
            self._write(os.path.join(path, "net_cls.classid"), net_cls_classid(self.minor))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):   # a child that just exited
                self._write(os.path.join(path, "cgroup.procs"), pid)
        return path

    def _remove_cgroup(self, path, home):
        if not os.path.isdir(path):
            return
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = f.read().split()
            for p in pids:           # still running (e.g. close() on an error path): move out
                with contextlib.suppress(OSError):
                    self._write(os.path.join(home or os.path.dirname(path), "cgroup.procs"), p)
            os.rmdir(path)
        except OSError as e:
            self.log.warning("network limit: could not remove cgroup %s: %s", path, e)

    # -- public -----------------------------------------------------------------------------------
    @property
    def started(self):
        return self._started

    def start(self, host_pid, dedicated_cgroup):
        """Classify ``host_pid`` (and all it will start).  Call before the process may run.

        ``host_pid`` may also be a list: every process of a conversion that is
        already running (the first one is the main process).  Then sockets
        opened before are caught too when the cgroup is the unit's own or the
        net_cls classid is used; a v2 socket of a non-dedicated cgroup is not.

        Never raises for a host that cannot limit: the reason is logged and kept, and a later
        ``set_rate(n)`` raises ThrottleError with it.
        """
        if self._started:
            raise RuntimeError("NetLimiter.start() called twice")
        self._started = True
        self.mechanism = detect(self._run, self.cgroup_root, self.prefer)
        if not self.mechanism.available:
            self.log.warning("network limits unavailable: %s", self.mechanism.reason)
            return
        try:
            with self._locked() as dfd:
                self._allocate(dfd)
            pids = [host_pid] if isinstance(host_pid, int) else list(host_pid)
            if self.mechanism.name == "net_cls":
                self._own_cgroup(self.mechanism.path, pids)
                match = match_net_cls(self.minor)
            else:
                with open("%s/%d/cgroup" % (self.proc_root, pids[0])) as f:
                    current = parse_proc_cgroup(f.read()).get("", "/")
                if dedicated_cgroup and cgroup_level(current) > 0:
                    path = current
                else:
                    # a leaf cgroup has no controllers in subtree_control, so a child is allowed;
                    # it stays inside whatever subtree the process already lives in
                    self._home = self.mechanism.path + current.rstrip("/")
                    path = self._own_cgroup(self._home, pids)[len(self.mechanism.path):]
                match = match_cgroupv2(nft_path(self.cgroup_root, self.mechanism.path, path),
                                       cgroup_level(path))
            self._run(["nft", "-f", "-"], input=nft_ruleset(self.table, match, self.minor))
            self.match = match
            self.log.info("network limit: %s; class %s, nft table inet %s",
                          self.mechanism.reason, classid(self.minor), self.table)
            if self._wanted is not None:
                self.set_rate(self._wanted)
        except (OSError, CommandError, ThrottleError) as e:
            self.log.warning("network limits unavailable: setting up classification failed: %s", e)
            self.close()
            self._closed = False
            self.mechanism = Mechanism(self.mechanism.name, False, "setting up failed: %s" % e)

    def set_rate(self, rate):
        """Limit to ``rate`` (a :class:`~wrapper.throttling.limits.NetworkRate`), or remove the
        limit with None."""
        if not self._started:
            self._wanted = rate
            return
        if self.mechanism is None or not self.mechanism.available or self.minor is None:
            if rate is None:
                return
            reason = "the limiter was closed" if self._closed else self.mechanism.reason
            raise ThrottleError("network limits are unavailable on this host: %s" % reason)
        try:
            with self._locked():
                if rate is None:
                    self._remove_classes()
                else:
                    self._apply(rate.bytes_per_second)
        except CommandError as e:
            raise ThrottleError("could not apply the network limit: %s" % e) from None
        self.rate = rate

    def _apply(self, rate):
        shaped, skipped, failed = [], [], []
        for dev in self._devices():
            owner = self._root(dev)
            if owner == "foreign":
                skipped.append(dev)
                continue
            try:
                if owner == "none":
                    self._run(tc_root_add_argv(dev))
                verb = "change" if self.minor in minors(self._run, dev) else "add"
                self._run(tc_class_argv(verb, dev, self.minor, rate))
                shaped.append(dev)
            except CommandError as e:   # e.g. the interface just went away: the others still count
                self.log.warning("network limit: could not shape %s: %s", dev, e)
                failed.append(e)
                with contextlib.suppress(CommandError):
                    self._drop_root_if_empty(dev)
        if skipped != self._skipped and skipped:
            self.log.warning("network limit: not shaping %s: its root qdisc is not ours",
                             ", ".join(skipped))
        self._skipped = skipped
        self.devices = shaped
        if not shaped:
            if failed:
                raise failed[0]
            raise ThrottleError("no interface can carry the network limit (skipped: %s)"
                                % (", ".join(skipped) or "none found"))
        self.log.info("network limit %d B/s on %s", rate, ", ".join(shaped))

    def _remove_classes(self):
        for dev in self._devices(shapeable=False):
            if self._root(dev) != "ours":
                continue
            if self.minor in minors(self._run, dev):
                self._run(tc_class_del_argv(dev, self.minor))
            self._drop_root_if_empty(dev)
        self.devices = []

    def close(self):
        """Remove every class, nft table, cgroup and reservation we made.  Idempotent; logs
        (does not raise) what it could not remove."""
        self._closed = self._started
        if self.minor is None:
            return
        try:
            with self._locked() as dfd:
                for step in (self._remove_classes,
                             lambda: self._run(nft_delete_argv(self.table), check=False),
                             lambda: self._cgroup and self._remove_cgroup(self._cgroup, self._home)):
                    try:
                        step()
                    except (OSError, CommandError) as e:
                        self.log.warning("network limit clean-up: %s", e)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(_owner_name(self.minor), dir_fd=dfd)
        except (OSError, ThrottleError) as e:
            self.log.warning("network limit clean-up: %s", e)
        self.minor = self.match = None
        self.rate = None
        self._cgroup = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


LOCK_FILE = "netlimit.lock"


def _owner_name(minor):
    return "netlimit-%x.owner" % minor

