"""Failure codes (wrapper/causes.py): each code produced from a real virt-v2v log.

The logs are real captures (tests/data): virt-v2v 2.2 on this host (the lab's fixtures, the
oVirt stand-in world's rhv-upload failures), and, where the newer releases word it
differently, virt-v2v 2.6 / 2.10 and the VDDK world.  Each is replayed through the same
parser and state code the monitor uses (LogParser, MachineReadableParser, apply,
State.conclude), in odd-sized chunks so that a line split across reads is covered too.
"""
import importlib.util
import json
import os
import re

import pytest

from tests.fakes import data
from wrapper import causes, progress as p
from wrapper.state import State, apply


def replay(vx, mr=None, rc=1, chunk=4099, blob=None):
    """The last_message of a job whose virt-v2v printed ``vx`` (or ``blob``; and ``mr``)
    and exited ``rc``."""
    state = State()
    parser, mrp = p.LogParser(2), p.MachineReadableParser()
    if blob is None:
        with open(data(vx), "rb") as f:
            blob = f.read()
    events = []
    for i in range(0, len(blob), chunk):
        events += parser.feed(blob[i:i + chunk])
    events += parser.flush()
    if mr:
        with open(data(mr), "rb") as f:
            events += mrp.feed(f.read() + b"\n")
    for event in events:
        apply(state, event)
    state.conclude(rc)
    assert state["failed"] is True
    return state["last_message"]


def check_message(msg):
    """What every message must be: one bounded line, no temporary path, no
    nbdcopy wrapping, never cut mid-word, the code's own hint."""
    text = msg["message"]
    assert msg["type"] == "error" and msg["code"] in causes.CATALOGUE
    assert msg["hint"] == causes.CATALOGUE[msg["code"]].hint
    assert text and "\n" not in text and "\r" not in text
    assert len(text) <= causes.MAX_MESSAGE
    assert not re.search(r"(?:^|[\s:='])/tmp/", text), text
    assert "no export named" not in text and "nbd+unix" not in text
    assert "see earlier error" not in text


V22 = [
    # code, verbose log, machine-readable log, exit status, the message (exact or its start)
    ("vmx_missing", "fail02-ssh-missing-vmx.vx.log", "fail02-ssh-missing-vmx.vx.mr.log", 1,
     "could not copy the VMX file from the remote server: scp: "
     "/vmfs/volumes/datastore1/nosuchvm/nosuchvm.vmx: No such file or directory"),
    ("ssh_key_refused", "fail04-ssh-no-agent.vx.log", "fail04-ssh-no-agent.vx.mr.log", 1,
     "could not copy the VMX file from the remote server: root@127.0.0.1: Permission denied "
     "(publickey)."),
    ("host_key_unknown", "fail05-ssh-unknown-hostkey.vx.log",
     "fail05-ssh-unknown-hostkey.vx.mr.log", 1,
     "could not copy the VMX file from the remote server: Host key verification failed."),
    ("flat_disk_missing", "fail03-ssh-missing-flat-vmdk.vx.log",
     "fail03-ssh-missing-flat-vmdk.vx.mr.log", 1,
     "This transport does not support guests with snapshots."),
    ("guest_not_convertible", "fail07-blank-disk.vx.log", "fail07-blank-disk.vx.mr.log", 1,
     "inspection could not detect the source guest (or physical machine)."),
    ("cancelled", "kill01-sigterm-during-copy.vx.log", "kill01-sigterm-during-copy.vx.mr.log", 1,
     "Conversion cancelled: virt-v2v was stopped by SIGTERM"),
    # -o local onto a 48 MiB tmpfs (captured for this test: virt-v2v 2.2 -v -x, -i disk of
    # the 512 MiB test guest; head and tail kept, the cut marked)
    ("target_full", "target-full-local.vx.log", "target-full-local.vx.mr.log", 1,
     "nbdcopy command failed: pwrite: No space left on device"),
    ("killed", "kill04-sigkill-during-convert.tail.vx.log", None, 137,
     "virt-v2v was killed by signal 9"),
    # unknown causes: the generic code, never a wrong specific one
    ("conversion_failed", "fail09-kvm-default-msr-crash.vx.log",
     "fail09-kvm-default-msr-crash.vx.mr.log", 1, "libguestfs error: guestfs_launch failed"),
    ("conversion_failed", "fail08-libvirt-backend-no-libvirtd.vx.log",
     "fail08-libvirt-backend-no-libvirtd.vx.mr.log", 1,
     "libguestfs error: could not connect to libvirt"),
    ("conversion_failed", "fail01-missing-disk.vx.log", "fail01-missing-disk.vx.mr.log", 1,
     "access: No such file or directory: /var/tmp/v2vlab/does-not-exist.img"),
]


@pytest.mark.parametrize("code,vx,mr,rc,message", V22, ids=[c[1].split(".")[0] for c in V22])
def test_virt_v2v_2_2_failures_get_their_code(code, vx, mr, rc, message):
    msg = replay(vx, mr, rc)
    check_message(msg)
    assert msg["code"] == code, msg
    assert msg["message"] == message or msg["message"].startswith(message), msg


# virt-v2v 2.6 (Debian trixie) and 2.10 (Debian sid) in the worlds of
# tests/integration/worlds.py, through the wrapper (tests/data/virt-v2v-2.6|2.10/README.md):
# the .vmx is read by nbdkit's ssh plugin, whose own line is the cause; nbdcopy's echo of it (a
# random socket path, "no export named ''", a stale errno) must not be the message.  Each
# failure was run twice ("-again"): the message must read the same.
SSH_26 = [
    ("missing-vmx", "vmx_missing",
     "could not copy the VMX file from the remote server: /vmfs/volumes/datastore1/nosuchvm/"
     "nosuchvm.vmx: cannot open file for reading: SFTP server: No such file"),
    ("refused-key", "ssh_key_refused",
     "could not copy the VMX file from the remote server: all possible authentication methods "
     "failed"),
    ("unknown-hostkey", "host_key_unknown",
     "could not copy the VMX file from the remote server: either the host key is unknown, you "
     "must use ssh first and accept the host key; or the known_hosts file (usually "
     "~/.ssh/known_hosts) could not be opened, check that the file exists and file permissions"),
]


@pytest.mark.parametrize("release", ["2.6", "2.10"])
@pytest.mark.parametrize("scenario,code,message", SSH_26, ids=[c[0] for c in SSH_26])
def test_virt_v2v_2_6_and_2_10_ssh_failures_name_the_plugins_cause(release, scenario, code,
                                                                   message):
    where = "virt-v2v-%s/%s" % (release, scenario)
    first = replay(where + ".vx.log", where + ".mr.log")
    again = replay(where + "-again.vx.log")          # the second run (verbose log only)
    for msg in (first, again):
        check_message(msg)
        assert (msg["code"], msg["message"]) == (code, message), msg
    assert first == again


def split_like_glibc(blob, line_start, at):
    """``blob`` as the log reads when the line at ``line_start`` was written in two pieces,
    the first ``at`` bytes long, and the next line (another process's) landed between them.
    glibc 2.37 and later writes printf's output to an unbuffered stderr 128 bytes at a time;
    nbdcopy's echo (~250 bytes) is written so, and nbdkit's debug lines come in between."""
    end = blob.index(b"\n", line_start) + 1
    other_end = blob.index(b"\n", end) + 1
    line, other = blob[line_start:end], blob[end:other_end]
    return blob[:line_start] + line[:at] + other + line[at:] + blob[other_end:]


ECHO_SPLITS = [(release, scenario) for release in ("2.6", "2.10")
               for scenario in ("missing-vmx", "missing-vmx-again", "refused-key", "refused-key-again",
                                "unknown-hostkey", "unknown-hostkey-again")]


@pytest.mark.parametrize("release,scenario", ECHO_SPLITS, ids=["-".join(c) for c in ECHO_SPLITS])
def test_nbdcopys_echo_split_by_another_process_reads_the_same(release, scenario):
    """CI (virt-v2v 2.6 in trixie, glibc 2.41): nbdcopy's echo was split after its 128th byte
    and an nbdkit debug line written in between; the echo's tail, a "line" of its own that
    looked like a cause, became the message ("atastore1/nosuchvm/nosuchvm.vmx: ... No such
    file: No such file or directory").  Every split of the echo reads as the whole log does."""
    with open(data("virt-v2v-%s/%s.vx.log" % (release, scenario)), "rb") as f:
        blob = f.read()
    whole = replay(None, blob=blob)
    start = blob.rindex(b"\nnbdcopy: nbd+unix:") + 1
    length = blob.index(b"\n", start) - start
    assert length > 128
    for at in range(1, length):
        split = split_like_glibc(blob, start, at)
        assert replay(None, blob=split) == whole, (at, split[start:start + length + 200])


# Captured the same way (tests/integration/test_version_matrix.py with V2VW_CAPTURE_DIR, trimmed
# by tools/trim_v2v_log.py --auto): a .vmx whose -flat.vmdk is missing fails only once the
# appliance boots (~70 s), the cause on the ssh plugin's line before "guestfs_launch failed".
# The 2.10 run of the same job lost its known_hosts line during nbdkit's retries (another
# session rewrote the shared file): its last cause is the unknown host key, and so is its code.
LAUNCH = [
    ("virt-v2v-2.6/causes-missing-flat", "flat_disk_missing",
     "libguestfs error: guestfs_launch failed: /vmfs/volumes/datastore1/brokenvm/"
     "brokenvm-flat.vmdk: cannot open file for reading: SFTP server: No such file"),
    ("virt-v2v-2.10/causes-hostkey-at-launch", "host_key_unknown",
     "libguestfs error: guestfs_launch failed: either the host key is unknown, you must use ssh "
     "first and accept the host key; or the known_hosts file (usually ~/.ssh/known_hosts) could "
     "not be opened, check that the file exists and file permissions"),
]


@pytest.mark.parametrize("where,code,message", LAUNCH, ids=[c[0] for c in LAUNCH])
def test_virt_v2v_2_6_and_2_10_failures_at_the_appliance_launch(where, code, message):
    msg = replay(where + ".vx.log", where + ".vx.mr.log")
    check_message(msg)
    assert (msg["code"], msg["message"]) == (code, message), msg


def test_virt_v2v_2_6_libnbd_echo_of_a_lost_host_key_is_cleaned():
    """A 2.6 conversion whose known_hosts line vanished after the inspection (another session
    rewrote it): virt-v2v itself reports libnbd's NBD.Error echo, stale errno included."""
    msg = replay("virt-v2v-2.6/causes-hostkey-during-copy.tail.vx.log",
                 "virt-v2v-2.6/causes-hostkey-during-copy.tail.vx.mr.log")
    check_message(msg)
    assert msg["code"] == "host_key_unknown"
    assert msg["message"] == (
        "either the host key is unknown, you must use ssh first and accept the host key; or the "
        "known_hosts file (usually ~/.ssh/known_hosts) could not be opened, check that the file "
        "exists and file permissions")


# VDDK (tests/data/vddk, README there): real virt-v2v 2.2 with nbdkit's real vddk plugin 1.42.3
# against the VDDK test world, through the wrapper; each case's exit status from its state.json.
VDDK_DISK = "[datastore1] testvm/testvm.vmdk"
VDDK = [
    ("wrong-password", "source_login_refused",
     "exception: libvirt: VIR_ERR_INTERNAL_ERROR: VIR_FROM_ESX: internal error: HTTP response code "
     "500 for call to 'Login'. Fault: ServerFaultCode - Cannot complete login due to an incorrect "
     "user name or password."),
    ("vddk-refuses-password", "source_login_refused",
     "libguestfs error: guestfs_launch failed: VixDiskLib_Open: %s: Cannot connect to host "
     "(VDDK could not log in: check vmware_password, and that this host reaches the VMware "
     "host's port 902)" % VDDK_DISK),
    ("wrong-thumbprint", "thumbprint_mismatch",
     "VDDK could not open %s: Unknown error (most likely a wrong thumbprint: check "
     "vmware_fingerprint)" % VDDK_DISK),
    ("vm-not-found", "vm_not_found",
     "cannot find libvirt domain \u2018novm\u2019: Domain not found: Could not find domain with "
     "name 'novm'"),
    ("vm-powered-on", "vm_powered_on",
     "libvirt domain \u2018testvm\u2019 is running or paused. It must be shut down in order to "
     "perform virt-v2v conversion"),
    ("libdir-missing", "vddk_library_missing",
     "\u2018-io vddk-libdir=/opt/vmware-vix-disklib-distrib\u2019 does not point to a directory. "
     "See the virt-v2v-input-vmware(1) manual."),
    ("libdir-empty", "vddk_library_missing",
     "nbdkit did not start up: /opt/vmware-vix-disklib-distrib/lib64/libvixDiskLib.so.8: cannot "
     "open shared object file: No such file or directory"),
    ("sigterm-during-copy", "cancelled", "Conversion cancelled: virt-v2v was stopped by SIGTERM"),
    # a read failing mid-copy is none of the catalogue's causes: generic, not "login refused"
    ("read-error", "conversion_failed",
     "nbdcopy command failed: command 1: asynchronous read failed: Cannot connect to host"),
]


@pytest.mark.parametrize("case,code,message", VDDK, ids=[c[0] for c in VDDK])
def test_vddk_failures_get_their_code(case, code, message):
    with open(data("vddk/%s/state.json" % case)) as f:
        captured = json.load(f)
    msg = replay("vddk/%s/v2v.log" % case, "vddk/%s/mr.log" % case, captured["return_code"])
    check_message(msg)
    assert (msg["code"], msg["message"]) == (code, message), msg


INTRUDER = b"nbdkit: file.9: debug: client closed input socket, closing connection\n"
_NBDKIT_ERROR = re.compile(rb"^nbdkit: (?:([\w-]+)(\[\d+\]|\.\d+)?: )?error: (.*)$", re.M)


def nbdkit_piece_ends(m):
    """Where nbdkit's writes of the error line ``m`` end (offsets in the line): "nbdkit: ",
    the name, "[N]", ": ", "error: ", each 128 bytes of the message, the message."""
    start, text_at = m.start(), m.start(3) - m.start()
    ends = {len(b"nbdkit: "), text_at - len(b"error: "), text_at, m.end(3) - start}
    ends.update(m.end(g) - start for g in (1, 2) if m.group(g))
    ends.update(range(text_at + 128, m.end(3) - start, 128))
    return sorted(ends)


def cut_by_another_line(blob, start, at):
    """``blob`` with INTRUDER written after the first ``at`` bytes of the line at ``start``."""
    return blob[:start + at] + INTRUDER + blob[start + at:]


# (the VDDK failures that libvirt or virt-v2v report before nbdkit runs have no nbdkit error line)
NO_NBDKIT_ERROR = ("wrong-password", "vm-not-found", "vm-powered-on", "libdir-missing")
NBDKIT_SPLITS = ([("vddk/%s/v2v.log" % case, "vddk/%s/mr.log" % case, case) for case, _c, _m in VDDK
                  if case not in NO_NBDKIT_ERROR] +
                 [("virt-v2v-%s/%s.vx.log" % (r, s), None, None) for r, s in ECHO_SPLITS] +
                 [(w + ".vx.log", w + ".vx.mr.log", None) for w, _c, _m in LAUNCH])


@pytest.mark.parametrize("vx,mr,case", NBDKIT_SPLITS, ids=[c[0].rsplit(".", 2)[0] for c in NBDKIT_SPLITS])
def test_nbdkit_error_lines_cut_by_another_line_read_the_same(vx, mr, case):
    """CI (VDDK read error, host nbdkit 1.32): nbdkit writes an error line in pieces, and another
    nbdkit's debug line landed after "nbdkit: vddk[4]: error: "; the message became "nbdcopy
    command failed: nbdkit: file.9: debug: client closed input socket, closing connection".
    Every nbdkit error line near the failure, cut at each of nbdkit's writes, reads the same."""
    rc = 1
    if case:
        with open(data("vddk/%s/state.json" % case)) as f:
            rc = json.load(f)["return_code"]
    with open(data(vx), "rb") as f:
        blob = f.read()
    whole = replay(None, mr, rc, blob=blob)
    error_at = blob.rfind(b"virt-v2v: error:")
    window = error_at - p.LOOKBACK if error_at > 0 else len(blob) - p.LOOKBACK
    lines = [m for m in _NBDKIT_ERROR.finditer(blob) if m.start() >= window]
    assert lines
    for m in lines:
        for at in nbdkit_piece_ends(m):
            cut = cut_by_another_line(blob, m.start(), at)
            assert replay(None, mr, rc, blob=cut) == whole, (at, m.group(0)[:200])


RHV = [
    ("engine_login_refused", "wrong-password",
     "failed server prechecks: ovirtsdk4.AuthError: Error during SSO authentication "
     "access_denied : Cannot authenticate user 'admin@internal': The username or password is "
     "incorrect.."),
    ("vm_name_taken", "vm-exists", "failed vmchecks: RuntimeError: VM already exists with name"),
    ("storage_domain_unknown", "storage-unknown",
     "failed server prechecks: RuntimeError: The storage domain \u2018no-such-domain\u2019 does "
     "not exist"),
    ("imageio_write_failed", "imageio-500",
     "nbdcopy command failed: imageio answered 500 Internal Server Error to: could not write "
     "sector offset 134217728 size 1069056"),
    ("finalize_failed", "finalize-fails", "failed to finalize the transfers: RuntimeError: "
                                          "transfer "),
    ("vm_creation_failed", "createvm-job-fails",
     "failed to create virtual machine: RuntimeError: Failed to create a VM! Failed jobs: "),
]


@pytest.mark.parametrize("code,name,message", RHV, ids=[c[1] for c in RHV])
def test_virt_v2v_2_2_rhv_upload_failures_get_their_code(code, name, message):
    """tests/data/virt-v2v-2.2-rhv-upload: real virt-v2v 2.2 against the oVirt stand-in world
    (its error line is what the machine-readable log says too)."""
    msg = replay("virt-v2v-2.2-rhv-upload/%s.log" % name, rc=1, chunk=65536)
    check_message(msg)
    assert msg["code"] == code, msg
    assert msg["message"].startswith(message), msg


def test_the_same_failure_reads_the_same_in_any_chunking():
    a = replay("fail02-ssh-missing-vmx.vx.log", "fail02-ssh-missing-vmx.vx.mr.log", chunk=7)
    b = replay("fail02-ssh-missing-vmx.vx.log", "fail02-ssh-missing-vmx.vx.mr.log", chunk=1 << 20)
    assert a == b


# ---- pure parts ---------------------------------------------------------------------------

def test_catalogue_codes_are_stable_identifiers_with_hint_and_description():
    assert causes.GENERIC in causes.CATALOGUE
    for code, entry in causes.CATALOGUE.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]{2,40}", code)
        assert entry.hint and entry.description and "\n" not in entry.hint


def test_make_with_an_unknown_code_is_generic():
    c = causes.make("no_such_code", "x")
    assert c == causes.Cause("conversion_failed", "x", causes.CATALOGUE["conversion_failed"].hint)
    assert c.as_message() == {"type": "error", "message": "x", "code": "conversion_failed",
                              "hint": causes.CATALOGUE["conversion_failed"].hint}


@pytest.mark.parametrize("error", [
    "exited with status 1", "", "No such file or directory", "error: something", "Permission",
    "nbdcopy command failed, see earlier error messages",
])
def test_unrecognised_errors_are_generic(error):
    assert causes.classify(error).code == "conversion_failed"


def test_bounded_cuts_at_a_word_boundary_with_an_ellipsis():
    text = "word " * 200
    out = causes.bounded(text, 100)
    assert len(out) <= 100 and out.endswith("word…")
    assert causes.bounded("a" * 300, 100) == "a" * 99 + "…"     # no space at all: a hard cut
    assert causes.bounded("  two\n lines ") == "two lines"


def test_from_error_uses_the_errors_code():
    from wrapper.errors import ConversionError, JobError, WrapperError
    assert causes.from_error(JobError("vm_name", "taken", code="vm_name_taken")).code == \
        "vm_name_taken"
    assert causes.from_error(JobError("x", "bad")).code == "job_refused"
    assert causes.from_error(WrapperError("boom"), causes.GENERIC).code == "conversion_failed"
    c = causes.from_error(ConversionError("cancelled by SIGTERM", code="cancelled"))
    assert (c.code, c.message) == ("cancelled", "cancelled by SIGTERM")


def test_a_plugin_line_beats_a_later_generic_line():
    lines = ("nbdkit: ssh[1]: error: all possible authentication methods failed",
             "nbdcopy: nbd+unix://?socket=/tmp/v2vssh.AbC123/nbdkit1.sock: nbd_connect_uri: the "
             "server has no export named '': all possible authentication methods failed: No such "
             "file or directory")
    c = causes.classify("could not copy the VMX file from the remote server, see earlier error "
                        "messages", lines)
    assert c.code == "ssh_key_refused"
    assert c.message == ("could not copy the VMX file from the remote server: all possible "
                         "authentication methods failed")


def test_nbdcopy_echo_alone_is_cleaned():
    line = ("nbdcopy: nbd+unix://?socket=/tmp/v2vssh.Xy9ZzQ/nbdkit1.sock: nbd_connect_uri: the "
            "server has no export named '': /vmfs/volumes/ds/vm/vm.vmx: cannot open file for "
            "reading: SFTP server: No such file: No such file or directory")
    assert causes.clean(line) == ("/vmfs/volumes/ds/vm/vm.vmx: cannot open file for reading: "
                                  "SFTP server: No such file")


def test_the_docs_and_schema_list_the_catalogue():
    """docs/contract.md, the man page and the state schema carry the catalogue as
    tools/causes_docs.py renders it (``tools/causes_docs.py write`` after a change)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("causes_docs",
                                                  os.path.join(here, "tools", "causes_docs.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for path, (text, wanted) in tool.rendered().items():
        assert text == wanted, "%s is out of step: run tools/causes_docs.py write" % path
        for code in causes.CATALOGUE:
            assert code in text, (code, path)
    with open(tool.SCHEMA, encoding="utf-8") as f:
        schema = json.load(f)
    assert schema["properties"]["last_message"]["properties"]["code"]["enum"] == \
        list(causes.CATALOGUE)


def test_the_lines_kept_per_error_are_bounded():
    """The log is the run-as user's: what root keeps per error is bounded (lines, characters)."""
    echo = b"nbdcopy: nbd+unix://?socket=/x: nbd_connect_uri: " + b"A" * 5000 + b": error: x\n"
    blob = (b"nbdkit: ssh[1]: error: " + b"B" * 5000 + b"\n") + echo * 40 + \
        b"virt-v2v: error: could not copy the VMX file, see earlier error messages\n"
    [err] = [e for e in p.LogParser(2).feed(blob) if isinstance(e, p.V2vError)]
    assert 0 < len(err.lines) <= p.MAX_CAUSE_LINES
    assert all(len(line) <= p.MAX_CAUSE_TEXT for line in err.lines)
    cause = causes.classify(err.text, err.lines)
    assert len(cause.message) <= causes.MAX_MESSAGE and cause.message.endswith("…")


@pytest.mark.parametrize("line", [
    "500 Internal Server Error", "x500 Internal", "_404 Not", "(404 Not Found)", "HTTP error 403",
    "HTTP status404", "ovirtsdk4.AuthError: x", "Error: x", "1Error: x", "scp: Connection refused",
    "virt-v2v: error: x", "+ ls: not found", "libguestfs: trace: No such file or directory", "",
    "nbdcopy: nbd+unix://x: nbd_connect_uri: y: error: z", "a: Bad message", "retry: could not "
    "recover after 5 retries: error: x", "qemu: -drive x: Requested export not available",
])
def test_the_fast_cause_and_echo_tests_agree_with_their_regexes(line):
    ref = bool(line) and not line.startswith(causes.NOT_CAUSES) and bool(
        causes.CAUSE_LINE.search(line))
    assert causes.is_cause_line(line) == ref
    assert causes.is_echo(line) == bool(causes._ECHOES.search(line))


def test_the_fast_tests_agree_on_every_line_of_the_captured_logs():
    here = data("")
    for root, _dirs, files in os.walk(here):
        for name in files:
            if not name.endswith(".log"):
                continue
            with open(os.path.join(root, name), "rb") as f:
                text = f.read().decode("utf-8", "replace")
            for line in re.split(r"[\r\n]", text):
                line = line.strip()
                ref = bool(line) and not line.startswith(causes.NOT_CAUSES) and bool(
                    causes.CAUSE_LINE.search(line))
                assert causes.is_cause_line(line) == ref, line
                assert causes.is_echo(line) == bool(causes._ECHOES.search(line)), line


def test_control_and_bidi_characters_never_reach_the_message():
    """Security review: a client that prints the message raw got terminal escapes."""
    text = causes.bounded("boom \x1b[2J\x1b]0;x\x07: Cannot connect: \x1b[31mred\u202e")
    assert not any(c in text for c in "\x1b\x07\u202e"), text
    assert text.startswith("boom \\x1b[2J")
