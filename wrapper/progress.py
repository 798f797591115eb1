"""virt-v2v output -> typed events.  Pure: bytes in, events out.

Two dialects (docs/contract.md §5):
* 1.x: ``Copying disk 1/2 to /path (raw)``, ``    (12.34/100%)``,
  ``nbdkit: [prefix: ]debug: Opening file <path> (...)`` (vddk) and
  ``overlay source qemu URI: json:{ ... "file.path": "..." }`` (ssh).
* 2.x: ``[  52.1] Copying disk 1/2`` then nbdcopy's bar ``▝  12% [****---]``,
  frames separated by ``\\r`` and interleaved with debug output; each source
  disk is an nbdkit whose command line names its socket ``.../inN`` and its
  ``file=``/``path=``; nbdinfo prints ``export-size: N`` before ``uri: ...inN``.
  When disks are copied at once (``--parallel``, wrapper/parallel.py) the shim
  in front of each nbdcopy prints ``virt-v2v-wrapper: nbdcopy inN progress P/100``
  (:class:`DiskCopyProgress`: the disk is named, the bar's frames are not).

Verbose logs reach gigabytes, so :class:`LogParser` never looks at every
line in Python: it finds a handful of marker strings with ``bytes.find``
(C speed) and only decodes and matches the lines that contain one.
"""
import json
import re

from wrapper import causes, stages
from dataclasses import dataclass
from typing import Optional

# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class CopyingDisk:
    index: int          # 0-based
    count: int


@dataclass(frozen=True)
class DiskProgress:
    percent: float


@dataclass(frozen=True)
class DiskCopyProgress:
    """One disk's own nbdcopy progress (wrapper/parallel.py's shim): it names its disk."""
    index: int          # 0-based: the K of the input socket .../inK
    percent: float


@dataclass(frozen=True)
class DiskSource:
    index: Optional[int]    # None: "the next disk" (1.x prints no index)
    path: str


@dataclass(frozen=True)
class DiskSize:
    index: int
    size: int


@dataclass(frozen=True)
class DiskId:
    uuid: str


@dataclass(frozen=True)
class VmId:
    uuid: str
    definitive: bool     # <VirtualSystem ovf:id> (True) or the OS section (False)


@dataclass(frozen=True)
class V2vMessage:
    type: str            # message | info | warning | error
    text: str


@dataclass(frozen=True)
class V2vError:
    text: str            # a "virt-v2v: error:" line of the verbose log
    cause: Optional[str] = None     # the line before it that best explains it (causes.pick)
    lines: tuple = ()    # the lines shortly before it that may explain it, oldest first


@dataclass(frozen=True)
class UploadFailure:
    text: str            # what imageio answered to a write of virt-v2v's rhv-upload plugin


@dataclass(frozen=True)
class KilledBySignal:
    signal: str


# ---------------------------------------------------------------- helpers

_VMFS = re.compile(r"^/vmfs/volumes/(?P<store>[^/]+)/(?P<vm>[^/]+)/(?P<disk>.+?)(?:-flat)?\.vmdk$")


def vmware_path(path):
    """``/vmfs/volumes/ds/vm/vm-flat.vmdk`` -> ``[ds] vm/vm.vmdk``; other paths unchanged."""
    m = _VMFS.match(path)
    if not m:
        return path
    return "[%s] %s/%s.vmdk" % (m.group("store"), m.group("vm"), m.group("disk"))


def _shell_unquote(text):
    return text.replace("'\\''", "'")


_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

# Each marker is a literal found with bytes.find (memchr for one byte); its
# regexes run only on the lines that contain it.  Long or single-byte
# needles search fastest, which is why some look odd.
# Numbers are taken with a bounded number of digits (int() of thousands of digits raises,
# and nothing real has them); what they mean is bounded where they are folded (state.MAX_DISKS).
_R_COPYING = re.compile(re.escape(stages.COPYING) + r" (\d{1,9})/(\d{1,9})(?!\d)")
_R_BAR = re.compile(r"(\d{1,3})% \[")
_R_TAGGED = re.compile(r"^virt-v2v-wrapper: nbdcopy in(\d{1,9}) progress (\d{1,3})/100\s*$")
_R_PERCENT = re.compile(r"\((\d{1,3}(?:\.\d{1,9})?)/100%\)")
_R_NBDKIT = re.compile(r"'--unix' '[^']*/in(\d{1,9})'.*?'(?:file|path)=((?:[^']|'\\'')*)'")
_R_URI = re.compile(r"^\s*uri: nbd\+unix:.*socket=[^ ]*/in(\d{1,9})\s*$")
_R_SIZE = re.compile(rb"export-size: (\d{1,20})(?!\d)")
_R_V1VDDK = re.compile(r"^nbdkit: (?:.*?: )?debug: Opening file (.*) \(.*\)\s*$")
_R_V1SSH = re.compile(r"overlay source qemu URI: json:(.*)$")
_R_DISKID = re.compile(r"disk\.id = '(%s)'" % _UUID)
_R_VS = re.compile(r"<VirtualSystem ovf:id=['\"](%s)['\"]" % _UUID)
_R_OSSEC = re.compile(r"<Section ovf:id=['\"](%s)['\"][^>]*OperatingSystemSection_Type" % _UUID)
_R_ERROR = re.compile(r"virt-v2v: error: (.*)$")
_R_SIGNAL = re.compile(r"virt-v2v: Exiting on signal (\S+)")
# virt-v2v's "..., see earlier error messages" points at lines a client never
# sees (scp's "Permission denied", qemu's "error: ...", "nbdcopy: executable
# not found", a Python helper's "AuthError: ...", 2.6+'s "nbdkit: ssh[1]:
# error: ..."): the lines shortly before the error that look like a cause
# (causes.is_cause_line) go with it, for wrapper.causes to pick and classify.
_R_CAUSE = causes.CAUSE_LINE    # a line that may explain an error (tools/trim_v2v_log.py keeps them)
MAX_CAUSE_LINES = 8     # lines kept per error (the last ones)
MAX_CAUSE_TEXT = 1000   # characters kept of each
# virt-v2v's rhv-upload plugin reports an imageio refusal as three debug
# lines of its nbdkit thread (2.2 then fails on the fourth, the body, with a
# TypeError): "unexpected response from imageio server:", what it was doing
# ("could not write sector offset N size M"), and "500: Internal Server Error".
_R_IMAGEIO = re.compile(r"nbdkit: (python\.\d+): debug: unexpected response from imageio server:")
_R_HTTP_STATUS = re.compile(r"^(\d{3}): (.*)$")

_COMMON = (
    (b"%", ((_R_BAR, "bar"), (_R_PERCENT, "percent"))),
    (b"nbd+unix:///?socket=", ((_R_URI, "uri"),)),
    (b"disk.id = '", ((_R_DISKID, "diskid"),)),
    (b"ovf:id=", ((_R_VS, "vs"), (_R_OSSEC, "ossec"))),
    (b"virt-v2v: ", ((_R_ERROR, "error"), (_R_SIGNAL, "signal"))),
    (b"unexpected response from imageio", ((_R_IMAGEIO, "imageio"),)),
    (b"virt-v2v-wrapper: nbdcopy in", ((_R_TAGGED, "tagged"),)),
)
_V2 = (
    # 2.x stage lines always carry the "[  52.1] " timestamp in the verbose log
    (b"] %s " % stages.COPYING.encode(), ((_R_COPYING, "copying"),)),
    (b"' '--unix' '", ((_R_NBDKIT, "nbdkit"),)),
)
_V1 = (
    (b"%s " % stages.COPYING.encode(), ((_R_COPYING, "copying"),)),
    (b"Opening file ", ((_R_V1VDDK, "v1vddk"),)),
    (b"overlay source qemu URI", ((_R_V1SSH, "v1ssh"),)),
)
MARKERS = {1: _COMMON + _V1, 2: _COMMON + _V2,
           None: _COMMON + _V1 + ((b"' '--unix' '", ((_R_NBDKIT, "nbdkit"),)),)}
MAX_V1_SOURCES = 256    # distinct source paths remembered (1.x logs); as state.MAX_DISKS
MAX_CARRY = 1 << 20     # a "line" longer than this is cut: memory stays bounded
LOOKBACK = 8192         # nbdinfo prints export-size a few lines before the uri; an
                        # error's cause is printed a few lines before the error


def _line_bounds(buf, pos, lo, hi):
    start = max(buf.rfind(b"\n", lo, pos), buf.rfind(b"\r", lo, pos), lo - 1) + 1
    ends = [e for e in (buf.find(b"\n", pos, hi), buf.find(b"\r", pos, hi)) if e != -1]
    return start, (min(ends) if ends else hi)


def _percent_worth_a_look(buf, pos):
    """'%' is everywhere in debug output: only '12% [' and '/100%)' matter."""
    nxt = buf[pos + 1:pos + 3]
    return nxt == b" [" or (nxt[:1] == b")" and buf[pos - 4:pos] == b"/100")


class LogParser:
    """Incremental parser of virt-v2v's verbose output (stdout+stderr).

    ``feed(data) -> [events]``; bytes after the last line separator wait for
    the next call, so lines split across reads are parsed whole.
    """

    def __init__(self, dialect=None):
        """``dialect``: virt-v2v's major version when known (fewer markers to
        search), None to understand both."""
        self._carry = b""
        self._lookback = b""
        self._v1_sources = []
        self._markers = MARKERS.get(dialect, MARKERS[None])
        self._imageio = None     # (thread's line prefix, its lines so far) of an imageio refusal
        self._imageio_done = False

    def feed(self, data):
        # No big copies: the carried partial line is completed with the head
        # of ``data`` and scanned on its own; the rest is scanned in place.
        cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        if not cut:
            self._carry += data
            if len(self._carry) > MAX_CARRY:
                self._carry = self._carry[-MAX_CARRY:]
            return []
        events = []
        head = 0
        if self._carry:
            head = min(e for e in (data.find(b"\n"), data.find(b"\r")) if e != -1) + 1
            events = self._scan(self._carry + data[:head], 0, len(self._carry) + head)
        events += self._scan(data, head, cut)
        self._carry = data[cut:]
        return events

    def flush(self):
        """Parse what is left (at end of file, the last line may lack a newline)."""
        rest, self._carry = self._carry, b""
        return self._scan(rest + b"\n", 0, len(rest) + 1) if rest else []

    def _scan(self, buf, lo, hi):
        if lo >= hi:
            return []
        events = self._imageio_lines(buf, lo, hi) if self._imageio else []
        hits = {}
        for marker, rules in self._markers:
            pos = buf.find(marker, lo, hi)
            while pos != -1:
                if marker == b"%" and not _percent_worth_a_look(buf, pos):
                    pos = buf.find(marker, pos + 1, hi)
                    continue
                start, end = _line_bounds(buf, pos, lo, hi)
                hits.setdefault(start, (end, []))[1].extend(rules)
                pos = buf.find(marker, end, hi)
        for start in sorted(hits):
            end, rules = hits[start]
            line = buf[start:end].decode("utf-8", "replace")
            for regex, kind in rules:
                if kind == "uri":
                    events.extend(self._uri(regex, line, buf, start, lo))
                elif kind == "imageio":
                    m = regex.search(line)
                    if m and self._imageio is None and not self._imageio_done:
                        self._imageio = (("nbdkit: %s: debug: " % m.group(1)).encode(), [])
                        events.extend(self._imageio_lines(buf, end, hi))
                elif kind == "error":
                    events.extend(self._error(regex, line, buf, start, lo))
                else:
                    events.extend(self._match(kind, regex, line))
        self._lookback = (buf[hi - LOOKBACK:hi] if hi - lo >= LOOKBACK
                          else (self._lookback + buf[lo:hi])[-LOOKBACK:])
        return events

    def _imageio_lines(self, buf, lo, hi):
        """The next two debug lines of the thread that met an imageio refusal
        (maybe in a later read): what it did and the HTTP status."""
        prefix, lines = self._imageio
        pos = buf.find(prefix, lo, hi)
        while pos != -1 and len(lines) < 2:
            start, end = _line_bounds(buf, pos, lo, hi)
            if end == hi:             # not a whole line yet
                break
            lines.append(buf[pos + len(prefix):end].decode("utf-8", "replace").strip())
            pos = buf.find(prefix, end, hi)
        if len(lines) < 2:
            return []
        self._imageio = None
        self._imageio_done = True         # the first refusal is the one reported
        what, status = lines
        m = _R_HTTP_STATUS.match(status)
        if m:
            return [UploadFailure("imageio answered %s %s to: %s" % (m.group(1), m.group(2),
                                                                      what[:200]))]
        return [UploadFailure(("%s: %s" % (what, status))[:300])]

    def _window(self, buf, start, lo):
        """The LOOKBACK bytes before ``start`` (maybe from an earlier read)."""
        window = buf[max(lo, start - LOOKBACK):start]
        if start - lo < LOOKBACK:
            window = (self._lookback + window)[-LOOKBACK:]
        return window

    def _error(self, regex, line, buf, start, lo):
        m = regex.search(line)
        if not m:
            return ()
        lines = causes.cause_lines(self._window(buf, start, lo).decode("utf-8", "replace"),
                                   MAX_CAUSE_LINES, MAX_CAUSE_TEXT)
        return (V2vError(m.group(1).strip(), causes.pick(lines), tuple(lines)),)

    def _uri(self, regex, line, buf, start, lo):
        """nbdinfo's ``uri: ...inN`` names the disk whose ``export-size``
        came just before (maybe in an earlier read)."""
        m = regex.search(line)
        if not m:
            return ()
        sizes = _R_SIZE.findall(self._window(buf, start, lo))
        return (DiskSize(int(m.group(1)), int(sizes[-1])),) if sizes else ()

    def _match(self, kind, regex, line):
        m = regex.search(line)
        if not m:
            return ()
        if kind == "copying":
            return (CopyingDisk(int(m.group(1)) - 1, int(m.group(2))),)
        if kind in ("bar", "percent"):
            percent = float(m.group(1))
            return (DiskProgress(min(percent, 100.0)),) if percent <= 100 else ()
        if kind == "tagged":
            percent = int(m.group(2))
            return (DiskCopyProgress(int(m.group(1)), float(percent)),) if percent <= 100 else ()
        if kind == "nbdkit":
            return (DiskSource(int(m.group(1)), _shell_unquote(m.group(2))),)
        if kind in ("v1vddk", "v1ssh"):
            path = m.group(1).strip() if kind == "v1vddk" else _v1_qemu_path(m.group(1))
            if not path or path in self._v1_sources or len(self._v1_sources) >= MAX_V1_SOURCES:
                return ()
            self._v1_sources.append(path)
            return (DiskSource(len(self._v1_sources) - 1, path),)
        if kind == "diskid":
            return (DiskId(m.group(1).lower()),)
        if kind == "vs":
            return (VmId(m.group(1).lower(), True),)
        if kind == "ossec":
            return (VmId(m.group(1).lower(), False),)
        if kind == "signal":
            return (KilledBySignal(m.group(1)),)
        return ()


def _v1_qemu_path(text):
    try:
        return json.loads(text).get("file.path")
    except ValueError:
        m = re.search(r'"file\.path":\s*"([^"]+)"', text)
        return m.group(1) if m else None


class MachineReadableParser:
    """``--machine-readable=file:`` lines: one JSON object per line."""

    def __init__(self):
        self._carry = b""

    def feed(self, data):
        buf = self._carry + data
        lines = buf.split(b"\n")
        self._carry = lines.pop()
        if len(self._carry) > MAX_CARRY:
            self._carry = b""
        events = []
        for raw in lines:
            if len(raw) > MAX_CARRY:      # no message of virt-v2v is that long
                continue
            event = parse_mr_line(raw)
            if event:
                events.append(event)
        return events


def parse_mr_line(raw):
    try:
        obj = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("message"), str):
        return None
    return V2vMessage(str(obj.get("type", "message")), obj["message"])
