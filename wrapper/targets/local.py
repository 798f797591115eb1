"""``output_dir``: converted disks plus libvirt XML in a local directory."""
from wrapper.targets import leftovers


def output_args(target, paths, allocation, caps):
    """``-o disk`` where virt-v2v prints ``output:disk`` (2.8+), else ``-o local``."""
    return ["-o", caps.output_name("local"), "-os", target.path]


def watch(target, vm_name, user, seen=None):
    """Before virt-v2v starts: the directory it writes ``<vm_name>-sdX`` and
    ``<vm_name>.xml`` into, recorded (wrapper.targets.leftovers); ``seen``:
    the (device, inode) the caller's check found writable."""
    return leftovers.watch_local(target.path, vm_name, user, seen=seen)
