"""Copy throughput and time left, per disk and overall.

virt-v2v reports progress in coarse steps (nbdcopy's bar moves by whole
percents, or by eighths on a small disk) at irregular times, so a rate taken
between two reports swings wildly.  :class:`RateMeter` takes the rate as
``sum(amount) / sum(seconds)`` over the intervals between reports, older
intervals fading out exponentially (time constant SMOOTHING): a time
average, so a burst after a long wait weighs what it should.  When no report
comes for longer than usual, the excess counts as time with nothing copied,
so the rate decays instead of staying at its last value.

No estimate is better than a wild one: :meth:`RateMeter.eta` is None until
a few reports over a few seconds have been seen, and again once progress has
stalled.  The overall time left is what is left over the rate of the disk
being copied (the disks to come share its source and link): a faded average
over all disks would stay optimistic for a while after a fast small disk.
When disks are copied at once (``state.parallel``, docs/contract.md §5) every
disk being copied has its own meter, and the overall time left is the larger
of the slowest such disk's and what is left at the combined rate.
Everything takes the time as a parameter (a monotonic clock).

:class:`Throughput` watches a :class:`wrapper.state.State` and puts the
figures in its ``copy`` key (docs/contract.md §5 allows extra keys)::

    "copy": {"at": <unix time of the estimate>,
             "bytes_copied": int, "size": int or null (all disk sizes known),
             "rate": bytes/s or null, "eta": seconds or null,
             "disks": [{"size": int or null, "bytes_copied": int or null,
                        "rate": bytes/s or null, "eta": seconds or null,
                        "started_at": unix time, "finished_at": unix time}, ...]}

``eta`` is the time left at ``at``; readers subtract the time since.
"""
import math
import time

SMOOTHING = 20.0        # seconds: time constant of the moving average
MIN_REPORTS = 3         # progress reports after the first before an estimate is given
MIN_SECONDS = 2.0       # ... spanning at least this long
STALL_SECONDS = 30.0    # no progress for this long (and STALL_FACTOR usual gaps): stalled
STALL_FACTOR = 4.0
MIN_INTERVAL = 0.05     # reports closer than this are merged into the next interval
REPUBLISH = 5.0         # without progress, refresh the decaying estimate this often


class RateMeter:
    """The smoothed rate of one growing quantity (bytes or percent).

    Amount and time of each interval are summed with exponentially fading
    weights; the rate is their ratio (no bias towards the first interval,
    whatever its length)."""

    def __init__(self, smoothing=SMOOTHING):
        self.smoothing = smoothing
        self.first = None       # (time, amount) of the first observation
        self.last = None        # (time, amount) of the last accepted report
        self.amount = 0.0       # faded sum of the intervals' amounts
        self.seconds = 0.0      # ... of their lengths
        self.count = 0.0        # ... of their number (seconds / count: the usual gap)
        self.reports = 0        # accepted intervals

    def observe(self, amount, now):
        """Record the quantity's value at ``now``.  Only an increase is a report."""
        if self.first is None:
            self.first = self.last = (now, amount)
            return
        t, a = self.last
        dt, da = now - t, amount - a
        if da <= 0 or dt < MIN_INTERVAL:
            return
        fade = math.exp(-dt / self.smoothing)
        self.amount = self.amount * fade + da
        self.seconds = self.seconds * fade + dt
        self.count = self.count * fade + 1
        self.last = (now, amount)
        self.reports += 1

    @property
    def gap(self):
        """The usual time between reports (None before the first)."""
        return self.seconds / self.count if self.reports else None

    def idle(self, now):
        """Seconds since the last report (or the first observation)."""
        return None if self.last is None else max(0.0, now - self.last[0])

    def stalled(self, now):
        if self.last is None:
            return False
        limit = STALL_SECONDS if self.gap is None else max(STALL_SECONDS, STALL_FACTOR * self.gap)
        return self.idle(now) > limit

    def rate(self, now):
        """The smoothed rate at ``now`` (None before two reports).  An interval
        already longer than the usual one is folded in as if nothing had been
        copied during the excess."""
        if not self.reports:
            return None
        excess = self.idle(now) - self.gap
        if excess <= 0:
            return self.amount / self.seconds
        fade = math.exp(-excess / self.smoothing)
        return self.amount * fade / (self.seconds * fade + excess)

    def settled(self):
        return (self.reports >= MIN_REPORTS and self.first is not None
                and self.last[0] - self.first[0] >= MIN_SECONDS)

    def eta(self, remaining, now):
        """Seconds until ``remaining`` more is done, or None when unknown
        (not settled yet, stalled, or nothing is moving)."""
        if remaining is None:
            return None
        if remaining <= 0:
            return 0.0
        if not self.settled() or self.stalled(now):
            return None
        rate = self.rate(now)
        if not rate or rate <= 0:
            return None
        return remaining / rate

    def average(self):
        """The plain average rate from the first observation to the last report."""
        if self.first is None or self.last[0] <= self.first[0]:
            return None
        return (self.last[1] - self.first[1]) / (self.last[0] - self.first[0])


def _round(value, digits=1):
    return None if value is None else round(value, digits)


class Throughput:
    """Per disk and overall rate/ETA for one conversion, published into the
    state's ``copy`` key.  ``clock`` is monotonic (the maths), ``wall`` is
    Unix time (what is written)."""

    def __init__(self, clock=time.monotonic, wall=time.time):
        self.clock = clock
        self.wall = wall
        self.disks = {}              # index -> RateMeter over the disk's percent
        self.started = {}            # index -> unix time its copy started
        self.finished = {}           # index -> unix time it reached 100 %
        self.total = RateMeter()     # over the bytes copied of every disk whose size is known
        self._seen = None            # progress already published
        self._published_at = None

    def update(self, state, force=False):
        """Fold the state's progress in; rewrite ``copy`` when it changed (or
        every REPUBLISH seconds while copying, so a stall shows)."""
        now, wall = self.clock(), self.wall()
        disks = state.data.get("disks", [])
        current = state.current
        for i in state.copying():          # serial: the current disk; parallel: every one
            if i not in self.disks:
                self.disks[i] = RateMeter()
                self.started[i] = wall
        progress = tuple(d.get("progress", 0) for d in disks)
        for i, meter in self.disks.items():
            pct = progress[i] if i < len(progress) else 0
            meter.observe(pct, now)
            if pct >= 100 and i not in self.finished:
                self.finished[i] = wall
        copied, size = self._bytes(state, progress)
        if current is not None or self.disks:
            self.total.observe(copied, now)
        key = (progress, current, tuple(sorted(state.sizes.items())))
        due = (self._published_at is not None and self.disks
               and len(self.finished) < len(self.disks) and now - self._published_at >= REPUBLISH)
        if not force and key == self._seen and not due:
            return False
        self._seen, self._published_at = key, now
        state.data["copy"] = self._figures(state, progress, copied, size, now, wall)
        return True

    def _bytes(self, state, progress):
        count = max(state.data.get("disk_count", 0), len(progress))
        copied = sum(int(state.sizes[i] * (progress[i] if i < len(progress) else 0) / 100)
                     for i in range(count) if i in state.sizes)
        size = (sum(state.sizes[i] for i in range(count))
                if count and all(i in state.sizes for i in range(count)) else None)
        return copied, size

    def _figures(self, state, progress, copied, size, now, wall):
        entries = []
        for i, pct in enumerate(progress):
            meter = self.disks.get(i)
            disk_size = state.sizes.get(i)
            entry = {"size": disk_size,
                     "bytes_copied": None if disk_size is None else int(disk_size * pct / 100),
                     "rate": None, "eta": None}
            if meter is not None:
                if i in self.finished:
                    pct_rate, entry["eta"] = meter.average(), 0.0
                else:
                    pct_rate, entry["eta"] = meter.rate(now), _round(meter.eta(100 - pct, now))
                if pct_rate is not None and disk_size is not None:
                    entry["rate"] = round(pct_rate * disk_size / 100)
                entry["started_at"] = round(self.started[i], 3)
                if i in self.finished:
                    entry["finished_at"] = round(self.finished[i], 3)
            entries.append(entry)
        done = size is not None and copied >= size
        rate = self.total.average() if done else self.total.rate(now)
        eta = 0.0 if done else self._overall_eta(state, None if size is None else size - copied, now)
        return {"at": round(wall, 3), "bytes_copied": copied, "size": size,
                "rate": None if rate is None else round(rate), "eta": _round(eta),
                "disks": entries}

    def _overall_eta(self, state, remaining, now):
        """What is left over the rate of the disk being copied (the best guess for the
        disks still to come too: same source, same link); unknown until that disk's rate
        has settled, so that a slower disk after a fast one is not hidden behind the
        faded overall average.  Between disks, the overall meter."""
        if state.parallel:
            return self._parallel_eta(state, remaining, now)
        current = state.current
        meter = self.disks.get(current)
        if remaining is None or meter is None or current in self.finished:
            return self.total.eta(remaining, now)
        pct_eta = meter.eta(100, now)          # None unless settled and moving
        if pct_eta is None or current not in state.sizes:
            return None
        return remaining / (meter.rate(now) * state.sizes[current] / 100)

    def _parallel_eta(self, state, remaining, now):
        """Disks copied at once: the copy ends neither before the slowest disk
        being copied (its own time left) nor before what is left of all of
        them at the combined rate (disks still to start share the streams);
        unknown until every disk being copied has a settled estimate."""
        if remaining is None:
            return None
        etas = []
        for i in state.copying():
            meter = self.disks.get(i)
            pct = state.data["disks"][i]["progress"] if i < len(state.data["disks"]) else 0
            eta = None if meter is None else meter.eta(100 - pct, now)
            if eta is None:
                return None
            etas.append(eta)
        total = self.total.eta(remaining, now)
        if total is None:
            return max(etas) if etas and len(state.started) >= state.data.get("disk_count", 0) \
                else None
        return max(etas + [total])

    def close(self, state):
        """At the end: a disk that never completed has no time left to give."""
        self.update(state, force=True)
        copy = state.data.get("copy")
        if not copy:
            return
        for entry in copy["disks"]:
            if "finished_at" not in entry:
                entry["rate"] = entry["eta"] = None
        if copy["eta"] != 0.0:
            copy["rate"] = copy["eta"] = None


# -- reading what was published (status, metrics) ------------------------------
def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if value >= 0 and math.isfinite(value) else None


def _left(eta, at, now):
    if eta is None:
        return None
    if at is None:
        return eta
    return round(max(0.0, eta - max(0.0, now - at)), 1)


def read_copy(data, now, count=0):
    """The ``copy`` key of a state file another process wrote, checked:
    ``(overall, [per disk])``, each a dict with ``size``, ``bytes_copied``,
    ``rate`` (bytes/s), ``eta`` (seconds left at ``now``), ``started_at`` and
    ``finished_at`` -- None where unknown; at least ``count`` disks."""
    copy = data.get("copy")
    copy = copy if isinstance(copy, dict) else {}
    at = _number(copy.get("at"))

    def fields(d):
        d = d if isinstance(d, dict) else {}
        out = {k: _number(d.get(k)) for k in ("size", "bytes_copied", "rate", "started_at",
                                             "finished_at")}
        out["eta"] = _left(_number(d.get("eta")), at, now)
        return out
    disks = copy.get("disks")
    disks = disks if isinstance(disks, list) else []
    return fields(copy), [fields(d) for d in disks + [None] * (count - len(disks))]


# what status adds per disk and overall
SHOWN = ("size", "bytes_copied", "rate", "eta", "started_at", "finished_at")


def describe(figures, running):
    """Rate, time left and bytes of one disk (or overall) for a status line:
    ``12.3 MiB/s   0:01:10 left   412.0 MiB of 1.0 GiB``."""
    speed, eta = format_speed(figures.get("rate")), figures.get("eta")
    if eta == 0:
        text = "done, %s on average" % speed
    elif eta is None:
        text = "%s   time left %s" % (speed, "unknown" if running else "-")
    else:
        text = "%s   %s left" % (speed, format_left(eta))
    if figures.get("bytes_copied") is not None and figures.get("size") is not None:
        text += "   %s of %s" % (format_size(figures["bytes_copied"]), format_size(figures["size"]))
    return text


def format_size(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return "%.1f %s" % (n / size, unit)
    return "%d B" % n


def format_speed(rate):
    if rate is None:
        return "-"
    return format_size(rate) + "/s"


def format_left(eta, running=True):
    """``eta`` seconds as text: "unknown" until the estimate settles."""
    if eta is None:
        return "unknown" if running else "-"
    if eta == 0:
        return "done"
    seconds = int(math.ceil(eta))
    return "%d:%02d:%02d" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)
