#!/usr/bin/env python3
"""A small real stand-in for virt-v2v-inspector (tests/test_inspect.py).

Run as ``fake_inspector.py --scenario FILE <virt-v2v-inspector arguments>``
(tests put that line in a generated executable next to the fake virt-v2v).
It replays what the real 2.2 wrote for the fake ESXi host's guests
(tests/data/inspector-2.2/): the verbose log on stdout, the
machine-readable log to ``--machine-readable=file:``, the XML report to
``-O``.  The scenario (JSON) says:

* ``report``, ``log``, ``mr``: the captured files to replay (paths);
* ``exit_code``: status at the end;
* ``hold``: seconds to sleep before finishing, with a child process in the
  same process group doing the same (like nbdkit and qemu); its PID goes to
  ``pid_file`` (``<pid> <child pid>``) so a test can see that both are gone;
* ``record``: a path where argv, the environment and the content of the
  ``-ip`` password file and of the ``-io vddk-config=`` copy are written as JSON.
"""
import json
import os
import subprocess
import sys
import time


def main(argv):
    scenario = json.load(open(argv[argv.index("--scenario") + 1]))
    args = argv[argv.index("--scenario") + 2:]
    mr = next((a.split("file:", 1)[1] for a in args if a.startswith("--machine-readable=file:")), None)
    report = args[args.index("-O") + 1] if "-O" in args else None
    if scenario.get("record"):
        files = {}
        if "-ip" in args:
            with open(args[args.index("-ip") + 1]) as f:
                files["-ip"] = f.read()
        for a in args:
            if a.startswith("vddk-config="):
                with open(a.split("=", 1)[1]) as f:
                    files["vddk-config"] = f.read()
        with open(scenario["record"], "w") as f:
            json.dump({"argv": args, "env": dict(os.environ), "files": files, "uid": os.getuid()}, f)
    if scenario.get("log"):
        with open(scenario["log"], "rb") as f:
            sys.stdout.buffer.write(f.read())
            sys.stdout.flush()
    if mr and scenario.get("mr"):
        with open(scenario["mr"], "rb") as src, open(mr, "wb") as dst:
            dst.write(src.read())
    if scenario.get("hold"):
        child = subprocess.Popen(["sleep", str(scenario["hold"])])
        if scenario.get("pid_file"):
            with open(scenario["pid_file"], "w") as f:
                f.write("%d %d\n" % (os.getpid(), child.pid))
        time.sleep(scenario["hold"])
    if report and scenario.get("report"):
        with open(scenario["report"], "rb") as src, open(report, "wb") as dst:
            dst.write(src.read())
    return scenario.get("exit_code", 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
