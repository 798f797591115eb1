#!/usr/bin/env python3
"""Turn a captured virt-v2v ``-v -x`` log into a small, stable test fixture.

    PYTHONPATH=. tools/trim_v2v_log.py IN OUT [--replace OLD=NEW ...] [--port N] [--auto]

* **Trim**: a log over :data:`KEEP_WHOLE` bytes keeps its first and last lines and every line
  the progress parser (wrapper/progress.py) or a cause finder could look at -- each line with
  one of the parser's markers, an error, a cause-like phrase (``_R_CAUSE``), an
  ``export-size`` -- with :data:`CONTEXT` lines around each (but no context line over
  :data:`MAX_CONTEXT_LINE` bytes: libguestfs's trace dumps).  Bar frames (``\\r``-separated)
  stay with their line.  Smaller logs (the fast failures) are kept whole.
* **Stable tokens**: ``--replace OLD=NEW`` (e.g. the run directory -> ``RUN``) and ``--port``
  (the fake ESXi host's random port -> ``PORT``) are applied everywhere.  ``--auto`` finds
  them in a log of tests/integration/test_version_matrix.py: its run directory
  (``/var/tmp/v2vw-rc-*``), the source's port (``@127.0.0.1:N``) and the run's marker
  variable.
* **Checked**: the trimmed log must give :class:`wrapper.progress.LogParser` exactly the
  events of the (token-replaced) full log; otherwise nothing is written and the exit is 1.

tests/data/virt-v2v-2.6/README.md lists how each fixture was made.
"""
import argparse
import re
import sys

from wrapper import progress

KEEP_WHOLE = 64 << 10
CONTEXT = 6
HEAD, TAIL = 30, 60
MAX_CONTEXT_LINE = 2048
NOT_CAUSES = (b"libguestfs: trace:",)
EXTRA = (b"export-size", b"error", b"Error", b"Copying disk", b"nbdcopy", b"--unix",
         b"Exiting on signal", b"Finishing off", b"Creating output metadata")


def markers():
    """Every literal the parser searches for, in any dialect."""
    found = set()
    for rules in progress.MARKERS.values():
        for marker, _ in rules:
            if marker != b"%":
                found.add(marker)
    return tuple(found)


def interesting(line, needles, parser_needles):
    if b"% [" in line or b"/100%)" in line:
        return True
    if line.startswith(NOT_CAUSES):
        # libguestfs's call traces name files and errors by the thousand: only a real
        # parser marker makes one worth keeping
        return any(n in line for n in parser_needles)
    if any(n in line for n in needles):
        return True
    return bool(progress._R_CAUSE.search(line.decode("utf-8", "replace")))


def trim(blob, context=CONTEXT):
    if len(blob) <= KEEP_WHOLE:
        return blob
    lines = blob.split(b"\n")
    keep = set(range(min(HEAD, len(lines)))) | set(range(max(0, len(lines) - TAIL), len(lines)))
    parser_needles = markers()
    needles = parser_needles + EXTRA
    hits = {i for i, line in enumerate(lines) if interesting(line, needles, parser_needles)}
    for i in hits:
        keep.update(range(max(0, i - context), min(len(lines), i + context + 1)))
    # a context line that is a libguestfs trace dump (file lists: ~100 KB) says nothing here
    return b"\n".join(lines[i] for i in sorted(keep)
                      if i in hits or len(lines[i]) <= MAX_CONTEXT_LINE)


def stabilise(blob, replacements, port):
    for old, new in replacements:
        blob = blob.replace(old.encode(), new.encode())
    if port:
        blob = re.sub(rb"(?<!\d)%d(?!\d)" % port, b"PORT", blob)
    return blob


def auto_tokens(blob):
    """(replacements, port) for a log of a test run (see the module doc)."""
    text = blob.decode("utf-8", "replace")
    replacements = [[d, "RUN"] for d in sorted(set(re.findall(r"/var/tmp/v2vw-rc-[A-Za-z0-9_]+",
                                                               text)))]
    replacements += [[m, "LIBGUESTFS_V2VW_TEST_RUN=MARKER"] for m in sorted(set(
        re.findall(r"LIBGUESTFS_V2VW_TEST_RUN=[A-Za-z0-9_.-]+", text)))]
    port = re.search(r"@(?:127\.0\.0\.1|localhost):(\d+)/", text)
    return replacements, int(port.group(1)) if port else 0


def events(blob):
    parser = progress.LogParser(None)
    out = []
    for i in range(0, len(blob), 65536):
        out += parser.feed(blob[i:i + 65536])
    return [repr(e) for e in out + parser.flush()]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--replace", action="append", default=[], metavar="OLD=NEW")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--auto", action="store_true", help="find the run's tokens in the log")
    args = ap.parse_args(argv)
    replacements = [r.split("=", 1) for r in args.replace]
    port = args.port
    with open(args.src, "rb") as f:
        raw = f.read()
    if args.auto:
        found, port = auto_tokens(raw)
        replacements += found
    full = stabilise(raw, replacements, port)
    small = trim(full)
    if events(small) != events(full):
        sys.stderr.write("trim_v2v_log: %s: the trimmed log parses differently; not written\n"
                         % args.src)
        return 1
    with open(args.dst, "wb") as f:
        f.write(small)
    print("%s: %d -> %d bytes, %d parser events" % (args.dst, len(full), len(small),
                                                   len(events(small))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
