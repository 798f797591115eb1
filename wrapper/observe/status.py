"""``virt-v2v-wrapper status``: a human view of the state files (docs/contract.md §5).

This is the view only: :mod:`wrapper.observe.summary` reads and summarises
the files (``--json`` prints its dicts); :func:`render` turns summaries into
text lines, every text taken from a file passed through :func:`printable`
(a planted name or a virt-v2v message cannot move the cursor or forge a
line).  Only state files owned by root or the reader's own user are shown
(wrapper.observe.summary.scan; a named one of someone else is shown as
unreadable, never as a conversion).  :func:`main` wires them to the command
line, the clock and the terminal; every side effect there is a parameter so tests can drive it.
Reclaiming what dead wrappers left is not a viewer's business: the command
line (wrapper/cli.py) does that before it hands over to :func:`main`.
"""
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

from wrapper import rate
from wrapper.observe.summary import (  # noqa: F401 (re-exported: the view's vocabulary)
    FAILED, FILE_PROBLEMS, FINISHED, INVALID, MISSING, RUNNING, STALE, STATE_GLOB, STATE_MAX,
    UNREADABLE, Reading, all_over, order, pid_alive, read_state, scan, summarize, trusted_owners)
from wrapper.security.text import printable
from wrapper.settings import resolve
from wrapper.usage import Parser, UsageError

EXIT_OK, EXIT_UNREADABLE, EXIT_USAGE = 0, 1, 2

_COLORS = {RUNNING: "36", FINISHED: "32", FAILED: "31", STALE: "33",
           MISSING: "35", UNREADABLE: "35", INVALID: "35"}
_LABELS = {STALE: "stale (wrapper gone)"}
# C0, DEL, C1, line/paragraph separators, bidi overrides and isolates, lone surrogates
# -- drawing --------------------------------------------------------------------
@dataclass(frozen=True)
class Style:
    width: Optional[int] = None     # None: plain mode, never cut lines
    color: bool = False
    unicode: bool = False

    def paint(self, text, code):
        return "\x1b[%sm%s\x1b[0m" % (code, text) if self.color and code else text

    def fit(self, text, room):
        if self.width is None or len(text) <= room:
            return text
        return text[:max(0, room - 1)] + ("…" if self.unicode else "~")


def format_duration(seconds):
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return "%d:%02d:%02d" % (seconds // 3600, seconds % 3600 // 60, seconds % 60)


def format_rate(value):
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return str(value)
    speed = rate.format_speed(n)          # the one byte-rate text: wrapper.rate
    return "%d B/s" % n if speed.endswith(" B/s") else "%d B/s (%s)" % (n, speed)


def format_throttling(t):
    parts = []
    if t.get("cpu") is not None:
        parts.append("cpu %s" % t["cpu"])
    if t.get("network") is not None:
        parts.append("network %s" % format_rate(t["network"]))
    return ", ".join(parts) or "none"


def bar(percent, width, style):
    full, empty = ("█", "░") if style.unicode else ("#", ".")
    filled = int(round(width * (percent or 0) / 100.0))
    return "[" + full * filled + empty * (width - filled) + "]"


def _pct(value):
    return "  -  " if value is None else "%5.1f%%" % value


def _label(s):
    return _LABELS.get(s["outcome"], s["outcome"])


def render_block(s, style):
    """Lines for one conversion."""
    width = style.width
    label = _label(s).upper()
    arrow = " → " if style.unicode else " -> "
    if s["outcome"] in FILE_PROBLEMS:
        title = printable(os.path.basename(s["file"]))
    else:
        title = printable(s.get("vm") or s.get("tag") or os.path.basename(s["file"]))
        if s.get("target"):
            title += arrow + printable(s["target"])
    if width is not None:
        room = max(10, width - len(label) - 2)
        title = style.fit(title, room)
        head = title + " " * max(1, width - len(title) - len(label)) + style.paint(label, _COLORS.get(s["outcome"]))
    else:
        head = "%s  [%s]" % (title, label)
    lines = [style.paint(head, "1")]

    def field(name, value, code=None):
        text = style.fit(printable(value), (width or 0) - 13)
        lines.append("  %-10s %s" % (name, style.paint(text, code)))

    field("file", s["file"])
    if s["outcome"] in FILE_PROBLEMS:
        field("problem", s["problem"], _COLORS[s["outcome"]])
        return lines
    info = "%s   elapsed %s" % (s.get("transport") or "?", format_duration(s["elapsed"]))
    if s.get("pid") is not None:
        info += "   virt-v2v pid %d" % s["pid"]
    field("transport", info)
    field("stage", s["stage"])
    bar_width = 30 if width is None else max(10, min(40, width - 40))
    count = max(len(s["disks"]), s.get("disk_count") or 0)
    running = s["outcome"] == RUNNING
    for i, d in enumerate(s["disks"]):
        prefix = "  %-10s %s %s  " % ("disk %d/%d" % (i + 1, count), bar(d["progress"], bar_width, style),
                                     _pct(d["progress"]))
        lines.append(prefix + style.fit(printable(d["path"]), (width or 0) - len(prefix)))
        if d.get("started_at") is not None:
            lines.append(style.fit("  %-10s %s" % ("", rate.describe(d, running)), width or 0))
    if s["disks"]:
        lines.append("  %-10s %s %s" % ("overall", bar(s["progress"], bar_width, style), _pct(s["progress"])))
        if any(d.get("started_at") is not None for d in s["disks"]):
            lines.append(style.fit("  %-10s %s" % ("", rate.describe(s, running)), width or 0))
    field("throttle", format_throttling(s["throttling"]))
    if s["outcome"] == STALE:
        pid = s.get("wrapper_pid") or s.get("pid")
        field("note", "wrapper process %s is gone but the conversion never finished" % pid,
              _COLORS[STALE])
    if s["outcome"] in (FINISHED, FAILED) and s.get("return_code") is not None:
        field("result", "virt-v2v exit status %d%s" % (
            s["return_code"], ", VM id %s" % s["vm_id"] if s.get("vm_id") else ""))
    if s.get("message"):
        field("error" if s["outcome"] == FAILED else "message", s["message"], _COLORS[FAILED])
    if s.get("code"):
        field("code", s["code"], _COLORS[FAILED])
    return lines


def render(summaries, style, now=None, where=None):
    """All blocks, with a title line when ``now`` is given."""
    lines = []
    if now is not None:
        running = sum(1 for s in summaries if s["outcome"] == RUNNING)
        when = datetime.datetime.fromtimestamp(now).strftime("%Y-%m-%d %H:%M:%S")
        title = "virt-v2v-wrapper status  %s  %d conversion%s, %d running" % (
            when, len(summaries), "" if len(summaries) == 1 else "s", running)
        lines.append(style.fit(title, style.width or 0))
    if not summaries:
        lines.append("no conversions%s" % (" in %s" % printable(where) if where else ""))
    for i, s in enumerate(summaries):
        if i or now is not None:
            lines.append("")
        lines.extend(render_block(s, style))
    return lines


def redraw(lines, previous, rows):
    """Escape sequences that replace the previous frame (``previous`` lines) in place."""
    out = []
    if previous and previous < rows:
        out.append("\r\x1b[%dA" % previous)
    elif previous:
        out.append("\x1b[H\x1b[2J")      # the old frame scrolled away: start from the top
    shown = lines[:max(1, rows - 1)]
    out.extend(line + "\x1b[K\n" for line in shown)
    out.append("\x1b[J")
    return "".join(out), len(shown)


# -- command line ----------------------------------------------------------------
def build_parser():
    p = Parser(prog="virt-v2v-wrapper status", description=(
        "Show the conversions whose state files are given, or every conversion in the state "
        "directory, newest first."),
        epilog="Only state files owned by root or by the user running this command are shown "
               "(symbolic links and other entries are skipped). "
               "Exit status: 0 every file shown could be read, 1 a file is missing, unreadable "
               "or not a state file (or the state directory cannot be read), 2 usage error.")
    p.add_argument("files", nargs="*", metavar="STATE_FILE", help="state files to show")
    p.add_argument("--state-dir", metavar="DIR",
                   help="directory to scan when no file is given [env VIRT_V2V_WRAPPER_STATE_DIR]")
    p.add_argument("--watch", action="store_true",
                   help="refresh until every conversion shown is over (redraws in place on a "
                        "terminal, appends a snapshot on each change otherwise)")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="refresh interval for --watch (default 1)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON summary (one line per change with --watch)")
    p.add_argument("--plain", action="store_true",
                   help="plain text even on a terminal: no colours, no redrawing")
    return p


def _terminal_size(stream):
    try:
        return os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return os.terminal_size((80, 24))


def _is_tty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _volatile_free(summaries):
    """What must change for a plain ``--watch`` to print a new snapshot."""
    return json.dumps([{k: v for k, v in s.items() if k not in ("elapsed", "age")}
                       for s in summaries], sort_keys=True)


def main(argv, stdout=None, stderr=None, environ=None, *, clock=time.time, sleep=time.sleep,
         alive=pid_alive, tty=None, term_size=None, owners=None):
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    environ = dict(os.environ if environ is None else environ)
    try:
        opts = build_parser().parse_args(list(argv))
        if opts.interval <= 0:
            raise UsageError("--interval must be more than 0")
    except UsageError as e:
        stderr.write("virt-v2v-wrapper status: error: %s\n" % e)
        return EXIT_USAGE
    owners = trusted_owners() if owners is None else owners
    where = None
    if opts.files:
        files = [os.path.abspath(f) for f in opts.files]
        def paths():
            return files
    else:
        where = resolve({"state_dir": opts.state_dir}, environ).state_dir
        def paths():
            return scan(where, owners=owners)
    terminal = (_is_tty(stdout) if tty is None else tty) and not opts.plain and not opts.json
    size = term_size or (lambda: _terminal_size(stdout))
    style_of = (lambda: Style(width=size().columns - 1, color="NO_COLOR" not in environ,
                              unicode=_utf8(stdout))) if terminal else (lambda: Style())

    def snapshot():
        now = clock()
        found = [summarize(read_state(p, owners), now, alive) for p in paths()]
        return now, (found if opts.files else order(found))

    try:
        if not opts.watch:
            now, summaries = snapshot()
            _emit(stdout, opts, summaries, style_of(), now=None, where=where)
            return _exit_code(summaries)
        return _watch(stdout, opts, snapshot, style_of, size, terminal, sleep, where)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as e:             # the state directory cannot be listed
        stderr.write("virt-v2v-wrapper status: error: cannot read the state directory %s: %s\n"
                     % (printable(where), e.strerror or e))
        return EXIT_UNREADABLE


def _utf8(stream):
    return "utf" in (getattr(stream, "encoding", None) or "").lower()


def _exit_code(summaries):
    return EXIT_UNREADABLE if any(s["outcome"] in FILE_PROBLEMS for s in summaries) else EXIT_OK


def _emit(stdout, opts, summaries, style, now, where):
    if opts.json:
        stdout.write(json.dumps({"state_dir": where, "conversions": summaries},
                                sort_keys=True, allow_nan=False) + ("\n" if opts.watch else ""))
        if not opts.watch:
            stdout.write("\n")
    else:
        stdout.write("".join(line + "\n" for line in render(summaries, style, now, where)))
    stdout.flush()


def _watch(stdout, opts, snapshot, style_of, size, terminal, sleep, where):
    previous, last = 0, None
    if terminal:
        stdout.write("\x1b[?25l")          # hide the cursor while redrawing
    try:
        while True:
            now, summaries = snapshot()
            if terminal:
                frame, previous = redraw(render(summaries, style_of(), now, where), previous,
                                         size().lines)
                stdout.write(frame)
                stdout.flush()
            else:
                key = _volatile_free(summaries)
                if key != last:
                    _emit(stdout, opts, summaries, style_of(), now=None if opts.json else now,
                          where=where)
                    if not opts.json:
                        stdout.write("\n")
                    last = key
            if all_over(summaries):
                return _exit_code(summaries)
            sleep(opts.interval)
    finally:
        if terminal:
            stdout.write("\x1b[?25h")
            stdout.flush()
