"""The VMware endpoint a ``vmware_uri`` names, and SHA-1 fingerprints (pure).

``esx://[user@]host[:port][/][?...]`` is an ESXi host, ``vpx://[user@]vcenter
[:port]/DC/cluster-or-host[?...]`` a vCenter (libvirt's ESX driver,
https://libvirt.org/drvesx.html).  Both speak SOAP over https on port 443
unless the URI names another.  Without a user in the URI libvirt asks for
one, offering ``root`` (esx) or ``administrator`` (vpx); so does this module.
"""
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 443
DEFAULT_USER = {"esx": "root", "vpx": "administrator"}
_HEX = re.compile(r"(?:[0-9A-F]{2})+")
# the digests a thumbprint may be: VDDK's is SHA-1 (20 bytes); newer tools show SHA-256
DIGESTS = {20: "sha1", 32: "sha256"}


@dataclass(frozen=True)
class Endpoint:
    kind: str           # "esx" or "vpx"
    host: str
    port: int
    user: str
    path: str           # vpx: "DC/cluster-or-host"; esx: ""

    def where(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%d" % (host, self.port)


def parse_uri(uri):
    """The :class:`Endpoint` of ``uri``, or None when it is not an esx:// or
    vpx:// URI with a host (the pre-flight then has nothing to ask it)."""
    try:
        parts = urlsplit(uri or "")
        port = parts.port
    except ValueError:
        return None
    kind = parts.scheme.lower()
    if kind not in DEFAULT_USER or not parts.hostname:
        return None
    user = unquote(parts.username) if parts.username else DEFAULT_USER[kind]
    return Endpoint(kind, parts.hostname, port or DEFAULT_PORT, user, parts.path.strip("/"))


def normalize(fingerprint):
    """``aa:bb:...`` / ``AABB...`` -> ``AA:BB:...``; None when it is not the hex of
    a SHA-1 or SHA-256 digest."""
    text = re.sub(r"[\s:]", "", fingerprint or "").upper()
    if not _HEX.fullmatch(text) or len(text) // 2 not in DIGESTS:
        return None
    return ":".join(text[i:i + 2] for i in range(0, len(text), 2))


def of(der, algorithm="sha1"):
    """The ``AA:BB:...`` fingerprint of a DER certificate."""
    return normalize(hashlib.new(algorithm, der).hexdigest())


def matches(fingerprint, der):
    """Whether ``fingerprint`` (SHA-1, or SHA-256, any case, colons or not) is
    the certificate ``der``'s."""
    want = normalize(fingerprint)
    if want is None:
        return False
    return want == of(der, DIGESTS[len(want.replace(":", "")) // 2])
