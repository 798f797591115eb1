#!/usr/bin/env python3
"""What ``virt-v2v-wrapper inspect`` costs against a full conversion of the same guest.

Starts the fake ESXi host of the tests (sshd on 127.0.0.1, the cached Debian 12 test guest)
and runs, one after the other (never at once: the machine has few cores), N times each:

* ``inspect``: ``python3 -m wrapper inspect`` on the job (virt-v2v-inspector 2.2 through
  the ssh transport);
* ``convert``: the same job converted (``--foreground``, ``output_dir``), to the end.

It prints the seconds of each run, the median of each, and the ratio inspect/convert.

Measured here (2 cores, TCG, other conversions running, testvm2: 512 MiB + 64 MiB): inspect
308.6 s, convert 267.5 s (ratio 1.15); the inspector alone, less loaded, 91 s.  The inspector
boots the appliance and converts the guest in an overlay like virt-v2v does, then computes the
estimates: for the tiny test guest it costs as much as the whole conversion, whose copy is a few
seconds; what it saves grows with the disks (the copy is what it skips).  Run as
root with the environment of the integration tests:

    sudo LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg \\
        .venv/bin/python bench/inspect_bench.py [-n 1] [--vm testvm2] [--json]
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.integration import fake_esxi, guestimage  # noqa: E402


def timed(argv, job, env):
    t0 = time.monotonic()
    p = subprocess.run(argv, input=json.dumps(job), capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=3600)
    return time.monotonic() - t0, p.returncode


def one_round(fx, vm, env):
    root = tempfile.mkdtemp(prefix="v2vw-bench-", dir="/var/tmp")
    try:
        os.chmod(root, 0o755)
        dirs = {d: os.path.join(root, d) for d in ("state", "logs", "out")}
        for d in dirs.values():
            os.makedirs(d)
        job = {"vm_name": fx.vm_uri(vm), "transport_method": "ssh",
               "ssh_key": fx.client_private_key_text, "output_dir": dirs["out"],
               "source_disks": [fx.vddk_style_path(vm, d) for d in fx.disk_files(vm)]}
        where = ["--state-dir", dirs["state"], "--log-dir", dirs["logs"]]
        py = [sys.executable, "-m", "wrapper"]
        inspect = timed(py + ["inspect"] + where, job, env)
        convert = timed(py + ["--foreground"] + where, job, env)
        return inspect, convert
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1)
    ap.add_argument("--vm", default="testvm2", choices=("testvm", "testvm2"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    env = dict(os.environ, LANG="C")
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    images = guestimage.ensure_guest_images()
    rounds = []
    with fake_esxi.FakeEsxi({"os": images.os_disk, "data": images.data_disk}) as fx:
        for _ in range(args.n):
            rounds.append(one_round(fx, args.vm, env))
    inspect = [r[0][0] for r in rounds]
    convert = [r[1][0] for r in rounds]
    result = {"vm": args.vm, "inspect_s": [round(x, 1) for x in inspect],
              "inspect_exit": [r[0][1] for r in rounds],
              "convert_s": [round(x, 1) for x in convert], "convert_exit": [r[1][1] for r in rounds],
              "ratio": round(statistics.median(inspect) / statistics.median(convert), 2)}
    if args.json:
        print(json.dumps(result))
    else:
        print("inspect: %s s (exit %s)" % (result["inspect_s"], result["inspect_exit"]))
        print("convert: %s s (exit %s)" % (result["convert_s"], result["convert_exit"]))
        print("inspect / convert (medians): %.2f" % result["ratio"])


if __name__ == "__main__":
    main()
