"""A minimal vSphere SOAP client over https, standard library only.

Enough for the pre-flight (wrapper.vmware.preflight): ``RetrieveServiceContent``,
``SessionManager.Login``, every VM's ``name`` and ``runtime.powerState``
through a ContainerView and ``PropertyCollector.RetrievePropertiesEx`` (paged
with ``ContinueRetrievePropertiesEx``), ``Logout``.  These are the calls of
the vSphere Web Services API that ESXi and vCenter both answer on ``/sdk``.

The server's certificate chain is not verified (ESXi's is usually
self-signed, and the job names its thumbprint instead): every connection,
the first and any reconnection, checks the certificate's fingerprint before
a byte is sent (:class:`PinnedConnection`), so the password never reaches a
server whose certificate is not the one the job named.

Requests are built and replies read by pure functions; replies are bounded
in size, and a reply with a DOCTYPE is refused before it is parsed.
"""
import http.client
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from wrapper.vmware import endpoint

NS = {"s": "http://schemas.xmlsoap.org/soap/envelope/", "v": "urn:vim25",
      "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
MAX_REPLY = 8 << 20
PAGE = 1000
MAX_PAGES = 100
DEFAULT_SOAP_ACTION = "urn:vim25/6.0"


class SoapError(Exception):
    """A call failed.  ``step`` says which (connect, tls, fingerprint, http,
    fault, reply, timeout); ``fault`` is the fault's detail type (InvalidLogin...)."""

    def __init__(self, step, message, fault=None, status=None):
        super().__init__(message)
        self.step, self.message, self.fault, self.status = step, message, fault, status


# -- building requests (pure) ------------------------------------------------
def moref(tag, type_, value):
    return '<%s type="%s">%s</%s>' % (tag, escape(type_, {'"': "&quot;"}), escape(value), tag)


def envelope(body):
    return ('<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="%s" xmlns:xsi="%s" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soapenv:Body>%s'
            '</soapenv:Body></soapenv:Envelope>' % (NS["s"], NS["xsi"], body)).encode("utf-8")


def call(method, this, *params):
    """``<method xmlns="urn:vim25"><_this .../>params</method>``; ``this`` a (type, value)."""
    return envelope('<%s xmlns="urn:vim25">%s%s</%s>' % (
        method, moref("_this", *this), "".join(params), method))


def element(tag, value):
    return "<%s>%s</%s>" % (tag, escape(str(value)), tag)


def vm_property_spec(view, paths=("name", "runtime.powerState")):
    """A specSet: ``paths`` of every VirtualMachine in the ContainerView ``view``."""
    return ("<specSet><propSet><type>VirtualMachine</type>%s</propSet>"
            "<objectSet>%s<skip>true</skip><selectSet xsi:type=\"TraversalSpec\">"
            "<name>view</name><type>ContainerView</type><path>view</path><skip>false</skip>"
            "</selectSet></objectSet></specSet>" % (
                "".join(element("pathSet", p) for p in paths), moref("obj", "ContainerView", view)))


# -- reading replies (pure) ------------------------------------------------------
def parse(body):
    """The parsed SOAP envelope; SoapError("reply") when it is not one."""
    if b"<!DOCTYPE" in body[:4096].upper():
        raise SoapError("reply", "the reply carries a DOCTYPE")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise SoapError("reply", "the reply is not XML (%s)" % e) from None
    if root.tag != "{%s}Envelope" % NS["s"]:
        raise SoapError("reply", "the reply is not a SOAP envelope")
    return root


def fault_of(root):
    """(faultstring, detail type) of a SOAP fault, or None."""
    fault = root.find("s:Body/s:Fault", NS)
    if fault is None:
        return None
    text = (fault.findtext("faultstring") or "").strip()
    kind = None
    detail = fault.find("detail")
    if detail is not None and len(detail):
        inner = detail[0]
        kind = inner.get("{%s}type" % NS["xsi"]) or inner.tag.split("}")[-1]
        kind = kind.split(":")[-1]
        if kind.endswith("Fault"):
            kind = kind[:-len("Fault")]
    return text or kind or "SOAP fault", kind


def returnval(root):
    body = root.find("s:Body", NS)
    if body is None or not len(body):
        raise SoapError("reply", "the reply has an empty body")
    return body[0].find("v:returnval", NS)


def service_content(root):
    """The morefs and the product of a RetrieveServiceContent reply."""
    rv = returnval(root)
    if rv is None:
        raise SoapError("reply", "RetrieveServiceContent returned nothing")
    out = {}
    for key in ("rootFolder", "propertyCollector", "viewManager", "sessionManager"):
        node = rv.find("v:" + key, NS)
        out[key] = None if node is None else ((node.get("type") or ""), (node.text or "").strip())
    about = rv.find("v:about", NS)
    for key in ("fullName", "apiType", "apiVersion"):
        out[key] = (about.findtext("v:" + key, "", NS) if about is not None else "").strip()
    return out


def vm_objects(root):
    """[(name, powerState)] and the continuation token of a RetrievePropertiesEx reply."""
    rv = returnval(root)
    if rv is None:
        return [], None
    found = []
    for obj in rv.findall("v:objects", NS):
        props = {p.findtext("v:name", "", NS): p.findtext("v:val", "", NS)
                 for p in obj.findall("v:propSet", NS)}
        found.append((props.get("name", ""), props.get("runtime.powerState", "")))
    token = rv.findtext("v:token", None, NS)
    return found, token


def session_cookie(set_cookie):
    """``vmware_soap_session=...`` from a Set-Cookie header, or None."""
    for part in (set_cookie or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == "vmware_soap_session":
            return "%s=%s" % (name, value)
    return None


# -- the connection ---------------------------------------------------------
class PinnedConnection(http.client.HTTPSConnection):
    """An https connection that refuses a server whose certificate's
    fingerprint is not ``fingerprint`` (the chain itself is not checked)."""

    def __init__(self, host, port, fingerprint, timeout):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        super().__init__(host, port, timeout=timeout, context=ctx)
        self.fingerprint = fingerprint
        self.seen = None

    def connect(self):
        try:
            super().connect()
        except ssl.SSLError as e:
            raise SoapError("tls", "TLS handshake failed (%s)" % (e.reason or e)) from None
        except socket.timeout:
            raise SoapError("timeout", "no answer in time") from None
        except OSError as e:
            raise SoapError("connect", e.strerror or str(e)) from None
        der = self.sock.getpeercert(binary_form=True) or b""
        self.seen = endpoint.of(der)
        if not endpoint.matches(self.fingerprint, der):
            self.sock.close()
            self.sock = None
            raise SoapError("fingerprint", "the certificate's SHA-1 fingerprint is %s" % self.seen)


class Client:
    """One SOAP session against ``/sdk`` of an :class:`~wrapper.vmware.endpoint.Endpoint`,
    bounded by ``deadline`` (a ``clock`` time)."""

    def __init__(self, ep, fingerprint, deadline, clock=time.monotonic, connection=None):
        self.ep, self.deadline, self.clock = ep, deadline, clock
        self.conn = connection or PinnedConnection(ep.host, ep.port, fingerprint, self._left())
        self.cookie = None
        self.action = DEFAULT_SOAP_ACTION
        self.content = None

    def _left(self):
        left = self.deadline - self.clock()
        if left <= 0:
            raise SoapError("timeout", "no answer in time")
        return left

    def post(self, body):
        """The parsed reply to ``body``; SoapError for a fault, an HTTP error, a bad reply."""
        self.conn.timeout = self._left()
        if self.conn.sock is not None:
            self.conn.sock.settimeout(self.conn.timeout)
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": self.action}
        if self.cookie:
            headers["Cookie"] = self.cookie
        try:
            self.conn.request("POST", "/sdk", body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read(MAX_REPLY + 1)
        except SoapError:
            raise
        except socket.timeout:
            raise SoapError("timeout", "no answer in time") from None
        except (OSError, http.client.HTTPException) as e:
            raise SoapError("connect", str(e) or type(e).__name__) from None
        if len(data) > MAX_REPLY:
            raise SoapError("reply", "the reply is larger than %d bytes" % MAX_REPLY)
        self.cookie = session_cookie(resp.getheader("Set-Cookie")) or self.cookie
        if resp.status not in (200, 500) or b"Envelope" not in data[:2048]:
            raise SoapError("http", "HTTP %d %s on /sdk" % (resp.status, resp.reason),
                            status=resp.status)
        root = parse(data)
        fault = fault_of(root)
        if fault:
            raise SoapError("fault", fault[0], fault=fault[1])
        return root

    def retrieve_service_content(self):
        self.content = service_content(self.post(call(
            "RetrieveServiceContent", ("ServiceInstance", "ServiceInstance"))))
        if self.content["apiVersion"]:
            self.action = "urn:vim25/%s" % self.content["apiVersion"]
        return self.content

    def login(self, user, password):
        self.post(call("Login", self.content["sessionManager"], element("userName", user),
                       element("password", password)))

    def vms(self):
        """Every VM's (name, powerState), paged; the view is destroyed at logout."""
        view = returnval(self.post(call(
            "CreateContainerView", self.content["viewManager"],
            moref("container", *self.content["rootFolder"]), element("type", "VirtualMachine"),
            element("recursive", "true"))))
        if view is None:
            raise SoapError("reply", "CreateContainerView returned nothing")
        pc = self.content["propertyCollector"]
        found, token = vm_objects(self.post(call(
            "RetrievePropertiesEx", pc, vm_property_spec((view.text or "").strip()),
            "<options><maxObjects>%d</maxObjects></options>" % PAGE)))
        pages = 1
        while token and pages < MAX_PAGES:
            more, token = vm_objects(self.post(call(
                "ContinueRetrievePropertiesEx", pc, element("token", token))))
            found += more
            pages += 1
        return found

    def logout(self):
        """End the session; never raises (the answer is known by then)."""
        try:
            self.post(call("Logout", self.content["sessionManager"]))
        except SoapError:
            pass
        finally:
            self.conn.close()
