"""``export_domain``: an oVirt export storage domain (NFS share or local dir).

virt-v2v needs root here: it mounts the NFS share itself and writes as 36:36.
"""
import logging

from wrapper.config import is_nfs_share
from wrapper.targets import leftovers

log = logging.getLogger(__name__)


def output_args(target, paths, allocation, caps):
    """``-o ovirt`` where virt-v2v prints ``output:ovirt`` (2.8+), else ``-o rhv``."""
    return ["-o", caps.output_name("rhv"), "-os", target.path]


def watch(target, vm_name, user, seen=None):
    """Before virt-v2v starts: a local domain's ``images`` and ``master/vms``
    directories, recorded (wrapper.targets.leftovers).  An NFS share is
    mounted by virt-v2v itself, out of the wrapper's reach: None.  ``seen``:
    the (device, inode) the caller's check found writable."""
    if is_nfs_share(target.path):
        log.info("an NFS export domain is mounted by virt-v2v: a failure's partial output "
                 "there is not removed by the wrapper")
        return None
    return leftovers.watch_export_domain(target.path, user, seen=seen)
