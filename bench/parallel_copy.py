#!/usr/bin/env python3
"""The copy phase of a two-disk guest with and without ``--parallel`` (issue 21), in the
same world and the same run, and the rate and time left ``status`` and the metrics show.

Real conversions through the wrapper (tests/integration/parallel_world.py): ``testvm2``
(512 MiB OS disk, 64 MiB data disk) from the fake ESXi host over ssh, in the Debian sid
world (virt-v2v 2.10, built by .ci/worlds.sh), alternating ``--parallel 2`` (the default)
and ``VIRT_V2V_WRAPPER_PARALLEL=1`` so a busy machine slows both alike.  Root, from a
checkout, a few minutes per conversion under TCG:

    LIBGUESTFS_BACKEND_SETTINGS=force_tcg python3 bench/parallel_copy.py [--pairs 1] [--world sid]

Per conversion it prints the copy phase two ways -- the state file's own per-disk
``started_at``/``finished_at`` (first start to last end), and the polled stages (first
``Copying disk`` to the first stage after the copy) -- the whole conversion, and every
``status --json`` / metrics sample taken while the disks copied: per-disk progress, rate and
time left, and the overall ones.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
from tests.integration import fake_esxi as fx  # noqa: E402
from tests.integration import guestimage, parallel_world as pw, worlds  # noqa: E402
from wrapper import rate, stages  # noqa: E402

MODES = (("parallel 2", {}), ("serial", {"VIRT_V2V_WRAPPER_PARALLEL": "1"}))


def stage_copy_seconds(run):
    start = next((t for t, s in run.states if stages.is_copying(str(s.get("stage", "")))), None)
    end = next((t for t, s in run.states if stages.is_after_copy(str(s.get("stage", "")))), None)
    return None if start is None or end is None else end - start


def fmt(value, kind):
    if value is None:
        return "-"
    if kind == "rate":
        return rate.format_speed(value)
    if kind == "eta":
        return "%.0fs" % value
    return "%s" % value


def show_samples(run):
    for t, summary, metrics in run.samples:
        disks = "  ".join("d%d %s%% %s eta %s" % (i + 1, d.get("progress"), fmt(d.get("rate"), "rate"),
                                                   fmt(d.get("eta"), "eta"))
                          for i, d in enumerate(summary.get("disks", [])))
        mrate = metrics.get("v2v_disk_copy_rate_bytes_per_second", {})
        meta = metrics.get("v2v_disk_remaining_seconds", {})
        print("    %6.1fs  status: %s | overall %s eta %s | metrics rate %s eta %s" % (
            t, disks, fmt(summary.get("rate"), "rate"), fmt(summary.get("eta"), "eta"),
            {k: fmt(v, "rate") for k, v in sorted(mrate.items())},
            {k: fmt(v, "eta") for k, v in sorted(meta.items())}))


def one(world, esxi, mode, env, every):
    t0 = time.monotonic()
    run, state = pw.convert(world, esxi, mode.replace(" ", ""), env=env, every=every)
    try:
        total = time.monotonic() - t0
        ok = "failed" not in state
        phase, polled = pw.copy_phase(state), stage_copy_seconds(run)
        print("  %-10s %s  copy phase %s s (state), %s s (stages)  conversion %.0f s" % (
            mode, "ok" if ok else "FAILED", "%.1f" % phase if phase else "-",
            "%.1f" % polled if polled else "-", total))
        for d, c in zip(state["disks"], state["copy"]["disks"]):
            print("    %-40s started %.1f finished %.1f  average %s" % (
                d["path"], c.get("started_at", 0) - state["started_at"],
                c.get("finished_at", 0) - state["started_at"], fmt(c.get("rate"), "rate")))
        show_samples(run)
        return phase if ok else None
    finally:
        run.cleanup()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=1)
    p.add_argument("--world", default="sid")
    p.add_argument("--every", type=float, default=1.0, help="seconds between status samples")
    args = p.parse_args()
    world = worlds.get(args.world)
    if world is None:
        sys.exit(worlds.not_ready_reason(args.world))
    images = guestimage.ensure_guest_images()
    with fx.FakeEsxi({"os": images.os_disk, "data": images.data_disk}) as esxi:
        with pw.trusted(world, esxi):
            phases = {mode: [] for mode, _ in MODES}
            for i in range(args.pairs):
                print("pair %d (%s, virt-v2v %s)" % (i + 1, world.name, world.version), flush=True)
                for mode, env in (MODES if i % 2 == 0 else MODES[::-1]):
                    phases[mode].append(one(world, esxi, mode, env, args.every))
    for mode, values in phases.items():
        values = [v for v in values if v]
        print("%-10s copy phase: %s" % (mode, ", ".join("%.1f s" % v for v in values) or "-")
              + ("  (median %.1f s)" % statistics.median(values) if values else ""))


if __name__ == "__main__":
    main()
