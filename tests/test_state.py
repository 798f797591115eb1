import json
import os
import stat
import threading

import pytest

from wrapper import causes, progress as p
from wrapper.state import State, StateFile, apply, first_paragraph


def run(state, events):
    for e in events:
        apply(state, e)
    return state


def test_initial_state_is_seeded():
    s = State(["[ds] a.vmdk", "[ds] b.vmdk"])
    assert s.data == {"disks": [{"path": "[ds] a.vmdk", "progress": 0}, {"path": "[ds] b.vmdk", "progress": 0}],
                      "disk_count": 2, "throttling": {"cpu": None, "network": None}}
    assert "finished" not in s.data and "failed" not in s.data


def test_shuffled_source_disks_are_placed_at_virt_v2v_index():
    s = State(["[ds] vm/vm_1.vmdk", "[ds] vm/vm.vmdk"])
    run(s, [p.DiskSource(0, "/vmfs/volumes/ds/vm/vm-flat.vmdk"),
            p.DiskSource(1, "/vmfs/volumes/ds/vm/vm_1-flat.vmdk"),
            p.CopyingDisk(0, 2), p.DiskProgress(50)])
    assert s["disks"] == [{"path": "[ds] vm/vm.vmdk", "progress": 50}, {"path": "[ds] vm/vm_1.vmdk", "progress": 0}]
    run(s, [p.CopyingDisk(1, 2), p.DiskProgress(12.5)])
    assert s["disks"] == [{"path": "[ds] vm/vm.vmdk", "progress": 100}, {"path": "[ds] vm/vm_1.vmdk", "progress": 12.5}]
    assert s["disk_count"] == 2 and s["stage"] == "Copying disk 2/2"
    assert s["progress"] == 56.25


def test_disks_built_as_found_without_source_disks():
    s = run(State(), [p.DiskSource(0, "/vmfs/volumes/ds/vm/vm-flat.vmdk"), p.CopyingDisk(0, 1),
                      p.DiskProgress(37)])
    assert s["disks"] == [{"path": "[ds] vm/vm.vmdk", "progress": 37}]
    assert s["disk_count"] == 1


def test_progress_weighted_by_size_and_never_goes_back():
    s = run(State(), [p.DiskSize(0, 3 << 30), p.DiskSize(1, 1 << 30), p.CopyingDisk(0, 2),
                      p.DiskProgress(50), p.DiskProgress(25)])
    assert s["disks"][0]["progress"] == 50
    assert s["progress"] == 37.5


def test_copy_completed_by_stage_after_copy():
    s = run(State(), [p.CopyingDisk(0, 1), p.DiskProgress(87), p.V2vMessage("message", "Creating output metadata")])
    assert s["disks"][0]["progress"] == 100 and s["stage"] == "Creating output metadata"


def test_first_error_wins_and_notice_is_replaced():
    s = State()
    s.notice("cannot set the cpu limit")
    apply(s, p.V2vMessage("error", "inspection could not detect the source guest.\n\nmore text"))
    s.error("later")
    assert s["last_message"] == {"message": "inspection could not detect the source guest.", "type": "error",
                                 "code": "guest_not_convertible",
                                 "hint": causes.CATALOGUE["guest_not_convertible"].hint}


def test_vm_id_prefers_virtual_system():
    s = run(State(), [p.VmId("a" * 8 + "-1111-1111-1111-111111111111", False)])
    assert s["vm_id"].startswith("aaaaaaaa")
    run(s, [p.VmId("b" * 8 + "-1111-1111-1111-111111111111", True),
            p.VmId("c" * 8 + "-1111-1111-1111-111111111111", False)])
    assert s["vm_id"].startswith("bbbbbbbb")


def test_disk_ids_recorded_once_not_in_state_file():
    s = run(State(), [p.DiskId("x"), p.DiskId("x"), p.DiskId("y")])
    assert s.disk_ids == ["x", "y"] and "x" not in json.dumps(s.data)


def test_first_paragraph_is_bounded():
    assert first_paragraph("a\nb\n\nc") == "a b"
    assert len(first_paragraph("x" * 2000)) == 500


def test_state_file_atomic_mode_and_only_on_change(tmp_path):
    path = tmp_path / "s.state"
    sf = StateFile(str(path))
    s = State(["a"])
    assert sf.write(s) and not sf.write(s)
    s.set("started", True)
    assert sf.write(s)
    assert sf.writes == 2
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert json.loads(path.read_text())["started"] is True
    spare = [n for n in os.listdir(tmp_path) if n != "s.state"]
    assert len(spare) == 1 and spare[0].startswith(".s.state.")    # reserved for the next write
    sf.close()
    assert os.listdir(tmp_path) == ["s.state"]


def test_state_file_never_follows_a_swapped_name(tmp_path):
    target = tmp_path / "target"
    target.write_text("root only")
    path = tmp_path / "s.state"
    sf = StateFile(str(path))
    os.symlink(str(target), str(path))
    assert sf.write(State(["a"]))
    assert target.read_text() == "root only"              # the symlink was replaced, not followed
    assert not os.path.islink(path) and json.loads(path.read_text())["disks"][0]["path"] == "a"
    sf.close()


def test_state_file_write_failure_is_retried_not_raised(tmp_path):
    path = tmp_path / "s.state"
    sf = StateFile(str(path))
    s = State(["a"])
    sf._file.write = lambda data: (_ for _ in ()).throw(OSError(28, "No space left on device"))
    assert sf.write(s) is False                             # logged, not raised
    assert sf.write_final(s, attempts=2, sleep=lambda s: None) is False
    sf.close()


def test_reader_never_sees_partial_json(tmp_path):
    path = str(tmp_path / "s.state")
    sf = StateFile(path)
    s = State(["d%d" % i for i in range(200)])
    sf.write(s)
    stop = threading.Event()
    bad = []

    def reader():
        while not stop.is_set():
            with open(path) as f:
                try:
                    json.load(f)
                except ValueError as e:
                    bad.append(e)
    t = threading.Thread(target=reader)
    t.start()
    for i in range(300):
        s.set_progress(i % 200, i % 100 + 1)
        sf.write(s)
    stop.set()
    t.join()
    assert bad == []


def test_real_two_disk_log_with_shuffled_source_disks():
    """virt-v2v 2.2's own 2-disk ssh log: the caller's strings each end up on exactly one disk."""
    from tests.fakes import data
    with open(data("v2v-2.2-ssh-2disk.vx.log"), "rb") as f:
        blob = f.read()
    s = State(["[datastore1] testvm2/testvm2_1.vmdk", "[datastore1] testvm2/testvm2.vmdk"])
    parser = p.LogParser(2)
    seen = []
    for i in range(0, len(blob), 8192):
        for e in parser.feed(blob[i:i + 8192]):
            apply(s, e)
        seen.append([d["progress"] for d in s["disks"]])
    for e in parser.flush():
        apply(s, e)
    apply(s, p.V2vMessage("message", "Creating output metadata"))
    assert s["disks"] == [{"path": "[datastore1] testvm2/testvm2.vmdk", "progress": 100},
                          {"path": "[datastore1] testvm2/testvm2_1.vmdk", "progress": 100}]
    assert s["disk_count"] == 2 and s["progress"] == 100
    assert any(0 < a < 100 and b == 0 for a, b in seen)      # disk 1 moved first
    assert s.sizes == {0: 536870912, 1: 67108864}


def test_overall_progress_never_goes_back_when_sizes_appear():
    s = State()
    seen = []
    for index, size in enumerate((64 << 20, 64 << 20, 1 << 30)):
        run(s, [p.DiskSize(index, size), p.CopyingDisk(index, 3), p.DiskProgress(100)])
        seen.append(s["progress"])
    assert seen == sorted(seen) and seen[-1] == 100


def _final_message(name):
    """Replay a real virt-v2v 2.2 failure (verbose and machine-readable logs)."""
    from tests.fakes import data
    state = State()
    parser, mr = p.LogParser(2), p.MachineReadableParser()
    with open(data(name + ".vx.log"), "rb") as f:
        events = parser.feed(f.read()) + parser.flush()
    with open(data(name + ".vx.mr.log"), "rb") as f:
        events += mr.feed(f.read() + b"\n")
    for event in events:
        apply(state, event)
    state.explain()
    return state["last_message"]["message"]


def test_see_earlier_errors_gets_the_earlier_cause():
    # virt-v2v 2.2's own logs: the cause is only in the verbose log, which clients never see
    assert _final_message("fail04-ssh-no-agent") == (
        "could not copy the VMX file from the remote server: "
        "root@127.0.0.1: Permission denied (publickey).")
    assert _final_message("fail05-ssh-unknown-hostkey").endswith(": Host key verification failed.")
    assert _final_message("fail02-ssh-missing-vmx").endswith(
        ": scp: /vmfs/volumes/datastore1/nosuchvm/nosuchvm.vmx: No such file or directory")


def test_message_without_see_earlier_is_kept():
    state = State()
    state.error("virt-v2v exited with status 1")
    state.v2v_causes["x"] = "y"
    state.explain()
    assert state["last_message"]["message"] == "virt-v2v exited with status 1"


def test_imageio_refusal_explains_nbdcopy_failed():
    state = State()
    for event in p.LogParser(2).feed(
            b"nbdkit: python.1: debug: unexpected response from imageio server:\n"
            b"nbdkit: python.1: debug: could not write sector offset 0 size 65536\n"
            b"nbdkit: python.1: debug: 500: Internal Server Error\n"
            b"nbdkit: python.3: error: read data: NBD_CMD_WRITE: Bad message\n"
            b"virt-v2v: error: nbdcopy command failed, see earlier error messages\n"):
        apply(state, event)
    state.error("nbdcopy command failed, see earlier error messages")
    state.explain()
    assert state["last_message"]["message"] == (
        "nbdcopy command failed: imageio answered 500 Internal Server Error to: "
        "could not write sector offset 0 size 65536")


@pytest.mark.parametrize("name,expected", [
    ("wrong-password", "failed server prechecks: ovirtsdk4.AuthError: Error during SSO "
                       "authentication access_denied : Cannot authenticate user "
                       "'admin@internal': The username or password is incorrect.."),
    ("vm-exists", "failed vmchecks: RuntimeError: VM already exists with name \u2018"),
    ("imageio-500", "nbdcopy command failed: imageio answered 500 Internal Server Error to: "
                    "could not write sector offset 134217728 size 1069056"),
    ("finalize-fails", "failed to finalize the transfers: RuntimeError: transfer "),
    ("createvm-job-fails", "failed to create virtual machine: RuntimeError: Failed to create a "
                           "VM! Failed jobs: "),
])
def test_real_rhv_upload_failures_name_their_cause(name, expected):
    """virt-v2v 2.2's own -o rhv-upload failures (tests/data/virt-v2v-2.2-rhv-upload): the
    "see earlier errors" line gets the cause a client can act on, from the verbose log."""
    from tests.fakes import data
    with open(data("virt-v2v-2.2-rhv-upload/%s.log" % name), "rb") as f:
        blob = f.read()
    state = State()
    parser = p.LogParser(2)
    events = []
    for i in range(0, len(blob), 65536):
        events += parser.feed(blob[i:i + 65536])
    events += parser.flush()
    for event in events:
        apply(state, event)
    [first] = state.v2v_errors[:1]
    state.error(first)            # what the machine-readable log's error says
    state.explain()
    message = state["last_message"]["message"]
    assert message.startswith(expected), message
    assert "\n" not in message and len(message) < 400


# ---- hostile lines from the run-as user's own log cannot grow root's state (review F9) --------
def _replay(blob, state=None, dialect=2, chunk=8192):
    s = State() if state is None else state
    parser = p.LogParser(dialect)
    for i in range(0, len(blob), chunk):
        for e in parser.feed(blob[i:i + chunk]):
            apply(s, e)
    for e in parser.flush():
        apply(s, e)
    return s


def _real_log():
    from tests.fakes import data
    with open(data("v2v-2.2-ssh-2disk.vx.log"), "rb") as f:
        return f.read()


HOSTILE = [
    b"[   3.0] Copying disk 1000000/1000000\n",
    b"[   3.1] Copying disk 257/257\n",
    b"[   3.2] Copying disk 5/4\n",
    b"[   3.3] Copying disk 0/0\n",
    b"[   3.4] Copying disk 1/" + b"9" * 5000 + b"\n",
    b"Copying disk " + b"9" * 5000 + b"/1\n",
    b"  uri: nbd+unix:///?socket=/tmp/v2v.x/in100000000\n",
    b"export-size: " + b"9" * 5000 + b"\n  uri: nbd+unix:///?socket=/tmp/v2v.x/in1\n",
    b"export-size: 99999999999999999999\n  uri: nbd+unix:///?socket=/tmp/v2v.x/in0\n",
    b"(" + b"9" * 5000 + b"/100%)\n",
] + [b"nbdkit ... '--unix' '/tmp/v2v.x/in%d' 'file=/x/%d.vmdk'\n" % (i, i) for i in range(0, 100000, 97)]


def test_hostile_lines_after_a_real_log_leave_the_state_small(caplog):
    s = _replay(_real_log() + b"".join(HOSTILE))
    assert s["disk_count"] == 2                           # the last count in range
    assert len(s["disks"]) <= 256 and len(json.dumps(s.data)) < 64 << 10
    assert s.sizes == {0: 536870912, 1: 67108864}         # nothing out of range replaced them
    assert s["progress"] == 100 and all(0 <= d["progress"] <= 100 for d in s["disks"])
    assert sum("out of range (disk index or count)" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("line", HOSTILE[:10])
def test_one_hostile_line_alone_is_ignored(line):
    s = _replay(b"[   1.0] Copying disk 1/2\n" + line, dialect=None)
    assert s["disk_count"] == 2 and len(s["disks"]) <= 2
    assert s.sizes.get(0, 0) < 1 << 63


def test_a_flood_of_distinct_disk_ids_errors_and_sources_stays_bounded():
    uuid = "%08x-0000-0000-0000-000000000000"
    blob = b"".join(b"disk.id = '%s'\nvirt-v2v: error: e%d\n" % ((uuid % i).encode(), i)
                    for i in range(5000))
    blob += b"".join(b"nbdkit: debug: Opening file /x/%d.vmdk (x)\n" % i for i in range(5000))
    s = _replay(blob, dialect=None)
    assert len(s.disk_ids) == 256 and len(s.v2v_errors) == 32 and len(s.v2v_causes) <= 32
    assert len(s["disks"]) <= 256
    assert s.v2v_errors[0] == "e0"                       # the first is what gets reported


def test_huge_stage_and_mr_lines_are_cut():
    mr = p.MachineReadableParser()
    s = State()
    huge = json.dumps({"type": "message", "message": "x" * (2 << 20)}).encode() + b"\n"
    long_ok = json.dumps({"type": "message", "message": "y" * 100000}).encode() + b"\n"
    for e in mr.feed(huge + long_ok):
        apply(s, e)
    assert s["stage"] == "y" * 4096
