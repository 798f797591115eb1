"""Reclaiming what dead wrappers left (see :mod:`wrapper.leases` for why and
how a dead wrapper is told from a live one).

:func:`reclaim` walks the lease book: a lease whose lock nobody holds and
whose wrapper (pid, start time, boot) is gone gets its leftovers removed step
by step (:class:`Leftovers`), each step checked again first and safe to
repeat; a step that fails keeps the lease for the next try.
"""
import errno
import json
import os
import signal
import stat
import time

from wrapper import leases, procinfo, state, systemd
from wrapper.errors import JobError
from wrapper.security import fsafe, fstree
from wrapper.leases import LOCK, abs_dir, remove_files, take_lock

DIED = ("virt-v2v-wrapper (pid %s) died before the conversion finished (it was killed or "
        "crashed); its leftovers were cleaned up")


def reclaim(book, runner, systemd_available, log, proc_root="/proc", now=time.time):
    """Clean up after every lease whose wrapper is dead; returns their tags.
    Never raises; a lease of a live wrapper is never touched."""
    done = []
    try:
        tags = book.tags()
    except OSError as e:
        log.warning("cannot list the leases in %s: %s", book.path, e)
        return done
    boot = procinfo.boot_id(proc_root)
    for tag in tags:
        try:
            lock = take_lock(book.dir_fd, tag + LOCK)
            if lock is None:
                continue                 # its wrapper is alive
            try:
                if _reclaim_locked(book, tag, runner, systemd_available, log, proc_root, now,
                                   boot):
                    done.append(tag)
            finally:
                os.close(lock)
        except Exception as e:   # one broken lease must not stop the others
            log.warning("reclaiming lease %s failed: %s", tag, e)
    return done


def _reclaim_locked(book, tag, runner, systemd_available, log, proc_root, now, boot):
    record, problem = book.read(tag)
    if record is None:
        if problem:
            log.warning("lease %s is unusable (%s): removed, nothing reclaimed", tag, problem)
        else:
            log.info("removing the leftovers of lease %s (no lease file)", tag)
        remove_files(book.dir_fd, tag)
        return False
    if boot is not None and record["boot_id"] != boot:
        why = "the host rebooted since it started"
    elif not procinfo.alive(record["wrapper_pid"], record["wrapper_start"], proc_root):
        why = "pid %d is gone or is another process now" % record["wrapper_pid"]
    else:
        return False
    log.info("wrapper %s is dead (%s): reclaiming what it left", tag, why)
    if not Leftovers(record, runner, systemd_available, log, proc_root, now).clean():
        log.warning("lease %s kept: the next wrapper start or status tries again", tag)
        return False
    remove_files(book.dir_fd, tag)
    log.info("lease %s released", tag)
    return True


class Leftovers:
    """What one dead wrapper left, removed step by step."""

    def __init__(self, record, runner, systemd_available, log, proc_root="/proc", now=time.time):
        self.r, self.tag = record, record["tag"]
        self.runner, self.systemd, self.log = runner, systemd_available, log
        self.proc_root, self.now = proc_root, now

    def clean(self):
        """Every step, whatever the others did; True when none of root's own
        steps failed.  The agent and throttling directories are emptied with
        their owner's rights (security.fstree): what the owner itself cannot
        remove stays, is logged, and does not keep the lease -- otherwise the
        owner could make every later start retry it (and wait on a child the
        owner may stop) for ever."""
        ok = True
        for step in (self.stop_unit, self.kill_child, self.stop_agent, self.remove_secret_dir,
                     self.remove_agent_dir, self.remove_throttle_dir, self.finish_state):
            try:
                step()
            except Exception as e:   # logged; the other steps still run
                self.log.warning("reclaim %s: %s failed: %s", self.tag, step.__name__, e)
                if step.__name__ not in self.OWNERS_STEPS:
                    ok = False
        return ok

    OWNERS_STEPS = frozenset({"remove_agent_dir", "remove_throttle_dir"})

    def _info(self, fmt, *args):
        self.log.info("reclaim %s: " + fmt, self.tag, *args)

    def _int(self, key):
        value = self.r.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def stop_unit(self):
        unit = self.r.get("unit")
        if not unit:
            return
        if not isinstance(unit, str) or unit.startswith("-"):
            raise ValueError("bad unit name %r" % (unit,))
        if not self.systemd:
            self._info("systemd is not running, so neither is unit %s", unit)
            return
        res = self.runner(["systemctl", "stop", unit], check=False, timeout=60)
        if res.rc not in (0, 5):     # 5: no such unit (any more)
            raise OSError("systemctl stop %s exited with status %d" % (unit, res.rc))
        self.runner(["systemctl", "reset-failed", unit], check=False)
        self._info("systemd unit %s stopped and reset", unit)

    def kill_child(self):
        pid, start = self._int("child_pid"), self._int("child_start")
        if pid is not None and start is not None:
            killed = procinfo.kill_group(pid, start, signal.SIGKILL, self.proc_root)
            self._info("virt-v2v process group %d: killed %s", pid,
                       ", ".join(map(str, killed)) or "nothing (gone)")

    def stop_agent(self):
        pid, start = self._int("agent_pid"), self._int("agent_start")
        if pid is not None:
            sent = start is not None and procinfo.signal_checked(
                pid, signal.SIGTERM, lambda s: s == start, self.proc_root)
            self._info("ssh-agent (pid %d) %s", pid, "stopped" if sent else "already gone")

    def _remove_dir(self, parent, name, identity, what):
        if not fsafe.plain_name(name):
            raise ValueError("bad %s name %r" % (what, name))
        if not isinstance(identity, list) or len(identity) != 2:
            self._info("%s %s has no recorded identity: left alone", what, name)
            return
        try:
            fd = fsafe.open_dir(abs_dir(parent))
        except FileNotFoundError:
            self._info("%s %s went with %s", what, name, parent)
            return
        try:
            same = fstree.remove_tree_at(fd, name, identity)
        finally:
            os.close(fd)
        self._info("%s %s/%s %s", what, parent, name,
                   "removed" if same else "left alone: it is not the one the wrapper made")

    def remove_secret_dir(self):
        if self.r.get("secret_dir"):
            self._remove_dir(self.r.get("state_dir"), self.r["secret_dir"],
                             self.r.get("secret_ident"), "secret directory")

    def remove_throttle_dir(self):
        if self.r.get("throttle_dir"):
            self._remove_dir(self.r.get("state_dir"), self.r["throttle_dir"],
                             self.r.get("throttle_ident"), "throttling directory")

    def remove_agent_dir(self):
        path = self.r.get("agent_dir")
        if path:
            path = abs_dir(path)
            self._remove_dir(os.path.dirname(path), os.path.basename(path),
                             self.r.get("agent_ident"), "ssh-agent directory")

    def finish_state(self):
        state_dir, name = self.r.get("state_dir"), self.r.get("state_name")
        if not state_dir or not name:
            return
        if not fsafe.plain_name(name):
            raise ValueError("bad state file name %r" % (name,))
        try:
            fd = fsafe.open_dir(abs_dir(state_dir))
        except FileNotFoundError:
            self._info("state directory %s is gone", state_dir)
            return
        try:
            self._finish_state_at(fd, name)
            prefix = "." + name + "."
            for entry in os.listdir(fd):     # temporary files of its atomic writes
                st = fsafe.lstat_at(fd, entry) if entry.startswith(prefix) \
                    and entry.endswith(".tmp") else None
                if st is not None and stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                    fsafe.unlink_same(fd, entry, fsafe.ident(st))
                    self._info("temporary file %s removed", entry)
        finally:
            os.close(fd)

    def _finish_state_at(self, fd, name):
        try:
            raw, _st = fsafe.read_untrusted(name, {os.geteuid()}, 1 << 20, fd)
            data = json.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            self._info("no state file %s", name)
            return
        except ValueError:
            data = None
        except OSError as e:
            if not isinstance(e, fsafe.Refused) and e.errno != errno.ELOOP:
                raise
            self.log.warning("reclaim %s: state file %s left alone: %s", self.tag, name, e)
            return
        if not isinstance(data, dict) or "finished" in data:
            self._info("state file %s %s: left as it is", name, "already finished"
                       if isinstance(data, dict) else "is not a JSON object")
            return
        message = DIED % self.r["wrapper_pid"]
        earlier = data.get("last_message")
        if isinstance(earlier, dict) and isinstance(earlier.get("message"), str) \
                and earlier["message"]:
            message += "; before that: " + earlier["message"]
        state.write_dead(fd, name, data, message, self.now())
        self._info("state file %s marked failed and finished", name)


LOCK_DIR_VARIABLE = "VIRT_V2V_WRAPPER_LOCK_DIR"


def open_book(settings, log, create=True):
    """The lease book of ``settings.lock_dir``, or None when this wrapper
    keeps none: not root (logged quietly), or, with ``create=False``, no
    wrapper ever made it.  As root, a lock directory that is not root's
    alone is an error (:class:`JobError`): without leases a ``kill -9``
    leaves the secret files and a state file that never gets ``finished``,
    so a job start is refused rather than silently run without them."""
    try:
        return leases.LeaseBook.open(settings.lock_dir, create=create)
    except (OSError, ValueError) as e:
        if not create and isinstance(e, FileNotFoundError):
            return None
        if os.geteuid() != 0:
            log.debug("no leases (%s): leftovers of wrappers killed outright are not "
                      "reclaimed", e)
            return None
        why = str(e) if isinstance(e, fsafe.Refused) else "%s: %s" % (
            settings.lock_dir, getattr(e, "strerror", None) or e)
        raise JobError(LOCK_DIR_VARIABLE, "cannot keep the job's lease: %s" % why) from None


def reclaim_book(book, settings, runner, log):
    """Reclaim what dead wrappers left in ``book`` (None: nothing to do)."""
    if book is not None:
        for tag in reclaim(book, runner, systemd.available(settings), log):
            log.info("reclaimed what the dead wrapper of job %s left", tag)
    return book


def reclaim_at(settings, runner, log, create=True):
    """:func:`open_book` and :func:`reclaim_book`, for ``status``: a lock
    directory root may not use is a warning there, never a failure."""
    try:
        book = open_book(settings, log, create)
    except JobError as e:
        log.warning("%s", e)
        return None
    return reclaim_book(book, settings, runner, log)
