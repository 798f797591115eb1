"""A stand-in oVirt engine: just enough of the REST API for wrapper.ovirt_api.

HTTPS on 127.0.0.1 (a free port), certificates made by :func:`make_pki`,
answering what ovirtsdk4 asks for the wrapper's operations, in the engine's
own formats: JSON for SSO (``/ovirt-engine/sso/oauth/token``,
``/ovirt-engine/services/sso-logout``), XML for the API (``Accept:
application/xml``; element names of the oVirt API model, as ovirtsdk4's
readers expect).  Every request is recorded (method, path, query, headers,
body) for the tests' assertions.
"""
import dataclasses
import fnmatch
import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import urllib.parse
import uuid
from typing import Dict, List, Optional
from xml.sax.saxutils import escape, quoteattr

PREFIX = "/ovirt-engine"
API = PREFIX + "/api"
XML_TYPE = "application/xml;charset=UTF-8"
JSON_TYPE = "application/json"


# --------------------------------------------------------------------------
# Certificates

@dataclasses.dataclass(frozen=True)
class Pki:
    ca: str            # CA certificate that signed the server certificate
    server_cert: str
    server_key: str
    other_ca: str      # an unrelated CA: verifying the server with it must fail


def _openssl(*args, cwd):
    subprocess.run(("openssl",) + args, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _make_ca(directory, name):
    key, cert = os.path.join(directory, name + ".key"), os.path.join(directory, name + ".pem")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", cert, "-days", "3",
             "-subj", "/CN=v2vw stand-in %s" % name,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return key, cert


def make_pki(directory):
    """A CA, a server certificate it signs for 127.0.0.1/localhost, and an
    unrelated second CA, all under ``directory`` (openssl CLI)."""
    ca_key, ca = _make_ca(directory, "ca")
    _, other_ca = _make_ca(directory, "other-ca")
    key = os.path.join(directory, "server.key")
    csr = os.path.join(directory, "server.csr")
    cert = os.path.join(directory, "server.pem")
    ext = os.path.join(directory, "server.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=localhost", cwd=directory)
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "3", "-extfile", ext, cwd=directory)
    return Pki(ca=ca, server_cert=cert, server_key=key, other_ca=other_ca)


# --------------------------------------------------------------------------
# Engine state

@dataclasses.dataclass
class Disk:
    id: str
    name: str
    # GETs that still answer "locked" before the disk turns "ok"; None: forever.
    locked_polls: Optional[int] = 0
    status_after_lock: str = "ok"
    # DELETEs refused with 409 (as while the engine runs another operation).
    refuse_deletes: int = 0

    def status(self):
        if self.locked_polls is None or self.locked_polls > 0:
            return "locked"
        return self.status_after_lock


@dataclasses.dataclass
class Transfer:
    id: str
    disk_id: Optional[str]      # <disk id=...> (transfers created by disk)
    image_id: Optional[str]     # <image id=...> (older clients / engines)
    phase: str = "transferring"


@dataclasses.dataclass
class StorageDomain:
    id: str
    name: str
    storage_type: str           # ovirtsdk4.types.StorageType value: nfs, iscsi, ...
    type: str = "data"


@dataclasses.dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: Dict[str, List[str]]
    headers: Dict[str, str]
    body: str


class StandinEngine:
    """The engine's state plus an HTTPS server thread serving it."""

    def __init__(self, pki, *, username="admin@internal", password="engine-password"):
        self.pki = pki
        self.username = username
        self.password = password
        self.storage_domains: List[StorageDomain] = []
        self.disks: Dict[str, Disk] = {}
        self.transfers: Dict[str, Transfer] = {}
        # The real engine removes a disk itself when its upload is cancelled.
        self.cancel_removes_disk = False
        self.requests: List[Recorded] = []
        self.tokens = set()
        self.revoked = set()
        self.lock = threading.Lock()
        self._server = None
        self._thread = None

    # -- setup helpers --------------------------------------------------
    def add_storage_domain(self, name, storage_type, *, type="data"):
        sd = StorageDomain(id=str(uuid.uuid4()), name=name, storage_type=storage_type, type=type)
        self.storage_domains.append(sd)
        return sd

    def add_disk(self, disk_id=None, *, locked_polls=0, name=None):
        disk_id = disk_id or str(uuid.uuid4())
        self.disks[disk_id] = Disk(id=disk_id, name=name or "disk-" + disk_id[:8],
                                   locked_polls=locked_polls)
        return disk_id

    def add_transfer(self, disk_id, *, phase="transferring", by="disk"):
        t = Transfer(id=str(uuid.uuid4()), phase=phase,
                     disk_id=disk_id if by in ("disk", "both") else None,
                     image_id=disk_id if by in ("image", "both") else None)
        self.transfers[t.id] = t
        return t.id

    # -- queries for assertions ----------------------------------------
    def calls(self, method=None, path_prefix=""):
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and r.path.startswith(path_prefix)]

    @property
    def base_url(self):
        host, port = self._server.server_address[:2]
        return "https://%s:%d" % (host, port)

    @property
    def api_url(self):
        return self.base_url + API

    # -- lifecycle -----------------------------------------------------
    def start(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        self._server = _TLSServer(("127.0.0.1", 0), _Handler, ctx, self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="ovirt-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- request handling (called by the handler, under self.lock) ------
    def handle(self, method, path, query, headers, body):
        self.requests.append(Recorded(method, path, query, headers, body))
        if path == PREFIX + "/sso/oauth/token" and method == "POST":
            return self._token(body)
        if path == PREFIX + "/services/sso-logout" and method == "POST":
            form = urllib.parse.parse_qs(body)
            self.revoked.update(form.get("token", []))
            self.tokens.difference_update(form.get("token", []))
            return 200, JSON_TYPE, "{}"
        if not path.startswith(API):
            return _fault(404, "Not Found", "no such path %s" % path)
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in self.tokens:
            return 401, XML_TYPE, _fault_xml("Unauthorized", "bad or missing token")
        parts = [p for p in path[len(API):].split("/") if p]
        return self._api(method, parts, query, body)

    def _token(self, body):
        form = urllib.parse.parse_qs(body)
        one = lambda k: (form.get(k) or [""])[0]  # noqa: E731
        if one("grant_type") != "password" or one("scope") != "ovirt-app-api":
            return 400, JSON_TYPE, json.dumps({"error_code": "invalid_grant",
                                               "error": "unsupported grant"})
        if one("username") != self.username or one("password") != self.password:
            # What the engine's SSO answers a wrong user name or password.
            return 401, JSON_TYPE, json.dumps({
                "error_code": "access_denied",
                "error": "Cannot authenticate user '%s': The username or password "
                         "is incorrect.." % one("username")})
        token = "tok-" + uuid.uuid4().hex
        self.tokens.add(token)
        return 200, JSON_TYPE, json.dumps({"access_token": token, "scope": "ovirt-app-api",
                                           "exp": "9999999999000", "token_type": "bearer"})

    def _api(self, method, parts, query, body):
        if not parts and method == "GET":
            return 200, XML_TYPE, ("<api><product_info><name>oVirt Engine</name>"
                                   "<version><major>4</major><minor>5</minor></version>"
                                   "</product_info></api>")
        if parts == ["storagedomains"] and method == "GET":
            return self._storage_domains(query)
        if len(parts) == 2 and parts[0] == "disks":
            disk = self.disks.get(parts[1])
            if disk is None:
                return _fault(404, "Not Found", "Entity not found: %s" % parts[1])
            if method == "GET":
                status = disk.status()
                if disk.locked_polls:
                    disk.locked_polls -= 1
                return 200, XML_TYPE, _disk_xml(disk, status)
            if method == "DELETE":
                if disk.status() == "locked" or disk.refuse_deletes > 0:
                    disk.refuse_deletes = max(0, disk.refuse_deletes - 1)
                    return _fault(409, "Operation Failed",
                                  "[Cannot remove Virtual Disk. Related operation is "
                                  "currently in progress. Please try again later.]")
                del self.disks[disk.id]
                return 200, XML_TYPE, ""
        if parts == ["imagetransfers"] and method == "GET":
            return 200, XML_TYPE, "<image_transfers>%s</image_transfers>" % "".join(
                _transfer_xml(t) for t in self.transfers.values())
        if len(parts) >= 2 and parts[0] == "imagetransfers":
            t = self.transfers.get(parts[1])
            if t is None:
                return _fault(404, "Not Found", "Entity not found: %s" % parts[1])
            if len(parts) == 2 and method == "GET":
                return 200, XML_TYPE, _transfer_xml(t)
            if parts[2:] == ["cancel"] and method == "POST":
                t.phase = "cancelled_user"
                if self.cancel_removes_disk:
                    self.disks.pop(t.disk_id or t.image_id, None)
                return 200, XML_TYPE, "<action><status>complete</status></action>"
        return _fault(404, "Not Found", "no such resource")

    def _storage_domains(self, query):
        search = (query.get("search") or [""])[0]
        case_sensitive = (query.get("case_sensitive") or ["true"])[0] != "false"
        found = self.storage_domains
        if search:
            field, _, pattern = search.partition("=")
            if field.strip() != "name":
                return _fault(400, "Operation Failed",
                              "stand-in only searches by name: %s" % search)
            pattern = pattern.strip()

            def match(name):
                if case_sensitive:
                    return fnmatch.fnmatchcase(name, pattern)
                return fnmatch.fnmatchcase(name.lower(), pattern.lower())
            found = [sd for sd in found if match(sd.name)]
        return 200, XML_TYPE, "<storage_domains>%s</storage_domains>" % "".join(
            _storage_domain_xml(sd) for sd in found)


# --------------------------------------------------------------------------
# XML in the oVirt API model's shape

def _storage_domain_xml(sd):
    href = "%s/storagedomains/%s" % (API, sd.id)
    return ('<storage_domain href=%s id=%s><name>%s</name><available>10737418240</available>'
            '<master>true</master><status>active</status><storage><type>%s</type></storage>'
            '<storage_format>v5</storage_format><type>%s</type></storage_domain>' % (
                quoteattr(href), quoteattr(sd.id), escape(sd.name),
                escape(sd.storage_type), escape(sd.type)))


def _disk_xml(disk, status):
    href = "%s/disks/%s" % (API, disk.id)
    return ('<disk href=%s id=%s><name>%s</name><description>Uploaded by virt-v2v'
            '</description><format>raw</format><provisioned_size>1073741824'
            '</provisioned_size><status>%s</status><storage_type>image</storage_type>'
            '</disk>' % (quoteattr(href), quoteattr(disk.id), escape(disk.name),
                         escape(status)))


def _transfer_xml(t):
    href = "%s/imagetransfers/%s" % (API, t.id)
    inner = "<active>%s</active><direction>upload</direction><phase>%s</phase>" % (
        "false" if t.phase.startswith(("finished", "cancelled")) else "true", t.phase)
    if t.disk_id:
        inner += "<disk href=%s id=%s/>" % (quoteattr("%s/disks/%s" % (API, t.disk_id)),
                                            quoteattr(t.disk_id))
    if t.image_id:
        inner += "<image id=%s/>" % quoteattr(t.image_id)
    return "<image_transfer href=%s id=%s>%s</image_transfer>" % (
        quoteattr(href), quoteattr(t.id), inner)


def _fault_xml(reason, detail):
    return "<fault><detail>%s</detail><reason>%s</reason></fault>" % (
        escape(detail), escape(reason))


def _fault(code, reason, detail):
    return code, XML_TYPE, _fault_xml(reason, detail)


# --------------------------------------------------------------------------
# HTTP plumbing

class _TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, ctx, engine):
        super().__init__(address, handler)
        self.ctx = ctx
        self.engine = engine
        self.handshake_failures = 0

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the request's own thread, so a
        # client that fails or stalls it never blocks the accept loop.
        try:
            request = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshake_failures += 1
            return
        try:
            super().finish_request(request, client_address)
        finally:
            try:
                request.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        pass  # a client hanging up mid-request is not the test's business


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each answer
    # would wait for curl's delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def _serve(self):
        split = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8") if length else ""
        headers = {k.lower(): v for k, v in self.headers.items()}
        engine = self.server.engine
        with engine.lock:
            code, ctype, text = engine.handle(
                self.command, urllib.parse.unquote(split.path),
                urllib.parse.parse_qs(split.query, keep_blank_values=True), headers, body)
        data = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _serve


def closed_port():
    """A 127.0.0.1 port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
