"""Text from others made safe to show: one owner for escaping.

Job values, file names, state files another user planted, virt-v2v's own
messages -- whatever reaches a log line, a refusal on stderr or a terminal
goes through here first, so that no value can split a line, forge one, act
on a terminal or reorder what a reader sees:

* :func:`printable`: every unsafe character written as an escape (``\\n``,
  ``\\x1b``, ``\\u2028``; an undecodable byte of a file name, carried as a
  lone surrogate by ``os.fsdecode``, as ``\\xNN``);
* :func:`oneline`: the same, bounded (cut with an ellipsis), for anything
  (a hostile ``__str__`` cannot break a refusal);
* :func:`short`: a bounded one-line ``repr`` of a value a message repeats.

Pure functions, no imports from the rest of the wrapper.
"""
import re

ELLIPSIS = "\u2026"

# C0, DEL, C1; U+2028/2029 (line/paragraph separators: str.splitlines and
# many viewers break lines there); bidirectional embeddings, overrides and
# isolates (they reorder what a reader sees); lone surrogates (not encodable).
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match):
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return "\\x%02x" % code if code < 0x100 else "\\u%04x" % code


def _escape_name(match):
    code = ord(match.group())
    if 0xdc80 <= code <= 0xdcff:          # an undecodable byte (os.fsdecode's surrogateescape)
        return "\\x%02x" % (code - 0xdc00)
    return _escape(match)


def printable(text):
    """``text`` (file names and what files say) with every unsafe character
    written as an escape; an undecodable byte of a file name as ``\\xNN``."""
    return UNSAFE.sub(_escape_name, str(text))


def oneline(text, limit=500):
    """``text`` (anything; non-strings go through ``str``) as one safe line of
    at most ``limit`` characters, cut with an ellipsis."""
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception:            # a hostile __str__ must not break a refusal
            text = "<%s>" % type(text).__name__
    # escaping only makes text longer: never look at more than we can show
    cut = len(text) > limit
    out = UNSAFE.sub(_escape, text[:limit + 1] if cut else text)
    if cut or len(out) > limit:
        out = out[:max(0, limit - 1)] + ELLIPSIS
    return out


def short(value, limit=40):
    """A short, one-line ``repr`` of a value a message repeats."""
    if isinstance(value, str) and len(value) > limit * 4:
        value = value[:limit * 4]
    try:
        text = repr(value)
    except (ValueError, RecursionError):    # an int of too many digits, a deep list
        text = "<%s too large to show>" % type(value).__name__
    return oneline(text, limit)
