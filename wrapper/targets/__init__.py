"""Output targets: each module knows its virt-v2v arguments and its needs.

A target module provides ``output_args(target, paths, allocation) -> list``
and may provide hooks the job runner calls, with explicit arguments (never
the job itself):

* ``prepare(config, settings, user, env) -> allocation or None``: before the
  caller gets its answer (``user`` a wrapper.users.RunUser, ``env`` the
  environment virt-v2v's helpers get); a JobError refuses the job;
* ``on_failure(target, disk_ids, settings)``: after a failed conversion,
  with the ids of the disks it created on the target; never raises.

No target module imports wrapper.v2v (which imports this package).
"""
from wrapper.config import ExportDomainTarget, LocalTarget, RhvUploadTarget
from wrapper.targets import export_domain, local, rhv_upload

_MODULES = {
    RhvUploadTarget: rhv_upload,
    ExportDomainTarget: export_domain,
    LocalTarget: local,
}


def module_for(target):
    return _MODULES[type(target)]
