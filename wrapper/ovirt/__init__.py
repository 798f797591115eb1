"""The ovirt wing: the wrapper's own conversations with an oVirt/RHV engine
for ``rhv_url`` jobs (docs/contract.md §3.2, §3.3, §8).

It owns: the oVirt SDK (an optional extra, imported lazily here and
nowhere else), the pre-flight checks run before the caller gets its answer,
the allocation derived from the storage domain's type, and the removal of
the disks a failed upload created.

Modules:

* ``api``       -- the connection (login bounded in time, the password a
  ``Secret`` revealed only to the SDK, errors scrubbed) and the target checks
  with the allocation they give.
* ``cleanup``   -- after a failed upload: cancel the transfers of the disks it
  created and remove those disks, bounded in time, never raising.
* ``preflight`` -- what virt-v2v ``-o rhv-upload`` needs on this host,
  probed as the run-as user (``python3`` with the SDK, ``nbdkit python``,
  the CA), then ``api``'s engine questions.

Imports: the standard library, the SDK, the security wing and the core's
leaf modules (``errors``, ``jobinput``, ``runner``, ``config``'s records).
Never ``wrapper.cli``, ``job``, ``monitor`` or another wing.  Only the
``rhv_upload`` target (``wrapper.targets``) imports it.
"""
