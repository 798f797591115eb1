#!/usr/bin/env python3
"""A small real stand-in for virt-v2v used by the process tests.

Run as ``fake_virt_v2v.py --scenario FILE <virt-v2v arguments>`` (tests put
that line in a generated executable).  The scenario (JSON) says:

* ``log``: a captured verbose log to replay on stdout (``-v -x`` output),
  at a pace: ``duration`` seconds in all, in ``chunks`` pieces;
* ``mr``: the matching machine-readable log; each line is written to the
  ``--machine-readable=file:`` path when its message shows up in the replay;
* ``frame_pause``: seconds between progress-bar frames;
* ``exit_code``: status at the end; ``cpu_burn``: seconds of busy loop
  before exiting (for CPU throttling tests); ``hold``: seconds to sleep;
* ``record``: a path where argv, environment, and the contents of the
  files named by -ip/-op/--key/-oo rhv-cafile=/-io vddk-config= (``files``) and by --bandwidth-file
  (``bandwidth``) are written as JSON (for leak tests);
* ``tcp_send``: ``{"host", "port", "seconds", "stop_file", "child"}``: before
  the replay, send bulk TCP to host:port for ``seconds`` or until
  ``stop_file`` exists (for network throttling tests); with ``child`` the
  sending is done by a forked child (like virt-v2v's nbdkit), the fake waits.

* ``copies``: ``[{"size": bytes, "seconds": s}, ...]``, one per disk: after the
  replay, copy the disks like virt-v2v 2.8+, with up to ``--parallel N`` copies at
  once: the nbdkit source lines (``…/inK``, ``path=``), then per disk "Copying disk",
  nbdinfo's size and an ``nbdcopy`` run from PATH (``nbdcopy_dir`` is put after
  the wrapper's shim, before the host's own nbdcopy), whose stand-in
  (FAKE_NBDCOPY below) takes ``seconds``; then "Creating output metadata".

On SIGTERM it behaves like virt-v2v 2.2: prints "virt-v2v: Exiting on
signal SIGTERM" and exits 1.
"""
import json
import os
import signal
import sys
import time

# virt-v2v 2.2's answer to --machine-readable (tests/data/virt-v2v--machine-readable.txt)
CAPABILITIES = """virt-v2v
virt-v2v-2.0
libguestfs-rewrite
vcenter-https
xen-ssh
vddk
colours-option
vdsm-compat-option
io/oo
mac-option
bandwidth-option
mac-ip-option
input:disk
input:libvirt
input:libvirtxml
input:ova
input:vmx
output:glance
output:kubevirt
output:libvirt
output:local
output:null
output:openstack
output:qemu
output:rhv
output:rhv-upload
output:vdsm
convert:linux
convert:windows
ovf:ovirt
ovf:rhvexp
"""


# virt-v2v 2.2's answers to the other probes (tests/data/virt-v2v-2.2/caps/), trimmed
PROBE_ANSWERS = {
    "version": "virt-v2v 2.2.0\n",
    "help": "Options:\n  -b, --bridge <in:out>   Map bridge\n  --bandwidth-file <filename>  Set\n"
            "  -i <disk|libvirt|libvirtxml|ova|vmx>\n  -ic <uri>\n  -io <option[=value]>\n"
            "  -ip <filename>\n  -it <transport>\n  --key <SELECTOR>\n  --mac <mac:network|bridge|ip:out>\n"
            "  --machine-readable[=format]\n  -n, --network <in:out>\n  -o <glance|local|rhv|rhv-upload>\n"
            "  -oa <sparse|preallocated>\n  -oc <uri>\n  -of <raw|qcow2>\n  -oo <option[=value]>\n"
            "  -op <filename>\n  -os <storage>\n  --root <ask|... >\n  -v, --verbose\n  -x\n",
    "io": "Input options (-io) which can be used with -it vddk:\n\n"
          "  -io vddk-thumbprint=xx:xx:xx:...\n  -io vddk-config=FILE\n  -io vddk-libdir=LIBDIR\n"
          "  -io vddk-transports=MODE:MODE:..\n",
}


def on_term(signum, _frame):
    sys.stdout.write("virt-v2v: Exiting on signal %s\n" % signal.Signals(signum).name)
    sys.stdout.flush()
    os._exit(1)


def record(path, argv):
    files = {}
    for i, a in enumerate(argv):
        target = None
        if a in ("-ip", "-op") and i + 1 < len(argv):
            target = argv[i + 1]
        elif a == "--key" and i + 1 < len(argv) and ":file:" in argv[i + 1]:
            target = argv[i + 1].split(":file:", 1)[1]
        elif a in ("-oo", "-io") and i + 1 < len(argv) and argv[i + 1].startswith(
                ("rhv-cafile=", "ovirt-cafile=", "vddk-config=")):
            target = argv[i + 1].split("=", 1)[1]
        if target:
            try:
                st = os.stat(target)
                with open(target) as f:
                    files[target] = {"content": f.read(), "mode": st.st_mode & 0o777,
                                     "uid": st.st_uid}
            except OSError as e:
                files[target] = {"error": str(e)}
    bandwidth = None
    if "--bandwidth-file" in argv[:-1]:
        try:
            with open(argv[argv.index("--bandwidth-file") + 1]) as f:
                bandwidth = f.read()
        except OSError as e:
            bandwidth = str(e)
    with open(path, "w") as f:
        json.dump({"argv": argv, "env": dict(os.environ), "files": files, "bandwidth": bandwidth,
                   "pid": os.getpid(),
                   "uid": os.getuid()}, f)


# a stand-in nbdcopy: progress in 10 steps over FAKE_NBDCOPY_SECONDS, to --progress=FD
# or as a bar on stderr (--progress), like nbdcopy(1)
FAKE_NBDCOPY = """#!/bin/sh
fd=
for a in "$@"; do case "$a" in --progress=*) fd=${a#--progress=};; --progress) fd=bar;; esac; done
for n in 0 10 20 30 40 50 60 70 80 90 100; do
  if [ "$fd" = bar ]; then printf '\\r\\342\\226\\235 %3d%% [****]' $n >&2
  elif [ -n "$fd" ]; then echo "$n/100" >&$fd; fi
  [ $n = 100 ] || sleep "$FAKE_NBDCOPY_SECONDS"
done
"""


def copy_disks(copies, args, mr, nbdcopy_dir):
    """Copy like virt-v2v 2.8+ (see ``copies`` in the module docstring)."""
    import subprocess
    streams = int(args[args.index("--parallel") + 1]) if "--parallel" in args[:-1] else 1
    out = sys.stdout.buffer
    for k in range(len(copies)):
        out.write(b"nbdkit: debug: /usr/bin/nbdkit '--foreground' '--unix' '/tmp/v2v.fake/in%d' 'ssh' "
                  b"'path=/vmfs/volumes/datastore1/testvm2/disk%d-flat.vmdk'\n" % (k, k))
    out.flush()
    running = []
    for k, disk in enumerate(copies):
        while len(running) >= streams:
            running.pop(0).wait()
        line = "Copying disk %d/%d" % (k + 1, len(copies))
        out.write(("[  %d.0] %s\n\texport-size: %d\n\turi: nbd+unix:///?socket=/tmp/v2v.fake/in%d\n"
                   % (10 + k, line, disk["size"], k)).encode())
        out.flush()
        if mr:
            mr.write(json.dumps({"message": line, "timestamp": "", "type": "message"}).encode() + b"\n")
        path = os.environ.get("PATH", "").split(":")
        at = next((i for i, entry in enumerate(path) if os.path.basename(entry) != "shims"), len(path))
        env = dict(os.environ, FAKE_NBDCOPY_SECONDS=str(disk["seconds"] / 10.0),
                   PATH=":".join(path[:at] + [nbdcopy_dir] + path[at:]))
        running.append(subprocess.Popen(["nbdcopy", "nbd+unix:///?socket=/tmp/v2v.fake/in%d" % k,
                                         "nbd+unix:///vm-sd%s?socket=/tmp/v2v.fake/out0" % "abcd"[k],
                                         "--flush", "--progress"], env=env))
    for proc in running:
        proc.wait()
    if mr:
        mr.write(json.dumps({"message": "Creating output metadata", "timestamp": "",
                             "type": "message"}).encode() + b"\n")


def _send(host, port, seconds, stop_file):
    import socket
    deadline = time.monotonic() + 5
    while True:
        try:
            s = socket.create_connection((host, port), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    s.settimeout(None)
    chunk = b"\0" * (1 << 16)
    end = time.monotonic() + seconds
    next_look = 0.0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if stop_file and now >= next_look:
            if os.path.exists(stop_file):
                break
            next_look = now + 0.05
        s.send(chunk)
    s.close()


def tcp_send(spec):
    args = (spec["host"], int(spec["port"]), float(spec.get("seconds", 10)), spec.get("stop_file"))
    if not spec.get("child"):
        _send(*args)
        return
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        status = 0
        try:
            _send(*args)
        except BaseException:
            import traceback
            traceback.print_exc()
            status = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    os.waitpid(pid, 0)


def main():
    args = sys.argv[1:]
    scenario = {}
    if args[:1] == ["--scenario"]:
        with open(args[1]) as f:
            scenario = json.load(f)
        args = args[2:]
    if args == ["--machine-readable"]:
        sys.stdout.write(scenario.get("capabilities", CAPABILITIES))
        return 0
    if args in (["--version"], ["--help"]) or args[-2:] == ["-io", "?"]:
        # the other probes (wrapper.v2vinfo): 2.2's answers, or the scenario's
        key = {"--version": "version", "--help": "help"}.get(args[0], "io")
        sys.stdout.write(scenario.get(key, PROBE_ANSWERS[key]))
        return 0
    signal.signal(signal.SIGTERM, on_term)
    if scenario.get("record"):
        record(scenario["record"], args)
    if scenario.get("tcp_send"):
        tcp_send(scenario["tcp_send"])
    mr_path = next((a.split("=file:", 1)[1] for a in args if a.startswith("--machine-readable=file:")), None)
    mr_lines = []
    if scenario.get("mr"):
        with open(scenario["mr"], "rb") as f:
            mr_lines = f.read().splitlines(keepends=True)
    mr = open(mr_path, "wb", buffering=0) if mr_path else None
    data = b""
    if scenario.get("log"):
        with open(scenario["log"], "rb") as f:
            data = f.read()
    chunks = max(1, int(scenario.get("chunks", 50)))
    pause = float(scenario.get("duration", 1.0)) / chunks
    size = max(1, -(-len(data) // chunks))
    out = sys.stdout.buffer
    frame_pause = float(scenario.get("frame_pause", 0))
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        if frame_pause and b"% [" in piece:
            # nbdcopy's bar: one frame at a time, like a real copy
            for frame in piece.split(b"\r"):
                out.write(frame + b"\r")
                out.flush()
                if b"% [" in frame:
                    time.sleep(frame_pause)
        else:
            out.write(piece)
            out.flush()
        while mr_lines and mr:
            try:
                message = json.loads(mr_lines[0])["message"].split("\n")[0].encode()
            except (ValueError, KeyError):
                message = b""
            if message and message not in data[:i + size]:
                break
            mr.write(mr_lines.pop(0))
        time.sleep(pause)
    if scenario.get("copies"):
        copy_disks(scenario["copies"], args, mr, scenario["nbdcopy_dir"])
    if mr:
        for line in mr_lines:
            mr.write(line)
        mr.close()
    deadline = time.monotonic() + float(scenario.get("cpu_burn", 0))
    while time.monotonic() < deadline:
        pass
    time.sleep(float(scenario.get("hold", 0)))
    return int(scenario.get("exit_code", 0))


if __name__ == "__main__":
    sys.exit(main())
