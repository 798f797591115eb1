"""``export_domain``: an oVirt export storage domain (NFS share or local dir).

virt-v2v needs root here: it mounts the NFS share itself and writes as 36:36.
"""


def output_args(target, paths, allocation):
    return ["-o", "rhv", "-os", target.path]
