"""Output targets: each module knows its virt-v2v arguments and its needs.

A target module provides ``output_args(target, paths, allocation, caps) -> list``
(``caps``: what the installed virt-v2v accepts, wrapper.v2vinfo.Capabilities)
and may provide hooks the job runner calls, with explicit arguments (never
the job itself):

* ``prepare(config, settings, user, env) -> allocation or None``: before the
  caller gets its answer (``user`` a wrapper.users.RunUser, ``env`` the
  environment virt-v2v's helpers get); a JobError refuses the job;
* ``on_failure(target, disk_ids, settings)``: after a failed conversion,
  with the ids of the disks it created on the target; never raises;
* ``watch(target, vm_name, user) -> leftovers.Leftovers or None``: just
  before virt-v2v starts, the local directories it will write, recorded;
  the job calls ``finish(success)`` on every way out, after virt-v2v has
  stopped, and a failure's new output is removed as ``user``.

No target module imports wrapper.v2v (which imports this package).

The targets wing (docs/contract.md §3.2; the arguments of §3.4) owns what
differs between the three outputs.  Modules:

* ``rhv_upload``    -- ``rhv_url``: ``-o rhv-upload`` (``ovirt-upload``, 2.8+); its ``prepare`` runs the
  pre-flight and picks the allocation, its ``on_failure`` removes the disks
  a failed upload created (both through the ``wrapper.ovirt`` wing).
* ``export_domain`` -- ``export_domain``: ``-o rhv`` (``ovirt``, 2.8+).
* ``local``         -- ``output_dir``: ``-o local`` (``disk``, 2.8+).
* ``leftovers``     -- what a failed conversion left in a local target
  directory (``output_dir``, a local export domain), removed as the run-as
  user (docs/contract.md §8).

Imports: the standard library, ``wrapper.config``'s target records, the
ovirt and security wings, the core's leaf modules.  Never ``wrapper.cli``,
``job`` or ``monitor``, nor ``wrapper.v2v``, which imports this package
(issue 19: hooks take explicit arguments, so no circle remains).  The core
(``v2v`` for the arguments, ``job`` for the hooks) imports it.
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
