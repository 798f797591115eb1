"""The files of one job (docs/contract.md §4): where they go, and taking their names
safely in directories other users may write.

The tag ``<YYYYmmddTHHMMSS>-<pid>`` is predictable, so any local user can
pre-create an entry under it (a directory as the state file, a FIFO as the
log, a file of theirs as the throttling file).  Every name is taken with
``O_CREAT|O_EXCL|O_NOFOLLOW``; when one is already taken, everything taken so
far is given back and the next second's tag is tried — nobody's entry is ever
opened, adopted or removed.
"""
import errno
import json
import logging
import os
import time
from dataclasses import dataclass

from wrapper.security import fsafe
from wrapper.errors import JobError

log = logging.getLogger(__name__)

OVIRT_LOG_DIR = "/var/log/vdsm/import"
DEFAULT_LOG_DIR = "/var/log/virt-v2v"
TAG_ATTEMPTS = 20


@dataclass(frozen=True)
class JobFiles:
    tag: str
    v2v_log: str
    mr_log: str
    wrapper_log: str
    state_file: str
    throttle_file: str

    def announcement(self):
        """The one JSON line printed on stdout (docs/contract.md §4)."""
        return json.dumps({"v2v_log": self.v2v_log, "wrapper_log": self.wrapper_log,
                           "state_file": self.state_file, "throttling_file": self.throttle_file})


def make_tag(now=None, pid=None):
    return "%s-%d" % (time.strftime("%Y%m%dT%H%M%S", time.localtime(now)),
                      os.getpid() if pid is None else pid)


def log_dir_for(settings, job):
    if settings.log_dir:
        return settings.log_dir
    ovirt = isinstance(job, dict) and ("rhv_url" in job or "export_domain" in job)
    return OVIRT_LOG_DIR if ovirt else DEFAULT_LOG_DIR


def job_files(settings, log_dir, tag):
    base = "v2v-import-%s" % tag
    return JobFiles(tag=tag,
                    v2v_log=os.path.join(log_dir, base + ".log"),
                    mr_log=os.path.join(log_dir, base + "-mr.log"),
                    wrapper_log=os.path.join(log_dir, base + "-wrapper.log"),
                    state_file=os.path.join(settings.state_dir, base + ".state"),
                    throttle_file=os.path.join(settings.state_dir, base + ".throttle"))


def open_job_dir(path, option, mode, owner=None):
    """Open (creating it if missing) one of the wrapper's directories.

    A directory the wrapper creates gets ``mode``/``owner`` (the state
    directory must let the sudo caller create the throttling file, docs/contract.md §4).
    A symlink is followed only if root or we own it.  Problems are JobErrors
    naming ``option``.
    """
    def refuse(why):
        return JobError(option, "%s %s" % (path, why))
    try:
        if not os.path.lexists(path):
            parent = os.path.dirname(path)
            os.makedirs(parent, mode=0o755, exist_ok=True)
            try:
                os.mkdir(path, 0o700)
                fd = fsafe.open_dir(path)
                os.fchmod(fd, mode)
                if owner is not None:
                    os.fchown(fd, *owner)
                os.close(fd)
            except FileExistsError:
                pass
        try:
            fd = fsafe.open_dir(path)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            link = os.lstat(path)
            if link.st_uid not in (0, os.geteuid()):
                raise refuse("is a symbolic link owned by uid %d" % link.st_uid) from None
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | fsafe.O_CLOEXEC)
    except NotADirectoryError:
        raise refuse("is not a directory") from None
    except OSError as e:
        raise refuse("cannot be used: %s" % (e.strerror or e)) from None
    problem = fsafe.dir_problem(os.fstat(fd))
    if problem:
        os.close(fd)
        raise refuse(problem)
    return fd


class Reserved:
    """The job's names, taken: open descriptors on the three logs, the state
    file's directory, and what to give back on a refusal."""

    def __init__(self, files, state_dir_fd, log_dir_fd, fds, idents):
        self.files = files
        self.state_dir_fd = state_dir_fd
        self.log_dir_fd = log_dir_fd
        self.wrapper_log_fd = fds["wrapper_log"]
        self.v2v_log_fd = fds["v2v_log"]
        self.mr_log_fd = fds["mr_log"]
        self._idents = idents

    def hand_logs_to(self, uid, gid):
        """virt-v2v (as the run-as user) reopens the machine-readable log
        through ``/dev/fd`` and, in a systemd unit, the gate shell opens both
        logs by name as that user: give them to it through our descriptors."""
        if uid != os.geteuid():
            for fd in (self.v2v_log_fd, self.mr_log_fd):
                os.fchown(fd, uid, gid)

    @property
    def state_name(self):
        return os.path.basename(self.files.state_file)

    @property
    def throttle_name(self):
        return os.path.basename(self.files.throttle_file)

    def give_back(self, keep_wrapper_log=True):
        """A refused job: remove what we created (by identity), except the
        wrapper log that says why."""
        for key, (dir_fd, name, identity) in self._idents.items():
            if key == "wrapper_log" and keep_wrapper_log:
                continue
            try:
                fsafe.unlink_same(dir_fd, name, identity)
            except OSError as e:
                log.warning("cannot remove %s: %s", name, e)


# (key in JobFiles, directory); all created 0644 by the wrapper
_ENTRIES = (("wrapper_log", "log"), ("v2v_log", "log"), ("mr_log", "log"), ("state_file", "state"))


def reserve(settings, log_dir, state_dir_fd, log_dir_fd, now=None, pid=None):
    """Take the names of a new job; returns :class:`Reserved`."""
    now = time.time() if now is None else now
    for attempt in range(TAG_ATTEMPTS):
        files = job_files(settings, log_dir, make_tag(now + attempt, pid))
        taken = _take(files, state_dir_fd, log_dir_fd)
        if taken is not None:
            if attempt:
                log.warning("names of %d earlier tags were taken by someone else; using tag %s",
                            attempt, files.tag)
            return Reserved(files, state_dir_fd, log_dir_fd, *taken)
    raise JobError(None, "cannot find free names for the job's files: every tag tried was "
                         "already in use in %s or %s" % (settings.state_dir, log_dir))


def _take(files, state_dir_fd, log_dir_fd):
    dirs = {"log": log_dir_fd, "state": state_dir_fd}
    if fsafe.lstat_at(state_dir_fd, os.path.basename(files.throttle_file)) is not None:
        return None
    fds, idents = {}, {}
    try:
        for key, where in _ENTRIES:
            path = getattr(files, key)
            try:
                fd = fsafe.create(dirs[where], os.path.basename(path),
                                  os.O_RDWR | os.O_APPEND | os.O_NONBLOCK, 0o644)
            except OSError as e:
                if isinstance(e, FileExistsError):
                    raise
                raise JobError("--%s-dir" % where, "cannot create %s: %s" % (
                    path, e.strerror or e)) from None
            os.set_blocking(fd, True)
            fds[key] = fd
            idents[key] = (dirs[where], os.path.basename(path), fsafe.ident(os.fstat(fd)))
    except BaseException as e:
        for fd in fds.values():
            os.close(fd)
        for dir_fd, name, identity in idents.values():
            fsafe.unlink_same(dir_fd, name, identity)
        if isinstance(e, FileExistsError):
            return None
        raise
    state_fd = fds.pop("state_file")
    os.close(state_fd)
    return fds, idents


def state_dir_mode(sudo):
    """A state directory the wrapper creates: the sudo caller's group may
    create files (the throttling file) but not remove others' (sticky)."""
    if sudo is not None and os.geteuid() == 0:
        return 0o1770, (0, sudo[1])
    return 0o755, None
