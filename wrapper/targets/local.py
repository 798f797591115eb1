"""``output_dir``: converted disks plus libvirt XML in a local directory."""


def output_args(target, paths, allocation, caps):
    """``-o disk`` where virt-v2v prints ``output:disk`` (2.8+), else ``-o local``."""
    return ["-o", caps.output_name("local"), "-os", target.path]


