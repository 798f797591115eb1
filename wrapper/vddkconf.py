"""The ``vddk_config`` setting: a VDDK configuration file (docs/contract.md §2, §3.4).

An administrator's file, read once by the wrapper (root) when a VDDK job is
accepted: it must be a regular file owned by root that neither group nor
others may write, and hold only the NFC AIO buffer settings operators tune
(the ones Forklift sets), ``key = value`` a line, ``#`` comments allowed:

* ``VixDiskLib.nfcAio.Session.BufSizeIn64KB`` (1 to 16: 64 KiB to 1 MiB buffers);
* ``VixDiskLib.nfcAio.Session.BufCount`` (1 to 64 buffers).

virt-v2v gets a copy of what was checked, in the job's private directory
(``-io vddk-config=<copy>``), so the file can change or go while the job runs
without the conversion seeing anything but the validated text.
:func:`parse` is pure; :func:`read` opens without following a link or blocking.
"""
import os
import stat

from wrapper.errors import JobError
from wrapper.security.text import oneline

MAX_BYTES = 64 * 1024
KEYS = {
    "VixDiskLib.nfcAio.Session.BufSizeIn64KB": (1, 16),
    "VixDiskLib.nfcAio.Session.BufCount": (1, 64),
}
OPTION = "--vddk-config"


def _refuse(path, why):
    return JobError(OPTION, "%s %s" % (oneline(path, 300), why))


def parse(text, path="vddk_config"):
    """The file's settings as ``{key: int}``; raises JobError (one line) on any
    line that is not a known key with a whole number in its range."""
    values = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        where = "line %d" % number
        if not sep or key not in KEYS:
            # the line itself is not repeated: the caller sees this refusal, and the
            # administrator's file may hold what only root should read
            raise _refuse(path, "%s is not one of %s = <number>" % (
                where, " or ".join(sorted(KEYS))))
        low, high = KEYS[key]
        if not (value.isascii() and value.isdigit() and len(value) <= 6 and low <= int(value) <= high):
            raise _refuse(path, "%s: %s must be a whole number from %d to %d" % (
                where, key, low, high))
        if key in values:
            raise _refuse(path, "%s: %s is set twice" % (where, key))
        values[key] = int(value)
    if not values:
        raise _refuse(path, "sets none of %s" % ", ".join(sorted(KEYS)))
    return values


def render(values):
    """The text virt-v2v's copy holds: the checked settings, nothing else."""
    return "".join("%s=%d\n" % (key, values[key]) for key in sorted(values))


def read(path, owners=(0,)):
    """Open ``path`` (no link followed, no blocking), check it and return the
    text to hand to virt-v2v; JobError (one line) when it cannot serve."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise _refuse(path, "cannot be opened: %s" % (e.strerror or e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "is not a regular file")
        if st.st_uid not in owners:
            raise _refuse(path, "must be owned by root, not uid %d" % st.st_uid)
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise _refuse(path, "must not be writable by group or others (mode %04o)"
                          % stat.S_IMODE(st.st_mode))
        if st.st_size > MAX_BYTES:
            raise _refuse(path, "is larger than %d bytes" % MAX_BYTES)
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise _refuse(path, "is not ASCII text") from None
    return render(parse(text, path))
