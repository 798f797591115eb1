"""A stand-in oVirt engine: enough of the REST API for wrapper.ovirt.api and
for virt-v2v's ``-o rhv-upload`` helper scripts (data centers searched by
``storage.name``, their storage domains and clusters, VMs by name, hosts by
``hw_id``; the engine's search language as far as those use it).

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
import re
import socket
import ssl
import subprocess
import threading
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
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
    # What POST /disks asked for (the defaults: a disk made by add_disk).
    format: str = "raw"
    sparse: Optional[bool] = None
    provisioned_size: int = 1 << 30
    initial_size: Optional[int] = None
    storage_domain_id: Optional[str] = None
    description: str = "Uploaded by virt-v2v"
    # The image transfer that holds the disk's lock while it runs.
    transfer_id: Optional[str] = None

    def status(self):
        if self.transfer_id is not None:
            return "locked"
        if self.locked_polls is None or self.locked_polls > 0:
            return "locked"
        return self.status_after_lock


@dataclasses.dataclass
class Transfer:
    id: str
    disk_id: Optional[str]      # <disk id=...> (transfers created by disk)
    image_id: Optional[str]     # <image id=...> (older clients / engines)
    phase: str = "transferring"
    transfer_url: Optional[str] = None
    proxy_url: Optional[str] = None
    ticket_id: Optional[str] = None
    backing_path: Optional[str] = None   # the file imageio writes the disk to
    # GETs that still show the current transitional phase (initializing,
    # finalizing_*) before the next one.
    polls_left: int = 0
    body: str = ""                       # what POST /imagetransfers sent


@dataclasses.dataclass
class Job:
    id: str
    correlation_id: str
    description: str
    # GETs of /jobs that still show it "started"; then it is final_status.
    polls_left: int = 0
    final_status: str = "finished"      # or "failed"

    def status(self):
        return "started" if self.polls_left > 0 else self.final_status


@dataclasses.dataclass
class StorageDomain:
    id: str
    name: str
    storage_type: str           # ovirtsdk4.types.StorageType value: nfs, iscsi, ...
    type: str = "data"
    data_center_id: Optional[str] = None    # the data center it is attached to
    available: int = 10 << 30               # free bytes the engine tells


@dataclasses.dataclass
class DataCenter:
    id: str
    name: str
    status: str = "up"


@dataclasses.dataclass
class Cluster:
    id: str
    name: str
    data_center_id: str
    cpu_architecture: str = "x86_64"    # ovirtsdk4.types.Architecture value


@dataclasses.dataclass
class Vm:
    id: str
    name: str
    cluster_id: Optional[str] = None
    status: str = "down"
    ovf: Optional[str] = None           # the OVF of POST /vms (virt-v2v's createvm)
    correlation_id: Optional[str] = None


@dataclasses.dataclass
class Host:
    id: str
    name: str
    hw_id: str                  # what /etc/vdsm/vdsm.id holds on that host
    cluster_id: Optional[str] = None
    status: str = "up"


@dataclasses.dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: Dict[str, List[str]]
    headers: Dict[str, str]
    body: str


class StandinEngine:
    """The engine's state plus an HTTPS server thread serving it."""

    def __init__(self, pki, *, username="admin@internal", password="engine-password",
                 imageio=None):
        self.pki = pki
        # Where image transfers point: an object with add_ticket(disk_id, size)
        # -> (transfer_url, backing_path) and remove_ticket(ticket_id) (the
        # ImageioDaemon of tests/ovirt_standin/imageio.py); None: transfers
        # get a URL nobody listens on.
        self.imageio = imageio
        self.username = username
        self.password = password
        self.storage_domains: List[StorageDomain] = []
        self.data_centers: List[DataCenter] = []
        self.clusters: List[Cluster] = []
        self.vms: Dict[str, Vm] = {}
        self.hosts: List[Host] = []
        self.disks: Dict[str, Disk] = {}
        self.transfers: Dict[str, Transfer] = {}
        self.jobs: List[Job] = []
        # The real engine removes a disk itself when its upload is cancelled.
        self.cancel_removes_disk = False
        # -- knobs for the write side (what the next created thing does) --
        self.disk_locked_polls = 1          # GETs a new disk stays locked
        self.transfer_init_polls = 1        # GETs a transfer stays initializing
        self.finalize_polls = 1             # GETs it stays finalizing_*
        self.finalize_fails = False         # finalize ends in finished_failure
        self.cancel_locked_polls = 0        # GETs a cancelled upload's disk stays locked
        self.job_polls = 0                  # /jobs GETs the import job stays started
        self.import_job_fails = False       # the createvm import job ends failed
        self.requests: List[Recorded] = []
        self.tokens = set()
        self.revoked = set()
        self.lock = threading.Lock()
        self._server = None
        self._thread = None

    # -- setup helpers --------------------------------------------------
    def add_storage_domain(self, name, storage_type, *, type="data", data_center=None):
        """A storage domain, attached to ``data_center`` (a :class:`DataCenter`
        or its name) if given."""
        sd = StorageDomain(id=str(uuid.uuid4()), name=name, storage_type=storage_type, type=type)
        self.storage_domains.append(sd)
        if data_center is not None:
            self.attach_storage_domain(sd, data_center)
        return sd

    def add_data_center(self, name, *, status="up"):
        dc = DataCenter(id=str(uuid.uuid4()), name=name, status=status)
        self.data_centers.append(dc)
        return dc

    def attach_storage_domain(self, storage_domain, data_center):
        storage_domain.data_center_id = self._data_center(data_center).id

    def add_cluster(self, name, data_center, cpu_architecture="x86_64"):
        """A cluster of ``data_center`` (a :class:`DataCenter` or its name);
        ``cpu_architecture`` is an ovirtsdk4 Architecture value (``undefined``
        is what an engine shows for a cluster without hosts or CPU type)."""
        cluster = Cluster(id=str(uuid.uuid4()), name=name,
                          data_center_id=self._data_center(data_center).id,
                          cpu_architecture=cpu_architecture)
        self.clusters.append(cluster)
        return cluster

    def add_vm(self, name, *, cluster=None, status="down"):
        """A VM that already exists on the engine (``cluster``: a
        :class:`Cluster` or its name, optional)."""
        vm = Vm(id=str(uuid.uuid4()), name=name, status=status,
                cluster_id=self._cluster(cluster).id if cluster is not None else None)
        self.vms[vm.id] = vm
        return vm

    def add_host(self, name, hw_id, cluster, *, status="up"):
        """A host of ``cluster`` (a :class:`Cluster` or its name) whose
        /etc/vdsm/vdsm.id is ``hw_id``."""
        host = Host(id=str(uuid.uuid4()), name=name, hw_id=hw_id,
                    cluster_id=self._cluster(cluster).id, status=status)
        self.hosts.append(host)
        return host

    def _data_center(self, dc):
        if isinstance(dc, DataCenter):
            return dc
        return next(d for d in self.data_centers if d.name == dc)

    def _cluster(self, cluster):
        if isinstance(cluster, Cluster):
            return cluster
        return next(c for c in self.clusters if c.name == cluster)

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

    def counts(self):
        """{"METHOD /path-template": n} over all requests, ids in the path
        replaced by ``{id}`` (for reports of what the engine saw)."""
        out: Dict[str, int] = {}
        with self.lock:
            for r in self.requests:
                key = "%s %s" % (r.method, path_template(r.path))
                out[key] = out.get(key, 0) + 1
        return out

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
        try:
            return self._api(method, parts, query, body)
        except _BadBody as e:
            return e.answer

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
        if method == "GET":
            found = self._read(parts, query)
            if found is not None:
                return found
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
        if parts == ["disks"] and method == "POST":
            return self._add_disk(body)
        if parts == ["imagetransfers"] and method == "GET":
            return 200, XML_TYPE, "<image_transfers>%s</image_transfers>" % "".join(
                _transfer_xml(t) for t in self.transfers.values())
        if parts == ["imagetransfers"] and method == "POST":
            return self._add_transfer(body)
        if len(parts) >= 2 and parts[0] == "imagetransfers":
            t = self.transfers.get(parts[1])
            if t is None:
                return _fault(404, "Not Found", "Entity not found: %s" % parts[1])
            if len(parts) == 2 and method == "GET":
                self._advance(t)
                return 200, XML_TYPE, _transfer_xml(t)
            if parts[2:] == ["cancel"] and method == "POST":
                if t.phase.startswith("finished"):
                    # The engine refuses a phase change out of a final phase.
                    return _fault(409, "Operation Failed",
                                  "[Cannot cancel image transfer. Invalid phase transition "
                                  "from %s.]" % t.phase)
                self._end_transfer(t, "cancelled_user")
                return 200, XML_TYPE, "<action><status>complete</status></action>"
            if parts[2:] == ["finalize"] and method == "POST":
                if t.phase != "transferring":
                    return _fault(409, "Operation Failed",
                                  "[Cannot finalize image transfer in phase %s.]" % t.phase)
                t.phase = "finalizing_failure" if self.finalize_fails else "finalizing_success"
                t.polls_left = self.finalize_polls
                self._release_ticket(t)
                return 200, XML_TYPE, "<action><status>complete</status></action>"
        if parts == ["vms"] and method == "POST":
            return self._add_vm(query, body)
        if parts == ["jobs"] and method == "GET":
            return self._jobs(query)
        return _fault(404, "Not Found", "no such resource")

    # -- the write side --------------------------------------------------
    def _add_disk(self, body):
        root = _xml_body(body, "the disk")
        sd_el = root.find("storage_domains/storage_domain")
        sd = None
        if sd_el is not None:
            sd_id, sd_name = sd_el.get("id"), sd_el.findtext("name")
            sd = next((d for d in self.storage_domains
                       if (sd_id and d.id == sd_id) or (sd_name and d.name == sd_name)), None)
        if sd is None:
            return _fault(400, "Operation Failed",
                          "[Cannot add Virtual Disk. Storage Domain doesn't exist.]")
        provisioned = root.findtext("provisioned_size")
        if not provisioned:
            return _fault(400, "Incomplete parameters",
                          "Disk [provisionedSize] required for add")
        disk_id = root.get("id") or str(uuid.uuid4())
        if disk_id in self.disks:
            return _fault(409, "Operation Failed",
                          "[Cannot add Virtual Disk. Disk with the same ID already exists.]")
        initial = root.findtext("initial_size")
        sparse = root.findtext("sparse")
        disk = Disk(id=disk_id, name=root.findtext("name") or "disk-" + disk_id[:8],
                    locked_polls=self.disk_locked_polls, format=root.findtext("format") or "raw",
                    sparse=None if sparse is None else sparse == "true",
                    provisioned_size=int(provisioned),
                    initial_size=int(initial) if initial else None,
                    storage_domain_id=sd.id,
                    description=root.findtext("description") or "")
        self.disks[disk.id] = disk
        return 201, XML_TYPE, _disk_xml(disk, disk.status())

    def _add_transfer(self, body):
        root = _xml_body(body, "the image transfer")
        disk_el = root.find("disk")
        disk = self.disks.get(disk_el.get("id") if disk_el is not None else "")
        if disk is None:
            return _fault(404, "Not Found", "[Cannot transfer Virtual Disk: disk not found.]")
        if disk.status() != "ok":
            return _fault(409, "Operation Failed",
                          "[Cannot transfer Virtual Disk: Disk is locked. Please try again "
                          "later.]")
        t = Transfer(id=str(uuid.uuid4()), disk_id=disk.id, image_id=None,
                     phase="initializing", polls_left=self.transfer_init_polls, body=body)
        if self.imageio is not None:
            t.transfer_url, t.backing_path = self.imageio.add_ticket(
                disk.id, disk.provisioned_size)
            t.ticket_id = t.transfer_url.rstrip("/").rsplit("/", 1)[1]
        else:
            t.transfer_url = "https://127.0.0.1:%d/images/%s" % (closed_port(), t.id)
        t.proxy_url = t.transfer_url
        disk.transfer_id = t.id
        self.transfers[t.id] = t
        return 201, XML_TYPE, _transfer_xml(t)

    def _advance(self, t):
        """A GET of a transfer: a transitional phase ends after its polls."""
        if t.polls_left > 0:
            t.polls_left -= 1
            return
        if t.phase == "initializing":
            t.phase = "transferring"
        elif t.phase == "finalizing_success":
            self._end_transfer(t, "finished_success")
        elif t.phase == "finalizing_failure":
            self._end_transfer(t, "finished_failure")

    def _end_transfer(self, t, phase):
        t.phase = phase
        self._release_ticket(t)
        disk = self.disks.get(t.disk_id or t.image_id)
        if disk is None:
            return
        held = disk.transfer_id == t.id     # the lock this transfer took (not add_transfer's)
        if held:
            disk.transfer_id = None
        if phase == "finished_failure":
            # The engine marks the disk illegal and removes it.
            self.disks.pop(disk.id, None)
        elif phase == "cancelled_user":
            if self.cancel_removes_disk:
                self.disks.pop(disk.id, None)
            elif held:
                disk.locked_polls = self.cancel_locked_polls

    def _release_ticket(self, t):
        if self.imageio is None or t.ticket_id is None:
            return
        ticket_id, t.ticket_id = t.ticket_id, None
        # The daemon waits for the ticket's connections to close: not under
        # the engine's lock.
        threading.Thread(target=_quietly, args=(self.imageio.remove_ticket, ticket_id),
                         name="imageio-remove-ticket", daemon=True).start()

    def _add_vm(self, query, body):
        root = _xml_body(body, "the VM")
        cluster_el = root.find("cluster")
        cluster = next((c for c in self.clusters if cluster_el is not None and (
            c.id == cluster_el.get("id") or c.name == cluster_el.findtext("name"))), None)
        if cluster is None:
            return _fault(400, "Operation Failed", "[Cannot add VM. Cluster doesn't exist.]")
        ovf = root.findtext("initialization/configuration/data")
        config_type = root.findtext("initialization/configuration/type")
        if ovf is None or config_type != "ova":
            return _fault(400, "Incomplete parameters",
                          "stand-in only adds VMs from an OVF (configuration type ova)")
        parsed = parse_ovf(ovf)
        if parsed is None:
            return _fault(400, "Operation Failed", "[Cannot add VM. Failed to parse the OVF.]")
        ovf_id, name, _ = parsed
        if any(v.name == name for v in self.vms.values()):
            return _fault(409, "Operation Failed",
                          "[Cannot add VM. The VM name is already in use, please choose a "
                          "unique name and try again.]")
        correlation_id = (query.get("correlation_id") or [None])[0]
        # The engine keeps the OVF's VM id when it is free.
        vm_id = ovf_id if ovf_id and _UUID.match(ovf_id) and ovf_id not in self.vms \
            else str(uuid.uuid4())
        vm = Vm(id=vm_id, name=name, cluster_id=cluster.id, status="image_locked"
                if self.job_polls else "down", ovf=ovf, correlation_id=correlation_id)
        self.vms[vm.id] = vm
        self.jobs.append(Job(id=str(uuid.uuid4()), correlation_id=correlation_id or "",
                             description="Importing VM %s from configuration to Cluster %s"
                             % (name, cluster.name), polls_left=self.job_polls,
                             final_status="failed" if self.import_job_fails else "finished"))
        self._settle_vm(vm)
        return 201, XML_TYPE, _vm_xml(vm)

    def _settle_vm(self, vm):
        job = next((j for j in self.jobs if vm.correlation_id
                    and j.correlation_id == vm.correlation_id), None)
        if job is None or job.status() == "started":
            return
        if job.status() == "failed":
            self.vms.pop(vm.id, None)        # a failed import leaves no VM
        else:
            vm.status = "down"

    def _jobs(self, query):
        search = (query.get("search") or [""])[0]
        try:
            terms = parse_search(search) if search else []
        except ValueError as e:
            return _fault(400, "Operation Failed", str(e))
        if any(f != "correlation_id" for f, _ in terms):
            return _fault(400, "Operation Failed",
                          "stand-in only searches jobs by correlation_id: %s" % search)
        found = [j for j in self.jobs
                 if all(search_match(j.correlation_id, v, True) for _, v in terms)]
        text = "<jobs>%s</jobs>" % "".join(_job_xml(j) for j in found)
        for j in found:
            if j.polls_left > 0:
                j.polls_left -= 1
            for vm in list(self.vms.values()):
                if vm.correlation_id == j.correlation_id:
                    self._settle_vm(vm)
        return 200, XML_TYPE, text

    # -- for assertions ----------------------------------------------------
    def locked_disks(self):
        with self.lock:
            return [d.id for d in self.disks.values() if d.status() == "locked"]

    def unfinished_transfers(self):
        with self.lock:
            return [t.id for t in self.transfers.values()
                    if not t.phase.startswith(("finished", "cancelled"))]

    # -- the read side: collections, entities, searches ----------------
    def _read(self, parts, query):
        """The answer to a GET of the read side, None if ``parts`` is none
        of its paths."""
        dcs = {d.id: d for d in self.data_centers}
        clusters = {c.id: c for c in self.clusters}
        sds = {sd.id: sd for sd in self.storage_domains}
        hosts = {h.id: h for h in self.hosts}
        collections = {
            # name: (entities, list element, xml of one, search fields)
            "datacenters": (dcs, "data_centers", self._data_center_xml, {
                "name": lambda d: d.name,
                "storage.name": lambda d: [sd.name for sd in self.storage_domains
                                           if sd.data_center_id == d.id],
                "status": lambda d: d.status}),
            "clusters": (clusters, "clusters", self._cluster_xml, {
                "name": lambda c: c.name,
                "datacenter": lambda c: dcs[c.data_center_id].name}),
            "storagedomains": (sds, "storage_domains", _storage_domain_xml, {
                "name": lambda sd: sd.name,
                "datacenter": lambda sd: (dcs[sd.data_center_id].name
                                          if sd.data_center_id else [])}),
            "vms": (self.vms, "vms", _vm_xml, {
                "name": lambda v: v.name,
                "cluster": lambda v: clusters[v.cluster_id].name if v.cluster_id else [],
                "status": lambda v: v.status}),
            "hosts": (hosts, "hosts", self._host_xml, {
                "name": lambda h: h.name,
                "hw_id": lambda h: h.hw_id,
                "datacenter": lambda h: dcs[clusters[h.cluster_id].data_center_id].name,
                "cluster": lambda h: clusters[h.cluster_id].name,
                "status": lambda h: h.status}),
        }
        if not parts or parts[0] not in collections:
            return None
        entities, element, xml, fields = collections[parts[0]]
        if len(parts) == 1:
            return self._list(entities.values(), element, xml, fields, query)
        entity = entities.get(parts[1])
        if entity is None:
            return _fault(404, "Not Found", "Entity not found: %s" % parts[1])
        if len(parts) == 2:
            return 200, XML_TYPE, xml(entity)
        if parts[0] == "datacenters" and parts[2:] == ["storagedomains"]:
            return self._list([sd for sd in self.storage_domains
                               if sd.data_center_id == entity.id], "storage_domains",
                              lambda sd: _storage_domain_xml(sd, entity), {}, {})
        if parts[0] == "datacenters" and parts[2:] == ["clusters"]:
            return self._list([c for c in self.clusters if c.data_center_id == entity.id],
                              "clusters", self._cluster_xml, {}, {})
        return None

    @staticmethod
    def _list(entities, element, xml, fields, query):
        search = (query.get("search") or [""])[0]
        case_sensitive = (query.get("case_sensitive") or ["true"])[0] != "false"
        found = list(entities)
        if search:
            try:
                terms = parse_search(search)
            except ValueError as e:
                return _fault(400, "Operation Failed", str(e))
            for field, _ in terms:
                if field not in fields:
                    return _fault(400, "Operation Failed",
                                  "stand-in cannot search %s by %s: %s" % (
                                      element, field, search))
            found = [e for e in found
                     if all(search_match(fields[f](e), pattern,
                                         case_sensitive and f != "status")
                            for f, pattern in terms)]
        return 200, XML_TYPE, "<%s>%s</%s>" % (element, "".join(xml(e) for e in found),
                                               element)

    def _data_center_xml(self, dc):
        href = "%s/datacenters/%s" % (API, dc.id)
        links = "".join('<link href=%s rel="%s"/>' % (quoteattr(href + "/" + rel), rel)
                        for rel in ("clusters", "networks", "permissions", "quotas",
                                    "storagedomains"))
        return ('<data_center href=%s id=%s><name>%s</name>%s<local>false</local>'
                '<quota_mode>disabled</quota_mode><status>%s</status>'
                '<storage_format>v5</storage_format>'
                '<version><major>4</major><minor>7</minor></version></data_center>' % (
                    quoteattr(href), quoteattr(dc.id), escape(dc.name), links,
                    escape(dc.status)))

    def _cluster_xml(self, c):
        href = "%s/clusters/%s" % (API, c.id)
        return ('<cluster href=%s id=%s><name>%s</name>'
                '<cpu><architecture>%s</architecture><type>Intel Nehalem Family</type></cpu>'
                '<data_center href=%s id=%s/>'
                '<version><major>4</major><minor>7</minor></version></cluster>' % (
                    quoteattr(href), quoteattr(c.id), escape(c.name),
                    escape(c.cpu_architecture),
                    quoteattr("%s/datacenters/%s" % (API, c.data_center_id)),
                    quoteattr(c.data_center_id)))

    def _host_xml(self, h):
        href = "%s/hosts/%s" % (API, h.id)
        return ('<host href=%s id=%s><name>%s</name><address>127.0.0.1</address>'
                '<status>%s</status><cluster href=%s id=%s/></host>' % (
                    quoteattr(href), quoteattr(h.id), escape(h.name), escape(h.status),
                    quoteattr("%s/clusters/%s" % (API, h.cluster_id)),
                    quoteattr(h.cluster_id)))


# --------------------------------------------------------------------------
# XML in the oVirt API model's shape

def _storage_domain_xml(sd, data_center=None):
    """A storage domain as /storagedomains shows it, or (``data_center``
    given) as that data center's /storagedomains does."""
    if data_center is None:
        href = "%s/storagedomains/%s" % (API, sd.id)
        dcs = ("<data_centers><data_center href=%s id=%s/></data_centers>" % (
            quoteattr("%s/datacenters/%s" % (API, sd.data_center_id)),
            quoteattr(sd.data_center_id)) if sd.data_center_id else "")
    else:
        href = "%s/datacenters/%s/storagedomains/%s" % (API, data_center.id, sd.id)
        dcs = "<data_center href=%s id=%s/>" % (
            quoteattr("%s/datacenters/%s" % (API, data_center.id)), quoteattr(data_center.id))
    return ('<storage_domain href=%s id=%s><name>%s</name><available>%d</available>'
            '<master>true</master><status>active</status><storage><type>%s</type></storage>'
            '<storage_format>v5</storage_format><type>%s</type>%s</storage_domain>' % (
                quoteattr(href), quoteattr(sd.id), escape(sd.name), sd.available,
                escape(sd.storage_type), escape(sd.type), dcs))


def _vm_xml(vm):
    href = "%s/vms/%s" % (API, vm.id)
    cluster = ("<cluster href=%s id=%s/>" % (
        quoteattr("%s/clusters/%s" % (API, vm.cluster_id)), quoteattr(vm.cluster_id))
        if vm.cluster_id else "")
    return "<vm href=%s id=%s><name>%s</name><status>%s</status>%s</vm>" % (
        quoteattr(href), quoteattr(vm.id), escape(vm.name), escape(vm.status), cluster)


def _disk_xml(disk, status):
    href = "%s/disks/%s" % (API, disk.id)
    extra = ""
    if disk.sparse is not None:
        extra += "<sparse>%s</sparse>" % ("true" if disk.sparse else "false")
    if disk.initial_size is not None:
        extra += "<initial_size>%d</initial_size>" % disk.initial_size
    if disk.storage_domain_id:
        extra += "<storage_domains><storage_domain href=%s id=%s/></storage_domains>" % (
            quoteattr("%s/storagedomains/%s" % (API, disk.storage_domain_id)),
            quoteattr(disk.storage_domain_id))
    return ('<disk href=%s id=%s><name>%s</name><description>%s</description>'
            '<format>%s</format><provisioned_size>%d</provisioned_size>%s'
            '<status>%s</status><storage_type>image</storage_type></disk>' % (
                quoteattr(href), quoteattr(disk.id), escape(disk.name),
                escape(disk.description), escape(disk.format), disk.provisioned_size,
                extra, escape(status)))


def _job_xml(job):
    href = "%s/jobs/%s" % (API, job.id)
    return ('<job href=%s id=%s><auto_cleared>true</auto_cleared><description>%s'
            '</description><external>false</external><status>%s</status></job>' % (
                quoteattr(href), quoteattr(job.id), escape(job.description),
                escape(job.status())))


_OVF_NS = "{http://schemas.dmtf.org/ovf/envelope/1/}"


def parse_ovf(ovf):
    """(vm id, name, [DiskSection/Disk diskIds]) of an OVF as virt-v2v's
    createvm sends it (VirtualSystem, or the older Content element); None if
    it is not such an OVF."""
    try:
        root = ET.fromstring(ovf)
    except ET.ParseError:
        return None
    system = root.find("VirtualSystem")
    if system is None:
        system = root.find("Content")
    if system is None or not system.findtext("Name"):
        return None
    disks = [d.get(_OVF_NS + "diskId", "") for d in root.iter("Disk")]
    return system.get(_OVF_NS + "id"), system.findtext("Name"), disks


def _quietly(fn, *args):
    try:
        fn(*args)
    except Exception:
        pass  # a ticket the daemon already dropped, or a daemon already stopped


def _transfer_xml(t):
    href = "%s/imagetransfers/%s" % (API, t.id)
    inner = "<active>%s</active><direction>upload</direction><phase>%s</phase>" % (
        "false" if t.phase.startswith(("finished", "cancelled")) else "true", t.phase)
    if t.transfer_url:
        inner += "<proxy_url>%s</proxy_url><transfer_url>%s</transfer_url>" % (
            escape(t.proxy_url or t.transfer_url), escape(t.transfer_url))
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


class _BadBody(Exception):
    """A request body that is not XML: answered 400 by :meth:`StandinEngine.handle`."""

    def __init__(self, answer):
        super().__init__(answer)
        self.answer = answer


def _xml_body(body, what):
    """The parsed XML of a POST body, or :class:`_BadBody` with the engine's 400."""
    try:
        return ET.fromstring(body)
    except ET.ParseError as e:
        raise _BadBody(_fault(400, "Bad Request", "cannot parse %s: %s" % (what, e))) from None


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


# --------------------------------------------------------------------------
# Search and paths

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}$")


def parse_search(search):
    """The engine's search language as far as the SDK's callers use it:
    ``field=value`` terms joined by ``and`` -> [(field, value)]; a value may
    be double-quoted and hold ``*`` wildcards."""
    terms = []
    for term in re.split(r"\s+and\s+", search.strip(), flags=re.IGNORECASE):
        field, sep, value = term.partition("=")
        if not sep or not field.strip():
            raise ValueError("stand-in cannot parse the search %r" % search)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        terms.append((field.strip().lower(), value))
    return terms


def search_match(values, pattern, case_sensitive):
    """Does one of ``values`` (a string or a list of them) match ``pattern``?"""
    if isinstance(values, str):
        values = [values]
    if not case_sensitive:
        values, pattern = [v.lower() for v in values], pattern.lower()
    return any(fnmatch.fnmatchcase(v, pattern) for v in values)


def path_template(path):
    """``path`` with every id segment (a UUID) replaced by ``{id}``."""
    return "/".join("{id}" if _UUID.match(seg) else seg for seg in path.split("/"))


def closed_port():
    """A 127.0.0.1 port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
