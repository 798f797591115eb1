"""The state file (docs/contract.md §5): a State record, ``apply(state, event)`` folding
parser events into it, and an atomic writer.
"""
import copy
import json
import logging
import os
import time

from wrapper import causes, progress as ev, stages
from wrapper.security import fsafe

log = logging.getLogger(__name__)

# What virt-v2v's log says is folded in here, and that log is written by the run-as user
# (the caller by default): a line like "Copying disk 1000000/1000000" must not make root
# allocate per claimed disk.  A VMware VM has at most 4 SCSI controllers x 15 disks, plus
# 4 SATA x 30 and 4 NVMe x 15 (vSphere 8 configuration maximums), well under 256; indexes
# and counts beyond it are ignored (logged once).
MAX_DISKS = 256
MAX_DISK_BYTES = (1 << 63) - 1    # a disk size must fit in 64 bits (VMDKs stop at 62 TB)
MAX_ERRORS = 32                   # "virt-v2v: error:" lines (and their causes) kept
MAX_TEXT = 4096                   # characters kept of a path or stage line


class State:
    """What the state file says, plus bookkeeping that is not written out."""

    def __init__(self, source_disks=(), throttling=None, extra=None):
        self.data = {
            "disks": [{"path": p, "progress": 0} for p in source_disks],
            "disk_count": len(source_disks),
            "throttling": {"cpu": None, "network": None},
        }
        if throttling:
            self.data["throttling"].update(throttling)
        if extra:
            self.data.update(extra)
        self.seeded = bool(source_disks)
        self.current = None          # 0-based index of the disk being copied (the last started)
        self.parallel = False        # disks copied at once (wrapper/parallel.py): credit by tag
        self.started = []            # indexes whose copy started, in order
        self.sizes = {}              # index -> bytes
        self.disk_ids = []           # disks created on the target (oVirt upload)
        self.v2v_errors = []         # "virt-v2v: error:" lines of the verbose log
        self.v2v_causes = {}         # such a line -> the lines before it that may explain it
        self.upload_failure = None   # the first imageio refusal of an rhv-upload write
        self.signal = None           # "Exiting on signal X"
        self.vm_id_definitive = False
        self._soft_message = False
        self._unclassified = False   # last_message is virt-v2v's own words, not yet classified
        self.ignored = set()         # kinds of out-of-range events already logged

    def ignore(self, kind, event):
        """An event whose numbers are out of range: dropped, logged once per kind."""
        if kind not in self.ignored:
            self.ignored.add(kind)
            log.warning("ignoring virt-v2v output out of range (%s): %.200r", kind, event)

    # -- plain accessors -------------------------------------------------
    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        return self.data.get(key, default)

    def set(self, key, value):
        self.data[key] = value

    def snapshot(self):
        return copy.deepcopy(self.data)

    def error(self, message, code=None, hint=None):
        """Record the first real cause of a failure (later ones are logged only):
        a :class:`wrapper.causes.Cause`, or a message with its ``code`` (None:
        virt-v2v's own words, classified by :meth:`explain`)."""
        if isinstance(message, causes.Cause):
            cause = message
        elif code is None:                # virt-v2v's own words: refined by explain()
            cause = causes.classify(message)
        else:
            cause = causes.make(code, message, hint)
        if "last_message" not in self.data or self._soft_message:
            self.data["last_message"] = cause.as_message()
            self._soft_message = False
            self._unclassified = code is None and not isinstance(message, causes.Cause)
        else:
            log.info("further error: %s", cause.message)

    def notice(self, message, code="throttling_not_applied"):
        """Report a problem that does not stop the conversion (e.g. a bad
        throttling value).  A later real error replaces it."""
        if "last_message" not in self.data or self._soft_message:
            self.data["last_message"] = causes.make(code, message).as_message()
            self._soft_message = True

    def explain(self):
        """Classify virt-v2v's own error (docs/contract.md §8): its code and hint,
        and for "..., see earlier error messages" the earlier cause from the
        verbose log put in."""
        if not self._unclassified:
            return
        last = self.data["last_message"]["message"]
        # the verbose log's line and the machine-readable message differ in whitespace and
        # length (one line of a paragraph; "..." cut): matched on their common start
        said = " ".join(last.split())
        head = said.split(",")[0]
        lines = self.v2v_causes.get(last) or next(
            (c for text, c in self.v2v_causes.items()
             if " ".join(text.split()).startswith(head) or said.startswith(" ".join(text.split()))),
            ())
        self.data["last_message"] = causes.classify(last, lines, self.upload_failure).as_message()
        self._unclassified = False

    def conclude(self, rc, received=None):
        """virt-v2v ended with status ``rc`` (None: it never ran); ``received``:
        the signal that cancelled the job, if any.  A failure gets ``failed``
        and its classified cause (docs/contract.md §8)."""
        if rc == 0 and not received:
            return
        self.data["failed"] = True
        cause = received or self.signal
        if cause:
            self.error("Conversion cancelled: virt-v2v was stopped by %s" % cause, "cancelled")
        elif self.v2v_errors:
            self.error(self.v2v_errors[0])
        elif rc is not None and rc > 128:
            self.error("virt-v2v was killed by signal %d" % (rc - 128), "killed")
        elif rc is not None:
            self.error("virt-v2v exited with status %d" % rc, causes.GENERIC)
        else:
            self.error("virt-v2v did not run", causes.GENERIC)
        self.explain()

    # -- disks -------------------------------------------------------------
    def _slot(self, index):
        disks = self.data["disks"]
        while len(disks) <= index:
            disks.append({"path": "disk %d" % (len(disks) + 1), "progress": 0})
        return disks[index]

    def place_source(self, index, path):
        """virt-v2v disk ``index`` reads ``path``: make disks[index] that disk."""
        name = ev.vmware_path(path)
        disks = self.data["disks"]
        found = [i for i, d in enumerate(disks) if d["path"] in (name, path)]
        if found:
            j = found[0]
            if j != index:
                self._slot(index)
                disks[j], disks[index] = disks[index], disks[j]
        elif not self.seeded:
            self._slot(index)["path"] = name
        else:
            log.warning("virt-v2v disk %d (%s) matches none of source_disks", index + 1, name)

    def set_progress(self, index, percent):
        slot = self._slot(index)
        percent = round(float(percent), 2)
        if percent > slot["progress"]:
            slot["progress"] = int(percent) if percent.is_integer() else percent
        self._overall()

    def copying(self):
        """The disks being copied now: the current one when serial; when parallel,
        every started disk not at 100 yet (each is credited from its own nbdcopy)."""
        if not self.parallel:
            return [] if self.current is None else [self.current]
        disks = self.data["disks"]
        return [i for i in self.started if i >= len(disks) or disks[i]["progress"] < 100]

    def copy_done(self):
        """virt-v2v went past the copy: every disk it copied is complete."""
        if not self.parallel:
            if self.current is not None:
                self.set_progress(self.current, 100)
            return
        for i in range(max(self.data["disk_count"], len(self.data["disks"]))):
            self.set_progress(i, 100)

    def _overall(self):
        disks = self.data["disks"]
        count = max(self.data["disk_count"], len(disks))
        if not count:
            return
        done = [disks[i]["progress"] if i < len(disks) else 0 for i in range(count)]
        if all(i in self.sizes for i in range(count)):
            total = sum(self.sizes[i] for i in range(count)) or 1
            value = sum(self.sizes[i] * done[i] for i in range(count)) / total
        else:
            value = sum(done) / count
        # virt-v2v reveals each disk's size only when it starts copying it,
        # and the switch to size weighting must not move progress backwards
        self.data["progress"] = max(round(value, 2), self.data.get("progress", 0))


def in_range(event):
    """The kind of range problem of an event, or None: disk indexes and counts
    within MAX_DISKS, sizes within MAX_DISK_BYTES, lists kept bounded."""
    if isinstance(event, ev.CopyingDisk):
        return None if 0 <= event.index < event.count <= MAX_DISKS else "disk index or count"
    if isinstance(event, ev.DiskCopyProgress):
        return None if 0 <= event.index < MAX_DISKS else "disk index"
    if isinstance(event, (ev.DiskSource, ev.DiskSize)):
        if event.index is None or not 0 <= event.index < MAX_DISKS:
            return "disk index"
        if isinstance(event, ev.DiskSize) and not 0 <= event.size <= MAX_DISK_BYTES:
            return "disk size"
    return None


def apply(state, event):
    """Fold one parser event into the state (the state file writer notices
    whether anything changed).  Out-of-range events are dropped (in_range)."""
    problem = in_range(event)
    if problem:
        state.ignore(problem, event)
        return
    _fold(state, event)


def _fold(state, event):
    if isinstance(event, ev.CopyingDisk):
        # serial: the next disk starts when the previous one is done; parallel
        # (docs/contract.md §5): a start says nothing about the other disks
        if not state.parallel and state.current is not None and state.current != event.index:
            state.set_progress(state.current, 100)
        if event.index not in state.started:
            state.started.append(event.index)
        state.current = event.index
        state.data["disk_count"] = event.count
        state.data["stage"] = stages.copying(event.index, event.count)
        state._slot(event.index)
        state._overall()
    elif isinstance(event, ev.DiskProgress):
        # nbdcopy's bar names no disk: when several copy at once, it is nobody's
        if state.current is not None and not state.parallel:
            state.set_progress(state.current, event.percent)
    elif isinstance(event, ev.DiskCopyProgress):
        if state.parallel:
            state.set_progress(event.index, event.percent)
    elif isinstance(event, ev.DiskSource):
        state.place_source(event.index, event.path[:MAX_TEXT])
    elif isinstance(event, ev.DiskSize):
        state.sizes[event.index] = event.size
    elif isinstance(event, ev.DiskId):
        if event.uuid not in state.disk_ids:
            if len(state.disk_ids) < MAX_DISKS:
                state.disk_ids.append(event.uuid)
            else:
                state.ignore("disk ids", event)
    elif isinstance(event, ev.VmId):
        if event.definitive or not state.vm_id_definitive:
            state.data["vm_id"] = event.uuid
            state.vm_id_definitive = state.vm_id_definitive or event.definitive
    elif isinstance(event, ev.V2vMessage):
        _apply_message(state, event)
    elif isinstance(event, ev.V2vError):
        if len(state.v2v_errors) < MAX_ERRORS:      # the first one is what is reported
            state.v2v_errors.append(event.text[:MAX_TEXT])
        if event.lines and len(state.v2v_causes) < MAX_ERRORS:
            state.v2v_causes.setdefault(event.text, event.lines)
    elif isinstance(event, ev.UploadFailure):
        if state.upload_failure is None:
            state.upload_failure = event.text
    elif isinstance(event, ev.KilledBySignal):
        state.signal = event.signal


def _apply_message(state, event):
    if event.type == "message":
        text = event.text.strip()[:MAX_TEXT]
        if not stages.is_copying(text):      # the verbose log drives copying
            state.data["stage"] = text
        if stages.is_after_copy(text):
            state.copy_done()
    elif event.type == "error":
        state.error(first_paragraph(event.text))


def first_paragraph(text, limit=causes.MAX_MESSAGE):
    """A message's first paragraph on one line, cut at a word boundary if it must be."""
    return causes.bounded(text.strip().split("\n\n")[0], limit)


def write_dead(dir_fd, name, data, message, finished_at):
    """Mark a dead wrapper's state ``data`` (read from ``name`` in the
    directory ``dir_fd``) failed and finished with ``message``, atomically
    through fsafe.AtomicFile on the descriptor (wrapper/reclaim.py)."""
    data = dict(data, failed=True, last_message=causes.make("wrapper_died", message).as_message(),
                finished=True, finished_at=finished_at)
    out = fsafe.AtomicFile(dir_fd, name, 0o644)
    try:
        out.write(json.dumps(data) + "\n")
    finally:
        out.close()


class StateFile:
    """Writes the state atomically, mode 0644, only when it changed.

    Writes go through :class:`wrapper.security.fsafe.AtomicFile` on a descriptor of
    the state directory (never by name through a path another user could
    redirect), with a temporary file reserved ahead so that even on a full
    filesystem the final ``finished`` can be written.  A write that fails is
    logged once and retried at the next change; it never ends the run.
    With ``exclusive`` (a new job's file) the first write links a complete
    file into place, never over an existing name: a reader polling the name
    sees nothing, then the first full content (docs/security.md rule 4).
    """

    def __init__(self, path, dir_fd=None, reserve=64 << 10, exclusive=False, adopt=None):
        """``adopt``: the AtomicFile that already linked the first document
        into place (wrapper.jobfiles.reserve); it goes on through ``dir_fd``."""
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        self._dir_fd = fsafe.open_dir(directory) if dir_fd is None else os.dup(dir_fd)
        if adopt is not None:
            adopt.dir_fd = self._dir_fd
            self._file = adopt
        else:
            self._file = fsafe.AtomicFile(self._dir_fd, os.path.basename(path), 0o644, reserve,
                                          exclusive=exclusive)
        self._last = None
        self._failing = None
        self.writes = 0

    def write(self, state, force=False):
        text = json.dumps(state.data if isinstance(state, State) else state)
        if text == self._last and not force:
            return False
        try:
            self._file.write(text + "\n")
        except OSError as e:
            if self._failing is None:
                log.warning("cannot write the state file %s: %s (retrying at the next change)",
                            self.path, e.strerror or e)
            self._failing = e
            return False
        if self._failing is not None:
            log.info("state file %s written again", self.path)
            self._failing = None
        self._last = text
        self.writes += 1
        return True

    def write_final(self, state, attempts=10, sleep=time.sleep):
        """The last write (``finished``): retried for a while if it fails."""
        for i in range(attempts):
            if self.write(state, force=True):
                return True
            sleep(min(0.2 * (i + 1), 1.0))
        log.error("the state file %s could not be written: %s", self.path, self._failing)
        return False

    def discard(self):
        """A refused job leaves no state file behind."""
        if self._dir_fd is not None:
            self._file.remove()
        self.close()

    def close(self):
        if self._dir_fd is not None:
            self._file.close()
            os.close(self._dir_fd)
            self._dir_fd = None
