"""Output targets: each module knows its virt-v2v arguments and its needs.

A target module provides ``output_args(target, paths, allocation) -> list``
and may provide hooks the job runner calls: ``prepare(target, config, ctx)``
(before the conversion starts, may refine the config) and
``on_failure(target, state, ctx)`` (after a failed conversion).
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
