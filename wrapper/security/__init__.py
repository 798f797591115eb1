"""The security wing: how a root process handles files, directories and
secrets on a host whose other users may attack it (docs/security.md;
docs/contract.md §7, §9).

It owns: descriptor-safe creation, reading and removal of files in shared
directories; reading what another user supplies or the caller names;
the ``Secret`` type; the private directories for secret files and the
ssh-agent socket.

Modules:

* ``fsafe``    -- open/create/read/remove by descriptor, ``O_EXCL|O_NOFOLLOW``,
  untrusted and caller-named files, ``AtomicFile`` (the state file's rewrite).
* ``secrets``  -- ``Secret`` (prints as ``******``), ``PrivateDir``,
  ``SecretDir`` (root-owned, 0710) and ``AgentDir`` (the run-as user's).
* ``boundary`` -- planned (issue 20): who the caller is, what the caller may
  name, and with whose rights each thing is opened.
* (planned, issue 19) the text escaping now in ``wrapper.jobinput``.

Imports: the standard library only (and modules of this wing).  It is the
bottom of the package: the core and every other wing may import its
modules; it imports neither ``wrapper.cli`` nor the core nor another wing.
"""
