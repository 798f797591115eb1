"""The throttling file (docs/contract.md §6): pick it up, merge it into the limits in
force, hand each changed limit to its applier, delete it.

Appliers are plain callables ``apply(value)`` keyed by limit name (``cpu``,
``network``); they raise ThrottleError when a value cannot be applied.  The
file handling never needs to know how a limit is enforced.
"""
import json
import logging
import time

from wrapper.throttling import limits
from wrapper.security import fsafe
from wrapper.errors import ThrottleError

log = logging.getLogger(__name__)

# A file that does not parse yet may still be being written: give the writer
# this long before calling it malformed.
SETTLE_SECONDS = 1.0
MAX_SIZE = 64 * 1024


class Throttler:
    """``dir_fd``/``name``: the throttling file, in a directory other users
    may write (docs/contract.md §6).  It is never opened by name through a path: each
    step looks at the entry (lstat), opens it with O_NOFOLLOW|O_NONBLOCK
    (no symlink, no FIFO can block us) and checks the descriptor — a regular
    file with one link, owned by an allowed user, small — and that it is the
    entry looked at.  Its content is never echoed, only the values parsed
    from it.  An entry we must not read is removed (it would otherwise keep
    the caller from writing theirs) and reported; an entry we cannot remove
    is dealt with once, not every step."""

    def __init__(self, dir_fd, name, state, appliers, allowed_uids, clock=time.time):
        self.dir_fd = dir_fd
        self.name = name
        self.state = state
        self.appliers = dict(appliers)
        self.allowed_uids = frozenset(allowed_uids)
        self.clock = clock
        self._done = set()
        self._unavailable_logged = set()

    # -- applying ------------------------------------------------------------
    def apply(self, changes):
        """Apply normalised ``changes`` (key -> value or None)."""
        in_force = self.state["throttling"]
        for key, value in changes.items():
            if in_force.get(key) == value:
                log.info("throttling: %s already %s", key, value or "unlimited")
                continue
            applier = self.appliers.get(key)
            try:
                if applier is None:
                    raise ThrottleError("no way to apply %s limits on this host" % key)
                applier(value)
            except ThrottleError as e:
                if key not in self._unavailable_logged:
                    log.warning("throttling: cannot set %s to %s: %s", key, value or "unlimited", e)
                    self._unavailable_logged.add(key)
                self.state.notice("cannot set the %s limit: %s" % (key, e))
                continue
            self._unavailable_logged.discard(key)
            in_force[key] = value
            log.info("throttling: %s set to %s", key, value or "unlimited")

    def apply_document(self, data, origin):
        changes, problems = limits.parse_limits(data)
        log.info("throttling %s read: %s", origin, ", ".join(
            "%s=%s" % (k, v or "unlimited") for k, v in sorted(changes.items())) or "no known keys")
        for key, message in problems:
            log.warning("throttling %s: ignoring %s: %s", origin, key or "document", message)
            self.state.notice("throttling: %s" % message)
        self.apply(changes)

    # -- the file ------------------------------------------------------------
    def step(self):
        try:
            st = fsafe.lstat_at(self.dir_fd, self.name)
        except OSError as e:
            log.warning("throttling file %s: %s", self.name, e)
            return
        if st is None:
            return
        seen = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if seen in self._done:
            return               # dealt with already, but we could not remove it
        problem = fsafe.untrusted_problem(st, self.allowed_uids, MAX_SIZE)
        if problem:
            self._refuse(st, seen, problem)
            return
        try:
            raw, opened = fsafe.read_untrusted(self.name, self.allowed_uids, MAX_SIZE,
                                               dir_fd=self.dir_fd)
        except fsafe.Refused as e:
            self._refuse(st, seen, e.why)
            return
        except OSError as e:
            if self.clock() - st.st_mtime < SETTLE_SECONDS:
                return
            self._refuse(st, seen, "cannot be read (%s)" % (e.strerror or e))
            return
        if fsafe.ident(opened) != fsafe.ident(st):
            return               # swapped between the look and the open: look again
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            if self.clock() - st.st_mtime < SETTLE_SECONDS:
                return           # maybe still being written: look again next step
            log.warning("throttling file %s is malformed (%s); deleted", self.name,
                        type(e).__name__)
            self.state.notice("the throttling file was malformed and was ignored")
            self._remove(opened, seen)
            return
        self._remove(opened, seen)
        self.apply_document(data, "file")

    def _refuse(self, st, seen, why):
        log.warning("throttling file %s ignored and removed: it %s", self.name, why)
        self.state.notice("a throttling file that %s was ignored" % why)
        self._remove(st, seen)

    def _remove(self, st, seen):
        try:
            if fsafe.unlink_same(self.dir_fd, self.name, fsafe.ident(st)):
                return
        except OSError as e:
            log.warning("cannot delete throttling file %s: %s", self.name, e.strerror or e)
        self._done.add(seen)
