#!/usr/bin/env python3
"""How long the caller waits for its answer: a normal daemonized job, the
answer line on stdout, measured for one or more source trees in one run
(interleaved, so a busy machine slows every tree alike: compare ratios).

The job is what an orchestrator sends through ``sudo`` (simulated: root with
``SUDO_UID``/``SUDO_GID`` of ``nobody``): vddk, the password in a file the
caller owns (opened through the privilege boundary where the tree has one),
``output_dir``, daemon mode, no systemd (the plain-child fallback) and a fake
virt-v2v that exits at once.  Root, from a checkout:

    python3 bench/answer_time.py [--runs 15] [--source OLD_TREE] [--source NEW_TREE]

Prints the median and quartiles per tree and each tree's median relative to
the first one's.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from tests.fakes import make_fake_v2v  # noqa: E402

NOBODY = 65534


def world(root):
    """Directories, the caller's password file and the fake virt-v2v."""
    d = {k: os.path.join(root, k) for k in ("state", "logs", "lock", "out", "bin", "caller")}
    for k, p in d.items():
        os.mkdir(p, 0o755)
    os.chmod(d["lock"], 0o700)
    os.chmod(d["out"], 0o777)
    os.chown(d["caller"], NOBODY, NOBODY)
    pw = os.path.join(d["caller"], "pw")
    with open(pw, "w") as f:
        f.write("secret")
    os.chmod(pw, 0o600)
    os.chown(pw, NOBODY, NOBODY)
    d["pw"] = pw
    d["exe"] = make_fake_v2v(d["bin"], python="/usr/bin/python3", exit_code=0)
    return d


def one(source, d):
    job = {"vm_name": "testvm", "transport_method": "vddk",
           "vmware_uri": "esx://root@127.0.0.1?no_verify=1", "vmware_password_file": d["pw"],
           "vmware_fingerprint": ":".join(["AB"] * 20), "output_dir": d["out"]}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUDO_", "VIRT_V2V_WRAPPER_"))}
    env.update(PYTHONPATH=source, SUDO_UID=str(NOBODY), SUDO_GID=str(NOBODY), SUDO_USER="nobody",
               VIRT_V2V_WRAPPER_LOCK_DIR=d["lock"],
               VIRT_V2V_WRAPPER_SYSTEMD_MARKER=os.path.join(d["bin"], "no-systemd"),
               # no VMware host answers this job (bench/vddk_preflight_bench.py times that)
               VIRT_V2V_WRAPPER_VDDK_PREFLIGHT="off")
    argv = [sys.executable, "-m", "wrapper", "--state-dir", d["state"], "--log-dir", d["logs"],
            "--virt-v2v", d["exe"]]
    start = time.monotonic()
    r = subprocess.run(argv, input=json.dumps(job), text=True, capture_output=True, env=env,
                       cwd="/", timeout=120)
    took = time.monotonic() - start
    if r.returncode != 0 or "state_file" not in r.stdout:
        raise SystemExit("%s: exit %d: %s" % (source, r.returncode, r.stderr.strip()[-500:]))
    return took


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--source", action="append", help="a source tree (default: this checkout)")
    a = ap.parse_args()
    sources = [os.path.abspath(s) for s in (a.source or [os.path.dirname(HERE)])]
    root = tempfile.mkdtemp(prefix="v2vw-answer-", dir="/var/tmp")
    os.chmod(root, 0o755)
    try:
        d = world(root)
        times = {s: [] for s in sources}
        for _ in range(a.runs):
            for s in sources:
                times[s].append(one(s, d))
        time.sleep(2)                 # the daemons' fake conversions end
        base = statistics.median(times[sources[0]])
        for s in sources:
            t = sorted(times[s])
            q = statistics.quantiles(t, n=4)
            print("%-40s median %.3f s  (q1 %.3f, q3 %.3f)  x%.2f" % (
                s, statistics.median(t), q[0], q[2], statistics.median(t) / base))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
