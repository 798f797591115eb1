"""The vmware wing: the wrapper's own conversation with a VMware source for
``transport_method: "vddk"`` jobs, before the caller gets its answer
(docs/contract.md §4 step 3, §3.1).

virt-v2v learns that a VDDK job cannot work only after it started: a
library directory without ``libvixDiskLib.so.N`` costs it 30 s of waiting
for nbdkit, a wrong thumbprint an appliance start, and the cause it prints
is vague ("Unknown error").  This wing asks the same questions first, as the
run-as user and within a few seconds, and names the cause in one line.

Modules:

* ``endpoint``  -- pure: the ``vmware_uri`` as host, port, user and kind
  (``esx://``, ``vpx://``), and SHA-1 fingerprints compared case- and
  colon-insensitively.
* ``soap``      -- a minimal vSphere SOAP client over https (standard
  library only): the certificate's SHA-1 checked on every connection before
  anything is sent, ``RetrieveServiceContent``, ``Login``, the VMs' name and
  power state through a ContainerView, ``Logout``.  Requests and replies are
  built and read by pure functions.
* ``probe``     -- the child's side: runs as the run-as user (never root's
  rights against a remote server), reads its question and the password as
  one JSON line on stdin, answers one JSON line on stdout.
* ``preflight`` -- the wrapper's side: ``nbdkit vddk libdir=DIR
  --dump-plugin`` and the probe, both as the run-as user, bounded by
  ``VIRT_V2V_WRAPPER_VDDK_PREFLIGHT_TIMEOUT``; their results read into one
  refusal line that names the cause and what to check.

Imports: the standard library, the security wing and the core's leaf modules
(``errors``, ``runner``).  ``probe`` and ``soap`` import only the standard
library and this wing (they run in the child).  Never ``wrapper.cli``,
``job`` or another wing; only ``wrapper.job`` imports it.
"""
