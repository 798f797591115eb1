"""``rhv_url``: upload through the oVirt API (virt-v2v ``-o rhv-upload``).

Besides the arguments, this target talks to the engine itself (through the
oVirt SDK, imported lazily in wrapper.ovirt.api): before the caller gets its
answer, to check what virt-v2v will need (wrapper.ovirt.preflight) and derive
``allocation`` from the storage domain's type, and after a failure to cancel
the image transfers and remove the disks this conversion created.
"""
import logging

log = logging.getLogger(__name__)


def output_args(target, paths, allocation, caps):
    """``-o ovirt-upload -oo ovirt-…`` where virt-v2v prints ``output:ovirt-upload``
    (2.8+), else ``-o rhv-upload -oo rhv-…``."""
    opt = caps.upload_option
    args = ["-o", caps.output_name("rhv-upload"), "-oc", target.url, "-os", target.storage,
            "-op", paths.rhv_password_file]
    if target.cafile:
        args += ["-oo", "%s=%s" % (opt("cafile"), target.cafile)]
    return args + ["-oo", "%s=%s" % (opt("cluster"), target.cluster), "-oo", opt("direct"),
                   "-oo", "%s=%s" % (opt("verifypeer"), "false" if target.insecure else "true")]


def _access(target):
    from wrapper.ovirt import api as ovirt_api
    return ovirt_api.access_from_url(target.url, target.password, target.cafile, target.insecure)


def facts(config, settings, user, env):
    """The pre-flight checks (wrapper.ovirt.preflight) as ``user`` with
    virt-v2v's environment ``env``: the engine's
    :class:`~wrapper.ovirt.api.TargetFacts` (a JobError refuses the job).
    ``virt-v2v-wrapper inspect`` asks the same (docs/contract.md §10)."""
    from wrapper.ovirt import preflight
    return preflight.check(config, settings, user, env, _access(config.target))


def prepare(config, settings, user, env):
    """The pre-flight checks (:func:`facts`), then the allocation: the job's,
    or the one the storage domain's type calls for (docs/contract.md §3.3)."""
    facts_ = facts(config, settings, user, env)
    if config.allocation:
        return config.allocation
    log.info("allocation %s chosen from the type of storage domain %s (%s)", facts_.allocation,
             config.target.storage, facts_.storage_type or "storage type not told")
    return facts_.allocation


def on_failure(target, disk_ids, settings):
    """Remove the disks ``disk_ids`` a failed upload created on ``target``; never raises."""
    disk_ids = list(disk_ids)
    if not disk_ids:
        log.info("no disk was created on the target: nothing to clean up")
        return
    log.info("conversion failed: removing the disks it created: %s", ", ".join(disk_ids))
    try:
        from wrapper.ovirt import cleanup as ovirt_cleanup
        timeout = float(settings.ovirt_cleanup_timeout)
        problems = ovirt_cleanup.remove_created_disks(_access(target), disk_ids, timeout=timeout)
    except Exception as e:      # cleanup must never mask the original error
        problems = ["cleanup of the created disks failed: %s" % e]
    for problem in problems:
        log.warning("cleanup: %s", problem)
    if not problems:
        log.info("removed %d disk(s) from the target", len(disk_ids))
