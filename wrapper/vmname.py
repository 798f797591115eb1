"""The VM's name as everything but virt-v2v's command line shows it.

The job's ``vm_name`` is what virt-v2v gets: a libvirt domain name (vddk) or,
with the ssh transport, an ``ssh://`` URI of the .vmx file.  The state file,
the metrics, ``status`` and the oVirt pre-flight all need the VM's *name*,
and they all take it from :func:`display_name`, so that they never disagree.

For ``-i vmx`` virt-v2v names the VM after the .vmx file's ``displayName``
entry, which the wrapper cannot read (the file is on the ESXi host, behind
the ssh key that only virt-v2v's agent holds).  VMware keeps the .vmx file
named after the VM's display name, so the file's base name is the best guess
the URI allows: percent-decoded (``My%20VM.vmx`` is the VM ``My VM``), its
``.vmx`` suffix stripped whatever its case (``.VMX`` too).
"""
import posixpath
from urllib.parse import unquote, urlsplit

SSH_SCHEME = "ssh://"          # config: the ssh transport's vm_name is one
VMX_SUFFIX = ".vmx"


def display_name(vm_name, transport):
    """The VM's name for the job's ``vm_name`` and ``transport_method`` (see
    the module's docstring): with ``vddk``, the libvirt domain name itself."""
    if transport != "ssh" or not vm_name.lower().startswith(SSH_SCHEME):
        return vm_name
    try:
        path = urlsplit(vm_name).path
    except ValueError:           # config refuses such a URI; never fail on it here
        path = vm_name[len(SSH_SCHEME):]
    base = unquote(posixpath.basename(path))     # a %2F stays inside the name
    if base.lower().endswith(VMX_SUFFIX) and len(base) > len(VMX_SUFFIX):
        base = base[:-len(VMX_SUFFIX)]
    return base or vm_name


def source_host(vm_name, transport, vmware_uri=None):
    """The source host a job reads from, lower-cased, without user or port:
    the ``ssh://`` URI's host (ssh) or the ``vmware_uri``'s (vddk); None when
    neither names one.  The state file records it (``source_host``), so that
    ``inspect`` can find the rate this host last measured from it."""
    uri = vm_name if transport == "ssh" else vmware_uri
    if not isinstance(uri, str) or "://" not in uri:
        return None
    try:
        host = urlsplit(uri).hostname
    except ValueError:
        return None
    return host or None
