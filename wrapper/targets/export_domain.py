"""``export_domain``: an oVirt export storage domain (NFS share or local dir).

virt-v2v needs root here: it mounts the NFS share itself and writes as 36:36.
"""


def output_args(target, paths, allocation, caps):
    """``-o ovirt`` where virt-v2v prints ``output:ovirt`` (2.8+), else ``-o rhv``."""
    return ["-o", caps.output_name("rhv"), "-os", target.path]
