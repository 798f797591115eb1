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
local user cannot make up a conversion.  Every file is still read as hostile
(wrapper/observe/summary.py bounds sizes, depth, numbers and counts).

Connections are hostile too (docs/security.md): at most
:data:`MAX_CONNECTIONS` are served at once, a thread each; when they are all
taken, the one that has been sending its request longest is cut off to make
room (a scraper sends its request at once, a slow client is the one that
goes).  A request's line and headers may take :data:`MAX_REQUEST` bytes and
must all arrive within :data:`REQUEST_TIMEOUT` seconds, however slowly they
drip (:class:`BoundedReader`); one scrape reads the state files at a time.
So memory stays bounded whatever local users connect, and a scrape is still
answered while they do.
"""
import http.server
import logging
import os
import signal
import socket
import sys
import threading
import time

from wrapper.observe import metrics, summary
from wrapper.errors import WrapperError
from wrapper.usage import Parser, UsageError
from wrapper.settings import resolve

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
REQUEST_TIMEOUT = 10.0       # seconds for a whole request to arrive, and for the answer
MAX_REQUEST = 8 << 10        # bytes of request line and headers
MAX_CONNECTIONS = 64         # served at once
SLOT_WAIT = 2.0              # seconds a new connection waits for the one cut off to go


def build_parser():
    p = Parser(prog="virt-v2v-wrapper metrics", description=(
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
        raise UsageError("--listen wants ADDR:PORT, not %r" % text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class Collector:
    """Reads the state directory into exposition text (a scrape)."""

    def __init__(self, state_dir, clock=time.time, alive=summary.pid_alive, owners=None):
        self.state_dir = state_dir
        self.clock = clock
        self.alive = alive
        self.owners = summary.trusted_owners() if owners is None else owners
        self._one_at_a_time = threading.Lock()

    def text(self):
        with self._one_at_a_time:          # concurrent scrapes: one set of files in memory
            now = self.clock()
            summaries = [summary.summarize(summary.read_state(p, self.owners), now, self.alive)
                         for p in summary.scan(self.state_dir, owners=self.owners)]
            return metrics.exposition(summaries, now, exporter=True)


class BoundedReader:
    """The request side of one connection: at most ``budget`` bytes, every
    one of them before ``deadline`` (monotonic).  Reads at most one socket
    read at a time, the socket's timeout set to the time left, so a client
    that sends a byte now and then cannot hold a connection forever.  No
    request body is ever read."""

    def __init__(self, buffered, sock, deadline, budget=MAX_REQUEST, clock=time.monotonic):
        self.buffered, self.sock = buffered, sock
        self.deadline, self.left, self.clock = deadline, budget, clock
        self.exhausted = False

    def readline(self, limit=-1):
        room = self.left if limit is None or limit < 0 else min(limit, self.left)
        line = bytearray()
        while len(line) < room:
            time_left = self.deadline - self.clock()
            if time_left <= 0:
                raise TimeoutError("the request took longer than %g seconds" % REQUEST_TIMEOUT)
            self.sock.settimeout(time_left)
            ahead = self.buffered.peek(1)
            if not ahead:
                break
            newline = ahead.find(b"\n", 0, room - len(line))
            line += self.buffered.read(newline + 1 if newline >= 0 else min(len(ahead), room - len(line)))
            if newline >= 0:
                break
        self.left -= len(line)
        if self.left <= 0:
            self.exhausted = True
        return bytes(line)

    def read(self, _size=-1):
        return b""

    def close(self):
        self.buffered.close()


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "virt-v2v-wrapper-metrics"
    timeout = REQUEST_TIMEOUT

    def setup(self):
        super().setup()
        self.rfile = BoundedReader(self.rfile, self.connection,
                                   time.monotonic() + REQUEST_TIMEOUT)

    def parse_request(self):
        if not super().parse_request():
            return False
        if self.rfile.exhausted:
            self.send_error(431, "request headers too large")
            return False
        self.connection.settimeout(REQUEST_TIMEOUT)      # for the answer
        self.server.request_read(self.connection)
        return True

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
    """At most ``max_connections`` connections served at once (a thread
    each); one more is closed as soon as it is accepted."""
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, collector, max_connections=MAX_CONNECTIONS):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._slots = threading.BoundedSemaphore(max_connections)
        self._reading = {}           # connection -> when it came, while its request arrives
        self._lock = threading.Lock()
        super().__init__(address, Handler)
        self.collector = collector

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self._cut_off_slowest()
            if not self._slots.acquire(timeout=SLOT_WAIT):
                log.debug("%s: too many connections, closed", client_address[0])
                self.shutdown_request(request)
                return
        with self._lock:
            self._reading[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.request_read(request)
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.request_read(request)
            self._slots.release()

    def request_read(self, request):
        """``request``'s connection is past its request: it cannot be cut off any more."""
        with self._lock:
            self._reading.pop(request, None)

    def _cut_off_slowest(self):
        with self._lock:
            if not self._reading:
                return
            slowest = min(self._reading, key=self._reading.get)
            del self._reading[slowest]
        try:
            slowest.shutdown(socket.SHUT_RDWR)   # its thread sees the end and lets go
        except OSError:
            pass

    def handle_error(self, request, client_address):
        log.debug("%s: connection failed", client_address[0], exc_info=True)


def _stop(signum, _frame):
    raise SystemExit(EXIT_OK)


def main(argv, stdout=None, stderr=None, environ=None, *, clock=time.time, serve=True):
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    environ = dict(os.environ if environ is None else environ)
    try:
        opts = build_parser().parse_args(list(argv))
        address = parse_listen(opts.listen) if opts.listen else None
    except UsageError as e:
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
