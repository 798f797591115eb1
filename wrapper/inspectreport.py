"""What ``virt-v2v-wrapper inspect`` prints: pure functions from what was
found to the one JSON document and the exit status (docs/contract.md §10).

Nothing here runs a program or opens a file: the inspector's report
(:class:`wrapper.inspector.Report`), the disk sources and firmware found in
its log, the free space, the measured rate and the checks come in as values,
so every figure of the document is tested without virt-v2v.
"""
import math
import re

from wrapper import causes, progress, vmname
from wrapper.config import ExportDomainTarget, LocalTarget, RhvUploadTarget, is_nfs_share
from wrapper.security.boundary import CallerOpenError
from wrapper.security.text import oneline

EXIT_WOULD_RUN, EXIT_REFUSED, EXIT_FAILED = 0, 1, 2
SCHEMA_VERSION = 1
_FIRMWARE = re.compile(rb"^i_firmware = (\w{1,20})\s*$", re.M)
FIRMWARES = {"bios": "bios", "uefi": "uefi", "unknown": None}


# ---------------------------------------------------------------- problems

class Problems:
    """The problems found, each ``{"code", "hint", "message"}`` (the codes
    and hints of a failure's ``last_message``: :func:`classify`), and whether
    the inspection itself failed (exit 2) rather than found a reason to
    refuse (exit 1)."""

    def __init__(self, classify):
        self.classify = classify
        self.items = []
        self.inspection_failed = False

    def add(self, message, code=None, failed=False):
        found_code, hint = self.classify(message, code)
        self.items.append({"code": found_code, "hint": hint, "message": oneline(message, 1000)})
        self.inspection_failed = self.inspection_failed or failed

    def exit_status(self):
        if self.inspection_failed:
            return EXIT_FAILED
        return EXIT_REFUSED if self.items else EXIT_WOULD_RUN


# ---------------------------------------------------------------- the log

def log_facts(log_bytes):
    """``({disk index: source path}, firmware)`` from the inspector's
    verbose log: the source nbdkit of each disk (the same parser as a
    conversion's progress, wrapper.progress) and libguestfs' inspection of
    the boot firmware (``i_firmware = BIOS``)."""
    parser = progress.LogParser(dialect=2)
    sources = {}
    for event in parser.feed(log_bytes) + parser.flush():
        if isinstance(event, progress.DiskSource) and event.index is not None:
            sources.setdefault(event.index, event.path)
    m = _FIRMWARE.search(log_bytes)
    firmware = FIRMWARES.get(m.group(1).decode("ascii").lower()) if m else None
    return sources, firmware


# ---------------------------------------------------------------- disks and sizes

def estimated_size(disk, allocation, output_format):
    """Bytes the converted disk will take on the target: its virtual size
    when preallocated (raw), else the inspector's estimate (which assumes
    ``-oa sparse``; qcow2 adds little, virt-v2v-inspector(1))."""
    if allocation == "preallocated" and output_format == "raw":
        return disk.virtual_size
    return disk.allocated if disk.allocated is not None else disk.virtual_size


def match_disks(report_disks, sources, source_disks, allocation, output_format):
    """The document's ``disks``: each disk of the report with the job's
    ``source_disks`` entry its source path matches (VMware paths as
    ``[store] vm/disk.vmdk``, as in the state file, docs/contract.md §5),
    and the ``source_disks`` entries no disk matched."""
    out, matched = [], set()
    for disk in report_disks:
        path = sources.get(disk.index)
        shown = progress.vmware_path(path) if path else None
        entry = None
        if shown is not None and shown in source_disks:
            entry = shown
        elif path is not None and path in source_disks:
            entry = path
        if entry is not None:
            matched.add(entry)
        out.append({"index": disk.index, "source_disk": entry,
                    "source_path": oneline(shown, 1000) if shown else None,
                    "virtual_size": disk.virtual_size, "estimated_size": disk.allocated,
                    "needed": estimated_size(disk, allocation, output_format)})
    unmatched = [d for d in source_disks if d not in matched]
    return out, unmatched


def space(kind, where, free, needed, how, note=None):
    """The document's ``target``: free bytes against what the disks need."""
    enough = None if free is None or needed is None else free >= needed
    return {"kind": kind, "where": oneline(where, 1000) if where else None, "free": free,
            "needed": needed, "enough": enough, "measured_by": how, "note": note}


def copy_estimate(measured, total_bytes):
    """Seconds to copy ``total_bytes`` (the disks' virtual sizes: the copy
    reads what is allocated, so this is an upper bound) at a
    :class:`wrapper.observe.history.MeasuredRate`; None without one."""
    if measured is None or not total_bytes:
        return None
    return {"seconds": int(math.ceil(total_bytes / measured.rate)),
            "rate": int(measured.rate), "bytes": total_bytes,
            "measured_from": {"state_file": measured.state_file, "vm": measured.vm,
                              "finished_at": measured.finished_at,
                              "bytes_copied": measured.bytes_copied,
                              "seconds": measured.seconds}}


def target_space(target, needed, boundary, facts):
    """``target`` of the document: the free space where the disks would go."""
    if isinstance(target, RhvUploadTarget):
        free = facts.available if facts is not None else None
        return space("rhv-upload", "storage domain %s" % target.storage, free, needed,
                         "ovirt-api" if free is not None else None,
                         None if free is not None else "the engine did not tell the free space")
    if isinstance(target, ExportDomainTarget) and is_nfs_share(target.path):
        return space("export-domain", target.path, None, needed, None,
                         "an NFS share is mounted by virt-v2v only: its free space is not known "
                         "before the conversion")
    kind = "local" if isinstance(target, LocalTarget) else "export-domain"
    try:
        st = boundary.statvfs_dir(target.path)
    except CallerOpenError as e:
        return space(kind, target.path, None, needed, None, "cannot reach it: %s" % e)
    return space(kind, target.path, st.f_bavail * st.f_frsize, needed, "statvfs")


def job_summary(config, target_text):
    """The document's ``job``; ``target_text`` is the state file's description
    of the target (wrapper.job.describe_target)."""
    return {"vm": vmname.display_name(config.vm_name, config.source.name),
            "transport": config.source.name, "target": target_text,
            "source_host": vmname.source_host(config.vm_name, config.source.name,
                                              getattr(config.source, "uri", None)),
            "source_disks": list(config.source_disks)}


def failure_cause(outcome, log_bytes, mr_bytes):
    """The :class:`wrapper.causes.Cause` of a failed inspector run: its
    error (machine-readable, else the verbose log's) with the lines before it."""
    if outcome.start_error:
        return causes.make("internal_error", "cannot start virt-v2v-inspector: %s"
                           % outcome.start_error)
    error, lines = None, ()
    for raw in mr_bytes.splitlines():
        event = progress.parse_mr_line(raw)
        if event is not None and event.type == "error":
            error = event.text
            break
    text = log_bytes.decode("utf-8", "replace")
    marker = "virt-v2v-inspector: error: "
    at = text.find(marker)
    if at != -1:
        before = text[max(0, at - 8192):at].splitlines()
        lines = tuple(line for line in before[-40:] if line.strip())
        if error is None:
            error = text[at + len(marker):].split("\n", 1)[0]
    if error is None:
        error = "virt-v2v-inspector exited with status %s" % outcome.rc
    return causes.classify(error, lines)


def guest_doc(report, firmware):
    guest = dict(report.guest) if report is not None else None
    if guest is not None:
        guest["firmware"] = guest.get("firmware") or firmware
    return guest


def document(*, job, checks, problems, warnings, report=None, firmware=None, disks=None,
             target=None, estimate=None, inspector=None):
    """The one JSON document (wrapper/schemas/inspection.schema.json)."""
    status = problems.exit_status()
    return {
        "schema_version": SCHEMA_VERSION,
        "would_run": status == EXIT_WOULD_RUN,
        "exit_status": status,
        "job": job,
        "inspector": inspector,
        "guest": guest_doc(report, firmware),
        "disks": disks,
        "target": target,
        "copy_estimate": estimate,
        "preflight": checks,
        "problems": problems.items,
        "warnings": warnings,
    }
