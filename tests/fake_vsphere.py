"""A stand-in vSphere SOAP endpoint for unit tests: a standard-library https
server on 127.0.0.1 that answers the calls wrapper.vmware.soap makes
(RetrieveServiceContent, Login, CreateContainerView, RetrievePropertiesEx,
ContinueRetrievePropertiesEx, Logout) the way ESXi and vCenter do, from a
certificate made for the test with ``openssl``.

``FakeVSphere(tmp, vms={"vm1": "poweredOff"})`` starts it; ``.fingerprint``
is its certificate's SHA-1; ``.calls`` lists the methods called and
``.passwords`` the passwords it was sent.  ``page`` makes it page the VM
list; ``vcenter`` answers as a vCenter; ``mode`` breaks it on purpose
("http404": not a SOAP endpoint, "slow": never answers, "plain": no TLS).
"""
import hashlib
import http.server
import re
import socket
import ssl
import subprocess
import threading
import time
from xml.sax.saxutils import escape

ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>%s'
            '</soapenv:Body></soapenv:Envelope>')
LOGIN_FAULT = ("<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Cannot complete "
               "login due to an incorrect user name or password.</faultstring><detail>"
               "<InvalidLoginFault xmlns=\"urn:vim25\" xsi:type=\"InvalidLogin\"></InvalidLoginFault>"
               "</detail></soapenv:Fault>")


def make_certificate(directory, cn="127.0.0.1"):
    """(certfile, keyfile, SHA-1 fingerprint as AA:BB:...) of a new self-signed certificate."""
    cert, key = "%s/cert.pem" % directory, "%s/key.pem" % directory
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=%s" % cn, "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    der = ssl.PEM_cert_to_DER_cert(open(cert).read())
    digest = hashlib.sha1(der).hexdigest().upper()
    return cert, key, ":".join(digest[i:i + 2] for i in range(0, 40, 2))


def _vm_objects(items):
    return "".join(
        '<objects><obj type="VirtualMachine">vm-%d</obj><propSet><name>name</name>'
        '<val xsi:type="xsd:string">%s</val></propSet><propSet><name>runtime.powerState</name>'
        '<val xsi:type="VirtualMachinePowerState">%s</val></propSet></objects>'
        % (i, escape(name), state) for i, (name, state) in items)


class FakeVSphere:
    def __init__(self, certdir, vms=None, user="root", password="secret", page=1000,
                 vcenter=False, mode=None, cert=None):
        self.vms = dict(vms if vms is not None else {"testvm": "poweredOff"})
        self.user, self.password, self.page = user, password, page
        self.vcenter, self.mode = vcenter, mode
        self.calls, self.passwords, self.cookies = [], [], []
        self.certfile, self.keyfile, self.fingerprint = cert or make_certificate(certdir)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        if mode != "plain":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.certfile, self.keyfile)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def uri(self, scheme="esx", user="root", path=""):
        return "%s://%s@127.0.0.1:%d/%s?no_verify=1" % (scheme, user, self.port, path)

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- answers --------------------------------------------------------------
    def answer(self, method, body, cookie):
        prefix = "vpxd" if self.vcenter else "ha"
        if method == "RetrieveServiceContent":
            product = ("VMware vCenter Server 7.0.3", "VirtualCenter") if self.vcenter else \
                ("VMware ESXi 6.5.0 build-5310538", "HostAgent")
            content = (
                '<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval>'
                '<rootFolder type="Folder">%s-folder-root</rootFolder>'
                '<propertyCollector type="PropertyCollector">%s-property-collector</propertyCollector>'
                '<viewManager type="ViewManager">ViewManager</viewManager>'
                '<about><fullName>%s</fullName><apiType>%s</apiType><apiVersion>6.5</apiVersion></about>'
                '<sessionManager type="SessionManager">%s-sessionmgr</sessionManager>'
                '</returnval></RetrieveServiceContentResponse>' % (
                    "group-d1" if self.vcenter else "ha", prefix, product[0], product[1],
                    "SessionManager" if self.vcenter else "ha"))
            return 200, content, None
        if method == "Login":
            user = re.search(r"<userName>(.*?)</userName>", body).group(1)
            password = re.search(r"<password>(.*?)</password>", body, re.S).group(1)
            self.passwords.append(password)
            if (user, password) != (self.user, escape(self.password)):
                return 500, LOGIN_FAULT, None
            return 200, ('<LoginResponse xmlns="urn:vim25"><returnval><key>52</key><userName>%s'
                         '</userName></returnval></LoginResponse>' % user), \
                'vmware_soap_session="52abc"; Path=/; HttpOnly; Secure;'
        if cookie != 'vmware_soap_session="52abc"':
            return 500, ("<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>"
                         "The session is not authenticated.</faultstring><detail>"
                         "<NotAuthenticatedFault xmlns=\"urn:vim25\"/></detail></soapenv:Fault>"), None
        if method == "CreateContainerView":
            return 200, ('<CreateContainerViewResponse xmlns="urn:vim25"><returnval '
                         'type="ContainerView">session[52]view</returnval>'
                         '</CreateContainerViewResponse>'), None
        if method in ("RetrievePropertiesEx", "ContinueRetrievePropertiesEx"):
            start = int(re.search(r"<token>(\d+)</token>", body).group(1)) \
                if method.startswith("Continue") else 0
            items = list(enumerate(self.vms.items()))[start:start + self.page]
            token = start + self.page
            more = "<token>%d</token>" % token if token < len(self.vms) else ""
            return 200, '<%sResponse xmlns="urn:vim25"><returnval>%s%s</returnval></%sResponse>' % (
                method, _vm_objects(items), more, method), None
        if method == "Logout":
            return 200, '<LogoutResponse xmlns="urn:vim25"></LogoutResponse>', None
        return 500, "<soapenv:Fault><faultstring>unknown method %s</faultstring></soapenv:Fault>" \
            % method, None

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                m = re.search(r"<soapenv:Body><(\w+)", body)
                method = m.group(1) if m else "?"
                fake.calls.append(method)
                if fake.mode == "slow":
                    time.sleep(30)
                if fake.mode == "http404" or self.path != "/sdk":
                    self.send_error(404)
                    return
                status, inner, cookie = fake.answer(method, body, self.headers.get("Cookie"))
                data = (ENVELOPE % inner).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                if cookie:
                    self.send_header("Set-Cookie", cookie)
                self.end_headers()
                self.wfile.write(data)

        return Handler


def closed_port():
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
