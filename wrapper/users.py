"""Who runs virt-v2v (docs/contract.md §3.4) and how a child is started as them.

:class:`RunUser` is the one owner of the run-as user's process arguments:
every program started as that user (virt-v2v as a child, ssh-agent and
ssh-add, the pre-flight's probes through ``wrapper.runner.run_as``) takes its
``subprocess`` arguments from :meth:`RunUser.popen_kwargs` and its identity
variables from :meth:`RunUser.identity_env`.
"""
import grp
import os
import pwd
from dataclasses import dataclass

from wrapper.config import ExportDomainTarget
from wrapper.errors import JobError

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


def current():
    uid = os.geteuid()
    try:
        pw = pwd.getpwuid(uid)
        return RunUser(uid, os.getegid(), pw.pw_name, pw.pw_dir)
    except KeyError:
        return RunUser(uid, os.getegid(), str(uid), os.environ.get("HOME", "/"))


def resolve_run_as(settings, target, ovirt_host=None):
    if settings.run_as:
        return lookup(settings.run_as)
    if ovirt_host is None:
        ovirt_host = is_ovirt_host()
    if ovirt_host and os.geteuid() == 0:
        if isinstance(target, ExportDomainTarget):
            return lookup("0:0")       # NFS mounts need root
        return lookup("%s:%s" % (VDSM_USER, VDSM_GROUP))
    return current()
