#!/usr/bin/env python3
"""Benchmark: feed a large virt-v2v 2.x verbose log through the progress
pipeline (LogTail -> LogParser -> apply -> State) and print MB/s and peak RSS.

The log is built from the captured virt-v2v 2.2 fixtures: the debug-heavy
middle of a real run repeated until the size is reached, with the real
"Copying disk" lines and nbdcopy bar frames spread through it, so the
parser sees the same mix of lines as on a big guest.

    python3 bench/progress_bench.py [--size-mb 256] [--keep FILE] [--compare REV] [--errors]

``--compare REV`` also parses the same log with wrapper/progress.py as it is in the git
revision REV (e.g. ``main``), alternating runs in this one process, and prints the ratio.
``--errors`` puts a failure's lines (2.6+'s plugin line, nbdcopy's echo and a
"virt-v2v: error: ..., see earlier error messages") after every repetition of the body:
the parser's worst case for error-cause extraction (a real log has one or two).
"""
import argparse
import os
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from wrapper import progress  # noqa: E402
import gitrev  # noqa: E402  (bench/, next to this script)
from wrapper.monitor import LogTail  # noqa: E402
from wrapper.state import State, apply  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(HERE), "tests", "data", "run05-vmx-ssh-port-uri.vx.log")


ERROR_LINES = (
    b"nbdkit: ssh[1]: error: all possible authentication methods failed\n"
    b"nbdcopy: nbd+unix://?socket=/tmp/v2vssh.AbC123/nbdkit1.sock: nbd_connect_uri: the server "
    b"has no export named '': all possible authentication methods failed: No such file or "
    b"directory\n"
    b"virt-v2v: error: could not copy the VMX file from the remote server, see earlier error "
    b"messages\n")


def build_log(path, size_mb, disks=4, errors=False):
    with open(FIXTURE, "rb") as f:
        real = f.read()
    body = real[: real.find(b"Copying disk")] + (ERROR_LINES if errors else b"")
    target = size_mb << 20
    per_disk = target // disks
    with open(path, "wb") as out:
        written = 0
        for d in range(disks):
            out.write(b"running nbdkit:\n LANG=C 'nbdkit' '--unix' '/tmp/v2v.X/in%d' 'ssh' "
                      b"'path=/vmfs/volumes/ds/vm/vm_%d-flat.vmdk'\n" % (d, d))
        for d in range(disks):
            out.write(b"[  52.1] Copying disk %d/%d\n" % (d + 1, disks))
            disk_written = 0
            step = 0
            while disk_written < per_disk:
                out.write(body)
                pct = min(100, step)
                out.write(b"\xe2\x96\x9d %3d%% [****----]\r" % pct)
                disk_written += len(body)
                step += 1
            written += disk_written
    return os.path.getsize(path)


def module_at(rev):
    """wrapper/progress.py as it is in the git revision ``rev``, as a module."""
    return gitrev.module_at("wrapper/progress.py", rev)


def run(path, dialect, module=progress):
    tail = LogTail(path)
    parser = module.LogParser(dialect)
    state = State()
    events = 0
    t0 = time.perf_counter()
    while True:
        got = False
        for data in tail.chunks():      # one monitor step's worth at a time
            got = True
            for event in parser.feed(data):
                apply(state, _same(event))   # both revisions pay the same
                events += 1
        if not got:
            break
    for event in parser.flush():
        apply(state, _same(event))   # both revisions pay the same
    elapsed = time.perf_counter() - t0
    tail.close()
    return elapsed, events, state


def _same(event):
    """An event (of either revision's module) as this tree's (same name and fields;
    a field this tree added keeps its default); done for both, so both pay for it."""
    cls = getattr(progress, type(event).__name__)
    return cls(**vars(event))


def compare(path, dialect, rev, rounds=5):
    """Best-of-``rounds`` seconds of this tree's parser and of ``rev``'s, alternating."""
    other = module_at(rev)
    best = {"this tree": None, rev: None}
    pair = (("this tree", progress), (rev, other))
    for i in range(rounds):
        for name, module in (pair if i % 2 == 0 else pair[::-1]):     # neither always first
            elapsed = run(path, dialect, module)[0]
            best[name] = elapsed if best[name] is None else min(best[name], elapsed)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--keep", help="build the log here and keep it")
    ap.add_argument("--dialect", type=int, choices=(1, 2), default=2,
                    help="virt-v2v major version the parser is told (the wrapper knows it)")
    ap.add_argument("--both", action="store_true", help="parse without a dialect hint too")
    ap.add_argument("--compare", metavar="REV", help="also time wrapper/progress.py of git REV")
    ap.add_argument("--errors", action="store_true",
                    help="an error and its cause lines after every repetition (worst case)")
    args = ap.parse_args()
    path = args.keep or tempfile.mktemp(prefix="v2vw-bench-", suffix=".log", dir="/var/tmp")
    try:
        t0 = time.perf_counter()
        size = build_log(path, args.size_mb, errors=args.errors)
        built = time.perf_counter() - t0
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        mb = size / (1 << 20)
        for dialect in ([args.dialect, None] if args.both else [args.dialect]):
            elapsed, events, state = run(path, dialect)
            print("log: %.0f MiB (built in %.1fs), dialect %s: %d events, disks %s" % (
                mb, built, dialect or "unknown", events, [d["progress"] for d in state["disks"]]))
            print("throughput: %.0f MiB/s (%.2fs)" % (mb / elapsed, elapsed))
        if args.compare:
            best = compare(path, args.dialect, args.compare)
            ours, theirs = best["this tree"], best[args.compare]
            print("compare (best of 5, same log, same process): this tree %.2fs (%.0f MiB/s), "
                  "%s %.2fs (%.0f MiB/s): this tree takes %.2fx the time" % (
                      ours, mb / ours, args.compare, theirs, mb / theirs, ours / theirs))
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("peak RSS: %.1f MiB before parsing, %.1f MiB after (growth %.1f MiB)" % (
            rss_before / 1024, rss_after / 1024, (rss_after - rss_before) / 1024))
    finally:
        if not args.keep and os.path.exists(path):
            os.unlink(path)


if __name__ == "__main__":
    main()
