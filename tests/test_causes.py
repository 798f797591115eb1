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


def replay(vx, mr=None, rc=1, chunk=4099):
    """The last_message of a job whose virt-v2v printed ``vx`` (and ``mr``) and exited ``rc``."""
    state = State()
    parser, mrp = p.LogParser(2), p.MachineReadableParser()
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
