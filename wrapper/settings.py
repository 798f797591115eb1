"""Where things live: options, environment variables and defaults (docs/contract.md §2).

Every location the wrapper touches is a field here so tests can redirect it.
The option wins over the environment variable, which wins over the default.
"""
import os
import shutil
from dataclasses import dataclass, field, replace

from wrapper.security.text import short

ENV_PREFIX = "VIRT_V2V_WRAPPER_"

# (option name, attribute, metavar, help, default).  A default of None means
# "decided later" (log dir depends on the target, run-as on the host).
LOCATIONS = (
    ("state-dir", "state_dir", "DIR", "state and throttling files (default /tmp)", "/tmp"),
    ("log-dir", "log_dir", "DIR",
     "log files (default /var/log/vdsm/import for oVirt/RHV targets, else /var/log/virt-v2v)", None),
    ("virt-v2v", "virt_v2v", "PATH", "the virt-v2v program (default: virt-v2v on PATH)", None),
    ("run-as", "run_as", "USER[:GROUP]",
     "user that runs virt-v2v (default vdsm:kvm on oVirt hosts, else the sudo caller, else the "
     "invoking user; never root unless given here: an NFS export_domain needs --run-as root)",
     None),
    ("metrics-dir", "metrics_dir", "DIR",
     "keep a Prometheus textfile v2v-import-<tag>.prom per conversion here, for node_exporter's "
     "textfile collector (default: none)", None),
    ("iso-domain-root", "iso_domain_root", "DIR",
     "where oVirt storage domains are mounted (default /rhev/data-center/mnt)",
     "/rhev/data-center/mnt"),
    ("job", "job", "FILE", "read the job from FILE instead of stdin (a regular file, read once)",
     None),
    # administrator settings, never from the job (wrapper/parallel.py checks them)
    ("parallel", "parallel", "N",
     "copy up to N disks of a multi-disk VM at once where virt-v2v reports parallel-option "
     "(2.8+), each disk credited from its own nbdcopy; 1 copies one at a time (default 2)", "2"),
    ("parallel-max", "parallel_max", "N",
     "this host's cap on --parallel, whatever else sets it (default 4)", "4"),
)

# Administrator settings that tune the conversion (docs/contract.md §2, §3.4): the
# same shape as LOCATIONS; never the job's.  Each is checked by TUNING_CHECKS.
DEFAULT_VDDK_LIBDIR = "/opt/vmware-vix-disklib-distrib"
VDDK_TRANSPORTS = ("file", "san", "hotadd", "nbdssl", "nbd")
VDDK_COMPRESSIONS = ("none", "zlib", "fastlz", "skipz")
MEMSIZE_MIN, MEMSIZE_MAX = 256, 1048576          # MiB
TUNING = (
    ("vddk-libdir", "vddk_libdir", "DIR",
     "the VDDK library directory, holding lib64/libvixDiskLib.so.N, for vddk jobs "
     "(default %s)" % DEFAULT_VDDK_LIBDIR, DEFAULT_VDDK_LIBDIR),
    ("vddk-transports", "vddk_transports", "MODE[:MODE...]",
     "VDDK transport modes to try, in order, from %s (-io vddk-transports=; default: "
     "VDDK's)" % "/".join(VDDK_TRANSPORTS), None),
    ("vddk-config", "vddk_config", "FILE",
     "a VDDK configuration file of VixDiskLib.nfcAio.Session.BufSizeIn64KB/BufCount lines, "
     "root-owned and writable by root only (-io vddk-config=; default: none)", None),
    ("vddk-compression", "vddk_compression", "TYPE",
     "VDDK compression, %s (-io vddk-compression=, virt-v2v 2.10+; default: none "
     "asked)" % "/".join(VDDK_COMPRESSIONS), None),
    ("appliance-memsize", "appliance_memsize", "MIB",
     "memory of the conversion appliance in MiB, %d to %d (--memsize, virt-v2v 2.10+; "
     "default: virt-v2v's)" % (MEMSIZE_MIN, MEMSIZE_MAX), None),
)

# On/off switches: (option name, attribute, help).  The environment variable
# takes 1/yes/true/on or 0/no/false/off (anything else is refused).
SWITCHES = (
    ("foreground", "foreground",
     "stay in the foreground whatever the job's \"daemonize\" says (containers)"),
)
# The CA an oVirt host trusts for its engine: rhv_cafile's default (one owner).
VDSM_CA = "/etc/pki/vdsm/certs/cacert.pem"
TRUE_WORDS = ("1", "yes", "true", "on")
FALSE_WORDS = ("0", "no", "false", "off", "")

# Seams that are not part of the documented command line but that tests and
# unusual hosts need: environment variables only.
HIDDEN = (
    ("SYSTEMD_MARKER", "systemd_marker", "/run/systemd/system"),
    ("CGROUP_ROOT", "cgroup_root", "/sys/fs/cgroup"),
    ("LOCK_DIR", "lock_dir", "/run/virt-v2v-wrapper"),
    ("VDSM_CA", "vdsm_ca", VDSM_CA),
    ("OVIRT_CLEANUP_TIMEOUT", "ovirt_cleanup_timeout", "300"),
    ("OVIRT_PREFLIGHT_TIMEOUT", "ovirt_preflight_timeout", "30"),
    ("METRICS_KEEP", "metrics_keep", "3600"),
    # the VDDK pre-flight (wrapper.vmware.preflight): on unless 0/no/false/off, and its bound
    ("VDDK_PREFLIGHT", "vddk_preflight", "on"),
    ("VDDK_PREFLIGHT_TIMEOUT", "vddk_preflight_timeout", "10"),
    ("INSPECTOR", "inspector", ""),
    ("INSPECT_TIMEOUT", "inspect_timeout", "1800"),
)


def env_name(attr):
    return ENV_PREFIX + attr.upper()


@dataclass(frozen=True)
class Settings:
    state_dir: str = "/tmp"
    log_dir: str = None
    virt_v2v: str = None
    run_as: str = None
    iso_domain_root: str = "/rhev/data-center/mnt"
    metrics_dir: str = None
    systemd_marker: str = "/run/systemd/system"
    cgroup_root: str = "/sys/fs/cgroup"
    lock_dir: str = "/run/virt-v2v-wrapper"
    vdsm_ca: str = VDSM_CA
    ovirt_cleanup_timeout: str = "300"
    ovirt_preflight_timeout: str = "30"
    metrics_keep: str = "3600"
    vddk_preflight: str = "on"
    vddk_preflight_timeout: str = "10"
    inspector: str = ""
    inspect_timeout: str = "1800"
    job: str = None
    vddk_libdir: str = DEFAULT_VDDK_LIBDIR
    vddk_transports: str = None
    vddk_config: str = None
    vddk_compression: str = None
    appliance_memsize: str = None
    parallel: str = "2"
    parallel_max: str = "4"
    foreground: bool = False
    environ: dict = field(default_factory=dict, compare=False, repr=False)

    def with_(self, **kw):
        return replace(self, **kw)

    def trusted_uids(self):
        """Who may own what the caller hands the wrapper (a job file, a secret
        file, the throttling file): root, the user we run as, the sudo caller."""
        sudo = sudo_caller(self.environ)
        return frozenset({0, os.geteuid()} | ({sudo[0]} if sudo else set()))

    def virt_v2v_path(self):
        if self.virt_v2v:
            return self.virt_v2v
        path = self.environ.get("PATH", os.defpath)
        return shutil.which("virt-v2v", path=path) or "virt-v2v"


def sudo_caller(environ):
    """(uid, gid) of the user who ran us through sudo, or None."""
    try:
        return int(environ["SUDO_UID"]), int(environ.get("SUDO_GID", environ["SUDO_UID"]))
    except (KeyError, ValueError):
        return None


def resolve(options, environ):
    """Build Settings from parsed options (attr -> value or None) and environ."""
    values = {}
    for _opt, attr, _meta, _help, default in LOCATIONS + TUNING:
        value = options.get(attr)
        if value is None:
            value = environ.get(env_name(attr)) or default
        values[attr] = value
    for suffix, attr, default in HIDDEN:
        values[attr] = environ.get(ENV_PREFIX + suffix) or default
    for _opt, attr, _help in SWITCHES:
        values[attr] = True if options.get(attr) else switch_value(environ, attr)
    for attr in ("state_dir", "log_dir", "iso_domain_root", "vdsm_ca", "job", "metrics_dir",
                 "vddk_libdir", "vddk_config"):
        if values[attr]:
            values[attr] = os.path.abspath(values[attr])
    # virt-v2v runs in /: a path to it means the caller's directory; a bare
    # name is looked up on PATH (virt_v2v_path)
    if values["virt_v2v"] and "/" in values["virt_v2v"]:
        values["virt_v2v"] = os.path.abspath(values["virt_v2v"])
    return Settings(environ=dict(environ), **values)


def switch_value(environ, attr):
    """The on/off value of a switch's environment variable; None for a word
    that is neither (the command line refuses it: :func:`switch_problem`)."""
    word = environ.get(env_name(attr), "").strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def switch_problem(settings):
    """One line about the first switch whose environment variable made no sense, or None."""
    for _opt, attr, _help in SWITCHES:
        if getattr(settings, attr) is None:
            return "%s must be one of %s (or unset)" % (
                env_name(attr), "/".join(TRUE_WORDS + FALSE_WORDS[:-1]))
    return None


def _transports_problem(value):
    modes = value.split(":")
    bad = [m for m in modes if m not in VDDK_TRANSPORTS]
    if bad or len(set(modes)) != len(modes):
        return "must be modes from %s separated by ':', each once" % "/".join(VDDK_TRANSPORTS)
    return None


def _memsize_problem(value):
    if not (value.isascii() and value.isdigit() and len(value) <= 8
            and MEMSIZE_MIN <= int(value) <= MEMSIZE_MAX):
        return "must be a whole number of MiB from %d to %d" % (MEMSIZE_MIN, MEMSIZE_MAX)
    return None


def _path_problem(value):
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or len(value) > 4096:
        return "must be a path of at most 4096 characters with no control character"
    return None


TUNING_CHECKS = {
    "vddk_libdir": _path_problem,
    "vddk_config": _path_problem,
    "vddk_transports": _transports_problem,
    "vddk_compression": lambda v: None if v in VDDK_COMPRESSIONS else
    "must be one of %s" % "/".join(VDDK_COMPRESSIONS),
    "appliance_memsize": _memsize_problem,
}


def tuning_problem(settings):
    """One line about the first tuning setting that makes no sense, or None:
    ``--vddk-transports (VIRT_V2V_WRAPPER_VDDK_TRANSPORTS) ...``."""
    for opt, attr, _meta, _help, _default in TUNING:
        value = getattr(settings, attr)
        why = TUNING_CHECKS[attr](value) if value is not None else None
        if why:
            return "--%s (%s) %s, not %s" % (opt, env_name(attr), why, short(value))
    return None

