"""`virt-v2v-wrapper status --watch` against real wrapper daemons running the fake virt-v2v.

Three ways to look: a pipe (plain appended snapshots), a pseudo-terminal (redrawn in
place), and a real terminal emulator (tmux, read back with capture-pane).

``V2VW_CAPTURE_TO=docs/status-watch.txt pytest -m integration -k tmux`` also writes
the tmux capture used in the documentation.
"""
import fcntl
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import time

import pytest

from tests import wrapperrun as wr
from tests.fakes import data, make_fake_v2v

pytestmark = pytest.mark.integration
CAPTURE_TO = os.environ.get("V2VW_CAPTURE_TO")

FP = ":".join(["AB"] * 20)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
DISK_LINE = re.compile(r"disk (\d)/2 +\[[^\]]*\] +([0-9.]+)%")


class Conversions:
    """Wrapper daemons started by one test; whatever still runs at the end is stopped."""

    def __init__(self, tmp_path):
        self.dirs = wr.WrapperDirs(tmp_path)
        self.state_files = []
        self.log = slow_copy_log(os.path.join(str(tmp_path), "slow-copy.vx.log"))

    def start(self, name, vm, scenario, **job):
        bindir = os.path.join(self.dirs.bin, name)
        os.makedirs(bindir)
        exe = make_fake_v2v(bindir, **scenario)
        document = {"vm_name": vm, "transport_method": "vddk", "vmware_uri": "esx://root@10.2.0.20?no_verify=1",
                    "vmware_password": "pw", "vmware_fingerprint": FP, "output_dir": self.dirs.out,
                    "daemonize": True}
        document.update(job)
        r = wr.run(self.dirs.args(exe), document, timeout=60)
        assert r.returncode == 0, r.stderr
        state_file = json.loads(r.stdout)["state_file"]
        self.state_files.append(state_file)
        return state_file

    def status_cmd(self, *args):
        return wr.wrapper_cmd("status", "--state-dir", self.dirs.state, *args)

    def stop_all(self):
        for path in self.state_files:
            try:
                state = wr.read_state(path)
            except (OSError, ValueError):
                continue
            if state.get("finished"):
                continue
            for key in ("wrapper_pid", "pid"):
                pid = state.get(key)
                if isinstance(pid, int) and wr.pid_alive(pid):
                    os.kill(pid, signal.SIGTERM)
                    wr.wait_gone(pid, timeout=20)


@pytest.fixture
def conversions(tmp_path):
    # the documentation capture shows paths: keep them short there
    base = tempfile.mkdtemp(prefix="v2vw-", dir="/var/tmp") if CAPTURE_TO else tmp_path
    c = Conversions(base)
    try:
        yield c
    finally:
        c.stop_all()
        if CAPTURE_TO:
            shutil.rmtree(base, ignore_errors=True)


FRAME = re.compile(rb"\xe2\x96[\x80-\xbf] +0% \[.*?\xe2\x96\x88 100% \[\*+\]\n", re.S)


def slow_copy_log(path, filler=40):
    """The recorded two-disk log with nbdcopy's bar stretched to 101 frames per disk.

    The recording copied its small disks in a blink (disk 2 prints only 0 % and 100 %);
    the fake replays bytes at an even pace, so padding the copy with nbdkit-style debug
    lines makes the copy take about half of the replay, as it does on real guests.
    """
    with open(data("v2v-2.2-ssh-2disk.vx.log"), "rb") as f:
        log = f.read()

    def stretched(_match):
        out = []
        for k in range(101):
            stars = 40 * k // 100
            out.append(b"\xe2\x96\x9d %3d%% [%s%s]%s" % (k, b"*" * stars, b"-" * (40 - stars),
                                                         b"\n" if k == 100 else b"\r"))
            if k < 100:
                out.extend(b"nbdkit: ssh[4]: debug: ssh: pread count=2097152 offset=%d\n"
                           % ((k * filler + i) << 21) for i in range(filler))
        return b"".join(out)

    log, count = FRAME.subn(stretched, log)
    assert count == 2, "the recorded log changed: %d copy sections" % count
    with open(path, "wb") as f:
        f.write(log)
    return str(path)


def two_disk(duration, log):
    return dict(log=log, mr=data("v2v-2.2-ssh-2disk.mr.log"), duration=duration,
                chunks=int(duration * 20))


def failing(duration):
    return dict(log=data("fail02-ssh-missing-vmx.vx.log"), mr=data("fail02-ssh-missing-vmx.vx.mr.log"),
                duration=duration, chunks=10, exit_code=1)


def start_three(conversions, duration):
    """A finished conversion, then a failing one and a long two-disk one."""
    done = conversions.start("done", "web01", two_disk(2.0, conversions.log),
                             source_disks=["[datastore1] web01/web01.vmdk", "[datastore1] web01/web01_1.vmdk"])
    wr.wait_state(done, lambda s: s.get("finished"), timeout=60)
    time.sleep(1.1)           # distinct tags (one-second resolution) and start times
    bad = conversions.start("bad", "nosuchvm", failing(1.0))
    time.sleep(1.1)
    main = conversions.start("main", "testvm2", two_disk(duration, conversions.log),
                             source_disks=["[datastore1] testvm2/testvm2.vmdk",
                                           "[datastore1] testvm2/testvm2_1.vmdk"])
    return done, bad, main


def disk_progress(snapshot):
    return [(int(i), float(p)) for i, p in DISK_LINE.findall(snapshot)]


def test_watch_plain_until_every_conversion_is_over(conversions):
    _done, bad, main = start_three(conversions, duration=8.0)
    started = time.monotonic()
    p = subprocess.run(conversions.status_cmd("--watch", "--interval", "0.2"), capture_output=True,
                       text=True, timeout=120, cwd=wr.ROOT, env=wr.env())
    elapsed = time.monotonic() - started
    assert p.returncode == 0 and p.stderr == ""
    assert not ANSI.search(p.stdout)
    # it returned because all were over, not before: the last one finished while watching
    assert wr.read_state(main).get("finished") and wr.read_state(bad).get("failed")
    assert elapsed > 3.0
    snapshots = p.stdout.split("virt-v2v-wrapper status  ")[1:]
    assert len(snapshots) >= 5
    running = [s for s in snapshots if "testvm2 -> local directory" in s and "[RUNNING]" in s]
    assert running, "never saw the conversion running"
    # the main conversion's block comes first (newest first) and its disks only move forward
    seen = [disk_progress(s.split("\n\n")[1]) for s in snapshots]
    for disk in (1, 2):
        values = [dict(d).get(disk, 0.0) for d in seen]
        assert values == sorted(values), values
        assert values[-1] == 100.0
    assert any(0 < v < 100 for d in seen for _i, v in d), "no partial progress was ever shown"
    final = snapshots[-1]
    heads = [line for line in final.splitlines() if line and not line.startswith(" ")]
    assert heads[1:] == ["testvm2 -> local directory %s  [FINISHED]" % conversions.dirs.out,
                         "nosuchvm -> local directory %s  [FAILED]" % conversions.dirs.out,
                         "web01 -> local directory %s  [FINISHED]" % conversions.dirs.out]
    assert ("error      could not copy the VMX file from the remote server: scp: "
            "/vmfs/volumes/datastore1/nosuchvm/nosuchvm.vmx: No such file or directory") in final
    assert "code       vmx_missing" in final
    assert "0 running" in final


def read_pty(fd, proc, timeout):
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:          # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out.decode("utf-8", "replace")


def test_watch_on_a_terminal_redraws_in_place(conversions):
    main = conversions.start("main", "testvm2", two_disk(5.0, conversions.log))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 90, 0, 0))
    env = wr.env(LANG="C.UTF-8", TERM="xterm")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(conversions.status_cmd("--watch", "--interval", "0.25", main),
                            stdin=slave, stdout=slave, stderr=slave, cwd=wr.ROOT, env=env,
                            close_fds=True)
    os.close(slave)
    try:
        text = read_pty(master, proc, timeout=90)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert text.startswith("\x1b[?25l") and text.endswith("\x1b[?25h")
    redraws = re.findall(r"\r\x1b\[(\d+)A", text)
    assert len(redraws) >= 5
    frames = text.split("virt-v2v-wrapper status  ")[1:]
    assert "\x1b[36mRUNNING\x1b[0m" in frames[0] or "RUNNING" in ANSI.sub("", frames[1])
    assert "FINISHED" in frames[-1] and "█" in text
    for line in ANSI.sub("", text).replace("\r", "\n").splitlines():
        assert len(line) <= 89, line


def tmux(socket, *args, check=True):
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True,
                          timeout=30, check=check)


@pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed (apt-get install tmux)")
def test_watch_in_tmux(conversions):
    """The capture a person would see in a real terminal emulator."""
    capture_to = CAPTURE_TO
    duration = 30.0 if capture_to else 10.0
    _done, _bad, main = start_three(conversions, duration)
    socket = "v2vw-status-%d" % os.getpid()
    env = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in (
        ("PYTHONPATH", wr.ROOT), ("LANG", "C.UTF-8"), ("TERM", "tmux-256color")))
    command = "cd %s && env %s %s; sleep 600" % (
        shlex.quote(wr.ROOT), env, " ".join(shlex.quote(a) for a in conversions.status_cmd("--watch")))
    tmux(socket, "-f", "/dev/null", "new-session", "-d", "-x", "100", "-y", "42", command)
    try:
        mid = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            screen = tmux(socket, "capture-pane", "-p", "-t", "0").stdout
            progress = disk_progress(screen.split("\n\n")[1] if "\n\n" in screen else "")
            if "Copying disk 2/2" in screen and any(i == 2 and 20 < v < 80 for i, v in progress):
                mid = screen
                break
            time.sleep(0.3)
        assert mid, "never caught the second disk being copied"
        wr.wait_state(main, lambda s: s.get("finished"), timeout=120)
        time.sleep(2.5)          # a refresh or two after the end
        final = tmux(socket, "capture-pane", "-p", "-t", "0").stdout
    finally:
        tmux(socket, "kill-server", check=False)
    for screen in (mid, final):
        assert "virt-v2v-wrapper status  " in screen and "Traceback" not in screen
        assert max(len(line) for line in screen.splitlines()) <= 100
    assert "RUNNING" in mid and "FAILED" in mid and "█" in mid and "░" in mid
    assert "3 conversions, 0 running" in final and "FINISHED" in final
    if capture_to:
        with open(capture_to, "w", encoding="utf-8") as f:
            f.write("# `virt-v2v-wrapper status --watch` in tmux (100x42), captured with\n"
                    "# `tmux capture-pane -p` by tests/integration/test_status_watch.py\n"
                    "# (V2VW_CAPTURE_TO=docs/status-watch.txt) while three wrapper daemons ran the\n"
                    "# fake virt-v2v replaying recorded virt-v2v 2.2 logs.  No colours in a text\n"
                    "# capture; on a terminal the outcome is coloured.\n\n"
                    "## During the conversion\n\n")
            f.write(mid.rstrip("\n") + "\n\n## When every conversion is over (status exits 0)\n\n")
            f.write(final.rstrip("\n") + "\n")
