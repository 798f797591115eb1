"""Run a command inside a "world": a Debian tree with another virt-v2v release (issue 21).

The worlds are built and cached by ``.ci/worlds.sh`` (``tests/run-all.sh`` calls it):
``/var/tmp/v2vw-worlds/trixie`` (virt-v2v 2.6) and ``.../sid`` (virt-v2v 2.10), each usable
when its ``.ready`` marker exists.  :data:`HOST` is the machine itself (Debian 12's 2.2), so
tests parametrize over all three with one API::

    world = worlds.get("sid")                 # None when not built (the caller skips)
    world.run(["virt-v2v", "--version"])      # subprocess.run inside the tree
    proc = world.popen([...], binds=[run_dir], ro_binds=[wrapper_src], cwd=..., env=...)

How a command runs inside a tree: ``unshare --mount --propagation private`` then
``chroot``.  Inside that private mount namespace only: a fresh ``/proc`` (of the host's PID
namespace), ``/sys`` and ``/dev`` bound recursively, a tmpfs on ``/tmp``, and each bind
directory mounted at the *same path* in the tree as on the host (read-only for
``ro_binds``), so paths printed inside (state file, logs) are valid outside.  The mounts
vanish with the namespace's last process -- also a wrapper that daemonized -- so nothing is
ever mounted on the host and there is nothing to unmount.  Network and PID namespaces are
the host's: the fake ESXi host on 127.0.0.1 is reachable, and a pid in a state file can be
signalled from outside.  The mount-point directories made in the tree are recorded in its
``.v2vw-mountpoints`` and removed by :meth:`World.forget_mountpoints` once no command uses
them.

Who runs virt-v2v inside: each tree has the user ``vdsm`` (uid 36) in group ``kvm``
(made by ``.ci/worlds.sh``), whom the wrapper picks by default (docs/contract.md §3.4), so
virt-v2v never runs as root there.  :meth:`World.run_as_home` is that user's home in the
tree; :func:`known_hosts` adds and removes a source's host key in its ``~/.ssh/known_hosts``
(where libssh looks).
"""

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional

try:  # importable both as tests.integration.worlds and with tests/integration on sys.path
    from . import fake_esxi as _fake_esxi
except ImportError:  # pragma: no cover - depends on how it was started
    import fake_esxi as _fake_esxi

WORLDS_ENV = "V2VW_WORLDS_DIR"
DEFAULT_WORLDS_DIR = "/var/tmp/v2vw-worlds"
RUN_AS = ("vdsm", 36, 36, "/var/lib/vdsm")     # name, uid, gid, home inside each tree
# the suites .ci/worlds.sh builds, and the virt-v2v release each one shipped when this was
# written (World.version comes from the tree's .ready when it names one)
SUITES = {"trixie": "2.6", "sid": "2.10"}
MOUNTPOINTS = ".v2vw-mountpoints"    # in each tree: the mount points made there
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# runs as: sh -c SCRIPT unshare ROOT BINDS RO_BINDS CWD CMD... (binds are ':'-separated;
# the namespace's mounts are private, so they disappear with its last process)
_ENTER = r'''
set -e
R=$1; BINDS=$2; RO=$3; CWD=$4; shift 4
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
IFS=:
for d in $BINDS; do mount --bind "$d" "$R$d"; done
for d in $RO; do mount --bind "$d" "$R$d"; mount -o remount,bind,ro "$R$d"; done
unset IFS
cd "$R"
exec chroot "$R" /bin/sh -c 'cd "$0" && exec "$@"' "$CWD" "$@"
'''


def worlds_dir() -> Path:
    return Path(os.environ.get(WORLDS_ENV) or DEFAULT_WORLDS_DIR)


class World(NamedTuple):
    """One place a virt-v2v runs: the host (``root`` None) or a tree."""
    name: str                    # "host", "trixie", "sid"
    version: str                 # the virt-v2v release it ships: "2.2", "2.6", "2.10"
    root: Optional[Path] = None  # the tree; None: the host itself

    @property
    def is_host(self) -> bool:
        return self.root is None

    def path(self, inside: str) -> Path:
        """A path inside the world as seen from the host."""
        return Path(inside) if self.is_host else self.root / inside.lstrip("/")

    def run_as_home(self) -> Optional[Path]:
        """The run-as user's home (host view); None on the host (the wrapper runs virt-v2v
        as root there, as every other integration test does)."""
        return None if self.is_host else self.path(RUN_AS[3])

    def argv(self, command: List[str], *, binds: Iterable[str] = (), ro_binds: Iterable[str] = (),
             cwd: str = "/") -> List[str]:
        """The host argv that runs ``command`` in this world (pure: no side effects)."""
        if self.is_host:
            return list(command)
        for d in list(binds) + list(ro_binds):
            if not os.path.isabs(d) or ":" in d:
                raise ValueError("bind directories must be absolute and have no ':': %r" % d)
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", _ENTER,
                "world-" + self.name, str(self.root), ":".join(binds), ":".join(ro_binds),
                cwd] + list(command)

    def prepare_mountpoints(self, dirs: Iterable[str]):
        """Create (as root, in the tree, which only root writes) the directories the binds
        are mounted on, and note each one made in the tree's :data:`MOUNTPOINTS` record so
        that :meth:`forget_mountpoints` removes only those (never a directory of the tree)."""
        if self.is_host:
            return
        with self._record() as record:
            for d in dirs:
                missing, p = [], self.path(d)
                while not p.exists():
                    missing.append(p)
                    p = p.parent
                for p in reversed(missing):
                    p.mkdir(mode=0o755)
                    record.write(str(p.relative_to(self.root)) + "\n")

    def forget_mountpoints(self, dirs: Iterable[str]):
        """Remove the empty mount points made for ``dirs`` again (call when no command of the
        world that used them runs any more: removing a mount point detaches it from other
        namespaces).  Only directories the record names go; others' stay."""
        if self.is_host:
            return
        with self._record() as record:
            record.seek(0)
            made = [line.strip() for line in record if line.strip()]
            gone = set()
            for d in dirs:
                p = self.path(d)
                while p != self.root and str(p.relative_to(self.root)) in made:
                    try:
                        p.rmdir()
                    except OSError:
                        break           # still in use by another bind (or not empty)
                    gone.add(str(p.relative_to(self.root)))
                    p = p.parent
            record.seek(0)
            record.truncate()
            record.writelines(m + "\n" for m in made if m not in gone)

    @contextlib.contextmanager
    def _record(self):
        fd = os.open(str(self.root / MOUNTPOINTS), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                     0o600)
        with os.fdopen(fd, "r+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)   # other sessions use the same world
            f.seek(0, os.SEEK_END)
            yield f

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """A clean environment for a command in this world (the host's PATH and locale are
        not the tree's)."""
        base = dict(os.environ) if self.is_host else {"PATH": PATH, "HOME": "/root",
                                                       "LANG": "C.UTF-8"}
        base.update(extra or {})
        return base

    def popen(self, command, *, binds=(), ro_binds=(), cwd="/", env=None, **kw):
        """``subprocess.Popen`` of ``command`` in the world (``env`` is added to
        :meth:`env`)."""
        self.prepare_mountpoints(list(binds) + list(ro_binds))
        return subprocess.Popen(self.argv(command, binds=binds, ro_binds=ro_binds, cwd=cwd),
                                env=self.env(env), cwd=cwd if self.is_host else "/", **kw)

    def run(self, command, *, binds=(), ro_binds=(), cwd="/", env=None, timeout=120, **kw):
        """``subprocess.run`` of ``command`` in the world, output captured as text."""
        self.prepare_mountpoints(list(binds) + list(ro_binds))
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(command, binds=binds, ro_binds=ro_binds, cwd=cwd),
                              env=self.env(env), cwd=cwd if self.is_host else "/",
                              timeout=timeout, check=False, **kw)


HOST = World("host", "2.2")


def get(name: str, base: Optional[Path] = None, wait: float = 0) -> Optional[World]:
    """The world ``name`` ("host", "trixie", "sid") when it is usable, else None.  With
    ``wait`` (seconds), first wait that long for a running ``.ci/worlds.sh`` to finish."""
    if name == "host":
        return HOST if shutil.which("virt-v2v") else None
    if name not in SUITES:
        raise ValueError("no such world: %r" % name)
    base = base or worlds_dir()
    if wait > 0:
        wait_for_build(base, wait)
    root = base / name
    try:
        with open(str(root / ".ready")) as f:
            marker = f.read()
    except FileNotFoundError:
        return None
    return World(name, ready_version(marker) or SUITES[name], root)


def ready_version(marker: str) -> Optional[str]:
    """virt-v2v's "major.minor" from a ``.ready`` marker's package list (sid moves on: the
    tree says what it holds), None when it names none."""
    m = re.search(r"^virt-v2v (?:\d+:)?(\d+\.\d+)\.", marker, re.M)
    return m.group(1) if m else None


def wait_for_build(base: Path, timeout: float, sleep=time.sleep) -> bool:
    """Wait until no ``.ci/worlds.sh`` holds the build lock (True) or ``timeout`` passed."""
    lock = base / ".build.lock"
    if not lock.exists():
        return True
    deadline = time.monotonic() + timeout
    with open(str(lock), "rb") as f:
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                sleep(2)


def not_ready_reason(name: str) -> str:
    log = worlds_dir() / ("%s.build.log" % name)
    return ("world %s (virt-v2v %s) is not built: run .ci/worlds.sh (tests/run-all.sh does; "
            "its log: %s)" % (name, SUITES.get(name, "?"), log))


class KnownHostsPair:
    """One marked line in both files libssh reads inside a tree: the run-as user's
    ``~/.ssh/known_hosts`` and the tree's ``/etc/ssh/ssh_known_hosts`` (so a session that
    rewrites one file whole cannot take the key away from another's conversion)."""

    def __init__(self, *files):
        self.files = files

    @property
    def path(self) -> Path:
        return self.files[0].path

    def add(self, line: str):
        for f in self.files:
            f.add(line)

    def remove(self, line: str):
        for f in self.files:
            f.remove(line)


def known_hosts(world: World) -> Optional[KnownHostsPair]:
    """The known_hosts files of a tree as a :class:`KnownHostsPair` of
    :class:`fake_esxi.KnownHosts` (each adds/removes one marked line under flock: several
    sessions share a world, each with its own fake host); None on the host, where the fake
    ESXi host adds its own line to root's file.  Makes ``~/.ssh`` (the user's, 0700) and
    ``/etc/ssh`` when missing; new files are 0644."""
    home = world.run_as_home()
    if home is None:
        return None
    ssh = home / ".ssh"
    if not ssh.is_dir():
        ssh.mkdir(mode=0o700)
        os.chown(str(ssh), RUN_AS[1], RUN_AS[2])
    etc = world.path("/etc/ssh")
    etc.mkdir(mode=0o755, parents=True, exist_ok=True)
    return KnownHostsPair(_fake_esxi.KnownHosts(ssh / "known_hosts"),
                          _fake_esxi.KnownHosts(etc / "ssh_known_hosts"))
