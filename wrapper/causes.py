"""Why a job failed, in a form a program can act on (docs/contract.md §5, §8).

Every failure the wrapper reports is a :class:`Cause`: a stable ``code`` from
:data:`CATALOGUE` (what an orchestrator switches on), the one-sentence
``message`` people read (ManageIQ shows it), and a ``hint`` saying what to check.

:func:`classify` is pure: virt-v2v's error (its ``virt-v2v: error:`` line or
the machine-readable error) plus the lines the verbose log printed just
before it (oldest first) -> a Cause.  The message keeps virt-v2v's own words,
with "see earlier error messages" replaced by the earlier line that explains
it; on virt-v2v 2.6+ that is the source plugin's own ``nbdkit: ssh[1]:
error: ...`` line, never nbdcopy's echo of it (random socket path, "the
server has no export named ''", a stray errno text).  It is bounded, cut at a
word boundary, and carries no temporary path, so the same failure reads the
same on every run.  A cause nothing here recognises gets the generic
``conversion_failed``, never a wrong specific code.
"""
import re
from dataclasses import dataclass
from typing import NamedTuple

from wrapper.security.text import printable


class Entry(NamedTuple):
    hint: str            # what to check (the default hint of a Cause with this code)
    description: str     # what the code means (man page, schema, docs/contract.md §8)


# The catalogue.  Codes are stable: add new ones, never rename or reuse one.
CATALOGUE = {
    # -- the source (VMware) ---------------------------------------------
    "source_login_refused": Entry(
        "check vmware_password (and the user in vmware_uri); for VDDK also that this host "
        "reaches the VMware host's NFC port 902",
        "the VMware host (libvirt's ESX driver or VDDK) refused the login; VDDK says \"Cannot "
        "connect to host\" for a refused password and for a blocked port 902 alike"),
    "thumbprint_mismatch": Entry(
        "check vmware_fingerprint: it must be the SHA-1 thumbprint of the VMware host's "
        "certificate",
        "VDDK could not open the disk (\"Unknown error\"), which for a remote host most "
        "often means that the certificate's thumbprint does not match vmware_fingerprint"),
    "vm_not_found": Entry(
        "check vm_name: the VM must exist on the VMware host the URI names",
        "the source VM does not exist"),
    "vm_powered_on": Entry(
        "shut the VM down on the VMware host, then start the job again",
        "the source VM is running or paused; it must be shut down"),
    "vddk_library_missing": Entry(
        "install VDDK so that <libdir>/lib64/libvixDiskLib.so.N exists (the administrator's "
        "vddk_libdir setting names the libdir)",
        "the VDDK library directory is missing, or holds no libvixDiskLib.so.N"),
    "ssh_key_refused": Entry(
        "check ssh_key: the ESXi host must accept it for the user in vm_name's URI",
        "the ESXi host refused the ssh login"),
    "host_key_unknown": Entry(
        "add the ESXi host's key to the known_hosts of the user virt-v2v runs as",
        "the ESXi host's ssh key is not known to the user virt-v2v runs as"),
    "vmx_missing": Entry(
        "check vm_name: the .vmx path must exist on the datastore",
        "the .vmx file named by vm_name does not exist on the ESXi host"),
    "flat_disk_missing": Entry(
        "check the VM's datastore directory: each disk's -flat.vmdk must be there (a VM with "
        "snapshots must have them collapsed first)",
        "a disk's -flat.vmdk named by the .vmx is missing (or the VM has snapshots)"),
    # -- the target (oVirt, export domain, local) --------------------------
    "engine_login_refused": Entry(
        "check rhv_url's user and rhv_password",
        "the oVirt engine refused the login"),
    "vm_name_taken": Entry(
        "remove or rename the VM of that name on the target, or convert under another name",
        "a VM of that name already exists on the target"),
    "storage_domain_unknown": Entry(
        "check rhv_storage: the storage domain must exist and be attached to a data center",
        "the oVirt storage domain named by the job does not exist"),
    "target_full": Entry(
        "free space on the target, or pick another storage domain or directory",
        "the target ran out of space"),
    "imageio_write_failed": Entry(
        "check the oVirt imageio daemon's log on the host the transfer went to",
        "oVirt's imageio refused a write of the disk upload"),
    "finalize_failed": Entry(
        "check the oVirt engine's events for the image transfer",
        "the oVirt engine could not finalize a disk's image transfer"),
    "vm_creation_failed": Entry(
        "check the oVirt engine's events for the VM import",
        "the oVirt engine could not create the VM from the converted disks"),
    # -- the guest, the run ------------------------------------------------
    "guest_not_convertible": Entry(
        "check that the source disks hold an operating system virt-v2v supports",
        "virt-v2v could not inspect the guest, or does not support its operating system"),
    "cancelled": Entry(
        "nothing to fix: the conversion was stopped on purpose",
        "the conversion was cancelled by a signal (SIGTERM, SIGINT, SIGHUP)"),
    "killed": Entry(
        "check the host's kernel log (the OOM killer) or who sent SIGKILL",
        "virt-v2v was killed by a signal it could not handle"),
    "wrapper_died": Entry(
        "check the host's kernel log and the wrapper log: the wrapper was killed outright",
        "the wrapper died; a later wrapper reclaimed what it left and finished its state"),
    "not_started": Entry(
        "start the job again; check the caller that reads the answer",
        "the job was accepted but never run: its answer could not be delivered"),
    "throttling_not_applied": Entry(
        "check the throttling file's values and the host's cgroup and network set-up",
        "a limit could not be applied (the conversion goes on without it)"),
    "job_refused": Entry(
        "fix what the message names and start the job again",
        "the job was refused before anything ran"),
    "internal_error": Entry(
        "report it, with the wrapper log",
        "an error in the wrapper itself"),
    "conversion_failed": Entry(
        "read virt-v2v's log (the state's v2v log path) for the details",
        "virt-v2v failed for a reason the wrapper does not recognise"),
}
GENERIC = "conversion_failed"
MAX_MESSAGE = 500         # characters of a message; longer ones are cut at a word boundary


@dataclass(frozen=True)
class Cause:
    code: str
    message: str
    hint: str

    def as_message(self):
        """The state file's ``last_message``."""
        return {"type": "error", "message": self.message, "code": self.code, "hint": self.hint}


def make(code, message, hint=None):
    """A Cause the wrapper itself names (an unknown code becomes the generic one)."""
    code = code if code in CATALOGUE else GENERIC
    return Cause(code, bounded(message), hint or CATALOGUE[code].hint)


def from_error(error, default="job_refused"):
    """The Cause of a :class:`wrapper.errors.WrapperError` (its ``code`` when it
    names one, else ``default``), e.g. a refusal or a pre-flight problem."""
    return make(getattr(error, "code", None) or default, str(error))


# ---------------------------------------------------------------- messages

_SEE_EARLIER = re.compile(r"(?:,? see earlier errors?(?: messages)?\.?"
                          r"|\.?\s+See previous debugging messages for problems\.?)\s*$")
# libnbd's echo of an nbdkit failure (2.6+), from nbdcopy or from virt-v2v itself:
# "nbdcopy: nbd+unix://?socket=/tmp/v2vssh.X/nbdkit1.sock: nbd_connect_uri: the server has
#  no export named '': <cause>: <strerror>", "exception: NBD.Error("nbd_connect_unix: the
#  server has no export named '': <cause>: <strerror>", _)"; the strerror is libnbd's
#  stale errno, not the cause's
_STALE_ERRNO = r"(?:No such file or directory|Operation not permitted|Input/output error)"
_NBDCOPY_ECHO = re.compile(r"^(?:nbdcopy: \S+: |exception: NBD\.Error\(\")nbd_connect_\w+: "
                           r"(?:the server has no export named '[^']*': )?(?P<cause>.*?)"
                           r"(?:: %s)?(?:\", _\))?$" % _STALE_ERRNO)
# a plugin's own line: "nbdkit: ssh[1]: error: ...", "nbdkit: vddk[1]: error: ...",
# "nbdkit: python.4: error: ...", and nbdkit's own "nbdkit: error: ..."
_PLUGIN = re.compile(r"^nbdkit: (?:(?P<plugin>[\w-]+)(?:\[\d+\]|\.\d+): )?error: (?P<text>.*)$")
# lines that only repeat or follow up a cause printed before them: nbdcopy's echo of a
# plugin's failure, VDDK's generic advice, qemu failing to open an export that nbdkit
# could not serve, the retry filter giving up, nbdkit's threads losing the connection
# nbdcopy dropped after its own error
_ECHOES = re.compile(r"^nbdcopy: \S+: nbd_connect_\w+: |can be caused by several problems|"
                     r"Requested export not available|could not recover after \d+ retries|"
                     r"(?:NBD_CMD_\w+|read request): (?:Connection reset by peer|Broken pipe|"
                     r"Bad message)$")
_PLUGIN_PREFIX = re.compile(r"\bnbdkit: (?:[\w-]+(?:\[\d+\]|\.\d+): )?error: ")
_LINES = re.compile(r"[\r\n]")
_TEMP = re.compile(r"/tmp/[\w.-]*\.\w{6}/")           # mkdtemp names: /tmp/v2v.AbC123/
CAUSE_LINE = re.compile(r": error: |Permission denied|No such file or directory|not found|"
                         r"verification failed|[A-Za-z]+(?:Error|Exception): |Connection refused|"
                         r"HTTP (?:error|status) ?\d{3}|\b[45]\d\d [A-Z][a-z]+|"
                         r"cannot open shared object file")
NOT_CAUSES = ("virt-v2v: error:", "libguestfs: trace:", "+ ")


# CAUSE_LINE, in pieces the C code finds fast: an alternation whose branches start with a
# character class makes the regex engine try every position (~0.2 us a byte); literals and
# literal-led patterns are found by a fast search.
_LITERALS = (": error: ", "Permission denied", "No such file or directory", "not found",
             "verification failed", "Connection refused", "cannot open shared object file")
_EXCEPTION = re.compile(r"[A-Za-z](?:Error|Exception): ")
_HTTP = re.compile(r"HTTP (?:error|status) ?\d{3}")
_STATUS = re.compile(r"[45]\d\d [A-Z][a-z]")        # "500 Internal", "404 Not" (a word starts it)


def is_cause_line(text):
    """Could ``text`` (a stripped log line) explain a following virt-v2v error?
    (:data:`CAUSE_LINE` matches, computed faster.)"""
    if not text or text.startswith(NOT_CAUSES):
        return False
    if any(needle in text for needle in _LITERALS):
        return True
    if ("Error: " in text or "Exception: " in text) and _EXCEPTION.search(text):
        return True
    if "HTTP " in text and _HTTP.search(text):
        return True
    return any(m.start() == 0 or not (text[m.start() - 1].isalnum() or text[m.start() - 1] == "_")
               for m in _STATUS.finditer(text))


def is_echo(line):
    """Does ``line`` only repeat or follow up a cause printed before it (:data:`_ECHOES`)?"""
    if line.startswith("nbdcopy: ") and "nbd_connect_" in line:
        return bool(_ECHOES.search(line))
    if line.endswith(("Connection reset by peer", "Broken pipe", "Bad message")) or \
            "several problems" in line or "Requested export" in line or "could not recover" in line:
        return bool(_ECHOES.search(line))
    return False


def cause_lines(text, limit, width):
    """The lines of ``text`` (a log excerpt) that could explain a following error,
    oldest first, each cut to ``width`` characters (its head and tail kept): from the
    end back to the first one that is not an echo of an earlier line (the cause
    itself), at most ``limit``.  Read from the end, so the usual case looks at a
    few lines only."""
    lines = unsplit(_LINES.split(text))
    found = []
    for at in range(len(lines) - 1, -1, -1):
        line = lines[at].strip()
        if is_cause_line(line):
            found.append(line if len(line) <= width else
                         line[:width // 2 - 1] + "…" + line[-(width // 2):])
            if len(found) == limit or not (is_echo(line) or repeats(line, _earlier(lines, at))):
                break
    found.reverse()
    return found


# nbdkit (1.32 at least) prints an error line in pieces, one write each: "nbdkit: ", the
# plugin's name, "[N]", ": ", "error: ", the message (itself in 128-byte pieces where glibc is
# 2.37 or later), the newline.  Another process's line, written whole, can land between two
# pieces: "nbdkit: vddk[4]: error: " + "nbdkit: file.9: debug: client closed input socket,
# closing connection" on one line, the message on the next.  (Seen in CI: the VDDK read
# error's message became that debug line.)
_OTHER_PROGRAMS = ("nbdcopy: ", "libguestfs: ", "virt-v2v: ")     # and qemu-*: (qemu-img, ...)
_LINE_START = (r"(?:nbdkit: (?:[\w-]+(?:\[\d+\]|\.\d+): )?(?:debug|error): "
               r"|%s|qemu-[\w-]+: )" % "|".join(map(re.escape, _OTHER_PROGRAMS)))
_INTRUDED = re.compile(r"^(?P<head>nbdkit: .*?)(?P<intruder>%s.*)$" % _LINE_START)
_STARTS_A_LINE = re.compile(_LINE_START)


def _may_hold_a_line(line):
    """A fast filter before _INTRUDED: another line's start somewhere after the first byte."""
    if line.find("nbdkit: ", 1) != -1 or "qemu-" in line:
        return True
    for program in _OTHER_PROGRAMS:
        if program in line:
            return True
    return False


def unsplit(lines):
    """``lines`` with each nbdkit line that another process's line cut in two put
    back together: the intruder first, then the nbdkit line whole (its head, and the
    next line, where the rest went, unless that starts a line of its own)."""
    out = None
    for i in range(len(lines) - 1):
        line = lines[i].strip()
        if not line.startswith("nbdkit: ") or not _may_hold_a_line(line):
            continue
        m = _INTRUDED.match(line)
        after = lines[i + 1].rstrip()
        if m and not _STARTS_A_LINE.match(after.lstrip()):
            out = out or list(lines)
            out[i], out[i + 1] = m.group("intruder"), m.group("head") + after
    return out or lines


def _earlier(lines, at):
    return (lines[i].strip() for i in range(at))


# A line whose own writer split it: glibc (2.37 and later) writes printf's output to an
# unbuffered stream such as stderr in pieces of at most 128 bytes, so another process's line
# can land inside a long line.  nbdcopy's echo of a plugin's failure is such a line; the part
# after the split is a "line" of its own, a stray tail that repeats an earlier cause.
_ERRNO_TAIL = re.compile(r"(?:^|: )%s$" % _STALE_ERRNO)


def repeats(line, earlier):
    """Does ``line`` only repeat part of an ``earlier`` cause line (each stripped; lines
    that are not causes are skipped), as the stray tail of a split line does: the end
    of one of them (a stale errno text after it allowed), or a text with a plugin's
    whole message in it?  (The same line printed again, as retries do, is not a part:
    it stays a cause.)  The cheap string tests come first: most lines fail them."""
    core = _ERRNO_TAIL.sub("", line)
    return any(before != line and (before.endswith(core) or _holds_plugin_text(before, core))
               and is_cause_line(before) for before in earlier)


def _holds_plugin_text(before, core):
    m = _PLUGIN.match(before) if before.startswith("nbdkit: ") and "error: " in before else None
    return bool(m) and len(m.group("text")) >= 8 and m.group("text") in core


def bounded(text, limit=MAX_MESSAGE):
    """One line of at most ``limit`` characters, cut at a word boundary with an
    ellipsis; control and bidi characters written as escapes (a client may print
    the message raw; what virt-v2v, libvirt or a server said is not trusted)."""
    text = printable(" ".join(text.split()))
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit - 1)
    return text[:cut if cut > limit // 2 else limit - 1].rstrip(" ,;:") + "…"


def clean(line):
    """A cause line as people should read it: a plugin's prefix and nbdcopy's
    wrapping dropped, temporary directories elided."""
    line = line.strip()
    m = _NBDCOPY_ECHO.match(line)
    if m:
        line = m.group("cause")
    m = _PLUGIN.match(line)
    if m:
        line = m.group("text")
    return _TEMP.sub("", line).strip()


def pick(lines):
    """The line (of ``lines``, oldest first) that best explains the error: the
    last one that looks like a cause and is not an echo of an earlier one (on
    2.6+ the source plugin's own ``nbdkit: ssh[1]: error:`` line, not nbdcopy's
    echo of it, whole or split, :func:`repeats`); the last echo if there is nothing else.  None if there is none."""
    usable = [t.strip() for t in lines if is_cause_line(t.strip())]
    own = [t for at, t in enumerate(usable) if not (is_echo(t) or repeats(t, usable[:at]))]
    return (own or usable or [None])[-1]


def compose(error, lines=()):
    """virt-v2v's ``error`` with a "see earlier errors" replaced by its cause."""
    error = " ".join(error.split())
    m = _SEE_EARLIER.search(error)
    if m:
        cause = pick(lines)
        if cause:
            return bounded("%s: %s" % (error[:m.start()].rstrip(" .,"), clean(cause)))
    return bounded(_PLUGIN_PREFIX.sub("", clean(error)))


# ---------------------------------------------------------------- codes

# (code, pattern searched in the error and the lines before it); the first match wins,
# so specific patterns come before the ones they would be mistaken for.
_RULES = tuple((code, re.compile(pattern)) for code, pattern in (
    ("vddk_library_missing", r"libvixDiskLib\.so(?:\.\d+)*: cannot open shared object"
                             r"|vddk-libdir=[^ ]*. does not point to a directory"),
    ("thumbprint_mismatch", r"VixDiskLib_Open: .*: Unknown error|VDDK \"Unknown error\""
                            r"|verify whether the \"thumbprint\" parameter"),
    ("source_login_refused", r"incorrect user name or password|for call to 'Login'"
                             r"|VixDiskLib_(?:Open|ConnectEx): .*: Cannot connect to host"),
    ("vm_not_found", r"cannot find libvirt domain|Domain not found"),
    ("vm_powered_on", r"is running or paused\.\s+It must be shut down"),
    ("host_key_unknown", r"Host key verification failed|the host key is unknown"),
    ("ssh_key_refused", r"Permission denied \(publickey|all possible authentication methods "
                        r"failed"),
    ("flat_disk_missing", r"-flat\.vmdk: (?:cannot open file|No such file)"
                          r"|This transport does not support guests with snapshots"),
    ("vmx_missing", r"\.vmx: (?:No such file|cannot open file for reading)"),
    ("engine_login_refused", r"ovirtsdk4\.AuthError|Error during SSO authentication"),
    ("vm_name_taken", r"VM already exists with name"),
    ("storage_domain_unknown", r"[Ss]torage domain .{1,300} does not exist"),
    ("target_full", r"No space left on device|Low disk space on (?:the )?[Ss]torage [Dd]omain"),
    ("finalize_failed", r"failed to finalize the transfers"),
    ("vm_creation_failed", r"failed to create virtual machine"),
    ("guest_not_convertible", r"inspection could not detect the source guest|"
                              r"virt-v2v is unable to convert this guest type|"
                              r"multi-boot operating systems are not supported"),
))


def code_of(texts):
    """The code of the first rule any of ``texts`` matches, else the generic one."""
    for code, pattern in _RULES:
        if any(pattern.search(t) for t in texts):
            return code
    return GENERIC


def classify(error, lines=(), upload_failure=None):
    """virt-v2v's ``error`` and the log ``lines`` just before it (oldest first)
    -> :class:`Cause`.  ``upload_failure``: imageio's refusal of an upload write
    (wrapper.progress.UploadFailure's text), which comes before everything the
    error's nearby lines say."""
    if upload_failure:
        m = _SEE_EARLIER.search(error)
        head = error[:m.start()].rstrip(" .,") if m else error
        return make("imageio_write_failed", "%s: %s" % (head, upload_failure))
    code = code_of((error,) + tuple(lines))
    message = compose(error, lines)
    if code == "thumbprint_mismatch":
        message = _unknown_error(lines) or message
    named, note = _NAMED.get(code, (None, None))
    if named and named not in message:       # VDDK's words do not name the job key to check
        message = bounded(message, MAX_MESSAGE - len(note) - 1) + " " + note
    return make(code, message)


# what VDDK's own words leave unsaid: (a word that shows it is said, what to add)
_NAMED = {
    "thumbprint_mismatch": ("thumbprint", "(most likely a wrong thumbprint: check "
                                          "vmware_fingerprint)"),
    "source_login_refused": ("password", "(VDDK could not log in: check vmware_password, and "
                                         "that this host reaches the VMware host's port 902)"),
}


def _unknown_error(lines):
    """VDDK's "VixDiskLib_Open: <disk>: Unknown error" line, cleaned."""
    for line in reversed(lines):
        if "VixDiskLib_Open" in line and "Unknown error" in line:
            return "VDDK could not open " + clean(line).replace("VixDiskLib_Open: ", "", 1)
    return None
