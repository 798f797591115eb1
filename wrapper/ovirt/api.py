"""The wrapper's own conversations with the oVirt engine (``rhv_url`` jobs).

Through the official SDK (``ovirt-engine-sdk-python``, module ``ovirtsdk4``),
which is an optional extra imported only here and only when needed:

* :func:`check_target`: the pre-flight's questions (wrapper.ovirt.preflight): the
  storage domain and the cluster in one data center, no VM of that name, and
  the storage type that gives the allocation (docs/contract.md §3.3: ``preallocated`` for
  block-like storage domains, ``sparse`` otherwise); the job uses this one;
* the connection helpers (:func:`access_from_url`, :func:`connect`,
  :func:`explain`, :func:`scrub`, :func:`close`) that
  :mod:`wrapper.ovirt.cleanup` shares for removing a failed upload's disks.

Secrets: the password is a :class:`wrapper.security.secrets.Secret`, revealed only
when handed to the SDK.  The SDK is never given ``debug=True`` nor a ``log``:
in debug mode it copies every byte sent and received to the log (4.6.3,
``Connection._curl_debug``), unmasked -- the SSO request body carries the
password and every API request carries ``Authorization: Bearer <token>``.
Without ``debug`` it logs nothing, so there is nothing to mask.
"""
import dataclasses
import logging
import math
import os
import re
import threading
from typing import Optional
from urllib.parse import unquote, urlsplit, urlunsplit

from wrapper.errors import JobError, WrapperError
from wrapper.security.secrets import MASK, Secret
from wrapper.settings import VDSM_CA

log = logging.getLogger(__name__)

SDK_MISSING = "the oVirt SDK (ovirt-engine-sdk-python) is needed for rhv_url jobs"

# What virt-v2v (rhv-upload) uses when the URL names no user: see
# virt-v2v-output-rhv(1), "-oc": "If the username is not specified then
# virt-v2v defaults to using admin@internal".
DEFAULT_USERNAME = "admin@internal"
# docs/contract.md §3.2: the VDSM CA, present on every oVirt host.
DEFAULT_CAFILE = VDSM_CA                 # wrapper.settings owns it

# docs/contract.md §3.3: FCP, iSCSI, Cinder, GlusterFS, POSIX -> preallocated.  Values of
# ovirtsdk4.types.StorageType.
BLOCK_STORAGE_TYPES = frozenset({"fcp", "iscsi", "cinder", "glusterfs", "posixfs"})



# libcurl error codes (CURLE_*) that mean "the engine's certificate could not
# be verified with the CA we were given" (60 PEER_FAILED_VERIFICATION, 58
# SSL_CERTPROBLEM, 77 SSL_CACERT_BADFILE, 83 SSL_ISSUER_ERROR, 51 was 60's
# number before curl 7.62) and "TLS handshake failed" (35 SSL_CONNECT_ERROR).
_CURL_CA_ERRORS = frozenset({51, 58, 60, 77, 83})
_CURL_TLS_ERRORS = frozenset({35})
_CURL_MSG_RE = re.compile(r"\((\d+), ['\"](.*)['\"]\)\s*$")


@dataclasses.dataclass(frozen=True)
class EngineAccess:
    """Where and how to reach the engine, with the same TLS settings as the
    ones given to virt-v2v (``-oo rhv-cafile``, ``-oo rhv-verifypeer``).

    ``url`` is the API URL without user information.
    """

    url: str
    username: str
    password: Secret
    cafile: Optional[str] = DEFAULT_CAFILE
    insecure: bool = False


def access_from_url(rhv_url, password, cafile=None, insecure=False):
    """Build an :class:`EngineAccess` from the job's ``rhv_url``.

    The user name comes from the URL's user information, as virt-v2v does
    (``https://admin@internal@engine/ovirt-engine/api``; the last ``@``
    separates it from the host), defaulting to ``admin@internal``.  A
    password in the URL is ignored (``rhv_password`` is the password) and
    dropped from the API URL.  ``cafile`` None means the VDSM CA.
    """
    if not isinstance(rhv_url, str):
        raise JobError("rhv_url", "must be a string")
    parts = urlsplit(rhv_url.strip())
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if parts.scheme not in ("https", "http") or not hostport:
        raise JobError("rhv_url", "must be the engine's API URL, such as "
                       "https://engine.example.com/ovirt-engine/api")
    user, _, url_password = userinfo.partition(":")
    if url_password:
        log.warning("rhv_url carries a password; it is ignored (rhv_password is used)")
    username = unquote(user) or DEFAULT_USERNAME
    url = urlunsplit((parts.scheme, hostport, parts.path.rstrip("/"), parts.query, ""))
    return EngineAccess(url=url, username=username, password=Secret(password),
                        cafile=DEFAULT_CAFILE if cafile is None else cafile,
                        insecure=bool(insecure))


def load_sdk():
    """Import the SDK lazily: it is only needed for ``rhv_url`` jobs."""
    try:
        import ovirtsdk4
        import ovirtsdk4.types  # noqa: F401  (the enums used below)
    except ImportError:
        raise WrapperError(SDK_MISSING) from None
    return ovirtsdk4


def scrub(text, access):
    """One line, no secret: the message of an SDK or curl error."""
    text = " ".join(str(text).split())
    secret = access.password.reveal()
    if secret:
        text = text.replace(secret, MASK)
    return text.rstrip(" .")


def _curl_reason(exc):
    """(curl error code, curl message) behind an SDK error, or (None, text).

    The SDK re-raises ``pycurl.error`` as its own ``Error`` whose message is
    ``Error while sending HTTP request: (7, '...')``; the original is the
    exception's context.
    """
    ctx = exc.__context__
    args = getattr(ctx, "args", None)
    if (type(ctx).__name__ == "error" and args and len(args) == 2 and
            isinstance(args[0], int)):
        return args[0], str(args[1])
    m = _CURL_MSG_RE.search(str(exc))
    if m:
        return int(m.group(1)), m.group(2)
    return None, str(exc)


def explain(sdk, access, exc, during_login):
    """Turn an SDK exception into a one-sentence WrapperError/JobError."""
    where = "the oVirt engine at %s" % access.url
    if during_login and isinstance(exc, sdk.AuthError):
        # "Error during SSO authentication access_denied : Cannot authenticate
        # user 'admin@internal': The username or password is incorrect.."
        detail = str(exc).split(" : ", 1)[-1]
        return JobError("rhv_password", "%s refused the login of %s: %s" % (
            where, access.username, scrub(detail, access)), code="engine_login_refused")
    if isinstance(exc, sdk.TimeoutError):
        return JobError("rhv_url", "%s did not answer in time" % where)
    code, reason = _curl_reason(exc)
    reason = scrub(reason, access)
    if isinstance(exc, sdk.ConnectionError):
        return JobError("rhv_url", "cannot connect to %s: %s" % (where, reason))
    if code in _CURL_CA_ERRORS:
        return JobError("rhv_cafile", "the TLS certificate of %s cannot be verified "
                        "with the CA file %s: %s" % (where, access.cafile, reason))
    if code in _CURL_TLS_ERRORS:
        return JobError("rhv_url", "TLS connection to %s failed: %s" % (where, reason))
    if during_login:
        return JobError("rhv_url", "cannot log in to %s: %s" % (where, reason))
    return WrapperError("request to %s failed: %s" % (where, reason))


def bounded(fn, timeout, what):
    """Run ``fn()`` but give up after ``timeout`` seconds.

    ovirtsdk4 4.6.3 sets no curl timeout on its SSO requests (login and
    logout, ``Connection._get_sso_response``), so an engine that accepts the
    connection and never answers would block forever.  The call runs in a
    daemon thread; on timeout that thread is abandoned (it holds only its
    socket, gone when the process exits).
    """
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name="ovirt-" + what, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(what)
    if "error" in box:
        raise box["error"]
    return box.get("value")


def connect(access, *, timeout=60.0):
    """Log in to the engine; return an ``ovirtsdk4.Connection``.

    TLS as given to virt-v2v: the CA file verifies the engine unless
    ``insecure`` (then neither peer nor host name is checked, like
    ``-oo rhv-verifypeer=false``).  ``timeout`` bounds the login and each
    later request.  Errors are a :class:`JobError` naming the job key to fix
    (rhv_password, rhv_url, rhv_cafile), in one sentence without secrets.
    """
    sdk = load_sdk()
    if not access.insecure and access.cafile and not os.path.exists(access.cafile):
        raise JobError("rhv_cafile", "the CA file %s does not exist" % access.cafile)
    kwargs = dict(
        url=access.url,
        username=access.username,
        password=access.password.reveal(),
        insecure=access.insecure,
        # curl wants whole seconds; 0 would mean "no timeout".
        timeout=max(1, int(math.ceil(timeout))),
        # Deliberately no debug=True and no log=: see the module docstring.
    )
    if not access.insecure and access.cafile:
        kwargs["ca_file"] = access.cafile
    try:
        conn = sdk.Connection(**kwargs)
    except sdk.Error as e:
        raise explain(sdk, access, e, True) from None
    try:
        bounded(conn.authenticate, timeout, "login")
    except TimeoutError:
        raise JobError("rhv_url", "the oVirt engine at %s did not answer the login "
                       "within %g s" % (access.url, timeout)) from None
    except sdk.Error as e:
        close(conn, logout=False)
        raise explain(sdk, access, e, True) from None
    except (UnicodeError, ValueError) as e:
        close(conn, logout=False)
        raise JobError("rhv_url", "cannot send the login to the oVirt engine at %s: %s"
                       % (access.url, scrub(e, access))) from None
    log.debug("logged in to the oVirt engine at %s as %s", access.url, access.username)
    return conn


def close(conn, logout=True, timeout=30.0):
    """Close a connection, revoking its token; never raises."""
    try:
        bounded(lambda: conn.close(logout=logout), timeout, "logout")
    except Exception as e:  # the work is done; a failed logout only leaves a token to expire
        log.warning("closing the oVirt engine connection failed: %s", type(e).__name__)


@dataclasses.dataclass(frozen=True)
class TargetFacts:
    """What the engine said about the job's target in :func:`check_target`."""

    data_center: str
    storage_domain_id: str
    storage_type: Optional[str]     # ovirtsdk4.types.StorageType value, None if untold
    cluster_id: str
    architecture: Optional[str]

    @property
    def allocation(self):
        return allocation_for_type(self.storage_type)


def allocation_for_type(storage_type):
    """docs/contract.md §3.3: block-like storage domains get preallocated disks."""
    return "preallocated" if storage_type in BLOCK_STORAGE_TYPES else "sparse"


def check_target(access, storage, cluster, vm_name, *, timeout=30.0):
    """Ask the engine now what virt-v2v's own helper scripts ask only after
    the whole guest conversion (2.2's precheck and vmcheck), the same way:

    * a data center holding the storage domain (``storage.name=<storage>``),
      and the domain itself among that data center's domains;
    * a cluster of that name in the same data center, with a known CPU
      architecture;
    * no VM found by ``name=<vm_name>`` (virt-v2v refuses any match).

    Returns :class:`TargetFacts`; raises a :class:`JobError` naming the job
    key to fix, in one sentence without secrets.  ``timeout`` bounds the
    login and then the questions (and at most 5 s more for the logout),
    whatever the engine does.
    """
    sdk = load_sdk()
    conn = connect(access, timeout=timeout)
    try:
        return bounded(lambda: _target_facts(sdk, access, conn, storage, cluster, vm_name),
                        timeout, "pre-flight")
    except TimeoutError:
        raise JobError("rhv_url", "the oVirt engine at %s did not answer the pre-flight "
                       "checks within %g s" % (access.url, timeout)) from None
    except sdk.Error as e:
        raise explain(sdk, access, e, False) from None
    except (UnicodeError, ValueError) as e:    # pycurl refuses what it cannot send
        raise JobError("rhv_url", "cannot send a request to the oVirt engine at %s: %s"
                       % (access.url, scrub(e, access))) from None
    finally:
        close(conn, timeout=min(5.0, timeout))   # the logout may not stretch the bound much


def _target_facts(sdk, access, conn, storage, cluster, vm_name):
    system = conn.system_service()
    where = "on the oVirt engine at %s" % access.url
    dcs_service = system.data_centers_service()
    dc = sd = None
    for candidate in dcs_service.list(search="storage.name=%s" % storage, case_sensitive=True):
        attached = dcs_service.data_center_service(candidate.id).storage_domains_service().list()
        found = [d for d in attached if d.name == storage]
        if found:
            dc, sd = candidate, found[0]
            break
    if dc is None:
        known = [d for d in system.storage_domains_service().list(
            search="name=%s" % storage, case_sensitive=True) if d.name == storage]
        if not known:
            raise JobError("rhv_storage", "no storage domain named %r %s" % (storage, where),
                           code="storage_domain_unknown")
        raise JobError("rhv_storage", "storage domain %r is not attached to a data center %s"
                       % (storage, where))
    clusters = [c for c in dcs_service.data_center_service(dc.id).clusters_service().list()
                if c.name == cluster]
    if not clusters:
        raise JobError("rhv_cluster", "no cluster named %r in data center %r, where storage "
                       "domain %r is, %s" % (cluster, dc.name, storage, where))
    arch = _value(clusters[0].cpu.architecture if clusters[0].cpu is not None else None)
    if arch in (None, "undefined"):
        raise JobError("rhv_cluster", "cluster %r has an unknown CPU architecture %s"
                       % (cluster, where))
    vms = system.vms_service().list(search="name=%s" % vm_name)
    if vms:
        raise JobError("vm_name", "a VM named %r already exists %s (id %s)"
                       % (vms[0].name, where, vms[0].id), code="vm_name_taken")
    stype = _value(sd.storage.type if sd.storage is not None else None)
    return TargetFacts(data_center=dc.name, storage_domain_id=sd.id, storage_type=stype,
                       cluster_id=clusters[0].id, architecture=arch)


def _value(enum):
    return enum.value if enum is not None else None
