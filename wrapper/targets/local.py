"""``output_dir``: converted disks plus libvirt XML in a local directory."""


def output_args(target, paths, allocation):
    return ["-o", "local", "-os", target.path]


