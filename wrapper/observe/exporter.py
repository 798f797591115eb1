"""``virt-v2v-wrapper metrics``: the conversions of the state directory as
Prometheus metrics, for hosts without node_exporter.

* ``--listen ADDR:PORT`` serves ``GET /metrics`` (and ``HEAD``) over HTTP,
  standard library only; every scrape reads the state files afresh.  Nothing
  can be written through it: every other method is 405, every other path 404.
* without ``--listen``, prints the text once (cron, a quick look, tests);
* ``--prune --metrics-dir DIR`` removes the textfiles of conversions that
  ended a while ago (see wrapper/observe/metrics.py) -- for a timer on hosts where
  conversions are rare.

The state directory is shared (``/tmp`` by default): state files are read
with fsafe.read_untrusted (no symlink, no FIFO, one link, bounded size) and
only those owned by root or by the exporter's own user are shown, so another
local user cannot make up a conversion.
"""
import http.server
import logging
import os
import signal
import sys
import time

from wrapper.observe import metrics, status
from wrapper.errors import WrapperError
from wrapper.observe.status import _Parser, _UsageError      # one usage-error convention for subcommands
from wrapper.settings import resolve

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
REQUEST_TIMEOUT = 10.0


def build_parser():
    p = _Parser(prog="virt-v2v-wrapper metrics", description=(
        "Prometheus metrics of every conversion in the state directory: served over HTTP "
        "with --listen (GET /metrics, read-only), else printed once."),
        epilog="Only state files owned by root or by the user running this command are shown. "
               "Exit status: 0 done (or stopped by SIGTERM/SIGINT), 1 the state directory "
               "cannot be read or the address cannot be used, 2 usage error.")
    p.add_argument("--listen", metavar="ADDR:PORT",
                   help="serve /metrics on this address, e.g. 127.0.0.1:9732, [::1]:9732 or "
                        ":9732 (every address); port 0 picks a free one")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where the state files are [env VIRT_V2V_WRAPPER_STATE_DIR]")
    p.add_argument("--prune", action="store_true",
                   help="remove the .prom files of conversions that ended an hour ago or more "
                        "from --metrics-dir, then exit")
    p.add_argument("--metrics-dir", metavar="DIR",
                   help="the textfile directory for --prune [env VIRT_V2V_WRAPPER_METRICS_DIR]")
    return p


def parse_listen(text):
    """``ADDR:PORT`` -> (host, port); ``[v6]:PORT``; an empty host is every address."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise _UsageError("--listen wants ADDR:PORT, not %r" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class Collector:
    """Reads the state directory into exposition text (a scrape)."""

    def __init__(self, state_dir, clock=time.time, alive=status.pid_alive, owners=None):
        self.state_dir = state_dir
        self.clock = clock
        self.alive = alive
        self.owners = {0, os.geteuid()} if owners is None else owners

    def text(self):
        now = self.clock()
        summaries = [status.summarize(status.read_state(p, self.owners), now, self.alive)
                     for p in status.scan(self.state_dir)]
        return metrics.exposition(summaries, now, exporter=True)


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "virt-v2v-wrapper-metrics"
    timeout = REQUEST_TIMEOUT

    def _answer(self, code, body, content_type="text/plain; charset=utf-8", head=False, extra=()):
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _get(self, head):
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                body = self.server.collector.text()
            except OSError as e:
                log.error("cannot read the state directory: %s", e)
                return self._answer(500, "cannot read the state directory\n", head=head)
            return self._answer(200, body, metrics.CONTENT_TYPE, head=head)
        if path == "/":
            return self._answer(200, "virt-v2v-wrapper metrics: see /metrics\n", head=head)
        return self._answer(404, "not found\n", head=head)

    def do_GET(self):            # noqa: N802 (http.server's names)
        self._get(head=False)

    def do_HEAD(self):           # noqa: N802
        self._get(head=True)

    def _refuse(self):
        self._answer(405, "read-only: GET /metrics\n", extra=(("Allow", "GET, HEAD"),))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse     # noqa: N815

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, collector):
        host = address[0]
        if ":" in host:
            import socket
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.collector = collector


def _stop(signum, _frame):
    raise SystemExit(EXIT_OK)


def main(argv, stdout=None, stderr=None, environ=None, *, clock=time.time, serve=True):
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    environ = dict(os.environ if environ is None else environ)
    try:
        opts = build_parser().parse_args(list(argv))
        address = parse_listen(opts.listen) if opts.listen else None
    except _UsageError as e:
        stderr.write("virt-v2v-wrapper metrics: error: %s\n" % e)
        return EXIT_USAGE
    settings = resolve({"state_dir": opts.state_dir, "metrics_dir": opts.metrics_dir}, environ)
    if opts.prune:
        return _prune(settings, stdout, stderr, clock)
    collector = Collector(settings.state_dir, clock)
    if address is None:
        try:
            stdout.write(collector.text())
            stdout.flush()
        except BrokenPipeError:
            pass
        except OSError as e:
            stderr.write("virt-v2v-wrapper metrics: error: cannot read the state directory %s: %s\n"
                         % (settings.state_dir, e.strerror or e))
            return EXIT_FAILED
        return EXIT_OK
    try:
        server = Server(address, collector)
    except OSError as e:
        stderr.write("virt-v2v-wrapper metrics: error: cannot listen on %s: %s\n"
                     % (opts.listen, e.strerror or e))
        return EXIT_FAILED
    host, port = server.server_address[:2]
    stderr.write("virt-v2v-wrapper metrics: serving http://%s:%d/metrics for %s\n" % (
        "[%s]" % host if ":" in host else host, port, settings.state_dir))
    stderr.flush()
    if not serve:
        server.server_close()
        return EXIT_OK
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _stop)
    try:
        server.serve_forever()
    except SystemExit:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def _prune(settings, stdout, stderr, clock):
    if not settings.metrics_dir:
        stderr.write("virt-v2v-wrapper metrics: error: --prune needs --metrics-dir "
                     "(or VIRT_V2V_WRAPPER_METRICS_DIR)\n")
        return EXIT_USAGE
    try:
        fd = metrics.open_metrics_dir(settings.metrics_dir, settings.trusted_uids())
    except WrapperError as e:
        stderr.write("virt-v2v-wrapper metrics: error: %s\n" % e)
        return EXIT_FAILED
    try:
        for name in metrics.prune(fd, clock(), metrics.keep_seconds(settings)):
            stdout.write("removed %s\n" % os.path.join(settings.metrics_dir, name))
    finally:
        os.close(fd)
    return EXIT_OK
