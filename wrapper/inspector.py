"""virt-v2v-inspector: finding it, its command line, running it, reading its
report (docs/contract.md §10).

``virt-v2v-inspector`` (virt-v2v 2.1+) runs the same input side as a
conversion -- it opens the source with virt-v2v's ``-i*`` options, inspects
and converts the guest in a throw-away overlay -- and writes an XML report of
the guest and of each disk's virtual and estimated size (``-O``).  Nothing is
copied and nothing is written to a target.

* :func:`build_command` is pure: the source options are :func:`wrapper.v2v.source_args`
  with the conversion's :class:`wrapper.v2v.Tuning`, the very ones a conversion
  gets, and the report goes to a descriptor.
* :func:`parse_report` is pure and bounded: the report is written by a
  program that runs as the run-as user, so it is read as hostile input (at
  most :data:`MAX_REPORT` bytes, numbers bounded, texts cut).
* :func:`run` starts it as a plain child in its own process group
  (:class:`wrapper.launch.ChildProcess`, the foreground conversion's
  handle), bounded by a deadline, and stops the whole group on a timeout
  or a signal recorded by :class:`wrapper.monitor.SignalFlag`.
"""
import os
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Optional

from wrapper import v2v
from wrapper.launch import ChildProcess
from wrapper.security.text import oneline

PROGRAM = "virt-v2v-inspector"
MAX_REPORT = 1 << 20            # a real report is a few KiB
MAX_DISKS = 256                 # as state.MAX_DISKS
MAX_TEXT = 200
MAX_SIZE = 1 << 60              # bytes: more is not a disk
STOP_GRACE = 10.0               # SIGTERM, then SIGKILL to the process group
POLL = 0.1


def program_path(settings):
    """The administrator's ``VIRT_V2V_WRAPPER_INSPECTOR``; else the
    ``virt-v2v-inspector`` next to the virt-v2v program in use (the same
    package: its version must match); else the one on ``PATH``."""
    if settings.inspector:
        return settings.inspector
    v2v_path = settings.virt_v2v_path()
    if os.sep in v2v_path:
        sibling = os.path.join(os.path.dirname(v2v_path), PROGRAM)
        if os.path.isfile(sibling) and os.access(sibling, os.X_OK):
            return sibling
    return shutil.which(PROGRAM, path=settings.environ.get("PATH", os.defpath)) or PROGRAM


def build_command(config, paths, program, report_path, caps=None, tuning=v2v.Tuning()):
    """The inspector's argv: virt-v2v's verbose and machine-readable flags,
    the job's source exactly as a conversion gets it (:func:`wrapper.v2v.source_args`
    with the administrator's :class:`wrapper.v2v.Tuning`: VDDK library
    directory, transports, configuration copy, compression), the LUKS keys,
    the appliance's ``--smp``/``--memsize`` where the installed release takes
    them (:func:`wrapper.v2v.appliance_args`, from ``caps``), and the report
    written to ``report_path``.  No secret: paths to secret files."""
    argv = [program, "-v", "-x", "--machine-readable=file:%s" % paths.machine_readable_log,
            "--root", "first"]
    argv += v2v.source_args(config, paths, tuning)
    for device, key_file in paths.luks_key_files:
        argv += ["--key", "%s:file:%s" % (device, key_file)]
    if caps is not None:
        argv += v2v.appliance_args(config, caps, tuning)
    argv += ["-O", report_path, config.vm_name]
    return argv


# ---------------------------------------------------------------- the report

@dataclass(frozen=True)
class InspectedDisk:
    index: int
    virtual_size: Optional[int]
    allocated: Optional[int]          # estimated size after conversion (-oa sparse)


@dataclass(frozen=True)
class Report:
    version: Optional[str]
    guest: dict
    disks: tuple = ()
    extra: dict = field(default_factory=dict)


def _text(element, limit=MAX_TEXT):
    if element is None or element.text is None:
        return None
    text = element.text.strip()
    return oneline(text, limit) if text else None


def _size(element):
    text = _text(element, 30)
    if text is None or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if value <= MAX_SIZE else None


_OS_FIELDS = (("name", "os"), ("distro", "distro"), ("osinfo", "osinfo"), ("arch", "arch"),
              ("major_version", "major_version"), ("minor_version", "minor_version"),
              ("product_name", "product"), ("product_variant", "variant"),
              ("package_format", "package_format"), ("package_management", "package_management"),
              ("hostname", "hostname"))


def _guest(root):
    osel = root.find("operatingsystem")
    guest = {key: None for _tag, key in _OS_FIELDS}
    if osel is not None:
        for tag, key in _OS_FIELDS:
            guest[key] = _text(osel.find(tag))
    for key in ("major_version", "minor_version"):
        value = guest[key]
        guest[key] = int(value) if value is not None and value.isdigit() and len(value) < 9 else None
    if guest["major_version"] is not None:
        guest["version"] = "%d.%d" % (guest["major_version"], guest["minor_version"] or 0)
    else:
        guest["version"] = None
    guest["firmware"] = _firmware(root)
    guest["boot_order"] = _boot_order(root)
    return guest


def _firmware(root):
    for path in ("firmware", "operatingsystem/firmware"):
        el = root.find(path)
        if el is not None:
            return oneline(el.get("type") or (el.text or "").strip(), 40) or None
    return None


def _boot_order(root):
    el = root.find("boot-order")
    if el is None:
        return None
    return [oneline(d.text.strip(), MAX_TEXT) for d in list(el)[:MAX_DISKS]
            if d.text and d.text.strip()]


def _disks(root):
    disks = []
    for i, el in enumerate((root.find("disks") if root.find("disks") is not None else [])):
        if i >= MAX_DISKS:
            break
        if el.tag != "disk":
            continue
        index = el.get("index", "")
        disks.append(InspectedDisk(int(index) if index.isdigit() and len(index) < 6 else i,
                                   _size(el.find("virtual-size")), _size(el.find("allocated"))))
    return tuple(disks)


class ReportError(ValueError):
    """The report is missing, too large or not the inspector's XML."""


def parse_report(data):
    """:class:`Report` from the bytes of an ``-O`` report; ReportError when
    it is empty, larger than :data:`MAX_REPORT` or not a ``v2v-inspection``.
    A DOCTYPE is refused before parsing (no entity of any kind is needed)."""
    if not data or not data.strip():
        raise ReportError("the inspector wrote no report")
    if len(data) > MAX_REPORT:
        raise ReportError("the inspector's report is larger than %d bytes" % MAX_REPORT)
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ReportError("the inspector's report declares a DOCTYPE")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise ReportError("the inspector's report is not XML (%s)" % oneline(e, 100)) from None
    if root.tag != "v2v-inspection":
        raise ReportError("the inspector's report is not a v2v-inspection document")
    return Report(version=_text(root.find("version"), 40), guest=_guest(root), disks=_disks(root))


def read_fd(fd, limit=MAX_REPORT):
    """At most ``limit`` + 1 bytes of the file behind ``fd``, from its start."""
    chunks, size, offset = [], 0, 0
    while size <= limit:
        chunk = os.pread(fd, min(1 << 16, limit + 1 - size), offset)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- the run

@dataclass(frozen=True)
class Outcome:
    rc: Optional[int]               # exit status (128+N: signal N); None if it did not start
    timed_out: bool = False
    cancelled_by: Optional[str] = None
    seconds: float = 0.0
    start_error: Optional[str] = None


def run(argv, env, user, log_fd, fds, timeout, signals, *, clock=time.monotonic,
        sleep=time.sleep, grace=STOP_GRACE, child=ChildProcess, on_start=None):
    """Run the inspector as ``user`` (stdout and stderr to ``log_fd``, the
    descriptors ``fds`` inherited), at most ``timeout`` seconds; a signal
    recorded in ``signals`` stops it.  Its whole process group is gone when
    this returns, whatever happened (SIGTERM, then SIGKILL after ``grace``).
    ``on_start(pid)`` is told its PID (the lease records it)."""
    t0 = clock()
    proc = child(argv, env, log_fd, user, extra_fds=tuple(fds))
    try:
        proc.start()
    except Exception as e:           # ConversionError: the program cannot be started
        return Outcome(None, seconds=clock() - t0, start_error=str(e))
    timed_out, cancelled = False, None
    try:
        if on_start is not None:
            on_start(proc.pid)
        while proc.poll() is None:
            if signals is not None and signals.received:
                cancelled = signals.received
                break
            if clock() - t0 > timeout:
                timed_out = True
                break
            sleep(POLL)
    finally:
        proc.close(grace)
    return Outcome(proc.poll(), timed_out, cancelled, clock() - t0)
