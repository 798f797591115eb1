#!/usr/bin/env python3
"""What the rhv_url pre-flight costs before the answer, and how fast it refuses.

Runs ``python3 -m wrapper`` (foreground, a fake virt-v2v that exits at once) against the
stand-in engine of the tests (real SDK, HTTPS, SSO) and measures, N times each, the time from
start to the one JSON answer line (or to the refusal):

* ``local``: the same job with ``output_dir`` instead of ``rhv_url`` (no pre-flight);
* ``rhv``: the rhv_url job (pre-flight: python3/SDK and nbdkit probes, login, target checks);
* ``rhv+allocation``: the same with ``allocation`` given;
* refusals: a wrong password, a VM name already taken, a python3 without the SDK.

The pre-flight's cost is ``rhv - local``; compare it with a real conversion (about 90-150 s
of the test guest here, see tests/integration/test_rhv_upload_real.py) and with how long
virt-v2v alone takes to report the same refusals (after the whole conversion).

    sudo .venv/bin/python bench/preflight_bench.py [-n 10] [--json]

Needs the packages of .ci/deps-ovirt.sh (the SDK in this python, nbdkit-plugin-python).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.fakes import make_fake_v2v, rhv_upload_path  # noqa: E402
from tests.ovirt_standin.engine import StandinEngine, make_pki  # noqa: E402

FP = ":".join(["AB"] * 20)


def timed_run(argv, job, env):
    """Seconds until the answer line (or the end), and the exit code."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    p.stdin.write(json.dumps(job))
    p.stdin.close()
    p.stdout.readline()
    took = time.monotonic() - t0
    p.stdout.read()
    p.stderr.read()
    p.wait(timeout=120)
    return took, p.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="v2vw-pfb-", dir="/var/tmp")
    os.makedirs(os.path.join(work, "pki"))
    pki = make_pki(os.path.join(work, "pki"))
    engine = StandinEngine(pki, password="Bench-Pa55word").start()
    dc = engine.add_data_center("dc1")
    engine.add_cluster("Default", dc)
    engine.add_storage_domain("data", "nfs", data_center=dc)
    bin_dir = os.path.join(work, "bin")
    os.makedirs(bin_dir)
    exe = make_fake_v2v(bin_dir, duration=0)
    path = rhv_upload_path(bin_dir)
    no_sdk_dir = os.path.join(work, "nosdk")
    os.makedirs(no_sdk_dir)
    os.symlink("/usr/bin/python3", os.path.join(no_sdk_dir, "python3"))
    base = {"vm_name": "vm1", "transport_method": "vddk",
            "vmware_uri": "esx://root@127.0.0.1?no_verify=1", "vmware_password": "pw",
            "vmware_fingerprint": FP, "daemonize": False}
    rhv = dict(base, rhv_url=engine.api_url, rhv_password=engine.password,
               rhv_cluster="Default", rhv_storage="data", rhv_cafile=pki.ca)
    cases = {
        "local": (dict(base, output_dir=work), path, 0),
        "rhv": (rhv, path, 0),
        "rhv+allocation": (dict(rhv, allocation="sparse"), path, 0),
        "refused: wrong password": (dict(rhv, rhv_password="nope"), path, 1),
        "refused: VM name taken": (dict(rhv, vm_name="taken"), path, 1),
        "refused: python3 without the SDK": (rhv, no_sdk_dir + ":" + path, 1),
    }
    engine.add_vm("taken")
    results = {}
    try:
        for i in range(args.n):
            for name, (job, p, want) in cases.items():
                state = os.path.join(work, "state-%s-%d" % (name.split()[0].strip(":"), i))
                logs = state + "-logs"
                os.makedirs(state, exist_ok=True)
                os.makedirs(logs, exist_ok=True)
                argv = [sys.executable, "-m", "wrapper", "--state-dir", state, "--log-dir", logs,
                        "--virt-v2v", exe]
                env = dict(os.environ, PATH=p, PYTHONPATH=ROOT)
                took, rc = timed_run(argv, job, env)
                if rc != want:
                    raise SystemExit("%s: exit %s, expected %s" % (name, rc, want))
                results.setdefault(name, []).append(took)
    finally:
        engine.stop()
        subprocess.run(["rm", "-rf", work])
    medians = {k: statistics.median(v) for k, v in results.items()}
    if args.json:
        print(json.dumps({"n": args.n, "median_seconds": medians}, indent=2))
        return
    print("median of %d runs, seconds from start to the answer (or the refusal):" % args.n)
    for name, m in medians.items():
        print("  %-34s %6.3f   (min %.3f, max %.3f)" % (name, m, min(results[name]),
                                                       max(results[name])))
    print("pre-flight cost: %.3f s (rhv - local); %.1fx the local job's answer time"
          % (medians["rhv"] - medians["local"], medians["rhv"] / medians["local"]))


if __name__ == "__main__":
    main()
