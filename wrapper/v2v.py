"""virt-v2v: its capabilities and the command line built from a job (docs/contract.md §3.4).

:func:`build_command` is pure: same Config, capabilities and paths -> same
argv and environment, compared as exact lists in the tests.
"""
import logging
import re
from dataclasses import dataclass, field
from typing import Optional

from wrapper import targets
from wrapper.throttling import bandwidth
from wrapper.config import VDDK_LIBDIR, SshSource, VddkSource
from wrapper.errors import CommandError, ConversionError

log = logging.getLogger(__name__)

OVIRT_DEFAULT_NETWORK = "ovirtmgmt"
# Variables of the wrapper's own environment that virt-v2v may need.  Never
# HOME/USER/XDG_RUNTIME_DIR of the caller: those are set for the run-as user.
PASSED_ENV = ("PATH", "TMPDIR", "LIBGUESTFS_CACHEDIR", "LIBGUESTFS_TMPDIR")
PASSED_ENV_PREFIXES = ("LIBGUESTFS_", "SUPERMIN_")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Capabilities:
    lines: tuple = ()

    def has(self, name):
        return name in self.lines

    @property
    def major(self):
        """virt-v2v 2.x announces ``virt-v2v-2.0``; 1.4x has no such line."""
        majors = [int(m.group(1)) for m in (re.match(r"^virt-v2v-(\d+)\.", c) for c in self.lines) if m]
        return max(majors) if majors else 1


def parse_capabilities(text):
    return Capabilities(tuple(line.strip() for line in text.splitlines() if line.strip()))


def probe_capabilities(virt_v2v, runner, env=None, user=None):
    """Ask ``virt-v2v --machine-readable`` once at start, as ``user`` (the
    run-as user, with virt-v2v's environment): the program may be one the
    caller named, so it runs with no more rights than virt-v2v itself."""
    try:
        res = runner([virt_v2v, "--machine-readable"], env=env, timeout=60, user=user)
    except CommandError as e:
        raise ConversionError("cannot query virt-v2v capabilities (%s)" % e) from None
    caps = parse_capabilities(res.out)
    if not caps.has("virt-v2v"):
        raise ConversionError("%s --machine-readable did not answer like virt-v2v" % virt_v2v)
    return caps


@dataclass(frozen=True)
class RunPaths:
    """Files the command refers to (all created by the job runner)."""
    machine_readable_log: str
    vmware_password_file: Optional[str] = None
    rhv_password_file: Optional[str] = None
    luks_key_files: tuple = ()          # (device, path) in config order
    ssh_auth_sock: Optional[str] = None
    bandwidth_file: Optional[str] = None   # wrapper.throttling.bandwidth: the source read limit
    vddk_libdir: Optional[str] = None      # --vddk-libdir (settings); None: VDDK_LIBDIR
    extra: dict = field(default_factory=dict)


def source_args(config, paths):
    src = config.source
    if isinstance(src, VddkSource):
        return ["-i", "libvirt", "-ic", src.uri, "-it", "vddk",
                "-io", "vddk-libdir=%s" % (paths.vddk_libdir or VDDK_LIBDIR),
                "-io", "vddk-thumbprint=%s" % src.fingerprint,
                "-ip", paths.vmware_password_file]
    if isinstance(src, SshSource):
        return ["-i", "vmx", "-it", "ssh"]
    raise ValueError("unknown source %r" % (src,))


def network_args(config, caps):
    args = []
    for m in config.network_mappings:
        if m.mac_address and caps.has("mac-option"):
            args += ["--mac", "%s:bridge:%s" % (m.mac_address, m.destination)]
        else:
            # VMware NICs reach virt-v2v as bridges through libvirt (vddk) but as
            # networks through a .vmx without connectionType=bridged (ssh), and
            # --bridge alone does not remap a network: map both kinds.
            args += ["--bridge", "%s:%s" % (m.source, m.destination),
                     "--network", "%s:%s" % (m.source, m.destination)]
    if config.target.ovirt:
        args += ["--bridge", OVIRT_DEFAULT_NETWORK, "--network", OVIRT_DEFAULT_NETWORK]
    return args


def build_command(config, caps, paths, *, virt_v2v="virt-v2v", allocation=None):
    """Return the virt-v2v argv (no secrets: only paths to secret files)."""
    argv = [virt_v2v, "-v", "-x", "--machine-readable=file:%s" % paths.machine_readable_log,
            "--root", "first"]
    argv += source_args(config, paths)
    argv += targets.module_for(config.target).output_args(config.target, paths, allocation)
    argv += ["-of", config.output_format]
    allocation = allocation or config.allocation
    if allocation:
        argv += ["-oa", allocation]
    argv += network_args(config, caps)
    for device, key_file in paths.luks_key_files:
        argv += ["--key", "%s:file:%s" % (device, key_file)]
    if paths.bandwidth_file and bandwidth.supported(caps):
        argv += ["--bandwidth-file", paths.bandwidth_file]
    argv.append(config.vm_name)
    return argv


def build_env(config, environ, user, paths=None):
    """The environment virt-v2v runs with: minimal, secret-free.  Without
    ``paths``: what the programs it runs get before the job's files exist
    (the capability probe, the rhv-upload pre-flight); without ``config``:
    a probe outside a job (``--check-throttling``)."""
    env = {"LANG": "C", "LC_ALL": "C", "LIBGUESTFS_BACKEND": "direct",
           "PATH": environ.get("PATH") or DEFAULT_PATH}
    env.update(user.identity_env())
    for name, value in environ.items():
        if name in PASSED_ENV or name.startswith(PASSED_ENV_PREFIXES):
            env[name] = value
    if config is not None and config.virtio_win and config.install_drivers:
        env["VIRTIO_WIN"] = config.virtio_win
    if paths is not None and paths.ssh_auth_sock:
        env["SSH_AUTH_SOCK"] = paths.ssh_auth_sock
    return env
