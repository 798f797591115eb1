"""`virt-v2v-wrapper status`: reading, summarizing, drawing and watching state files."""
import io
import json
import os
import pathlib
import shutil
import re
import subprocess
import sys
import tempfile
import time

import pytest

import wrapper as wrapper_pkg

from tests.fakes import Clock, RecordingRunner
from wrapper import cli, leases, rate
from wrapper.observe import status, summary
from wrapper.security import fsafe
from wrapper.state import State, StateFile

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
T0 = 1_800_000_000.0
DISKS = ("[datastore1] vm1/vm1.vmdk", "[datastore1] vm1/vm1_1.vmdk")


def make_state(stage, disks=DISKS, tag="20270115T080000-00000000a100", started_at=T0, **extra):
    """The state the wrapper writes at ``stage``, built with the real State class."""
    s = State(disks, extra={"vm": "vm1", "target": "local directory /srv/out", "transport": "vddk",
                            "wrapper_pid": 100, "started_at": started_at, "tag": tag})
    if stage in ("copying", "finished", "failed"):
        s.set("started", True)
        s.set("pid", 200)
        s.set("stage", "Copying disk 2/2")
        s.set_progress(0, 100)
        s.set_progress(1, 50)
    if stage == "finished":
        s.set_progress(1, 100)
        s.set("stage", "Finishing off")
        s.set("return_code", 0)
        s.set("vm_id", "c9a8f3b0-1a2b-4c3d-8e9f-0a1b2c3d4e5f")
    if stage == "failed":
        s.error("virt-v2v: error: nbdcopy command failed")
        s.set("return_code", 1)
        s.set("failed", True)
    if stage in ("finished", "failed"):
        s.set("finished", True)
        s.set("finished_at", started_at + 3723)
    for k, v in extra.items():
        s.set(k, v)
    return s


def write(path, state):
    StateFile(str(path)).write(state, force=True)
    return str(path)


def set_mtime(path, when):
    os.utime(path, (when, when))


def alive_none(_pid):
    return False


def alive_all(_pid):
    return True


class FakeTty(io.StringIO):
    encoding = "utf-8"

    def isatty(self):
        return True


# status reclaims what dead wrappers left (wrapper.leases): never the host's own leases here
NO_LOCK_DIR = {"VIRT_V2V_WRAPPER_LOCK_DIR": "/nonexistent/virt-v2v-wrapper-test-lock"}


def run_status(argv, environ=None, **kw):
    out, err = io.StringIO(), io.StringIO()
    kw.setdefault("clock", lambda: T0 + 60)
    kw.setdefault("alive", alive_all)
    environ = dict(NO_LOCK_DIR, **(environ or {}))
    rc = status.main(argv, stdout=kw.pop("stdout", out), stderr=err, environ=environ, **kw)
    return rc, out.getvalue(), err.getvalue()


# -- reading ------------------------------------------------------------------
@pytest.mark.parametrize("content, kind, words", [
    (None, summary.MISSING, "no such file"),
    (b"", summary.INVALID, "empty"),
    (b'{"disks": [{"path": "a", "prog', summary.INVALID, "half-written"),
    (b"\xff\xfe\x00garbage", summary.INVALID, "not complete JSON"),
    (b"[1, 2]", summary.INVALID, "not a JSON object"),
])
def test_read_state_problems(tmp_path, content, kind, words):
    path = tmp_path / "v2v-import-x.state"
    if content is not None:
        path.write_bytes(content)
    r = summary.read_state(str(path))
    assert r.data is None
    assert r.kind == kind
    assert words in r.problem


def test_read_state_unreadable(tmp_path):
    # a directory where a file should be: unreadable even for root
    path = tmp_path / "v2v-import-dir.state"
    path.mkdir()
    r = summary.read_state(str(path))
    assert r.kind == summary.UNREADABLE and r.problem.startswith("cannot read")


def test_read_state_ok(tmp_path):
    path = write(tmp_path / "a.state", make_state("copying"))
    r = summary.read_state(path)
    assert r.problem is None and r.data["vm"] == "vm1" and r.mtime > 0


# -- summarizing ----------------------------------------------------------------
def summary_of(tmp_path, state, now=T0 + 60, alive=alive_all, mtime=None):
    path = write(tmp_path / "s.state", state)
    if mtime is not None:
        set_mtime(path, mtime)
    return summary.summarize(summary.read_state(path), now, alive)


def test_summary_fresh(tmp_path):
    s = summary_of(tmp_path, make_state("fresh"))
    assert s["outcome"] == summary.RUNNING
    assert s["stage"] == "Starting"
    assert [d["progress"] for d in s["disks"]] == [0, 0]
    assert s["pid"] is None and s["elapsed"] == 60.0


def test_summary_copying(tmp_path):
    s = summary_of(tmp_path, make_state("copying", throttling={"cpu": "50%", "network": "1048576"}))
    assert s["outcome"] == summary.RUNNING
    assert s["stage"] == "Copying disk 2/2"
    assert [d["progress"] for d in s["disks"]] == [100, 50]
    assert s["progress"] == 75
    assert s["throttling"] == {"cpu": "50%", "network": "1048576"}


def test_summary_finished(tmp_path):
    s = summary_of(tmp_path, make_state("finished"), now=T0 + 99999)
    assert s["outcome"] == summary.FINISHED
    assert s["elapsed"] == 3723       # from finished_at, not from now
    assert s["return_code"] == 0 and s["vm_id"].startswith("c9a8")
    assert s["message"] is None


def test_summary_failed(tmp_path):
    s = summary_of(tmp_path, make_state("failed"))
    assert s["outcome"] == summary.FAILED
    assert s["message"] == "virt-v2v: error: nbdcopy command failed"
    assert s["code"] == "conversion_failed"          # nothing recognisable in it


def test_summary_and_render_show_the_failure_code(tmp_path):
    st = make_state("failed")
    st.set("last_message", {"type": "error", "message": "libvirt domain 'vm1' is running",
                            "code": "vm_powered_on", "hint": "shut it down"})
    assert summary_of(tmp_path, st)["code"] == "vm_powered_on"
    text = "\n".join(block(tmp_path, st, status.Style()))
    assert "error      libvirt domain 'vm1' is running" in text
    assert "code       vm_powered_on" in text
    st.set("last_message", {"type": "error", "message": "m", "code": "\x1b[2Jforged"})
    assert summary_of(tmp_path, st)["code"] == "conversion_failed"     # only catalogue codes


def test_summary_failing_but_not_finished_is_still_running(tmp_path):
    st = make_state("copying", failed=True)
    st.error("boom")
    s = summary_of(tmp_path, st)
    assert s["outcome"] == summary.RUNNING and s["message"] == "boom"


def test_summary_stale_when_wrapper_and_v2v_are_gone(tmp_path):
    s = summary_of(tmp_path, make_state("copying"), now=T0 + 600, alive=alive_none, mtime=T0 + 30)
    assert s["outcome"] == summary.STALE
    assert s["elapsed"] == 30          # until the wrapper last wrote, not until now


def test_summary_not_stale_while_one_process_lives(tmp_path):
    s = summary_of(tmp_path, make_state("copying"), now=T0 + 600, mtime=T0 + 30,
                   alive=lambda pid: pid == 200)
    assert s["outcome"] == summary.RUNNING


def test_summary_not_stale_within_grace(tmp_path):
    # right after detaching, wrapper_pid may still name the caller's process
    s = summary_of(tmp_path, make_state("fresh"), now=T0 + 1, alive=alive_none, mtime=T0)
    assert s["outcome"] == summary.RUNNING


def test_summary_tolerates_wrong_types(tmp_path):
    path = tmp_path / "odd.state"
    path.write_text(json.dumps({"disks": [{"path": 5, "progress": "x"}, "junk", {"progress": 250}],
                                "disk_count": "2", "throttling": [], "started_at": "yesterday",
                                "last_message": "not an object", "pid": True, "stage": 7}))
    s = summary.summarize(summary.read_state(str(path)), T0, alive_all)
    assert s["outcome"] == summary.RUNNING
    assert [d["path"] for d in s["disks"]] == ["disk 1", "disk 2", "disk 3"]
    assert [d["progress"] for d in s["disks"]] == [0, 0, 100]
    assert s["pid"] is None and s["elapsed"] is None and s["message"] is None
    assert s["throttling"] == {"cpu": None, "network": None}
    lines = status.render_block(s, status.Style())       # and it still draws
    assert any("disk 3/3" in line for line in lines)


def test_pid_alive(tmp_path):
    assert summary.pid_alive(os.getpid())
    assert not summary.pid_alive(0) and not summary.pid_alive(None) and not summary.pid_alive(True)
    child = subprocess.Popen(["true"])
    child.wait()
    assert not summary.pid_alive(child.pid)


def test_pid_alive_zombie_counts_as_gone():
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10       # wait until it has exited but is not reaped
        while time.monotonic() < deadline:
            with open("/proc/%d/stat" % child.pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        else:
            pytest.fail("the child never became a zombie")
        assert not summary.pid_alive(child.pid)
    finally:
        child.wait()


# -- drawing --------------------------------------------------------------------
def block(tmp_path, state, style, **kw):
    return status.render_block(summary_of(tmp_path, state, **kw), style)


def test_render_plain_copying(tmp_path):
    lines = block(tmp_path, make_state("copying", throttling={"cpu": "50%", "network": "1048576"}),
                  status.Style())
    text = "\n".join(lines)
    assert not ANSI.search(text)
    assert lines[0].startswith("vm1 -> local directory /srv/out") and lines[0].endswith("[RUNNING]")
    assert "Copying disk 2/2" in text
    assert "disk 1/2   [" + "#" * 30 + "] 100.0%  [datastore1] vm1/vm1.vmdk" in text
    assert "disk 2/2   [" + "#" * 15 + "." * 15 + "]  50.0%  [datastore1] vm1/vm1_1.vmdk" in text
    assert re.search(r"overall +\[#{22}\.{8}\]  75\.0%", text)
    assert "cpu 50%, network 1048576 B/s (1.0 MiB/s)" in text
    assert "elapsed 0:01:00" in text and "virt-v2v pid 200" in text


@pytest.mark.parametrize("stage, label, words", [
    ("fresh", "RUNNING", "Starting"),
    ("finished", "FINISHED", "virt-v2v exit status 0, VM id c9a8f3b0"),
    ("failed", "FAILED", "error      virt-v2v: error: nbdcopy command failed"),
])
def test_render_plain_stages(tmp_path, stage, label, words):
    text = "\n".join(block(tmp_path, make_state(stage), status.Style()))
    assert "[%s]" % label in text.splitlines()[0]
    assert words in text
    assert "throttle   none" in text


def test_render_stale(tmp_path):
    text = "\n".join(block(tmp_path, make_state("copying"), status.Style(), now=T0 + 600,
                           alive=alive_none, mtime=T0 + 30))
    assert "[STALE (WRAPPER GONE)]" in text
    assert "wrapper process 100 is gone" in text


def test_render_file_problem():
    s = summary.summarize(summary.read_state("/nonexistent/v2v-import-x.state"), T0)
    lines = status.render_block(s, status.Style())
    assert lines == ["v2v-import-x.state  [MISSING]",
                     "  file       /nonexistent/v2v-import-x.state",
                     "  problem    no such file"]


def test_render_terminal_fits_width_and_colours(tmp_path):
    long_disks = ("[datastore1] " + "x" * 200 + ".vmdk",)
    st = make_state("failed", disks=long_disks, target="oVirt " + "e" * 150)
    st.error("ignored: the first cause wins")
    style = status.Style(width=60, color=True, unicode=True)
    lines = block(tmp_path, st, style)
    assert any(ANSI.search(line) for line in lines)
    for line in lines:
        assert len(ANSI.sub("", line)) <= 60, line
    plain = [ANSI.sub("", line) for line in lines]
    assert plain[0].endswith("FAILED") and "…" in plain[0]
    assert "█" in "".join(plain)
    assert "\x1b[31mFAILED\x1b[0m" in lines[0]


def test_render_whole_view_has_title_and_empty_message():
    lines = status.render([], status.Style(), now=T0, where="/srv/state")
    assert lines[0].startswith("virt-v2v-wrapper status  ") and "0 conversions, 0 running" in lines[0]
    assert lines[1] == "no conversions in /srv/state"


def test_redraw_moves_up_over_previous_frame():
    text, n = status.redraw(["a", "b", "c"], previous=0, rows=24)
    assert n == 3 and text == "a\x1b[K\nb\x1b[K\nc\x1b[K\n\x1b[J"
    text, n = status.redraw(["a", "b"], previous=3, rows=24)
    assert text.startswith("\r\x1b[3A") and text.endswith("\x1b[J") and n == 2


def test_redraw_taller_than_terminal_starts_from_top():
    text, n = status.redraw(["l%d" % i for i in range(30)], previous=30, rows=10)
    assert text.startswith("\x1b[H\x1b[2J") and n == 9


@pytest.mark.parametrize("value, text", [
    ("1048576", "1048576 B/s (1.0 MiB/s)"), ("512", "512 B/s"),
    ("3221225472", "3221225472 B/s (3.0 GiB/s)"), ("odd", "odd")])
def test_format_rate(value, text):
    assert status.format_rate(value) == text


# -- the command -----------------------------------------------------------------
def populate(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    write(d / "v2v-import-20270115T080000-100.state", make_state("finished", started_at=T0))
    write(d / "v2v-import-20270115T090000-101.state",
          make_state("copying", started_at=T0 + 3600, tag="20270115T090000-101"))
    (d / "v2v-import-20270115T100000-102.state").write_text('{"disks": [')
    set_mtime(str(d / "v2v-import-20270115T100000-102.state"), T0 + 7200)
    (d / "unrelated.state").write_text("not ours")
    return d


def test_status_scans_state_dir_from_environment_newest_first(tmp_path):
    d = populate(tmp_path)
    rc, out, err = run_status([], environ={"VIRT_V2V_WRAPPER_STATE_DIR": str(d)})
    assert rc == status.EXIT_UNREADABLE          # the torn file is shown, and reported
    assert err == "" and not ANSI.search(out)
    heads = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert heads == ["v2v-import-20270115T100000-102.state  [INVALID]",
                     "vm1 -> local directory /srv/out  [RUNNING]",
                     "vm1 -> local directory /srv/out  [FINISHED]"]
    assert "unrelated" not in out


def test_status_option_wins_over_environment(tmp_path):
    d = populate(tmp_path)
    other = tmp_path / "empty"
    other.mkdir()
    rc, out, _ = run_status(["--state-dir", str(other)], environ={"VIRT_V2V_WRAPPER_STATE_DIR": str(d)})
    assert rc == 0 and out == "no conversions in %s\n" % other


def test_status_files_keep_argument_order_and_report_missing(tmp_path):
    d = populate(tmp_path)
    files = [str(d / "v2v-import-20270115T080000-100.state"), str(d / "nope.state")]
    rc, out, _ = run_status(files)
    assert rc == status.EXIT_UNREADABLE
    heads = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert heads == ["vm1 -> local directory /srv/out  [FINISHED]", "nope.state  [MISSING]"]


def test_status_json(tmp_path):
    d = populate(tmp_path)
    rc, out, _ = run_status(["--json", "--state-dir", str(d)], clock=lambda: T0 + 3660)
    doc = json.loads(out)
    assert rc == 1 and doc["state_dir"] == str(d)
    outcomes = [c["outcome"] for c in doc["conversions"]]
    assert outcomes == ["invalid", "running", "finished"]
    running = doc["conversions"][1]
    assert running["vm"] == "vm1" and running["progress"] == 75
    assert running["disks"][1] == dict({"path": DISKS[1], "progress": 50},
                                       **{k: None for k in rate.SHOWN})   # no copy figures
    assert running["elapsed"] == 60 and running["throttling"] == {"cpu": None, "network": None}


def test_status_state_dir_missing(tmp_path):
    rc, out, err = run_status(["--state-dir", str(tmp_path / "nope")])
    assert rc == status.EXIT_UNREADABLE and out == ""
    assert err == "virt-v2v-wrapper status: error: cannot read the state directory %s: " \
                  "No such file or directory\n" % (tmp_path / "nope")


def test_status_usage_error_is_one_line(tmp_path):
    rc, out, err = run_status(["--bogus"])
    assert rc == status.EXIT_USAGE and out == ""
    assert err.startswith("virt-v2v-wrapper status: error:") and err.count("\n") == 1
    rc, _, err = run_status(["--watch", "--interval", "0"])
    assert rc == status.EXIT_USAGE and "--interval" in err


def test_status_through_cli(tmp_path):
    d = populate(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(["status", "--state-dir", str(d), "--json"], stdout=out, stderr=err,
                  environ=dict(NO_LOCK_DIR))
    assert rc == 1 and len(json.loads(out.getvalue())["conversions"]) == 3


def test_status_terminal_mode_without_watch(tmp_path):
    d = populate(tmp_path)
    tty = FakeTty()
    rc, _, _ = run_status(["--state-dir", str(d)], stdout=tty, tty=True,
                          term_size=lambda: os.terminal_size((70, 40)))
    text = tty.getvalue()
    assert "\x1b[36mRUNNING\x1b[0m" in text
    assert all(len(ANSI.sub("", line)) <= 69 for line in text.splitlines())
    rc, _, _ = run_status(["--state-dir", str(d), "--plain"], stdout=(plain := FakeTty()), tty=True)
    assert not ANSI.search(plain.getvalue())
    rc, _, _ = run_status(["--state-dir", str(d)], stdout=(nocol := FakeTty()), tty=True,
                          environ={"NO_COLOR": "1"})
    assert "\x1b[3" not in nocol.getvalue() and "█" in nocol.getvalue()


# -- watching ----------------------------------------------------------------------
class Script(Clock):
    """A fake clock whose sleep rewrites the state file at each tick."""

    def __init__(self, path, states):
        super().__init__(now=T0)
        self.path = path
        self.states = list(states)
        write(path, self.states.pop(0))

    def sleep(self, seconds):
        super().sleep(seconds)
        if self.states:
            nxt = self.states.pop(0)
            if nxt is not None:
                write(self.path, nxt)


def test_watch_plain_appends_a_snapshot_per_change_until_finished(tmp_path):
    path = str(tmp_path / "v2v-import-a.state")
    script = Script(path, [make_state("fresh"), None, make_state("copying"), None, None,
                           make_state("finished")])
    rc, out, _ = run_status(["--watch", path], clock=script, sleep=script.sleep)
    assert rc == 0 and len(script.sleeps) == 5
    assert not ANSI.search(out)
    snapshots = out.split("virt-v2v-wrapper status  ")[1:]
    # three distinct states, unchanged ticks print nothing
    assert len(snapshots) == 3
    assert "[RUNNING]" in snapshots[0] and "Starting" in snapshots[0]
    assert "Copying disk 2/2" in snapshots[1]
    assert "[FINISHED]" in snapshots[2]


def test_watch_terminal_redraws_in_place(tmp_path):
    path = str(tmp_path / "v2v-import-a.state")
    script = Script(path, [make_state("copying"), make_state("copying", progress=80),
                           make_state("failed")])
    tty = FakeTty()
    rc, _, _ = run_status(["--watch", "--interval", "0.5", path], stdout=tty, tty=True,
                          clock=script, sleep=script.sleep,
                          term_size=lambda: os.terminal_size((100, 50)))
    text = tty.getvalue()
    assert rc == 0
    assert text.startswith("\x1b[?25l") and text.endswith("\x1b[?25h")
    frames = text.count("virt-v2v-wrapper status  ")
    assert frames == 3 and len(re.findall(r"\r\x1b\[\d+A", text)) == 2
    assert "FAILED" in text.rsplit("virt-v2v-wrapper status", 1)[1]


def test_watch_json_lines(tmp_path):
    path = str(tmp_path / "v2v-import-a.state")
    script = Script(path, [make_state("copying"), make_state("finished")])
    rc, out, _ = run_status(["--watch", "--json", path], clock=script, sleep=script.sleep)
    docs = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and [d["conversions"][0]["outcome"] for d in docs] == ["running", "finished"]


def test_watch_stops_on_stale_and_missing(tmp_path):
    path = str(tmp_path / "v2v-import-a.state")
    write(path, make_state("copying"))
    set_mtime(path, T0)
    rc, out, _ = run_status(["--watch", path, str(tmp_path / "gone.state")], alive=alive_none,
                            clock=lambda: T0 + 600, sleep=pytest.fail)
    assert rc == 1 and "STALE" in out and "MISSING" in out


def test_watch_waits_for_a_torn_file_then_gives_up(tmp_path):
    path = tmp_path / "v2v-import-a.state"
    path.write_text('{"disks"')
    clock = Clock(now=os.stat(path).st_mtime)
    rc, out, _ = run_status(["--watch", str(path)], clock=clock, sleep=clock.sleep)
    assert rc == 1 and len(clock.sleeps) == int(summary.TORN_GRACE)
    assert out.count("[INVALID]") == 1          # unchanged snapshots are not repeated


def test_watch_interrupted_restores_cursor(tmp_path):
    path = str(tmp_path / "v2v-import-a.state")
    write(path, make_state("copying"))

    def sleep(_seconds):
        raise KeyboardInterrupt

    tty = FakeTty()
    rc, _, _ = run_status(["--watch", path], stdout=tty, tty=True, sleep=sleep)
    assert rc == 130 and tty.getvalue().endswith("\x1b[?25h")


def test_status_as_a_program_never_tracebacks(tmp_path):
    d = populate(tmp_path)
    (d / "v2v-import-20270115T110000-103.state").write_bytes(b"\x00\x01")
    env = dict(os.environ, VIRT_V2V_WRAPPER_STATE_DIR=str(d), **NO_LOCK_DIR)
    p = subprocess.run([sys.executable, "-m", "wrapper", "status"], capture_output=True, text=True,
                       env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       timeout=60)
    assert p.returncode == 1 and p.stderr == ""
    assert p.stdout.count("[INVALID]") == 2 and "Traceback" not in p.stdout


# -- reclaiming what dead wrappers left (wrapper.leases) -----------------------------
TAG = "20270115T090000-101"


def dead_wrapper(tmp_path, **record):
    """A running-looking conversion whose wrapper is gone, and its lease."""
    d = tmp_path / "state"
    d.mkdir()
    state = write(d / ("v2v-import-%s.state" % TAG), make_state("copying", tag=TAG))
    fd = fsafe.open_dir(str(d))
    secret, sfd = fsafe.mkdir_private(fd, "v2v-wrapper-secrets-")
    os.close(sfd)
    os.close(fd)
    lock = tmp_path / "lock"
    with leases.LeaseBook.open(str(lock)) as book:
        book.create(TAG, dict({
            "wrapper_pid": 999999999, "wrapper_start": 1, "state_dir": str(d),
            "state_name": os.path.basename(state), "secret_dir": secret,
            "secret_ident": list(fsafe.ident(os.stat(d / secret)))}, **record)).forget()
    env = {"VIRT_V2V_WRAPPER_STATE_DIR": str(d), "VIRT_V2V_WRAPPER_LOCK_DIR": str(lock),
           "VIRT_V2V_WRAPPER_SYSTEMD_MARKER": str(tmp_path)}
    return d, state, d / secret, lock, env


def run_cli_status(argv, environ, runner):
    """``virt-v2v-wrapper status`` through the command line, which decides about reclaiming."""
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(["status"] + argv, stdout=out, stderr=err, environ=environ, runner=runner)
    return rc, out.getvalue(), err.getvalue()


def test_status_reclaims_dead_wrappers_first(tmp_path):
    d, state, secret, lock, env = dead_wrapper(tmp_path, unit="v2v-import-%s.service" % TAG)
    runner = RecordingRunner()
    rc, out, err = run_cli_status(["--json"], env, runner)
    conv = json.loads(out)["conversions"][0]
    assert rc == 0 and err == ""
    assert conv["outcome"] == summary.FAILED and "died before the conversion finished" in conv["message"]
    assert runner.calls == [["systemctl", "stop", "v2v-import-%s.service" % TAG],
                            ["systemctl", "reset-failed", "v2v-import-%s.service" % TAG]]
    assert not secret.exists() and os.listdir(lock / "jobs") == []


def test_status_leaves_a_lease_directory_it_does_not_own_alone(tmp_path):
    d, state, secret, lock, env = dead_wrapper(tmp_path)
    os.chown(lock, 65534, 65534)
    rc, out, err = run_cli_status(["--json"], env, RecordingRunner())
    assert rc == 0 and err == ""
    assert json.loads(out)["conversions"][0]["outcome"] == summary.RUNNING
    assert secret.exists() and sorted(os.listdir(lock / "jobs")) == [TAG + ".lease", TAG + ".lock"]


def test_status_creates_no_lease_directory(tmp_path):
    env = {"VIRT_V2V_WRAPPER_LOCK_DIR": str(tmp_path / "lock")}
    rc, out, _ = run_cli_status(["--state-dir", str(tmp_path)], env, RecordingRunner())
    assert rc == 0 and not (tmp_path / "lock").exists()


def test_the_status_view_itself_never_reclaims(tmp_path):
    """Reclaiming is the command line's decision: status.main alone changes nothing."""
    d, state, secret, lock, env = dead_wrapper(tmp_path)
    before = pathlib.Path(state).read_bytes()
    rc, out, err = run_status(["--json"], environ=env, alive=alive_all)
    assert rc == 0 and json.loads(out)["conversions"][0]["outcome"] == summary.RUNNING
    assert pathlib.Path(state).read_bytes() == before and secret.exists()
    assert sorted(os.listdir(lock / "jobs")) == [TAG + ".lease", TAG + ".lock"]


def test_status_as_another_user_is_silent(tmp_path):
    """A non-root user cannot open root's lease directory: not a word about it."""
    python = "/usr/bin/python3"
    if os.geteuid() != 0 or not os.access(python, os.X_OK):
        pytest.skip("needs root and a system python3 that uid 65534 can run")
    with tempfile.TemporaryDirectory(dir="/tmp") as top:     # tmp_path is root's alone
        base = pathlib.Path(top)
        os.chmod(base, 0o755)
        d, state, secret, lock, env = dead_wrapper(base)
        os.chmod(d, 0o755)
        # a copy of the package uid 65534 can read (the checkout may be under a 0700 dir,
        # as in rpmbuild's %check)
        src = base / "src"
        shutil.copytree(os.path.dirname(wrapper_pkg.__file__), src / "wrapper",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for dirpath, _dirs, _files in os.walk(src):
            os.chmod(dirpath, 0o755)
        p = subprocess.run([python, "-m", "wrapper", "status", "--state-dir", str(d)],
                           capture_output=True, text=True, timeout=60, user=65534, group=65534,
                           extra_groups=[], cwd=str(src),
                           env=dict(env, PATH="/usr/bin:/bin", HOME="/", PYTHONPATH=str(src)))
        assert p.returncode == 0 and p.stderr == "", p.stderr
        assert "[RUNNING]" in p.stdout and secret.exists()
        assert sorted(os.listdir(lock / "jobs")) == [TAG + ".lease", TAG + ".lock"]
