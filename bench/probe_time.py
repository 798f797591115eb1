#!/usr/bin/env python3
"""What asking the installed virt-v2v costs a job (wrapper.v2vinfo.probe):
``--machine-readable`` alone (what the wrapper asked before) against the whole
probe (``--version``, ``--help`` and, for a vddk job, ``-io ?`` of ``-it vddk``),
interleaved so that a busy machine slows both alike.  From a checkout:

    python3 bench/probe_time.py [--runs 15] [--virt-v2v PATH]

Prints the median and quartiles of each, and the difference of the medians.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wrapper import runner, v2vinfo  # noqa: E402


def measure(fn, times):
    t = time.monotonic()
    fn()
    times.append(time.monotonic() - t)


def show(name, times):
    q = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
    print("%-24s median %.3f s  (quartiles %.3f-%.3f, %d runs)" % (name, q[1], q[0], q[2], len(times)))
    return q[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--virt-v2v", default="virt-v2v")
    a = p.parse_args()
    env = {"LANG": "C", "PATH": os.environ.get("PATH", os.defpath)}
    before, ssh, vddk = [], [], []
    for _ in range(a.runs):
        measure(lambda: runner.run([a.virt_v2v, "--machine-readable"], env=env), before)
        measure(lambda: v2vinfo.probe(a.virt_v2v, runner.run, env=env), ssh)
        measure(lambda: v2vinfo.probe(a.virt_v2v, runner.run, env=env, vddk=True), vddk)
    base = show("--machine-readable only", before)
    print("%-24s +%.3f s" % ("", show("probe (ssh job)", ssh) - base))
    print("%-24s +%.3f s" % ("", show("probe (vddk job)", vddk) - base))


if __name__ == "__main__":
    main()
