#!/usr/bin/env python3
"""Measure the wrapper's own overhead during a REAL conversion (root, virt-v2v installed).

Runs ``python3 -m wrapper`` in the foreground (``"daemonize": false``: same monitoring loop as
the daemon, but the wrapper stays our child so the kernel's accounting is exact) on the
two-disk test guest from the fake ESXi host (tests/integration), and reports:

* CPU seconds of the wrapper process itself (utime+stime from /proc/<pid>/stat, read while
  it is a zombie: waitid(WNOWAIT) keeps it unreaped) vs. the whole conversion
  (getrusage(RUSAGE_CHILDREN) of this script once everything is reaped; this script is a
  child subreaper, so orphaned descendants such as the wrapper's ssh-agent and libguestfs'
  recovery process are reaped here and counted too);
* the wrapper's peak RSS (VmHWM, sampled every 10 ms until it exits);
* progress latency: this script polls the virt-v2v log every 10 ms (no inotify) and stamps
  the first sighting of each ``Copying disk N/M`` and nbdcopy bar percentage, polls the state
  file every 10 ms and stamps when that disk/percentage first shows there; the difference is
  the delay a client sees. Both pollers are one loop, so resolution is ~10 ms.

    sudo python3 bench/overhead.py [--vm testvm2] [--keep DIR] [--json]

Needs the packages of .ci/deps-virt-v2v.sh. Env: LIBGUESTFS_BACKEND_SETTINGS (default
force_tcg), V2VW_CACHE_DIR (guest image cache).
"""
import argparse
import ctypes
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import fake_esxi  # noqa: E402
import guestimage  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36
CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL = 0.01

R_COPYING = re.compile(rb"Copying disk (\d+)/(\d+)")
R_BAR = re.compile(rb"(\d{1,3})% \[")


def set_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def proc_stat_times(pid):
    """(self seconds, waited-for children seconds) from /proc/<pid>/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    # after the comm field: state is fields[0], utime is field 14 overall -> index 11
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def vm_hwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class LogWatcher:
    """First-seen times of (disk index, percent) in the virt-v2v log, read incrementally."""

    def __init__(self, path):
        self.path = path
        self.f = None
        self.pending = b""
        self.disk = None
        self.seen = {}          # (disk, pct) -> monotonic time
        self.bytes = 0

    def poll(self, now):
        if self.f is None:
            try:
                self.f = open(self.path, "rb")
            except FileNotFoundError:
                return
        data = self.f.read()
        if not data:
            return
        self.bytes += len(data)
        text = self.pending + data
        # keep an unterminated tail for the next read (a bar frame may be split)
        cut = max(text.rfind(b"\n"), text.rfind(b"\r"))
        self.pending = text[cut + 1:]
        text = text[:cut + 1]
        pos = 0
        events = []
        for m in R_COPYING.finditer(text):
            events.append((m.start(), "copy", int(m.group(1)) - 1))
        for m in R_BAR.finditer(text):
            events.append((m.start(), "bar", int(m.group(1))))
        for pos, kind, value in sorted(events):
            if kind == "copy":
                self.disk = value
                self.seen.setdefault((value, 0), now)
            elif self.disk is not None:
                self.seen.setdefault((self.disk, value), now)


class StateWatcher:
    def __init__(self, path):
        self.path = path
        self.seen = {}          # (disk, pct) -> time: the first state with progress >= pct
        self.states = 0
        self.last = None
        self.copying = None

    def poll(self, now):
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        if text == self.last:
            return None
        self.last = text
        state = json.loads(text)
        self.states += 1
        m = re.match(r"Copying disk (\d+)/", str(state.get("stage", "")))
        if m:
            self.copying = int(m.group(1)) - 1
            self.seen.setdefault((self.copying, 0), now)
        for i, d in enumerate(state.get("disks", [])):
            self.seen.setdefault(("progress", i, d["progress"]), now)
        return state

    def first_at_least(self, disk, pct):
        times = [t for k, t in self.seen.items()
                 if k[0] == "progress" and k[1] == disk and k[2] >= pct]
        return min(times) if times else None


def run(args):
    images = guestimage.ensure_guest_images()
    work = tempfile.mkdtemp(prefix="v2vw-bench-", dir="/var/tmp")
    try:
        with fake_esxi.FakeEsxi({"os": images.os_disk, "data": images.data_disk}) as esxi:
            return measure(args, esxi, work)
    finally:
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for name in os.listdir(os.path.join(work, "logs")):
                shutil.copy(os.path.join(work, "logs", name), args.keep)
        shutil.rmtree(work, ignore_errors=True)


def measure(args, esxi, work):
    state_dir, log_dir, out_dir = (os.path.join(work, d) for d in ("state", "logs", "out"))
    for d in (state_dir, log_dir, out_dir):
        os.makedirs(d)
    job = {"vm_name": esxi.vm_uri(args.vm), "transport_method": "ssh",
           "ssh_key": esxi.client_private_key_text, "output_dir": out_dir,
           "source_disks": [esxi.vddk_style_path(args.vm, d) for d in esxi.disk_files(args.vm)],
           "daemonize": False}
    env = dict(os.environ, PYTHONPATH=ROOT, LIBGUESTFS_BACKEND="direct")
    env.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    set_subreaper()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(os.path.join(work, "stderr.txt"), "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "wrapper", "--state-dir", state_dir,
                                 "--log-dir", log_dir], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, cwd=ROOT, env=env)
    proc.stdin.write(json.dumps(job).encode())
    proc.stdin.close()
    paths = json.loads(proc.stdout.readline())
    logw, statew = LogWatcher(paths["v2v_log"]), StateWatcher(paths["state_file"])
    hwm = 0
    final = None
    while True:
        now = time.monotonic()
        logw.poll(now)
        final = statew.poll(now) or final
        hwm = max(hwm, vm_hwm_kib(proc.pid) or 0)
        # a zombie (exited, unreaped) ends the loop; WNOWAIT keeps /proc/<pid>/stat readable
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            break
        time.sleep(POLL)
    wall = time.monotonic() - t0
    now = time.monotonic()
    logw.poll(now)
    final = statew.poll(now) or final
    wrapper_self, wrapper_children = proc_stat_times(proc.pid)
    rc = proc.wait()
    # reap orphans reparented to us (ssh-agent, libguestfs recovery) so they are counted
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.1)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

    delays = []
    for (disk, pct), t_log in sorted(logw.seen.items()):
        t_state = statew.first_at_least(disk, pct) if pct else statew.seen.get((disk, 0))
        if t_state is not None:
            delays.append({"disk": disk + 1, "percent": pct,
                           "log_s": round(t_log - t0, 3), "state_s": round(t_state - t0, 3),
                           "delay_ms": round((t_state - t_log) * 1000)})
    ok = rc == 0 and final is not None and final.get("finished") and not final.get("failed")
    return {
        "vm": args.vm, "wrapper_exit": rc, "success": bool(ok), "wall_s": round(wall, 1),
        "wrapper_cpu_s": round(wrapper_self, 2),
        "conversion_cpu_s": round(total, 2),
        "wrapper_children_cpu_s_waited": round(wrapper_children, 2),
        "wrapper_cpu_share_pct": round(100 * wrapper_self / total, 2) if total else None,
        "wrapper_peak_rss_mib": round(hwm / 1024, 1),
        "v2v_log_bytes": logw.bytes, "state_writes_seen": statew.states,
        "progress_delays": delays,
        "delay_ms": summary([d["delay_ms"] for d in delays]),
        "final_state": final,
    }


def summary(values):
    if not values:
        return None
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "max": max(values)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vm", default="testvm2", choices=("testvm", "testvm2"))
    ap.add_argument("--keep", help="copy the wrapper's logs here")
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("overhead.py: run as root (sshd, virt-v2v)")
    r = run(args)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0 if r["success"] else 1
    print("conversion of %s: %s, wrapper exit %d, %.1f s wall" % (
        r["vm"], "success" if r["success"] else "FAILED", r["wrapper_exit"], r["wall_s"]))
    print("CPU: wrapper itself %.2f s of %.2f s for the whole conversion (%.2f %%)" % (
        r["wrapper_cpu_s"], r["conversion_cpu_s"], r["wrapper_cpu_share_pct"] or 0))
    print("wrapper peak RSS: %.1f MiB; virt-v2v log %d bytes; %d state writes seen" % (
        r["wrapper_peak_rss_mib"], r["v2v_log_bytes"], r["state_writes_seen"]))
    print("progress step -> state file delay (ms): %s" % (r["delay_ms"],))
    for d in r["progress_delays"]:
        print("  disk %(disk)d %(percent)3d%%: log %(log_s)8.3f s, state %(state_s)8.3f s, "
              "delay %(delay_ms)4d ms" % d)
    return 0 if r["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
