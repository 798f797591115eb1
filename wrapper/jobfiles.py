"""The files of one job (docs/contract.md §4): where they go, and taking
their names safely in directories other users may write.

The tag is ``<YYYYmmddTHHMMSS>-<random>``: 48 random bits nobody can
predict, so nobody can pre-create the job's names (a tag made of the time
and the PID could be squatted for every second to come).  Every name is
still taken with ``O_CREAT|O_EXCL|O_NOFOLLOW``; when one is taken anyway,
everything taken so far is given back and a new tag is drawn — nobody's
entry is ever opened, adopted or removed.

The state file's name is taken FIRST, by linking a complete first document
into place exclusively (docs/contract.md §4; its temporary name does not
carry the tag): until it exists, no name of the job shows the tag, so
another user who watches a shared state directory (``/tmp``) cannot learn
the tag and squat ``v2v-import-<tag>.state`` ahead of us.  The name never
shows an empty or torn file; :class:`wrapper.state.StateFile` goes on
replacing it.  The throttling directory is made right after it, then the
logs.  The throttling file lives in a directory of its own,
``v2v-import-<tag>.throttle.d``, made here by root exclusively and handed to
the caller (mode 0700): only the caller and root can create or replace the
throttling file, which the caller still writes with a plain SFTP put.  It
is removed, by descriptor, on every way out (:meth:`Reserved.remove_throttle_dir`).
"""
import dataclasses
import errno
import json
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass

from wrapper.security import fsafe, fstree
from wrapper.errors import JobError
from wrapper.state import State

log = logging.getLogger(__name__)

OVIRT_LOG_DIR = "/var/log/vdsm/import"
DEFAULT_LOG_DIR = "/var/log/virt-v2v"
TAG_ATTEMPTS = 20
TOKEN_BYTES = 6                  # 48 random bits in each tag
THROTTLE_DIR_SUFFIX = ".throttle.d"
THROTTLE_NAME = "throttle"
STATE_RESERVE = 64 << 10         # bytes kept ahead for the state file's writes (StateFile)


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


def make_tag(now=None, rand=secrets.token_hex):
    """``<YYYYmmddTHHMMSS>-<random>``; ``rand(nbytes)`` returns hex digits."""
    token = rand(TOKEN_BYTES)
    if not (isinstance(token, str) and token and all(c in "0123456789abcdef" for c in token)):
        raise ValueError("the random source gave %r, not hex digits" % (token,))
    return "%s-%s" % (time.strftime("%Y%m%dT%H%M%S", time.localtime(now)), token)


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
                    throttle_file=os.path.join(settings.state_dir, base + THROTTLE_DIR_SUFFIX,
                                               THROTTLE_NAME))


def open_job_dir(path, option, mode, owners, owner=None):
    """Open (creating it if missing) one of the wrapper's directories.

    A directory the wrapper creates gets ``mode``/``owner``.  A symlink is
    followed only if root or we own it.  The directory must be owned by one
    of ``owners`` (root, the wrapper's user, the sudo caller: someone else
    could swap or forge what is in it) and not writable by others without
    the sticky bit.  Problems are JobErrors naming ``option``.
    """
    def refuse(why):
        return JobError(env_label(option), "%s %s" % (path, why))
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
    problem = owner_problem(os.fstat(fd), owners) or fsafe.dir_problem(os.fstat(fd))
    if problem:
        os.close(fd)
        raise refuse(problem)
    return fd


def owner_problem(st, owners):
    if st.st_uid not in owners:
        return "is owned by uid %d, not by root or the calling user (uid %s)" % (
            st.st_uid, "/".join(str(u) for u in sorted(owners) if u) or "0")
    return None


def env_label(option):
    """``--state-dir`` -> ``--state-dir (VIRT_V2V_WRAPPER_STATE_DIR)``."""
    return "%s (VIRT_V2V_WRAPPER_%s)" % (option, option.lstrip("-").replace("-", "_").upper())


class Reserved:
    """The job's names, taken: the state file (a :class:`fsafe.AtomicFile`
    already holding its first document), open descriptors on the three logs,
    the state directory and the throttling directory, and what to give back
    on a refusal."""

    def __init__(self, files, state_dir_fd, log_dir_fd, state, fds, idents, throttle):
        self.files = files
        self.state = state
        self.state_dir_fd = state_dir_fd
        self.log_dir_fd = log_dir_fd
        self.wrapper_log_fd = fds["wrapper_log"]
        self.v2v_log_fd = fds["v2v_log"]
        self.mr_log_fd = fds["mr_log"]
        self.throttle_dir_fd, self.throttle_dir_ident = throttle
        self._idents = idents

    def hand_logs_to(self, uid, gid):
        """virt-v2v (as the run-as user) reopens the machine-readable log
        through ``/dev/fd`` and, in a systemd unit, the gate shell opens both
        logs by name as that user: give them to it through our descriptors."""
        if uid != os.geteuid():
            for fd in (self.v2v_log_fd, self.mr_log_fd):
                os.fchown(fd, uid, gid)

    def close(self):
        """Close our descriptors (not the wrapper log's: its log handler
        owns it) once the job is over in this process; idempotent."""
        for attr in ("v2v_log_fd", "mr_log_fd", "throttle_dir_fd", "log_dir_fd", "state_dir_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                setattr(self, attr, None)
                try:
                    os.close(fd)
                except OSError:
                    pass

    @property
    def state_name(self):
        return os.path.basename(self.files.state_file)

    @property
    def throttle_dir_name(self):
        return os.path.basename(os.path.dirname(self.files.throttle_file))

    @property
    def throttle_name(self):
        return THROTTLE_NAME

    def remove_throttle_dir(self):
        """Empty and remove the throttling directory by descriptor (whatever
        the caller put in it); idempotent."""
        if self.throttle_dir_fd is None:
            return
        try:
            # out of the caller's path first, then emptied through our descriptor with the
            # caller's rights, then removed if that name still is it
            name = fstree.move_aside(self.state_dir_fd, self.throttle_dir_name, self.throttle_dir_ident)
            fstree.empty_dir(self.throttle_dir_fd)
            if name is not None:
                fsafe.unlink_same(self.state_dir_fd, name, self.throttle_dir_ident)
        finally:
            os.close(self.throttle_dir_fd)
            self.throttle_dir_fd = None

    def give_back(self, keep_wrapper_log=True):
        """A refused job: remove what we created (by identity), except the
        wrapper log that says why."""
        try:
            self.remove_throttle_dir()
        except OSError as e:
            log.warning("cannot remove %s: %s", self.throttle_dir_name, e)
        try:
            self.state.remove()
        except OSError as e:
            log.warning("cannot remove %s: %s", self.state_name, e)
        self.state.close()
        for key, (dir_fd, name, identity) in self._idents.items():
            if key == "wrapper_log" and keep_wrapper_log:
                continue
            try:
                fsafe.unlink_same(dir_fd, name, identity)
            except OSError as e:
                log.warning("cannot remove %s: %s", name, e)


# (key in JobFiles); all created 0644 by the wrapper in the log directory
_LOGS = ("wrapper_log", "v2v_log", "mr_log")


def reserve(settings, log_dir, state_dir_fd, log_dir_fd, now=None, rand=secrets.token_hex,
            caller=None):
    """Take the names of a new job; returns :class:`Reserved`.  ``caller``
    (uid, gid) is given the throttling directory (None: it stays ours)."""
    now = time.time() if now is None else now
    for attempt in range(TAG_ATTEMPTS):
        files = job_files(settings, log_dir, make_tag(now, rand))
        taken = _take(files, state_dir_fd, log_dir_fd, caller, now, rand)
        if taken is not None:
            if attempt:
                log.warning("the names of %d earlier tags were taken by someone else; using "
                            "tag %s", attempt, files.tag)
            return Reserved(*taken[:1], state_dir_fd, log_dir_fd, *taken[1:])
    raise JobError(None, "cannot find free names for the job's files: every tag tried was "
                         "already in use in %s or %s" % (settings.state_dir, log_dir))


def first_state(files, now):
    """The state file's first document (docs/contract.md §5: the keys every
    state has, and the tag, wrapper pid and start time); the job's own first
    write adds the rest before the caller learns the name."""
    return State(extra={"tag": files.tag, "wrapper_pid": os.getpid(),
                        "started_at": round(now, 3)}).data


def _take(files, state_dir_fd, log_dir_fd, caller, now, rand):
    state = _link_state(state_dir_fd, files, now)
    if state is None:
        return None
    fds, idents, throttle = {}, {}, None
    try:
        files, throttle = _throttle_dir(state_dir_fd, files, caller, rand)
        for key in _LOGS:
            name = os.path.basename(getattr(files, key))
            fd = _create_or_refuse(log_dir_fd, name, "--log-dir", getattr(files, key))
            fds[key] = fd
            idents[key] = (log_dir_fd, name, fsafe.ident(os.fstat(fd)))
    except BaseException as e:
        for fd in fds.values():
            os.close(fd)
        for dir_fd, name, identity in idents.values():
            fsafe.unlink_same(dir_fd, name, identity)
        if throttle is not None:
            os.close(throttle[0])
            fsafe.unlink_same(state_dir_fd, os.path.basename(os.path.dirname(files.throttle_file)),
                              throttle[1])
        state.remove()
        state.close()
        if isinstance(e, FileExistsError):
            return None
        raise
    return files, state, fds, idents, throttle


def _throttle_dir(state_dir_fd, files, caller, rand):
    """The throttling directory, made right after the state file: ``(files,
    (fd, identity))``.  The state file shows the tag, so someone watching
    the directory may take ``v2v-import-<tag>.throttle.d`` first; then a
    name with a fresh random token nobody has seen is used instead
    (``v2v-import-<tag>.<token>.throttle.d``, announced like the other)."""
    path = first = os.path.dirname(files.throttle_file)
    for attempt in range(TAG_ATTEMPTS):
        try:
            throttle = _make_throttle_dir(state_dir_fd, path, caller)
        except FileExistsError:
            base = os.path.join(os.path.dirname(path), "v2v-import-%s" % files.tag)
            path = "%s.%s%s" % (base, make_tag(0, rand).split("-")[-1], THROTTLE_DIR_SUFFIX)
            continue
        if attempt:
            log.warning("%s was taken by someone else after the state file appeared; the "
                        "throttling directory is %s", first, path)
            files = dataclasses.replace(files, throttle_file=os.path.join(path, THROTTLE_NAME))
        return files, throttle
    raise FileExistsError(errno.EEXIST, "no free name for the throttling directory", path)


def _link_state(state_dir_fd, files, now):
    """Link the state file's first document into place, exclusively: the
    AtomicFile that goes on writing it, or None when the name is taken."""
    out = fsafe.AtomicFile(state_dir_fd, os.path.basename(files.state_file), 0o644,
                           STATE_RESERVE, exclusive=True)
    try:
        out.write(json.dumps(first_state(files, now)) + "\n")
    except FileExistsError:
        out.close()
        return None
    except OSError as e:
        out.close()
        raise JobError(env_label("--state-dir"), "cannot create %s: %s"
                       % (files.state_file, e.strerror or e)) from None
    return out


def _create_or_refuse(dir_fd, name, option, path):
    try:
        fd = fsafe.create(dir_fd, name, os.O_RDWR | os.O_APPEND | os.O_NONBLOCK, 0o644)
    except FileExistsError:
        raise
    except OSError as e:
        raise JobError(env_label(option), "cannot create %s: %s" % (path, e.strerror or e)) from None
    os.set_blocking(fd, True)
    return fd


def _make_throttle_dir(state_dir_fd, path, caller):
    """Create the throttling directory exclusively, give it to ``caller``,
    mode 0700: (fd, identity).  FileExistsError when the name is taken."""
    name = os.path.basename(path)
    try:
        os.mkdir(name, 0o700, dir_fd=state_dir_fd)
    except FileExistsError:
        raise
    except OSError as e:
        raise JobError(env_label("--state-dir"), "cannot create %s: %s"
                       % (path, e.strerror or e)) from None
    fd = fsafe.open_dir(name, dir_fd=state_dir_fd)
    st = os.fstat(fd)
    try:
        if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o077:
            raise JobError(env_label("--state-dir"), "%s was replaced while it was created" % path)
        if caller is not None and os.geteuid() == 0:
            os.fchown(fd, caller[0], caller[1])
        os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        fsafe.unlink_same(state_dir_fd, name, fsafe.ident(st))
        raise
    return fd, fsafe.ident(st)


def state_dir_mode(sudo):
    """A state directory the wrapper creates: ``0755 root``.  Only root
    creates entries in it; the caller writes in its own throttling
    directory, not in the state directory itself."""
    return 0o755, None


def caller_of(sudo):
    """Who gets the throttling directory: the sudo caller (uid, gid), or
    nobody else when there is no sudo (root, or the wrapper's own user)."""
    return sudo if sudo is not None and os.geteuid() == 0 else None
