"""The throttling file (SPEC §6): pick it up, merge it into the limits in
force, hand each changed limit to its applier, delete it.

Appliers are plain callables ``apply(value)`` keyed by limit name (``cpu``,
``network``); they raise ThrottleError when a value cannot be applied.  The
file handling never needs to know how a limit is enforced.
"""
import json
import logging
import os
import stat
import time

from wrapper import limits
from wrapper.errors import ThrottleError

log = logging.getLogger(__name__)

# A file that does not parse yet may still be being written: give the writer
# this long before calling it malformed.
SETTLE_SECONDS = 1.0
MAX_SIZE = 64 * 1024


class Throttler:
    def __init__(self, path, state, appliers, allowed_uids, clock=time.time):
        self.path = path
        self.state = state
        self.appliers = dict(appliers)
        self.allowed_uids = frozenset(allowed_uids)
        self.clock = clock
        self._ignored = set()
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
        for key, message in problems:
            log.warning("throttling %s: ignoring %s: %s", origin, key or "document", message)
            self.state.notice("throttling: %s" % message)
        self.apply(changes)

    # -- the file ------------------------------------------------------------
    def step(self):
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("throttling file %s: %s", self.path, e)
            return
        ident = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in self.allowed_uids:
            if ident not in self._ignored:
                self._ignored.add(ident)
                log.warning("throttling file %s ignored: %s", self.path,
                            "not a regular file" if not stat.S_ISREG(st.st_mode)
                            else "owned by uid %d, not by an allowed user" % st.st_uid)
            return
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_SIZE + 1)
            data = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_SIZE else None
            if data is None:
                raise ValueError("larger than %d bytes" % MAX_SIZE)
        except (OSError, ValueError) as e:
            if self.clock() - st.st_mtime < SETTLE_SECONDS:
                return           # maybe still being written: look again next step
            log.warning("throttling file %s is unreadable or malformed (%s); deleted", self.path, e)
            self.state.notice("the throttling file was malformed and was ignored")
            self._remove()
            return
        self._remove()
        log.info("throttling file read: %s", json.dumps(data))
        self.apply_document(data, "file")

    def _remove(self):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot delete throttling file %s: %s", self.path, e)
