"""Reading and summarising state files (docs/contract.md §5): what one
conversion is -- its VM, target, stage, disks, progress, outcome, whether its
wrapper is gone -- as a plain, JSON-ready dict.  No command line and no
terminal here: ``status`` draws these dicts, ``metrics`` and the exporter
turn them into Prometheus text, and the running job summarises its own state
through :func:`summarize` too.

Every file is hostile (docs/security.md): a state file lies in a shared
directory, and even a root-owned one carries virt-v2v's own messages.  So:

* a file is read through fsafe.read_untrusted, at most :data:`STATE_MAX`
  bytes; JSON nested deeper than :data:`MAX_DEPTH` is refused before it is
  parsed (no RecursionError); ``NaN``/``Infinity`` and numbers out of range
  parse as null (no OverflowError, and ``--json`` stays valid JSON);
* :func:`tame` bounds what a summary keeps of any state, read or in memory:
  texts to :data:`MAX_TEXT` characters, lists to :data:`MAX_DISKS` items,
  numbers to finite values within :data:`MAX_NUMBER`;
* :func:`scan` lists only regular files (lstat: no symlink, FIFO or
  directory) owned by a trusted user -- root or the reader's own user
  (:func:`trusted_owners`) -- and of those keeps the :data:`MAX_FILES`
  newest, so memory stays bounded however many files someone plants, and
  another user's entries (whose mtimes are theirs to choose) can neither
  push a real conversion out of the cut nor pose as one.  :func:`read_state`
  checks type and owner again on the opened descriptor (the name may have
  been swapped since).

Texts are kept as they are (control characters included): escaping them is
the job of whoever prints them (security.text.printable in status, metrics.escape_label).
"""
import errno
import fnmatch
import heapq
import json
import math
import os
import stat
from dataclasses import dataclass
from typing import Optional

from wrapper import causes, procinfo, rate, stages
from wrapper.security import fsafe

STATE_GLOB = "v2v-import-*.state"
STATE_MAX = 256 << 10        # a bigger "state file" is not one (a real one is a few KiB)
MAX_DEPTH = 16               # a state file nests 4 levels deep
MAX_TEXT = 1000              # characters kept of a text (a path, a message)
MAX_DISKS = 256              # disks kept of a conversion (what a hypervisor can attach)
MAX_KEYS = 256               # keys kept of an object (a state file has about 25)
MAX_FILES = 512              # state files shown at once (the newest)
MAX_NUMBER = 1 << 62         # larger is not a size, a time or a count

# A state file is replaced atomically, so a torn one is either being written by
# something else or broken; give it this long before calling it broken.
TORN_GRACE = 5.0
# The wrapper rewrites the state file only when something changes; a pid can
# be briefly stale (pre-detach pid) right after start.  Only call a conversion
# stale when its wrapper is gone and the file has not moved for this long.
STALE_GRACE = 5.0

RUNNING, FINISHED, FAILED, STALE = "running", "finished", "failed", "stale"
MISSING, UNREADABLE, INVALID = "missing", "unreadable", "invalid"
FILE_PROBLEMS = (MISSING, UNREADABLE, INVALID)
_OVER = (FINISHED, FAILED, STALE, MISSING, UNREADABLE)


@dataclass(frozen=True)
class Reading:
    path: str
    data: Optional[dict] = None
    problem: Optional[str] = None      # why data is None
    kind: Optional[str] = None         # MISSING / UNREADABLE / INVALID
    mtime: Optional[float] = None


# -- bounding ------------------------------------------------------------------
def bounded_number(value):
    """``value`` if it is a finite number within +-MAX_NUMBER, else None
    (never converts a huge int to float: no OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if -MAX_NUMBER <= value <= MAX_NUMBER else None


def tame(value, depth=0):
    """A bounded copy of ``value`` (see the module docstring); recursion is
    cut at MAX_DEPTH levels."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return bounded_number(value)
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if depth >= MAX_DEPTH:
        return None
    if isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if isinstance(k, str)][:MAX_KEYS]
        return {k[:MAX_TEXT]: tame(v, depth + 1) for k, v in items}
    if isinstance(value, (list, tuple)):
        return [tame(v, depth + 1) for v in value[:MAX_DISKS]]
    return None


def json_depth(raw):
    """How deep the JSON text ``raw`` (bytes) nests, strings skipped."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return 0                    # cannot be deeper than its brackets
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:      # backslash
                escaped = True
            elif byte == 0x22:      # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _int_or_none(text):
    # 19 digits: past MAX_NUMBER anyway; int() of thousands of digits is slow
    return bounded_number(int(text)) if len(text.lstrip("-")) <= 19 else None


def parse(raw):
    """JSON ``raw`` with every number bounded; raises ValueError when it is
    not JSON or nests deeper than MAX_DEPTH."""
    if json_depth(raw) > MAX_DEPTH:
        raise ValueError("nested deeper than %d levels" % MAX_DEPTH)
    try:
        return json.loads(raw.decode("utf-8"), parse_int=_int_or_none,
                          parse_float=lambda t: bounded_number(float(t)),
                          parse_constant=lambda _t: None)
    except RecursionError:          # MAX_DEPTH checked; belt and braces
        raise ValueError("nested too deep") from None


# -- reading ------------------------------------------------------------------
def read_state(path, allowed_uids=None):
    """Read one state file; every failure becomes a Reading with a problem.

    The state directory is shared: the file is opened without following a
    symlink or blocking on a FIFO, and must be a regular file with one link,
    at most STATE_MAX bytes, owned by one of ``allowed_uids`` (None: anyone)
    -- fsafe.read_untrusted."""
    try:
        raw, st = fsafe.read_untrusted(path, allowed_uids, STATE_MAX)
        mtime = st.st_mtime
    except FileNotFoundError:
        return Reading(path, problem="no such file", kind=MISSING)
    except fsafe.Refused as e:
        return Reading(path, problem="cannot read: it %s" % e.why, kind=UNREADABLE)
    except OSError as e:
        why = "cannot read: it is a symbolic link" if e.errno == errno.ELOOP else \
            "cannot read: %s" % (e.strerror or e)
        return Reading(path, problem=why, kind=UNREADABLE)
    if not raw.strip():
        return Reading(path, problem="empty file (being written?)", kind=INVALID, mtime=mtime)
    try:
        data = parse(raw)
    except (UnicodeDecodeError, ValueError):
        return Reading(path, problem="not complete JSON (half-written or not a state file)",
                       kind=INVALID, mtime=mtime)
    if not isinstance(data, dict):
        return Reading(path, problem="not a JSON object", kind=INVALID, mtime=mtime)
    return Reading(path, data=data, mtime=mtime)


def trusted_owners():
    """Whose state files a reader shows: root's (a wrapper run through sudo
    or by root) and its own user's; in a shared directory anyone else may
    have planted the name (docs/security.md)."""
    return frozenset({0, os.geteuid()})


def scan(state_dir, limit=MAX_FILES, owners=None):
    """State files in ``state_dir`` (only the wrapper's own names: /tmp is
    shared) that are regular files owned by one of ``owners`` (None:
    :func:`trusted_owners`), at most ``limit`` of them, the most recently
    changed; sorted by name.  The filter comes before the cut: an entry of
    someone else never takes a place.  Raises OSError when the directory
    cannot be listed."""
    owners = trusted_owners() if owners is None else owners

    def found():
        with os.scandir(state_dir) as entries:
            for entry in entries:
                if not fnmatch.fnmatch(entry.name, STATE_GLOB):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue                # gone since it was listed
                if stat.S_ISREG(st.st_mode) and st.st_uid in owners:
                    yield st.st_mtime, entry.name
    newest = heapq.nlargest(limit, found())
    return sorted(os.path.join(state_dir, name) for _when, name in newest)


def pid_alive(pid):
    """True if ``pid`` exists and is not a zombie (wrapper.procinfo.running)."""
    return procinfo.running(pid)


# -- summarizing ----------------------------------------------------------------
def _str(data, key):
    value = data.get(key)
    return value if isinstance(value, str) else None


def _num(data, key):
    return bounded_number(data.get(key))


def _int(data, key):
    value = data.get(key)
    return value if isinstance(value, int) and bounded_number(value) is not None else None


def _percent(value):
    value = bounded_number(value)
    return None if value is None else max(0.0, min(100.0, float(value)))


def _disks(data):
    disks = data.get("disks")
    out = []
    for i, d in enumerate(disks if isinstance(disks, list) else []):
        d = d if isinstance(d, dict) else {}
        path = d.get("path") if isinstance(d.get("path"), str) else "disk %d" % (i + 1)
        out.append({"path": path, "progress": _percent(d.get("progress")) or 0.0})
    return out


def _throttling(data):
    t = data.get("throttling")
    t = t if isinstance(t, dict) else {}
    return {k: (t.get(k) if isinstance(t.get(k), (str, int, float)) and not isinstance(t.get(k), bool)
                else None) for k in ("cpu", "network")}


def _outcome(data, mtime, now, alive):
    if data.get("finished") is True:
        return FAILED if data.get("failed") is True else FINISHED
    wrapper_pid, v2v_pid = _int(data, "wrapper_pid"), _int(data, "pid")
    pids = [p for p in (wrapper_pid, v2v_pid) if p is not None]
    quiet = mtime is None or now - mtime >= STALE_GRACE
    if pids and quiet and not any(alive(p) for p in pids):
        return STALE
    return RUNNING


def _elapsed(started_at, finished_at, outcome, mtime, now):
    if started_at is None:
        return None
    if finished_at is not None:
        elapsed = finished_at - started_at
    elif outcome == RUNNING or mtime is None:
        elapsed = now - started_at
    else:                       # stale: time until the wrapper last wrote
        elapsed = mtime - started_at
    return round(max(0.0, elapsed), 1)


def summarize(reading, now, alive=pid_alive):
    """A plain, JSON-ready dict describing one conversion (bounded: :func:`tame`)."""
    base = {"file": reading.path, "outcome": reading.kind, "problem": reading.problem,
            "updated_at": reading.mtime,
            "age": None if reading.mtime is None else round(max(0.0, now - reading.mtime), 1)}
    if reading.data is None:
        return base
    data = tame(reading.data)
    disks = _disks(data)
    copy, copy_disks = rate.read_copy(data, now, len(disks))
    for d, c in zip(disks, copy_disks):
        d.update((k, c[k]) for k in rate.SHOWN)
    overall = _percent(data.get("progress"))
    if overall is None and disks:
        overall = sum(d["progress"] for d in disks) / len(disks)
    outcome = _outcome(data, reading.mtime, now, alive)
    started_at, finished_at = _num(data, "started_at"), _num(data, "finished_at")
    last = data.get("last_message")
    message = last.get("message") if isinstance(last, dict) and isinstance(
        last.get("message"), str) else None
    code = failure_code(last, outcome)
    stage = _str(data, "stage")
    if stage is None:
        stage = stages.STARTING if data.get("started") is not True else stages.STARTED
    base.update({
        "outcome": outcome, "tag": _str(data, "tag"), "vm": _str(data, "vm"),
        "target": _str(data, "target"), "transport": _str(data, "transport"),
        "stage": stage, "disks": disks, "disk_count": _int(data, "disk_count"),
        "progress": None if overall is None else round(overall, 2),
        **{k: copy[k] for k in rate.SHOWN},
        "started_at": started_at, "finished_at": finished_at,
        "elapsed": _elapsed(started_at, finished_at, outcome, reading.mtime, now),
        "throttling": _throttling(data), "pid": _int(data, "pid"),
        "wrapper_pid": _int(data, "wrapper_pid"), "return_code": _int(data, "return_code"),
        "vm_id": _str(data, "vm_id"), "message": message, "code": code,
    })
    return base


def failure_code(last, outcome):
    """``last_message``'s code when it is one of the catalogue's (never other
    text a state file holds); a failure without one is the generic code."""
    code = last.get("code") if isinstance(last, dict) else None
    if isinstance(code, str) and code in causes.CATALOGUE:
        return code
    return causes.GENERIC if outcome == FAILED else None


def order(summaries):
    """Newest first: by start time, else by file time; unreadable ones last."""
    def key(s):
        when = s.get("started_at")
        if when is None:
            when = s["updated_at"]
        return (when is None, -(when or 0), s["file"])
    return sorted(summaries, key=key)


def all_over(summaries):
    """True when nothing shown can still change (what ``--watch`` waits for)."""
    return all(s["outcome"] in _OVER or (s["outcome"] == INVALID and (s["age"] or 0) >= TORN_GRACE)
               for s in summaries)
