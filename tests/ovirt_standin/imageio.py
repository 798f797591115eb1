"""The REAL ovirt-imageio daemon (PyPI ``ovirt-imageio``) as a plain process.

:class:`ImageioDaemon` writes a configuration directory of its own (TLS with
the stand-in engine's certificate, so the one CA virt-v2v's ``rhv-cafile``
names verifies both; the control service on a unix socket in that directory;
the remote service on a free 127.0.0.1 port; a DEBUG log file), starts
``python -m ovirt_imageio`` (the daemon's own entry point) with it and adds
tickets on its control socket, each backed by a sparse file (the daemon's
file backend), as the engine does when an image transfer starts.

What it served: the daemon's ``transferred`` count per ticket (control
service ``GET /tickets/{id}``) and its DEBUG log lines (one per OPTIONS,
WRITE, ZERO, FLUSH, READ request), parsed by :meth:`ImageioDaemon.served`.

Failure injection: ``write_limit=N`` starts the daemon with RLIMIT_FSIZE=N,
so the kernel refuses (EFBIG) every write or allocation reaching past byte N
of a backing file and the real daemon answers that request with HTTP 500, as
it does for any storage error (a full or failing storage domain).  CPython
ignores SIGXFSZ, so the daemon lives on and keeps answering.
"""
import dataclasses
import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Dict, Optional

_LISTENING = re.compile(r"remote\.service listening on \('127\.0\.0\.1', (\d+)\)")
_REQUEST = re.compile(r"\] (OPTIONS|WRITE|ZERO|FLUSH|READ) (?:size=(\d+))?")


def available(python=sys.executable):
    """Can ``python`` import the daemon (and its C extension)?"""
    return subprocess.run(
        [python, "-c", "import ovirt_imageio._internal.server, ovirt_imageio._internal.ioutil"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


@dataclasses.dataclass(frozen=True)
class Ticket:
    id: str
    disk_id: str
    size: int
    path: str            # the backing file the daemon writes
    transfer_url: str


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class ImageioError(Exception):
    pass


class ImageioDaemon:
    """One ovirt-imageio daemon process under ``directory``."""

    def __init__(self, pki, directory, *, python=sys.executable, write_limit=None,
                 image_mode=0o644):
        self.pki = pki
        self.directory = os.path.abspath(directory)
        self.python = python
        self.write_limit = write_limit
        self.image_mode = image_mode
        self.conf_dir = os.path.join(self.directory, "conf")
        self.run_dir = os.path.join(self.directory, "run")
        self.image_dir = os.path.join(self.directory, "images")
        self.control_socket = os.path.join(self.run_dir, "sock")
        self.log_path = os.path.join(self.directory, "daemon.log")
        self.tickets: Dict[str, Ticket] = {}
        self.port: Optional[int] = None
        self._proc = None

    # -- lifecycle -----------------------------------------------------
    def _write_config(self):
        for d in (self.conf_dir, os.path.join(self.conf_dir, "conf.d"), self.run_dir,
                  self.image_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        conf = {
            "daemon": {"run_dir": self.run_dir, "drop_privileges": "false",
                       "systemd_enable": "false", "poll_interval": "0.2",
                       "inactivity_timeout": "3600"},
            "tls": {"enable": "true", "key_file": self.pki.server_key,
                    "cert_file": self.pki.server_cert, "ca_file": self.pki.ca},
            "remote": {"host": "127.0.0.1", "port": "0"},
            "local": {"enable": "false"},
            "control": {"transport": "unix", "socket": self.control_socket,
                        "remove_timeout": "10"},
            "logger_root": {"level": "DEBUG"},
            "handler_logfile": {"args": repr((self.log_path,)), "kwargs": "{}"},
        }
        with open(os.path.join(self.conf_dir, "conf.d", "50-standin.conf"), "w") as f:
            for section, values in conf.items():
                f.write("[%s]\n" % section)
                for k, v in values.items():
                    f.write("%s = %s\n" % (k, v))
                f.write("\n")

    def start(self, timeout=30):
        self._write_config()
        limit = self.write_limit

        def preexec():
            os.setsid()
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        with open(os.path.join(self.directory, "daemon.stderr"), "ab") as err:
            self._proc = subprocess.Popen(
                [self.python, "-c", "from ovirt_imageio._internal import server; server.main()",
                 "--conf-dir", self.conf_dir],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, preexec_fn=preexec)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            m = _LISTENING.search(log)
            if m and "Ready for requests" in log and os.path.exists(self.control_socket):
                self.port = int(m.group(1))
                return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise ImageioError("ovirt-imageio did not start: %s" % (
            self.log()[-2000:] or self._stderr()[-2000:]))

    def stop(self):
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def pid(self):
        return self._proc.pid if self._proc is not None else None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _stderr(self):
        try:
            with open(os.path.join(self.directory, "daemon.stderr"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    # -- the control service -------------------------------------------
    def _control(self, method, path, body=None):
        conn = _UnixHTTPConnection(self.control_socket)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
        finally:
            conn.close()
        if r.status >= 300:
            raise ImageioError("%s %s: %d %s: %s" % (method, path, r.status, r.reason, text))
        return json.loads(text) if text.strip() else None

    def add_ticket(self, disk_id, size, *, transfer_id=None):
        """A ticket to write (and read) ``size`` bytes, backed by a new sparse
        file -> (transfer_url, backing_path)."""
        ticket_id = str(uuid.uuid4())
        path = os.path.join(self.image_dir, "%s-%s.raw" % (disk_id, ticket_id[:8]))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     self.image_mode)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        self._control("PUT", "/tickets/" + ticket_id, {
            "uuid": ticket_id, "size": size, "url": "file://" + path,
            "timeout": 3600, "inactivity_timeout": 3600, "ops": ["write", "read"],
            "sparse": True, "transfer_id": transfer_id or ticket_id})
        url = "https://127.0.0.1:%d/images/%s" % (self.port, ticket_id)
        self.tickets[ticket_id] = Ticket(ticket_id, disk_id, size, path, url)
        return url, path

    def ticket_for(self, transfer_url):
        return self.tickets[transfer_url.rstrip("/").rsplit("/", 1)[1]]

    def ticket_info(self, ticket_id):
        """What the daemon says of the ticket (``transferred``, ``active``,
        ``connections``, ...); None once it is removed."""
        try:
            return self._control("GET", "/tickets/" + ticket_id)
        except ImageioError as e:
            if ": 404 " in str(e):
                return None
            raise

    def remove_ticket(self, ticket_id):
        self._control("DELETE", "/tickets/" + ticket_id)

    def served(self):
        """Requests the daemon logged: {"OPTIONS": n, "WRITE": n, ...} plus
        "WRITE bytes" and "ZERO bytes"."""
        out: Dict[str, int] = {}
        for m in _REQUEST.finditer(self.log()):
            op = m.group(1)
            out[op] = out.get(op, 0) + 1
            if m.group(2) and op in ("WRITE", "ZERO"):
                out[op + " bytes"] = out.get(op + " bytes", 0) + int(m.group(2))
        return out

    def errors(self):
        """The daemon's ERROR log lines (a refused write shows here)."""
        return [line for line in self.log().splitlines() if " ERROR " in line]
