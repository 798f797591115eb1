"""Prometheus metrics of conversions: the exposition text, the per-conversion
textfile for node_exporter, and pruning of finished ones.

The text (Prometheus text format 0.0.4) is built from the summaries
:func:`wrapper.observe.summary.summarize` makes of state files, so the wrapper's own
``.prom`` file and ``virt-v2v-wrapper metrics`` (wrapper/observe/exporter.py) say the
same thing the same way.  Base units, ``_bytes``, ``_seconds``, ``_total``;
labels ``tag``, ``vm`` and (per disk) ``disk`` (1-based).  No secret and no
free-form text is ever a label value: the tag is ``<YYYYmmddTHHMMSS>-<pid>``,
the VM name is the one the job gave, the state is one of :data:`PHASES`, a
failure's code one of :data:`wrapper.causes.CATALOGUE`.
Forklift's ``v2v_disk_transfers{disk_id}`` (percent) is emitted too.

The textfile (``--metrics-dir``): ``v2v-import-<tag>.prom``, created with
``O_EXCL|O_NOFOLLOW`` under the directory's descriptor (a name someone else
took is left alone: another free name is used), rewritten through
:class:`wrapper.security.fsafe.AtomicFile` whenever the state file is, mode 0644.  It
stays after the conversion with its final figures; :func:`prune` (run by
every later wrapper start and by ``virt-v2v-wrapper metrics --prune``)
removes, by inode, those of conversions that ended more than ``keep``
seconds ago, and those nobody rewrote for :data:`ABANDONED` seconds (a
wrapper killed outright).
"""
import fnmatch
import logging
import math
import os
import stat
import time

from wrapper import causes, jobfiles, stages
from wrapper.observe import summary
from wrapper.security import fsafe

log = logging.getLogger(__name__)

PROM_GLOB = "v2v-import-*.prom"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PHASES = ("starting", "converting", "copying", "finishing", "succeeded", "failed", "stale")
KEEP = 3600.0            # default: finished conversions' files stay this long
ABANDONED = 86400.0      # a file nobody rewrote for this long is a dead wrapper's
MAX_PROM = 1 << 20       # a file bigger than this is not ours to parse
_END = "v2v_conversion_end_timestamp_seconds"

# name, type, help
FAMILIES = (
    ("v2v_conversion_info", "gauge", "A conversion known to the wrapper (always 1), with its transport."),
    ("v2v_conversion_state", "gauge", "The conversion's phase: 1 for the label that applies, 0 for the others."),
    ("v2v_conversion_start_timestamp_seconds", "gauge", "Unix time the wrapper accepted the job."),
    (_END, "gauge", "Unix time the wrapper finished the conversion."),
    ("v2v_conversion_return_code", "gauge", "virt-v2v's exit status."),
    ("v2v_conversion_failure_info", "gauge",
     "A failed conversion (always 1), with the failure code of its last_message."),
    ("v2v_conversion_progress_ratio", "gauge", "Overall copy progress, 0 to 1."),
    ("v2v_conversion_disks", "gauge", "Disks virt-v2v copies."),
    ("v2v_conversion_size_bytes", "gauge", "Bytes to copy over all disks, once every disk's size is known."),
    ("v2v_conversion_copied_bytes_total", "counter", "Bytes copied over all disks of known size."),
    ("v2v_conversion_copy_rate_bytes_per_second", "gauge", "Smoothed overall copy rate."),
    ("v2v_conversion_remaining_seconds", "gauge", "Estimated copy time left (absent while unknown)."),
    ("v2v_conversion_estimated_end_timestamp_seconds", "gauge",
     "Unix time the copy is estimated to end (absent while unknown)."),
    ("v2v_conversion_throttle_cpu_ratio", "gauge", "CPU limit in force, in CPUs (0.5 = 50 %)."),
    ("v2v_conversion_throttle_network_bytes_per_second", "gauge", "Network limit in force."),
    ("v2v_disk_progress_ratio", "gauge", "Copy progress of one disk, 0 to 1."),
    ("v2v_disk_size_bytes", "gauge", "Size of one disk, as virt-v2v reports it."),
    ("v2v_disk_copied_bytes_total", "counter", "Bytes of one disk copied."),
    ("v2v_disk_copy_rate_bytes_per_second", "gauge",
     "Smoothed copy rate of one disk (its average once copied)."),
    ("v2v_disk_remaining_seconds", "gauge", "Estimated copy time left for one disk (absent while unknown)."),
    ("v2v_disk_transfers", "gauge", "Copy progress of one disk in percent (as Forklift names it)."),
)
EXPORTER_FAMILIES = (
    ("v2v_exporter_state_files", "gauge", "State files found, by what reading them gave."),
)


# -- the text --------------------------------------------------------------------
def escape_label(value):
    """A label value as the text format wants it; a byte of a file name that
    is not UTF-8 becomes ``\\udcXX`` text (it cannot be encoded as it is)."""
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value):
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _valid(value):
    """A number a sample can carry: finite and in range (never an OverflowError)."""
    return summary.bounded_number(value) is not None


def phase(s):
    """One of PHASES for a summary."""
    outcome = s["outcome"]
    if outcome == summary.FINISHED:
        return "succeeded"
    if outcome in (summary.FAILED, summary.STALE):
        return outcome
    if s.get("pid") is None:
        return "starting"
    stage = s.get("stage") or ""
    if stages.is_copying(stage):
        return "copying"
    if stages.is_after_copy(stage):
        return "finishing"
    return "converting"


def _cpu(value):
    if isinstance(value, str) and value.endswith("%"):
        try:
            return float(value[:-1]) / 100
        except ValueError:
            return None
    return None


def _network(value):
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None


def samples(s, now):
    """``{family: [(labels, value), ...]}`` for one conversion summary."""
    out = {}
    tag = s.get("tag") or os.path.basename(s["file"])
    base = {"tag": tag, "vm": s.get("vm") or ""}

    def add(name, value, **labels):
        if _valid(value):
            out.setdefault(name, []).append((dict(base, **labels), value))

    add("v2v_conversion_info", 1, transport=s.get("transport") or "")
    current = phase(s)
    for p in PHASES:
        add("v2v_conversion_state", int(p == current), state=p)
    add("v2v_conversion_start_timestamp_seconds", s.get("started_at"))
    add(_END, s.get("finished_at"))
    add("v2v_conversion_return_code", s.get("return_code"))
    if current == "failed":
        add("v2v_conversion_failure_info", 1, code=s.get("code") or causes.GENERIC)
    if s.get("progress") is not None:
        add("v2v_conversion_progress_ratio", s["progress"] / 100)
    add("v2v_conversion_disks", max(s.get("disk_count") or 0, len(s["disks"])))
    add("v2v_conversion_size_bytes", s.get("size"))
    add("v2v_conversion_copied_bytes_total", s.get("bytes_copied"))
    add("v2v_conversion_copy_rate_bytes_per_second", s.get("rate"))
    add("v2v_conversion_remaining_seconds", s.get("eta"))
    if _valid(s.get("eta")):
        add("v2v_conversion_estimated_end_timestamp_seconds", round(now + s["eta"], 3))
    throttling = s.get("throttling") or {}
    add("v2v_conversion_throttle_cpu_ratio", _cpu(throttling.get("cpu")))
    add("v2v_conversion_throttle_network_bytes_per_second", _network(throttling.get("network")))
    for i, d in enumerate(s["disks"]):
        disk = str(i + 1)
        add("v2v_disk_progress_ratio", d["progress"] / 100, disk=disk)
        add("v2v_disk_size_bytes", d.get("size"), disk=disk)
        add("v2v_disk_copied_bytes_total", d.get("bytes_copied"), disk=disk)
        add("v2v_disk_copy_rate_bytes_per_second", d.get("rate"), disk=disk)
        add("v2v_disk_remaining_seconds", d.get("eta"), disk=disk)
        add("v2v_disk_transfers", d["progress"], disk_id=disk)
    return out


def exposition(summaries, now, exporter=False):
    """The text for ``summaries`` (conversions that could be read; others are
    counted in v2v_exporter_state_files when ``exporter``)."""
    merged = {}
    counts = {}
    for s in summaries:
        counts[s["outcome"]] = counts.get(s["outcome"], 0) + 1
        if s["outcome"] in summary.FILE_PROBLEMS:
            continue
        for name, rows in samples(s, now).items():
            merged.setdefault(name, []).extend(rows)
    if exporter:
        merged["v2v_exporter_state_files"] = [
            ({"outcome": o}, counts.get(o, 0))
            for o in (summary.RUNNING, summary.FINISHED, summary.FAILED, summary.STALE)
            + summary.FILE_PROBLEMS]
    lines = []
    for name, kind, text in FAMILIES + (EXPORTER_FAMILIES if exporter else ()):
        rows = merged.get(name)
        if not rows:
            continue
        lines.append("# HELP %s %s" % (name, text))
        lines.append("# TYPE %s %s" % (name, kind))
        for labels, value in rows:
            lines.append("%s{%s} %s" % (name, ",".join(
                '%s="%s"' % (k, escape_label(v)) for k, v in labels.items()), _number(value)))
    return "".join(line + "\n" for line in lines)


def state_exposition(data, path, now):
    """The text for the state the wrapper itself holds (``data``, written to ``path``)."""
    reading = summary.Reading(path, data=data, mtime=now)
    return exposition([summary.summarize(reading, now, alive=lambda _pid: True)], now)


# -- the textfile ------------------------------------------------------------------
class MetricsFile:
    """One conversion's ``.prom`` file in the metrics directory (``dir_fd``)."""

    def __init__(self, dir_fd, tag, clock=time.time, attempts=20):
        self.dir_fd = dir_fd
        self.clock = clock
        self._failing = None
        name, fd = self._take("v2v-import-%s.prom" % tag)
        for _ in range(attempts):
            if fd is not None:
                break
            name, fd = self._take("v2v-import-%s-%s.prom" % (tag, os.urandom(3).hex()))
        if fd is None:
            raise FileExistsError("no free name for the metrics file of %s" % tag)
        self.name = name
        self._file = fsafe.AtomicFile(dir_fd, name, 0o644, reserve=16 << 10)
        self._file.identity = fsafe.ident(os.fstat(fd))
        os.close(fd)

    def _take(self, name):
        try:
            return name, fsafe.create(self.dir_fd, name, os.O_WRONLY, 0o644)
        except FileExistsError:
            log.warning("the metrics file name %s is taken by someone else: not touched", name)
            return name, None

    def write(self, state, state_path):
        data = state.data if hasattr(state, "data") else state
        text = state_exposition(data, state_path, self.clock())
        try:
            self._file.write(text)
        except OSError as e:
            if self._failing is None:
                log.warning("cannot write the metrics file %s: %s (retrying at the next change)",
                            self.name, e.strerror or e)
            self._failing = e
            return False
        self._failing = None
        return True

    def remove(self):
        self._file.remove()

    def close(self):
        self._file.close()


class MeteredStateFile:
    """A :class:`wrapper.state.StateFile` whose every write also rewrites the
    conversion's metrics file."""

    def __init__(self, state_file, metrics_file, dir_fd):
        self.state_file = state_file
        self.metrics = metrics_file
        self._dir_fd = dir_fd

    def __getattr__(self, name):
        return getattr(self.state_file, name)

    def write(self, state, force=False):
        written = self.state_file.write(state, force)
        if written:
            self.metrics.write(state, self.state_file.path)
        return written

    def write_final(self, state, **kw):
        written = self.state_file.write_final(state, **kw)
        self.metrics.write(state, self.state_file.path)
        return written

    def discard(self):
        """A refused job leaves neither file."""
        self.metrics.remove()
        self.state_file.discard()
        self._close_metrics()

    def close(self):
        self.state_file.close()
        self._close_metrics()

    def _close_metrics(self):
        if self._dir_fd is not None:
            self.metrics.close()
            os.close(self._dir_fd)
            self._dir_fd = None


def open_metrics_dir(path, owners):
    """The metrics directory (created 0755 if missing; rules of jobfiles.open_job_dir:
    owned by one of ``owners``)."""
    return jobfiles.open_job_dir(path, "--metrics-dir", 0o755, owners)


def metered(state_file, settings, tag, clock=time.time):
    """Wrap the job's state file when ``--metrics-dir`` is set (a directory
    that cannot be used refuses the job); prune old files on the way."""
    if not settings.metrics_dir:
        return state_file
    dir_fd = open_metrics_dir(settings.metrics_dir, settings.trusted_uids())
    try:
        prune(dir_fd, clock(), keep_seconds(settings))
        metrics_file = MetricsFile(dir_fd, tag, clock)
    except BaseException:
        os.close(dir_fd)
        raise
    return MeteredStateFile(state_file, metrics_file, dir_fd)


def keep_seconds(settings):
    try:
        value = float(settings.metrics_keep)
    except (TypeError, ValueError):
        return KEEP
    return value if math.isfinite(value) and value >= 0 else KEEP


# -- pruning ------------------------------------------------------------------------
def end_time(text):
    """The latest end timestamp in a .prom text, or None if the conversion has not ended."""
    ends = []
    for line in text.splitlines():
        if line.startswith(_END + "{"):
            try:
                ends.append(float(line.rsplit(" ", 1)[1]))
            except (IndexError, ValueError):
                continue
    return max(ends) if ends else None


def prune(dir_fd, now, keep=KEEP, owner=None):
    """Remove this user's ``.prom`` files of conversions that ended ``keep``
    seconds ago or more, and those not rewritten for ABANDONED seconds.
    Only regular files owned by ``owner`` (default: us), by inode.  Returns
    the names removed."""
    owner = os.geteuid() if owner is None else owner
    removed = []
    for name in fnmatch.filter(os.listdir(dir_fd), PROM_GLOB):
        st = fsafe.lstat_at(dir_fd, name)
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_uid != owner:
            continue
        try:
            raw, fst = fsafe.read_untrusted(name, {owner}, MAX_PROM, dir_fd=dir_fd)
        except OSError:
            continue
        if fsafe.ident(fst) != fsafe.ident(st):
            continue
        end = end_time(raw.decode("utf-8", "replace"))
        if (end is not None and now - end >= keep) or now - st.st_mtime >= ABANDONED:
            if fsafe.unlink_same(dir_fd, name, fsafe.ident(st)):
                log.info("removed the metrics file %s (%s)", name,
                         "conversion ended" if end is not None else "not rewritten for a day")
                removed.append(name)
    return removed
