"""The job: parse and validate the JSON object from stdin into a frozen Config
(docs/contract.md §3).  Types are checked, never coerced.  Problems are collected so
``--validate`` can report them all; :func:`parse_job` raises the first.

Every string of the job, nested ones too, passes the rules of
:mod:`wrapper.jobinput` (no NUL, no lone surrogate anywhere; no control
character in names, paths and URIs; secrets have their own rules) before it
is looked at, so no message can span two lines.  Values a message repeats
go through :func:`~wrapper.security.text.oneline` or :func:`~wrapper.security.text.short`.
Paths handed to virt-v2v are made absolute (it runs in ``/``).
"""
import os
import re
from dataclasses import dataclass, field, replace
from typing import Optional
from urllib.parse import urlsplit

from wrapper import isodomain, luks
from wrapper.throttling import limits
from wrapper.errors import JobError
from wrapper.security.text import oneline
from wrapper.jobreader import KNOWN_KEYS, JobReader, json_type  # noqa: F401 (KNOWN_KEYS: the schema)
from wrapper.security.boundary import Boundary
from wrapper.security.secrets import Secret

MAX_IGNORED_SHOWN = 50
MAX_CA_BYTES = 1 << 20
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){15,63}")
_MAC = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_NFS = re.compile(r"[^:/]+:/")


def is_nfs_share(path):
    """``<host>:/<path>``: an export domain virt-v2v mounts itself (as root)."""
    return bool(path and _NFS.match(path))


@dataclass(frozen=True)
class VddkSource:
    uri: str
    password: Secret
    fingerprint: str
    name = "vddk"


@dataclass(frozen=True)
class SshSource:
    key: Optional[Secret]
    name = "ssh"


@dataclass(frozen=True)
class RhvUploadTarget:
    url: str
    password: Secret
    cluster: str
    storage: str
    cafile: Optional[str]
    insecure: bool
    # the bytes of a CA file the job names, read once with the caller's rights;
    # the job hands everyone a private copy (wrapper.job), never the caller's path
    ca_pem: Optional[bytes] = field(default=None, repr=False, compare=False)
    name = "rhv-upload"
    ovirt = True


@dataclass(frozen=True)
class ExportDomainTarget:
    path: str
    name = "export-domain"
    ovirt = True


@dataclass(frozen=True)
class LocalTarget:
    path: str
    name = "local"
    ovirt = False


@dataclass(frozen=True)
class NetworkMapping:
    source: str
    destination: str
    mac_address: Optional[str] = None


@dataclass(frozen=True)
class Config:
    vm_name: str
    source: object
    target: object
    output_format: str = "raw"
    allocation: Optional[str] = None
    network_mappings: tuple = ()
    source_disks: tuple = ()
    virtio_win: Optional[str] = None
    install_drivers: bool = False
    throttling: dict = field(default_factory=dict)
    luks_keys: tuple = ()
    daemonize: bool = True
    ignored_keys: tuple = ()
    notes: tuple = ()          # things worth a line in the wrapper log


def _split(r, key, value, port=True):
    """urlsplit ``value`` of ``key`` (and its port); None, with a problem
    naming the key, when it cannot be parsed."""
    try:
        parts = urlsplit(value)
    except ValueError as e:          # "Invalid IPv6 URL", bad characters in the host
        r.problem(key, "is not a valid URI (%s)" % oneline(e, 80))
        return None
    try:
        if port:
            parts.port
    except ValueError:
        r.problem(key, "has an invalid port")
        return None
    return parts


def uri_has_password(value):
    """Whether the URI ``value`` carries a password (``scheme://user:PW@host``).
    Pure string work, before any parser can repeat the text in an error."""
    _scheme, sep, rest = value.partition("://")
    if not sep:
        return False
    authority = rest
    for end in "/?#":
        authority = authority.split(end, 1)[0]
    userinfo, at, _host = authority.rpartition("@")
    return bool(at) and ":" in userinfo


def _no_password(r, key, value, instead):
    """False (and a one-line refusal that never repeats ``value``) when the
    URI ``value`` of ``key`` holds a password: it would reach the wrapper
    log, stderr and virt-v2v's argv."""
    if isinstance(value, str) and uri_has_password(value):
        r.problem(key, "must not contain a password (user:password@): %s" % instead)
        return False
    return True


def _vm_name(r):
    vm_name = r.string("vm_name")
    if not isinstance(vm_name, str) or not vm_name.strip():
        return None
    if not _no_password(r, "vm_name", vm_name, "give the key in ssh_key or ssh_key_file"):
        return None
    if vm_name.startswith("-"):
        # the last argument of virt-v2v, after options: nothing ends them before it
        r.problem("vm_name", "must not begin with '-' (virt-v2v would take it for an option)")
        return None
    return vm_name


def _source(r, vm_name):
    transport = r.choice("transport_method", ("vddk", "ssh"))
    if r.job.get("transport_method") is None and "transport_method" not in r.bad:
        r.problem("transport_method", "is required (vddk or ssh)")
    if transport == "vddk":
        if vm_name is not None and "://" in vm_name:
            _split(r, "vm_name", vm_name, port=False)   # describing it parses it
        uri = r.string("vmware_uri")
        if not _no_password(r, "vmware_uri", uri, "give vmware_password or vmware_password_file"):
            uri = None
        password = r.secret("vmware_password")
        fingerprint = r.string("vmware_fingerprint")
        if fingerprint and not _FINGERPRINT.fullmatch(fingerprint):
            r.problem("vmware_fingerprint", "must be colon-separated hex pairs (the SSL thumbprint)")
        if uri:
            parts = _split(r, "vmware_uri", uri)
            if parts is not None and not parts.scheme:
                r.problem("vmware_uri", "must be a libvirt URI such as esx://root@host?no_verify=1")
        return VddkSource(uri, Secret(password or ""), fingerprint)
    if transport == "ssh":
        key = r.secret("ssh_key", required=False)
        if vm_name is not None:
            parts = _split(r, "vm_name", vm_name)
            if parts is not None and (parts.scheme != "ssh" or not parts.hostname or not parts.path):
                r.problem("vm_name", "must be an ssh:// URI of the .vmx file with the ssh transport")
        return SshSource(Secret(key) if key else None)
    return None


def _target(r, settings):
    job = r.job
    if "rhv_url" in job:
        url = r.string("rhv_url")
        if not _no_password(r, "rhv_url", url, "give rhv_password or rhv_password_file"):
            url = None
        if url:
            parts = _split(r, "rhv_url", url)
            if parts is not None and (parts.scheme not in ("https", "http") or not parts.hostname):
                r.problem("rhv_url", "must be the https:// URL of the oVirt API")
            elif parts is not None and (not url.isascii() or any(c.isspace() for c in url)):
                # curl sends the URL as it is: it must already be percent-encoded
                r.problem("rhv_url", "must be an ASCII URL without spaces (percent-encode "
                                     "other characters)")
        password = r.secret("rhv_password")
        cluster = r.string("rhv_cluster")
        storage = r.string("rhv_storage")
        insecure = r.boolean("insecure_connection", False)
        cafile = r.string("rhv_cafile", required=False)
        ca_pem = None
        if cafile and not insecure:
            # the caller's file: read once, with the caller's rights (root never opens it)
            ca_pem = r.supplied("rhv_cafile", os.path.abspath(cafile), "the CA certificate", MAX_CA_BYTES)
        elif not insecure and "rhv_cafile" not in r.bad:
            cafile = settings.vdsm_ca            # the host's own: the administrator's path
            if not os.path.isfile(cafile):
                r.problem("rhv_cafile", "CA certificate %s does not exist (set rhv_cafile or "
                                        "insecure_connection)" % oneline(cafile, 200))
        # virt-v2v runs in /: a relative path means the caller's directory
        cafile = os.path.abspath(cafile) if cafile else cafile
        return RhvUploadTarget(url, Secret(password or ""), cluster, storage, cafile, insecure, ca_pem)
    if "export_domain" in job:
        path = r.string("export_domain")
        if path:
            if _NFS.match(path):
                pass                             # <host>:/<path>, for virt-v2v to mount
            elif r.check_dir("export_domain", os.path.abspath(path),
                             "(not an NFS share <host>:/<path>) the directory"):
                path = os.path.abspath(path)
        return ExportDomainTarget(path)
    if "output_dir" in job:
        path = r.string("output_dir")
        if path:
            r.check_dir("output_dir", os.path.abspath(path), "the directory")
        return LocalTarget(os.path.abspath(path) if path else path)
    r.problem(None, "no output target: give rhv_url (oVirt API upload), export_domain or output_dir")
    return None


def _mappings(r):
    value = r.get("network_mappings", (list,), "an array", False, [])
    mappings = []
    for i, entry in enumerate(value or []):
        where = "network_mappings[%d]" % i
        if not isinstance(entry, dict):
            r.problem(where, "must be an object with source and destination")
            continue
        src, dst, mac = entry.get("source"), entry.get("destination"), entry.get("mac_address")
        if not isinstance(src, str) or not src or not isinstance(dst, str) or not dst:
            r.problem(where, "needs string keys source and destination")
            continue
        if mac is not None and not (isinstance(mac, str) and _MAC.fullmatch(mac)):
            r.problem(where, "mac_address must look like 00:11:22:33:44:55")
            continue
        mappings.append(NetworkMapping(src, dst, mac))
    return tuple(mappings)


def _string_list(r, key):
    value = r.get(key, (list,), "an array of strings", False, [])
    if any(not isinstance(v, str) for v in value or []):
        r.problem(key, "must be an array of strings")
        return ()
    return tuple(value or ())


def _drivers(r, settings, notes):
    virtio_win = r.string("virtio_win", required=False)
    install = r.boolean("install_drivers", False)
    if virtio_win:
        if os.sep in virtio_win:
            path = os.path.abspath(virtio_win)     # virt-v2v runs in /
            # virt-v2v takes an ISO or a directory; whether it is there is
            # asked with the caller's rights, not root's
            r.check_path("virtio_win", path, "the drivers ISO", dirs=True)
        else:
            path = isodomain.find_iso(settings.iso_domain_root, virtio_win)
            if not path:
                r.problem("virtio_win", "%s was not found in an ISO domain under %s"
                          % (oneline(virtio_win, 200), oneline(settings.iso_domain_root, 200)))
        return path, True
    if install:
        path = isodomain.find_iso(settings.iso_domain_root)
        if path:
            notes.append("drivers ISO chosen from the ISO domain: %s" % oneline(path, 300))
        else:
            notes.append("install_drivers: no drivers ISO found under %s; converting without "
                         "drivers" % oneline(settings.iso_domain_root, 300))
        return path, install
    return None, False


def _throttling(r):
    value = r.get("throttling", (dict,), "an object", False, {})
    changes, problems = limits.parse_limits(value or {})
    for key, message in problems:
        r.problem("throttling.%s" % key if key else "throttling", message)
    return changes


def _luks(r, vm_name):
    explicit = r.string("luks_keys_vault", required=False)
    if r.job.get("luks_keys_vault") is not None and not explicit:
        return ()                    # a bad value, already reported: no default
    path = explicit or luks.default_vault(r.boundary.caller)
    if not path or not isinstance(vm_name, str):
        return ()
    try:
        # the default vault is optional: absent (to the caller) is no vault
        return luks.read_vault(r.boundary, path, vm_name, optional=not explicit)
    except JobError as e:
        r.problems.append(e)
        return ()


def _ignored(job):
    """Names of unknown keys, escaped for the log (they may hold anything)."""
    names = sorted(oneline(k, 100) for k in job if k not in KNOWN_KEYS)
    if len(names) > MAX_IGNORED_SHOWN:
        names = names[:MAX_IGNORED_SHOWN] + ["... and %d more" % (len(names) - MAX_IGNORED_SHOWN)]
    return tuple(names)


def collect(job, settings, boundary=None):
    """Return ``(config_or_None, problems)`` for a decoded job.  Every path
    the job names is opened or checked through ``boundary`` (default: the
    caller of this process, :mod:`wrapper.security.boundary`)."""
    if not isinstance(job, dict):
        return None, [JobError(None, "the job must be a JSON object, not %s" % json_type(job))]
    r = JobReader(job, boundary or Boundary.of(settings.environ))
    notes = []
    vm_name = _vm_name(r)
    source = _source(r, vm_name)
    target = _target(r, settings)
    output_format = r.choice("output_format", ("raw", "qcow2"), "raw")
    allocation = r.choice("allocation", ("preallocated", "sparse"))
    mappings = _mappings(r)
    source_disks = _string_list(r, "source_disks")
    virtio_win, install = _drivers(r, settings, notes)
    throttling = _throttling(r)
    luks_keys = _luks(r, vm_name)
    daemonize = r.boolean("daemonize", True)
    ignored = _ignored(job)
    for key in r.bad:               # keys not read for this job (other transport, unknown)
        r.report_bad(key)
    if r.problems:
        return None, r.problems
    return Config(vm_name=vm_name, source=source, target=target, output_format=output_format,
                  allocation=allocation, network_mappings=mappings, source_disks=source_disks,
                  virtio_win=virtio_win, install_drivers=install, throttling=throttling,
                  luks_keys=luks_keys, daemonize=daemonize, ignored_keys=ignored,
                  notes=tuple(notes)), []


def in_foreground(config):
    """``config`` with ``daemonize`` off (``--foreground`` wins over the job)."""
    return replace(config, daemonize=False)


def parse_job(job, settings, boundary=None):
    """Return a Config or raise the first problem as a JobError."""
    config, problems = collect(job, settings, boundary)
    if problems:
        raise problems[0]
    return config
