"""The copy rate this host last measured from a source host (docs/contract.md §10).

Where it is recorded: nowhere new.  Every state file already keeps, once its
conversion is over, the bytes each disk copied and when each disk's copy
started and finished (``copy.disks[]``, wrapper/rate.py), and, since issue 23,
the source host it read from (``source_host``).  So the rate for a source is
the one of the newest conversion in the state directory that

* read from the same ``source_host``,
* finished (``finished: true``) without ``failed``,
* copied something: its ``copy.bytes_copied`` over the time from its first
  disk's ``started_at`` to its last disk's ``finished_at``.

State files are read with the rules of :mod:`wrapper.observe.summary`
(hostile input: only regular files owned by root or the reader, no link
followed, size, depth and numbers bounded, the newest MAX_FILES only).
"""
from dataclasses import dataclass
from typing import Optional

from wrapper.observe import summary

MIN_SECONDS = 1.0            # a copy shorter than this measures nothing


@dataclass(frozen=True)
class MeasuredRate:
    rate: float              # bytes per second
    bytes_copied: int
    seconds: float
    finished_at: float
    state_file: str
    vm: Optional[str]


def measured(data, path):
    """The :class:`MeasuredRate` of one state's data, or None."""
    data = summary.tame(data)
    if data.get("finished") is not True or data.get("failed") is True:
        return None
    copy = data.get("copy")
    if not isinstance(copy, dict) or not isinstance(copy.get("disks"), list):
        return None
    copied = summary.bounded_number(copy.get("bytes_copied"))
    starts, ends = [], []
    for d in copy["disks"]:
        d = d if isinstance(d, dict) else {}
        start, end = summary.bounded_number(d.get("started_at")), summary.bounded_number(d.get("finished_at"))
        if start is not None and end is not None:
            starts.append(start)
            ends.append(end)
    if not copied or copied <= 0 or not starts:
        return None
    seconds = max(ends) - min(starts)
    if seconds < MIN_SECONDS:
        return None
    vm = data.get("vm") if isinstance(data.get("vm"), str) else None
    return MeasuredRate(copied / seconds, int(copied), round(seconds, 1), max(ends), path, vm)


def last_rate(state_dir, source_host, owners=None, read=summary.read_state):
    """The newest :class:`MeasuredRate` from ``source_host`` among the
    state files of ``state_dir``; None when there is none (or the directory
    cannot be listed)."""
    if not source_host:
        return None
    try:
        paths = summary.scan(state_dir, owners=owners)
    except OSError:
        return None
    best = None
    for path in paths:
        reading = read(path, summary.trusted_owners() if owners is None else owners)
        data = reading.data
        if not isinstance(data, dict) or data.get("source_host") != source_host:
            continue
        found = measured(data, path)
        if found is not None and (best is None or found.finished_at > best.finished_at):
            best = found
    return best
