#!/usr/bin/env python3
"""Benchmark: what finding an error's cause costs (wrapper/causes.py: cause_lines, then
pick) on the window the parser hands it, the 8 KiB of a real log before "virt-v2v:
error:", for captured failures of virt-v2v 2.2, 2.6 and the VDDK world.

    python3 bench/causes_bench.py [--compare REV] [--number 2000]

``--compare REV`` also times wrapper/causes.py as it is in the git revision REV, in this
one process, and prints the ratio (the machines are shared: compare within one run).
"""
import argparse
import os
import sys
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from wrapper import causes, progress  # noqa: E402
import gitrev  # noqa: E402  (bench/, next to this script)

LOGS = ("fail02-ssh-missing-vmx.vx.log", "virt-v2v-2.6/missing-vmx.vx.log",
        "virt-v2v-2.10/unknown-hostkey.vx.log", "vddk/read-error/v2v.log")


def window(name):
    with open(os.path.join(ROOT, "tests", "data", name), encoding="utf-8", errors="replace") as f:
        text = f.read()
    at = text.find("virt-v2v: error:")
    return text[max(0, at - progress.LOOKBACK):at]


def cost(module, text, number):
    """Seconds per call, the best of five."""
    run = lambda: module.pick(module.cause_lines(text, progress.MAX_CAUSE_LINES,  # noqa: E731
                                                 progress.MAX_CAUSE_TEXT))
    return min(timeit.repeat(run, number=number, repeat=5)) / number


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", metavar="REV", help="also time wrapper/causes.py of git REV")
    ap.add_argument("--number", type=int, default=2000, help="calls per timing (default 2000)")
    args = ap.parse_args()
    other = gitrev.module_at("wrapper/causes.py", args.compare) if args.compare else None
    for name in LOGS:
        text = window(name)
        now = cost(causes, text, args.number)
        line = "%-40s %7.1f us" % (name, now * 1e6)
        if other is not None:
            then = cost(other, text, args.number)
            line += "   %s: %7.1f us   ratio %.2f" % (args.compare, then * 1e6, now / then)
        print(line)


if __name__ == "__main__":
    main()
