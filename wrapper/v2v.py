"""virt-v2v: the command line built from a job (docs/contract.md §3.4).

:func:`build_command` is pure: same Config, capabilities (what the installed
virt-v2v accepts, wrapper.v2vinfo), administrator settings (:class:`Tuning`)
and paths -> same argv and environment, compared as exact lists in the tests.
It passes only what the installed release takes: the new output names where
the capabilities print them, ``--smp``/``--memsize`` where ``--help`` lists
them, and none of the options 2.8 removed.
"""
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Optional

from wrapper import targets, v2vinfo
from wrapper.throttling import bandwidth, limits
from wrapper.config import SshSource, VddkSource
from wrapper.settings import DEFAULT_VDDK_LIBDIR
from wrapper.v2vinfo import Capabilities, parse_capabilities  # noqa: F401 (the names callers use)

log = logging.getLogger(__name__)

OVIRT_DEFAULT_NETWORK = "ovirtmgmt"
# Variables of the wrapper's own environment that virt-v2v may need.  Never
# HOME/USER/XDG_RUNTIME_DIR of the caller: those are set for the run-as user.
PASSED_ENV = ("PATH", "TMPDIR", "LIBGUESTFS_CACHEDIR", "LIBGUESTFS_TMPDIR")
PASSED_ENV_PREFIXES = ("LIBGUESTFS_", "SUPERMIN_")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def probe_capabilities(virt_v2v, runner, env=None, user=None, vddk=False):
    """What the installed virt-v2v accepts (wrapper.v2vinfo.probe), asked once
    per job as ``user`` (the run-as user, with virt-v2v's environment): the
    program may be one the caller named, so it runs with no more rights than
    virt-v2v itself."""
    return v2vinfo.probe(virt_v2v, runner, env=env, user=user, vddk=vddk)


def probe_for_job(config, settings, runner, user):
    """The capabilities a job's command is built from: the probe as ``user``
    with virt-v2v's environment (the ``-io`` keys too for a vddk job), and the
    refusal of a job this virt-v2v cannot run as the administrator set it up
    (wrapper.v2vinfo.job_refusal, raised).  A conversion and an inspection
    ask the same (docs/contract.md §3.4, §10)."""
    caps = probe_capabilities(settings.virt_v2v_path(), runner, user=user,
                              env=build_env(config, settings.environ, user),
                              vddk=isinstance(config.source, VddkSource))
    log.info("virt-v2v capabilities: %s", " ".join(caps.lines))
    log.info("%s", v2vinfo.describe(caps))
    refusal = v2vinfo.job_refusal(config, caps, settings)
    if refusal is not None:
        raise refusal
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
    vddk_config_file: Optional[str] = None  # the private copy of the vddk_config setting
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Tuning:
    """The administrator's settings that reach the command line
    (wrapper.settings, validated there), and the host's CPU count."""
    vddk_libdir: str = DEFAULT_VDDK_LIBDIR
    vddk_transports: Optional[str] = None
    vddk_compression: Optional[str] = None
    appliance_memsize: Optional[int] = None
    host_cpus: int = 1

    @classmethod
    def of(cls, settings, host_cpus=None):
        memsize = settings.appliance_memsize
        return cls(vddk_libdir=settings.vddk_libdir or DEFAULT_VDDK_LIBDIR,
                   vddk_transports=settings.vddk_transports or None,
                   vddk_compression=settings.vddk_compression or None,
                   appliance_memsize=int(memsize) if memsize else None,
                   host_cpus=host_cpus or os.cpu_count() or 1)


def source_args(config, paths, tuning=Tuning()):
    src = config.source
    if isinstance(src, VddkSource):
        args = ["-i", "libvirt", "-ic", src.uri, "-it", "vddk",
                "-io", "vddk-libdir=%s" % tuning.vddk_libdir,
                "-io", "vddk-thumbprint=%s" % src.fingerprint]
        if tuning.vddk_transports:
            args += ["-io", "vddk-transports=%s" % tuning.vddk_transports]
        if paths.vddk_config_file:
            args += ["-io", "vddk-config=%s" % paths.vddk_config_file]
        if tuning.vddk_compression:
            args += ["-io", "vddk-compression=%s" % tuning.vddk_compression]
        return args + ["-ip", paths.vmware_password_file]
    if isinstance(src, SshSource):
        return ["-i", "vmx", "-it", "ssh"]
    raise ValueError("unknown source %r" % (src,))


def appliance_smp(cpu, host_cpus):
    """vCPUs for the conversion appliance under the job's CPU limit ``cpu``
    (``"150%"``: percent of one CPU, docs/contract.md §6): enough to use the
    quota, ceil(percent / 100), at least 1 and at most the host's CPUs; None
    without a limit (virt-v2v chooses)."""
    if cpu is None:
        return None
    percent = float(limits.parse_cpu(cpu).rstrip("%"))
    return max(1, min(int(math.ceil(percent / 100.0)), max(1, host_cpus)))


def appliance_args(config, caps, tuning):
    """``--smp``/``--memsize`` (virt-v2v 2.10+, which lists them in ``--help``)."""
    args = []
    smp = appliance_smp((config.throttling or {}).get("cpu"), tuning.host_cpus)
    if smp and caps.accepts("--smp"):
        args += ["--smp", str(smp)]
    if tuning.appliance_memsize and caps.accepts("--memsize"):
        args += ["--memsize", str(tuning.appliance_memsize)]
    return args


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


def build_command(config, caps, paths, *, virt_v2v="virt-v2v", allocation=None, tuning=Tuning()):
    """Return the virt-v2v argv (no secrets: only paths to secret files)."""
    argv = [virt_v2v, "-v", "-x", "--machine-readable=file:%s" % paths.machine_readable_log,
            "--root", "first"]
    argv += source_args(config, paths, tuning)
    argv += targets.module_for(config.target).output_args(config.target, paths, allocation, caps)
    argv += ["-of", config.output_format]
    allocation = allocation or config.allocation
    if allocation:
        argv += ["-oa", allocation]
    argv += network_args(config, caps)
    for device, key_file in paths.luks_key_files:
        argv += ["--key", "%s:file:%s" % (device, key_file)]
    if paths.bandwidth_file and bandwidth.supported(caps):
        argv += ["--bandwidth-file", paths.bandwidth_file]
    argv += appliance_args(config, caps, tuning)
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
