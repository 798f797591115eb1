#!/usr/bin/env python3
"""VDDK copy throughput on this machine: a large random-data disk (incompressible, no holes)
read through the VDDK test world (tests/integration/vddk/: SOAP stand-in, file-backed VDDK
library, nbdkit's real vddk plugin), three ways:

* ``ceiling``: ``nbdcopy`` straight from ``nbdkit vddk`` to a file, no virt-v2v;
* ``virt-v2v``: virt-v2v 2.2 alone (``-v -x``, the argv the wrapper builds), ``-o local``;
* ``wrapper``: the same job through the wrapper (foreground), which reads virt-v2v's log
  and keeps the state file while it copies.

The VM has the test guest's OS disk (inspected and converted) and the random disk as its
second disk; the figure is the random disk's copy phase (virt-v2v's ``[ t ] Copying disk
2/2`` to its next step), in MB/s, and the wrapper/virt-v2v ratio. Root, from a checkout:

    python3 bench/vddk_throughput.py [--size-mb 1024] [--runs 1]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from tests.integration.fx_vddk import vddk_path  # noqa: E402
from tests.integration.guestimage import ensure_guest_images  # noqa: E402
from tests.integration.vddk import world as W  # noqa: E402
from tests.integration.vddkrun import VddkRun, vddk_job  # noqa: E402

STEP = re.compile(r"^\[ *(\d+\.\d+)\] (.*)$", re.M)


def random_disk(cache, size_mb):
    path = os.path.join(str(cache), "bench-random-%dM.img" % size_mb)
    if not os.path.exists(path):
        tmp = path + ".tmp"
        with open("/dev/urandom", "rb") as src, open(tmp, "wb") as dst:
            for _ in range(size_mb):
                dst.write(src.read(1 << 20))
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    return path


def copy_phase(log_text, disk="2/2"):
    """Seconds from ``Copying disk N/M`` to virt-v2v's next timed step."""
    steps = [(float(t), what) for t, what in STEP.findall(log_text)]
    for i, (t, what) in enumerate(steps):
        if what.startswith("Copying disk %s" % disk) and i + 1 < len(steps):
            return steps[i + 1][0] - t
    raise ValueError("no 'Copying disk %s' step in the log" % disk)


def v2v_env(world):
    return dict(os.environ, PATH=vddk_path(world), LANG="C",
                LIBGUESTFS_BACKEND=os.environ.get("LIBGUESTFS_BACKEND", "direct"),
                LIBGUESTFS_BACKEND_SETTINGS=os.environ.get("LIBGUESTFS_BACKEND_SETTINGS",
                                                           "force_tcg"))


def ceiling(world, sim, out):
    argv = ["nbdkit", "-U", "-", "-r", "vddk", "server=127.0.0.1", "user=root",
            "password=+%s" % sim.password_file, "thumbprint=%s" % sim.thumbprint,
            "libdir=%s" % sim.libdir, "vm=moref=%s" % sim.morefs["benchvm"],
            "file=%s" % W.datastore_path("benchvm", 1),
            "--run", "nbdcopy --request-size=2M $uri %s" % os.path.join(out, "ceiling.img")]
    t0 = time.monotonic()
    subprocess.run(argv, env=v2v_env(world), check=True, capture_output=True, timeout=3600)
    return time.monotonic() - t0


def virt_v2v_alone(world, sim, out):
    argv = ["virt-v2v", "-v", "-x", "-i", "libvirt", "-ic", sim.esx_uri(), "-it", "vddk",
            "-io", "vddk-libdir=%s" % sim.libdir, "-io", "vddk-thumbprint=%s" % sim.thumbprint,
            "-ip", str(sim.password_file), "-o", "local", "-os", out, "-of", "raw", "benchvm"]
    r = subprocess.run(argv, env=v2v_env(world), capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError("virt-v2v failed: %s" % r.stderr[-2000:])
    return copy_phase(r.stdout + r.stderr)


def through_wrapper(sim):
    run = VddkRun("bench", sim, None)
    try:
        run.start(vddk_job(sim, "benchvm", output_dir=run.out, daemonize=False))
        state = run.wait_finished(timeout=3600)
        if state.get("failed"):
            raise RuntimeError("wrapper run failed: %s" % state.get("last_message"))
        return copy_phase(run.text("v2v_log"))
    finally:
        run.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    world = W.ensure_world()
    disk = random_disk(world.cache, args.size_mb)
    size = os.path.getsize(disk) / 1e6
    vms = {"benchvm": [ensure_guest_images().os_disk, disk]}
    results = {"ceiling": [], "virt-v2v": [], "wrapper": []}
    with W.Standin(world, vms) as sim:
        for i in range(args.runs):
            out = tempfile.mkdtemp(prefix="v2vw-bench-", dir="/var/tmp")
            try:       # interleaved: a busy machine slows each the same
                results["ceiling"].append(ceiling(world, sim, out))
                os.unlink(os.path.join(out, "ceiling.img"))
                results["virt-v2v"].append(virt_v2v_alone(world, sim, out))
                results["wrapper"].append(through_wrapper(sim))
            finally:
                shutil.rmtree(out, ignore_errors=True)
            print("run %d: %s" % (i + 1, {k: round(v[-1], 2) for k, v in results.items()}),
                  flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print("random disk %.0f MB, plugin %s, %d run(s), median copy time and rate:"
          % (size, world.plugin_kind, args.runs))
    for k in ("ceiling", "virt-v2v", "wrapper"):
        print("  %-9s %7.2f s  %7.1f MB/s" % (k, med[k], size / med[k]))
    print("  wrapper / virt-v2v copy time: %.3f; virt-v2v / ceiling: %.3f"
          % (med["wrapper"] / med["virt-v2v"], med["virt-v2v"] / med["ceiling"]))


if __name__ == "__main__":
    main()
