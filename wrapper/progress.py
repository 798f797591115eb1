"""virt-v2v output -> typed events.  Pure: bytes in, events out.

Two dialects (SPEC §5):
* 1.x: ``Copying disk 1/2 to /path (raw)``, ``    (12.34/100%)``,
  ``nbdkit: [prefix: ]debug: Opening file <path> (...)`` (vddk) and
  ``overlay source qemu URI: json:{ ... "file.path": "..." }`` (ssh).
* 2.x: ``[  52.1] Copying disk 1/2`` then nbdcopy's bar ``▝  12% [****---]``,
  frames separated by ``\\r`` and interleaved with debug output; each source
  disk is an nbdkit whose command line names its socket ``.../inN`` and its
  ``file=``/``path=``; nbdinfo prints ``export-size: N`` before ``uri: ...inN``.

Verbose logs reach gigabytes, so :class:`LogParser` never looks at every
line in Python: it finds a handful of marker strings with ``bytes.find``
(C speed) and only decodes and matches the lines that contain one.
"""
import json
import re
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

# Each marker is a literal found with bytes.find; its regexes run only on the
# lines that contain it.
_RULES = (
    (b"Copying disk ", re.compile(r"Copying disk (\d+)/(\d+)"), "copying"),
    (b"% [", re.compile(r"(\d{1,3})% \["), "bar"),
    (b"/100%)", re.compile(r"\((\d+(?:\.\d+)?)/100%\)"), "percent"),
    (b"'--unix'", re.compile(r"'--unix' '[^']*/in(\d+)'.*?'(?:file|path)=((?:[^']|'\\'')*)'"), "nbdkit"),
    (b"export-size: ", re.compile(r"^\s*export-size: (\d+)"), "size"),
    (b"uri: nbd+unix:", re.compile(r"^\s*uri: nbd\+unix:.*socket=[^ ]*/in(\d+)\s*$"), "uri"),
    (b"Opening file ", re.compile(r"^nbdkit: (?:.*?: )?debug: Opening file (.*) \(.*\)\s*$"), "v1vddk"),
    (b"overlay source qemu URI", re.compile(r"overlay source qemu URI: json:(.*)$"), "v1ssh"),
    (b"disk.id = '", re.compile(r"disk\.id = '(%s)'" % _UUID), "diskid"),
    (b"ovf:id=", re.compile(r"<VirtualSystem ovf:id=['\"](%s)['\"]" % _UUID), "vs"),
    (b"OperatingSystemSection_Type", re.compile(
        r"<Section ovf:id=['\"](%s)['\"][^>]*OperatingSystemSection_Type" % _UUID), "ossec"),
    (b"virt-v2v: error: ", re.compile(r"virt-v2v: error: (.*)$"), "error"),
    (b"Exiting on signal ", re.compile(r"virt-v2v: Exiting on signal (\S+)"), "signal"),
)
_SEPARATORS = (b"\n", b"\r")
MAX_CARRY = 1 << 20     # a "line" longer than this is cut: memory stays bounded


def _line_bounds(buf, pos):
    start = max(buf.rfind(b"\n", 0, pos), buf.rfind(b"\r", 0, pos)) + 1
    ends = [e for e in (buf.find(b"\n", pos), buf.find(b"\r", pos)) if e != -1]
    return start, (min(ends) if ends else len(buf))


class LogParser:
    """Incremental parser of virt-v2v's verbose output (stdout+stderr).

    ``feed(data) -> [events]``; bytes after the last line separator wait for
    the next call, so lines split across reads are parsed whole.
    """

    def __init__(self):
        self._carry = b""
        self._pending_size = None
        self._v1_sources = []

    def feed(self, data):
        buf = self._carry + data if self._carry else data
        cut = max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1
        complete, self._carry = buf[:cut], buf[cut:]
        if len(self._carry) > MAX_CARRY:
            self._carry = self._carry[-MAX_CARRY:]
        return self._scan(complete) if complete else []

    def flush(self):
        """Parse what is left (at end of file, the last line may lack a newline)."""
        rest, self._carry = self._carry, b""
        return self._scan(rest + b"\n") if rest else []

    def _scan(self, buf):
        hits = {}
        for marker, regex, kind in _RULES:
            pos = buf.find(marker)
            while pos != -1:
                start, end = _line_bounds(buf, pos)
                hits.setdefault(start, (end, []))[1].append((regex, kind))
                pos = buf.find(marker, end)
        events = []
        for start in sorted(hits):
            end, rules = hits[start]
            line = buf[start:end].decode("utf-8", "replace")
            for regex, kind in rules:
                events.extend(self._match(kind, regex, line))
        return events

    def _match(self, kind, regex, line):
        m = regex.search(line)
        if not m:
            return ()
        if kind == "copying":
            return (CopyingDisk(int(m.group(1)) - 1, int(m.group(2))),)
        if kind in ("bar", "percent"):
            percent = float(m.group(1))
            return (DiskProgress(min(percent, 100.0)),) if percent <= 100 else ()
        if kind == "nbdkit":
            return (DiskSource(int(m.group(1)), _shell_unquote(m.group(2))),)
        if kind == "size":
            self._pending_size = int(m.group(1))
            return ()
        if kind == "uri":
            size, self._pending_size = self._pending_size, None
            return (DiskSize(int(m.group(1)), size),) if size is not None else ()
        if kind in ("v1vddk", "v1ssh"):
            path = m.group(1).strip() if kind == "v1vddk" else _v1_qemu_path(m.group(1))
            if not path or path in self._v1_sources:
                return ()
            self._v1_sources.append(path)
            return (DiskSource(len(self._v1_sources) - 1, path),)
        if kind == "diskid":
            return (DiskId(m.group(1).lower()),)
        if kind == "vs":
            return (VmId(m.group(1).lower(), True),)
        if kind == "ossec":
            return (VmId(m.group(1).lower(), False),)
        if kind == "error":
            return (V2vError(m.group(1).strip()),)
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
