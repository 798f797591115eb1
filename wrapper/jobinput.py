"""Reading the job from stdin, and making any text safe for one log line.

:func:`read_job` turns the raw bytes on stdin into the decoded JSON value or
one :class:`~wrapper.errors.JobError` that says, in one line, what is wrong:
too large, not UTF-8 (with the byte offset), not JSON, nested too deeply.
No input, however hostile, gets a traceback out of it.

:func:`oneline` makes any text safe to print as ONE line (refusals on stderr,
log records): control characters, line separators, bidirectional overrides
and lone surrogates are escaped, and long text is cut.  :func:`short` does the
same for the ``repr`` of a value that a message repeats.
"""
import errno
import json
import re

from wrapper.errors import JobError
from wrapper.security.boundary import CallerOpenError, CallerReadError, integrity_problem
from wrapper.security.text import oneline

MAX_JOB_BYTES = 1 << 20
MAX_DEPTH = 64              # a job is 3 levels deep; unknown keys get some room
def _reject_constant(name):
    raise ValueError("%s is not allowed in JSON" % name)


def depth_problem(value, max_depth=MAX_DEPTH):
    """Return a message when ``value`` nests deeper than ``max_depth``, else None.
    Iterative: it is never the one that runs out of stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > max_depth:
                return "nested more than %d levels deep" % max_depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (list, dict)))
    return None


def parse_json_bytes(data, what, key=None, max_depth=MAX_DEPTH):
    """Decode strict UTF-8 and parse strict JSON (no NaN/Infinity), bounded in
    depth.  Every problem is a one-line JobError (``key``, "<what> is ...")."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JobError(key, "%s is not valid UTF-8 (byte 0x%02x at offset %d)"
                       % (what, data[e.start], e.start)) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise JobError(key, "%s is not valid JSON (nested too deeply)" % what) from None
    except ValueError as e:           # JSONDecodeError, too many digits, NaN
        detail = str(e)
        if "integer string conversion" in detail:
            detail = "a number has too many digits"
        raise JobError(key, "%s is not valid JSON (%s)" % (what, oneline(detail, 200))) from None
    problem = depth_problem(value, max_depth)
    if problem:
        raise JobError(key, "%s is not valid JSON (%s)" % (what, problem))
    return value


def read_bounded(stream, limit):
    """Read at most ``limit`` + 1 bytes (or characters, from a text stream)."""
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if chunks and isinstance(chunks[0], str):
        return "".join(chunks)
    return b"".join(chunks)


def read_job(stream, limit=MAX_JOB_BYTES):
    """Read, decode and parse the job from ``stream`` (stdin's bytes:
    ``sys.stdin.buffer``; a text stream is accepted too).  Returns the decoded
    JSON value (the caller checks that it is an object) or raises JobError."""
    try:
        data = read_bounded(stream, limit)
    except UnicodeDecodeError as e:     # a text stream that decodes as it reads
        raise JobError(None, "the job on stdin is not valid UTF-8 (%s)" % oneline(e, 200)) from None
    except OSError as e:
        raise JobError(None, "cannot read the job from stdin (%s)" % oneline(e.strerror or e, 200)) from None
    if isinstance(data, str):
        # a text stream: its characters as UTF-8 (lone surrogates then fail
        # the strict decoding below, as they would as bytes)
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > limit:
        raise JobError(None, "the job on stdin is larger than %s" % _size(limit))
    return parse_json_bytes(data, "the job on stdin")


def read_job_file(path, boundary, limit=MAX_JOB_BYTES):
    """Read, decode and parse the job from the file ``path`` (``--job``), read
    once by descriptor with the caller's rights (:func:`read_supplied_file`)."""
    data = read_supplied_file(boundary, path, "the job file", limit=limit)
    return parse_json_bytes(data, "the job file %s" % oneline(path, 200))


def read_supplied_file(boundary, path, what, key=None, limit=MAX_JOB_BYTES, private=False):
    """The bytes of a file the caller names (the job file, a secret file),
    opened WITH THE CALLER'S RIGHTS through ``boundary``
    (:class:`wrapper.security.boundary.Boundary`) and read once through its
    descriptor: a regular file of at most ``limit`` bytes, owned by the caller
    or root, not writable by group or others -- and, when ``private``, not
    accessible by others at all.  Every problem is one JobError naming
    ``key``, saying only what the caller's own open() or fstat() tells; the
    content is never part of a message."""
    shown = oneline(path, 200)
    try:
        data, st = boundary.read(path, limit)
    except CallerOpenError as e:
        if e.errno == errno.EINVAL and "valid file name" in str(e):
            raise JobError(key, "the path of %s is not a valid file name" % what) from None
        if isinstance(e, CallerReadError) or e.errno in (errno.EFBIG, errno.EINVAL):
            raise JobError(key, "%s %s %s" % (what, shown, oneline(e, 100))) from None
        raise JobError(key, "cannot open %s %s: %s" % (what, shown, oneline(e, 100))) from None
    problem = integrity_problem(st, boundary.owners(), private)
    if problem:
        raise JobError(key, "%s %s %s" % (what, shown, problem))
    return data


def _size(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return "%d MiB" % (n >> 20)
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return "%d KiB" % (n >> 10)
    return "%d bytes" % n


# -- what a string of the job may contain -----------------------------------------
# Every string of the job, nested ones too, is checked by its kind:
# * TEXT (names, paths, URIs, fingerprints, formats...): no control character at
#   all (C0 with tab and newline, DEL, C1): such a value ends up in a command
#   line, a log line or a one-line refusal;
# * KEY (ssh_key): the text of a private key: newlines, carriage returns and
#   tabs are fine, other control characters are not;
# * PASSWORD (vmware_password, rhv_password): anything but line breaks: the
#   password file is read as one line (libvirt's and the oVirt helper's
#   readers stop at or strip the newline), so a password with a line break
#   could only fail later, obscurely;
# * OPAQUE (values of unknown keys: ignored, never used or logged): anything.
# NUL and lone surrogates (not encodable as UTF-8) are refused in every kind.
TEXT, KEY, PASSWORD, OPAQUE = "text", "key", "password", "opaque"
MAX_LENGTH = {TEXT: 4096, KEY: 1 << 16, PASSWORD: 4096, OPAQUE: None}
_INVALID = re.compile("[\x00\ud800-\udfff]")
_FORBIDDEN = {
    TEXT: re.compile("[\x00-\x1f\x7f-\x9f]"),
    KEY: re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"),
    PASSWORD: re.compile("[\n\r]"),
    OPAQUE: None,
}
INVALID_MESSAGE = "must not contain NUL bytes or invalid characters"


def string_problem(value, kind=TEXT):
    """Why the string ``value`` may not appear in the job as ``kind``, or None.
    The message never repeats a secret."""
    if _INVALID.search(value):
        return INVALID_MESSAGE
    limit = MAX_LENGTH[kind]
    if limit is not None and len(value) > limit:
        return "is too long (%d characters, at most %d)" % (len(value), limit)
    forbidden = _FORBIDDEN[kind]
    m = forbidden.search(value) if forbidden is not None else None
    if m is None:
        return None
    if kind == PASSWORD:
        return "must not contain line breaks (virt-v2v reads the password file as one line)"
    if kind == KEY:
        return "must not contain control characters other than newlines and tabs"
    return "must not contain control characters (%s at offset %d)" % (oneline(m.group()), m.start())


def first_string_problem(value, path, kind=TEXT):
    """``(path, message)`` for the first bad string in ``value`` (any nesting:
    ``path[0].name``), or None.  Iterative, so depth cannot break it."""
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            problem = string_problem(item, kind)
            if problem:
                return where, problem
        elif isinstance(item, dict):
            stack.extend(reversed([("%s.%s" % (where, oneline(k, 60)), v) for k, v in item.items()]))
        elif isinstance(item, list):
            stack.extend(reversed([("%s[%d]" % (where, i), v) for i, v in enumerate(item)]))
    return None
