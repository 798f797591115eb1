#!/usr/bin/env python3
"""What the VDDK pre-flight (wrapper.vmware.preflight) costs and what it saves.

Against the VDDK test world (tests/integration/vddk/: govmomi's simulator behind its
TLS front, nbdkit's real vddk plugin from Debian 13, the file-backed libvixDiskLib),
for a good job and five bad ones (wrong fingerprint, wrong password, unknown VM,
powered-on VM, library directory without libvixDiskLib.so.N):

* the pre-flight alone, as the run-as user, ``--runs`` times (median, min, max);
* real virt-v2v 2.2 alone on the same bad job (``-o null``, once each), i.e. how long
  the job would have run before failing without the pre-flight, and the line it ends with.

Root, from a checkout, with the world's packages (.ci/deps-vddk.sh):

    python3 bench/vddk_preflight_bench.py [--runs 5] [--no-virt-v2v] [--user v2vw-vddk]
"""
import argparse
import os
import pwd
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from tests.integration.guestimage import ensure_guest_images  # noqa: E402
from tests.integration.vddk import world as W  # noqa: E402
from wrapper import runner  # noqa: E402
from wrapper.config import VddkSource  # noqa: E402
from wrapper.errors import JobError  # noqa: E402
from wrapper.security.secrets import Secret  # noqa: E402
from wrapper.users import RunUser  # noqa: E402
from wrapper.vmware import preflight  # noqa: E402

V2V_TIMEOUT = 900


def cases(sim, empty):
    good = dict(uri=sim.esx_uri(), password=sim.password, fingerprint=sim.thumbprint,
                vm="testvm", libdir=str(sim.libdir))
    return [
        ("good job", good),
        ("wrong fingerprint", dict(good, fingerprint=":".join(["AA"] * 20))),
        ("wrong password", dict(good, password="not-" + sim.password)),
        ("unknown VM", dict(good, vm="ghost")),
        ("powered-on VM", dict(good, vm="running")),
        ("empty libdir", dict(good, libdir=empty)),
    ]


def time_preflight(case, user, path, runs):
    times, line = [], "accepted"
    for _ in range(runs):
        t0 = time.monotonic()
        try:
            preflight.check(VddkSource(case["uri"], Secret(case["password"]), case["fingerprint"]),
                            case["vm"], case["libdir"], user, {"PATH": path}, 10,
                            run_as=runner.run_as)
        except JobError as e:
            line = str(e)
        times.append(time.monotonic() - t0)
    return times, line


def time_virt_v2v(case, path, scratch):
    pw = os.path.join(scratch, "pw-%d" % time.monotonic_ns())
    with open(os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(case["password"])
    argv = ["virt-v2v", "-i", "libvirt", "-ic", case["uri"], "-it", "vddk",
            "-io", "vddk-libdir=%s" % case["libdir"], "-io", "vddk-thumbprint=%s" % case["fingerprint"],
            "-ip", pw, case["vm"], "-o", "null"]
    env = dict(os.environ, PATH=path, LANG="C", LIBGUESTFS_BACKEND="direct")
    env.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    t0 = time.monotonic()
    try:
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=V2V_TIMEOUT)
        rc, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired:
        rc, err = "timeout", ""
    took = time.monotonic() - t0
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln]
    return took, rc, (errors or lines or [""])[-1][:200]


def run_as_user(name):
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        pw = pwd.getpwnam("nobody")
    return RunUser(pw.pw_uid, pw.pw_gid, pw.pw_name, "/")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-virt-v2v", action="store_true", help="time the pre-flight only")
    ap.add_argument("--user", default="v2vw-vddk", help="the run-as user (default v2vw-vddk, "
                                                       "else nobody)")
    opts = ap.parse_args()
    world = W.ensure_world()
    if not world.has_plugin:
        sys.exit("the VDDK world has no real vddk plugin: nothing to measure")
    images = ensure_guest_images()
    user = run_as_user(opts.user)
    path = "%s:%s" % (world.wrapper_dir, os.environ.get("PATH", "/usr/bin:/bin"))
    scratch = tempfile.mkdtemp(prefix="v2vw-vddkbench-", dir="/var/tmp")
    os.chmod(scratch, 0o755)
    empty = os.path.join(scratch, "empty-vddk")
    os.makedirs(os.path.join(empty, "lib64"))
    for d in (empty, os.path.join(empty, "lib64")):
        os.chmod(d, 0o755)
    print("VDDK pre-flight as %s, %d runs each; nbdkit vddk plugin %s" % (
        user.name, opts.runs, world.plugin_kind))
    with W.Standin(world, {"testvm": [images.os_disk], "running": [images.os_disk]},
                   powered_on=("running",)) as sim:
        for name, case in cases(sim, empty):
            times, line = time_preflight(case, user, path, opts.runs)
            print("\n%-18s pre-flight median %.2f s (min %.2f, max %.2f)\n  %s" % (
                name, statistics.median(times), min(times), max(times), line[:200]))
            if not opts.no_virt_v2v and name != "good job":
                took, rc, last = time_virt_v2v(case, path, scratch)
                print("  virt-v2v alone: %.1f s, exit %s: %s" % (took, rc, last))
                print("  difference: %+.1f s (virt-v2v alone minus the pre-flight; the pre-flight "
                      "refuses before the answer: no failed job, no state file)"
                      % (took - statistics.median(times)))
    subprocess.run(["rm", "-rf", "--", scratch])


if __name__ == "__main__":
    main()
