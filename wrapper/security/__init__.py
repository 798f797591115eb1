"""The security wing: how a root process handles files, directories and
secrets on a host whose other users may attack it (docs/security.md;
docs/contract.md §7, §9).

It owns: descriptor-safe creation, reading and removal of files in shared
directories; reading what another user supplies or the caller names;
the ``Secret`` type; the private directories for secret files and the
ssh-agent socket.

Modules:

* ``boundary`` -- the privilege boundary: who the caller is (the sudo caller,
  root without sudo, the invoking user otherwise) and every path the job or
  the caller names opened WITH THE CALLER'S RIGHTS (a forked child drops to
  the caller's uid, gid and groups and passes the descriptor back).
* ``aschild``  -- the one way root works with another user's rights: a forked
  child that keeps none of root's descriptors, becomes the user (not
  dumpable), does one thing and answers over a socket pair, within a timeout.
* ``fsafe``    -- open/create/read by descriptor, ``O_EXCL|O_NOFOLLOW``, what
  other users supply (the throttling file, state files), ``AtomicFile`` (the
  state file's rewrite; its first version linked into place complete).
* ``fstree``   -- removing a tree by descriptor, without recursion or links.
* ``secrets``  -- ``Secret`` (prints as ``******``), ``PrivateDir``,
  ``SecretDir`` (root-owned, 0710) and ``AgentDir`` (the run-as user's).
* ``text``     -- escaping for logs, refusals and terminals (``oneline``,
  ``short``, ``printable``): one owner for every unsafe character.

Imports: the standard library only (and modules of this wing).  It is the
bottom of the package: the core and every other wing may import its
modules; it imports neither ``wrapper.cli`` nor the core nor another wing.
"""
