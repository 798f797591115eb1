"""Peak memory of ``status`` and ``metrics`` over planted state files
(issue 20, class 6: 36 MB of planted files took status to 805 MB).

    python bench/hostile_state_bench.py [--source TREE] [--total-mb 36] [--file-kb 1024]

Plants ``total-mb`` of state files of ``file-kb`` each in a fresh directory
(many tiny disk objects: the shape that costs a reader most per byte), then
runs ``python -m wrapper status --plain``, ``status --json`` and ``metrics``
from TREE (default: this checkout) under /usr/bin/time -v and prints the
peak RSS of each.  Point --source at an older tree to compare.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plant(directory, total_mb, file_kb):
    """State files full of tiny disks; returns how many."""
    unit = b'{"path":"d"},'
    body = unit * max(1, (file_kb * 1024 - 40) // len(unit))
    text = b'{"vm":"x","disks":[' + body[:-1] + b'],"finished":false}'
    count = max(1, total_mb * 1024 // file_kb)
    for i in range(count):
        with open(os.path.join(directory, "v2v-import-planted-%05d.state" % i), "wb") as f:
            f.write(text)
    return count


def peak_kb(source, argv, env):
    p = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "wrapper"] + argv,
                       cwd=source, env=dict(env, PYTHONPATH=source), capture_output=True,
                       text=True, timeout=1800)
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return int(m.group(1)) if m else None, p.returncode


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default=HERE)
    ap.add_argument("--total-mb", type=int, default=36)
    ap.add_argument("--file-kb", type=int, default=1024)
    opts = ap.parse_args(argv)
    d = tempfile.mkdtemp(prefix="v2vw-bench-")
    try:
        count = plant(d, opts.total_mb, opts.file_kb)
        env = dict(os.environ, VIRT_V2V_WRAPPER_STATE_DIR=d,
                   VIRT_V2V_WRAPPER_LOCK_DIR=os.path.join(d, "no-lock-dir"))
        print("%d files of %d KiB in %s, source %s" % (count, opts.file_kb, d, opts.source))
        for args in (["status", "--plain"], ["status", "--json"], ["metrics"]):
            kb, rc = peak_kb(opts.source, args, env)
            print("  %-18s peak RSS %7.1f MB  (exit %s)" % (" ".join(args), (kb or 0) / 1024, rc))
    finally:
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
