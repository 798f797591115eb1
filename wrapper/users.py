"""Who runs virt-v2v (docs/contract.md §3.4) and how a child is started as them.

:class:`RunUser` is the one owner of the run-as user's process arguments:
every program started as that user (virt-v2v as a child, ssh-agent and
ssh-add, the pre-flight's probes through ``wrapper.runner.run_as``) takes its
``subprocess`` arguments from :meth:`RunUser.popen_kwargs` and its identity
variables from :meth:`RunUser.identity_env`.

virt-v2v never runs as root unless an administrator said so (``--run-as``,
``VIRT_V2V_WRAPPER_RUN_AS``): by default it runs as ``vdsm:kvm`` where that
user exists (oVirt hosts), else as the sudo caller, else as whoever invoked
the wrapper (root only when root itself ran it, without sudo).  See
docs/security.md, rules 15 and 16.
"""
import grp
import os
import pwd
import subprocess
from dataclasses import dataclass

from wrapper.config import ExportDomainTarget, LocalTarget, is_nfs_share
from wrapper.errors import JobError
from wrapper.security.boundary import CallerOpenError
from wrapper.security.text import oneline
from wrapper.settings import sudo_caller

VDSM_USER = "vdsm"
VDSM_GROUP = "kvm"


@dataclass(frozen=True)
class RunUser:
    uid: int
    gid: int
    name: str
    home: str
    groups: tuple = ()        # supplementary groups: none unless named (root's must not leak)

    def popen_kwargs(self):
        """``subprocess`` arguments that run a child as this user: its uid,
        gid and only its own supplementary groups; nothing when that is who
        the wrapper already is."""
        if self.uid != os.geteuid() or self.gid != os.getegid():
            return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}
        return {}

    def identity_env(self):
        """HOME, USER and LOGNAME of this user (never the caller's)."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def lookup(spec, key="run_as"):
    """'user[:group]' (names or numbers) -> RunUser."""
    name, _, group = spec.partition(":")
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise JobError(key, "no such user %r" % name) from None
    gid = pw.pw_gid
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise JobError(key, "no such group %r" % group) from None
    return RunUser(pw.pw_uid, gid, pw.pw_name, pw.pw_dir)


def is_ovirt_host():
    try:
        pwd.getpwnam(VDSM_USER)
        return True
    except KeyError:
        return False


def by_ids(uid, gid):
    """A RunUser for numeric ids; a uid without a passwd entry gets ``/`` as home."""
    try:
        pw = pwd.getpwuid(uid)
        return RunUser(uid, gid, pw.pw_name, pw.pw_dir)
    except KeyError:
        return RunUser(uid, gid, str(uid), "/")


def current():
    return by_ids(os.geteuid(), os.getegid())


def needs_root(target):
    """An export domain on NFS: virt-v2v mounts it, which takes root."""
    return isinstance(target, ExportDomainTarget) and is_nfs_share(target.path)


def default_run_as(settings, ovirt_host=None, euid=None):
    """Who runs virt-v2v when no administrator chose: never root for a caller."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return current()
    if ovirt_host is None:
        ovirt_host = is_ovirt_host()
    if ovirt_host:
        return lookup("%s:%s" % (VDSM_USER, VDSM_GROUP))
    sudo = sudo_caller(settings.environ)
    return by_ids(*sudo) if sudo else current()


def resolve_run_as(settings, target, ovirt_host=None, euid=None):
    """The administrator's choice, else :func:`default_run_as`.  An NFS
    export domain needs root to be mounted; root is never a default, so
    without ``--run-as root`` such a job is refused (a local export domain
    directory runs as the default user, like ``output_dir``)."""
    if settings.run_as:
        return lookup(settings.run_as)
    user = default_run_as(settings, ovirt_host, euid)
    if needs_root(target) and user.uid != 0:
        raise JobError("export_domain", "an NFS export domain is mounted by virt-v2v as root, "
                                        "which only an administrator may allow: run the wrapper "
                                        "with --run-as root (or VIRT_V2V_WRAPPER_RUN_AS=root)")
    return user


# run by /bin/sh as the run-as user: the kernel answers, not root reading modes
WRITABLE_DIR_TEST = 'test -d "$1" && test -w "$1" && test -x "$1"'


def writable_dir_as(user, path, run=subprocess.run, timeout=30):
    """Can ``user`` create files in ``path``?  A short-lived child with that
    user's uid and gid (and, like the plain-child virt-v2v, no supplementary
    groups) asks the kernel (``access(W_OK|X_OK)`` on a directory it
    reaches with its own rights).  A hung path counts as not writable."""
    try:
        res = run(["/bin/sh", "-c", WRITABLE_DIR_TEST, "sh", path], env={"PATH": "/usr/bin:/bin"},
                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                  close_fds=True, cwd="/", timeout=timeout, **user.popen_kwargs())
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0


def target_dir(target):
    """The local directory virt-v2v will write for ``target``, or None."""
    if isinstance(target, LocalTarget):
        return "output_dir", target.path
    if isinstance(target, ExportDomainTarget) and not is_nfs_share(target.path):
        return "export_domain", target.path
    return None


def check_caller_can_write(boundary, target):
    """Refuse a job whose output directory the CALLER itself cannot write
    (docs/security.md rule 16): with ``--run-as root`` (NFS export domains)
    or ``vdsm``, virt-v2v would otherwise write wherever the caller can merely
    reach (``/etc/sudoers.d``).  Asked by a child with the caller's
    credentials (wrapper.security.boundary); the message is what the
    caller's own attempt got.  Nothing to ask for a root caller.

    Returns the (device, inode) of the directory the caller found writable
    (None when nothing was asked): the partial-output watch removes nothing
    in any other (wrapper.targets.leftovers, docs/contract.md §8)."""
    found = target_dir(target)
    if found is None or boundary.caller.is_root:
        return None
    try:
        st = boundary.check_writable_dir(found[1])
    except CallerOpenError as e:
        raise JobError(found[0], "%s is not a directory you (uid %d) can write: %s"
                       % (oneline(found[1], 200), boundary.caller.uid, oneline(e, 100))) from None
    return (st.st_dev, st.st_ino)


def check_target_dir(user, target, writable=writable_dir_as):
    """Refuse a job whose output directory the run-as user cannot write,
    before anything starts.  The message says only what that user could
    learn itself; virt-v2v, which runs as that user, is the real guard."""
    found = target_dir(target)
    if found and not writable(user, found[1]):
        raise JobError(found[0], "%s is not a directory %s (uid %d) can write"
                       % (oneline(found[1], 200), oneline(user.name, 60), user.uid))
