"""throttling wing: CPU and network limits of a running conversion (docs/contract.md §6).

* ``limits``    -- the values: parsed and bounded once (``parse_cpu``, ``parse_network`` ->
  :class:`~wrapper.throttling.limits.NetworkRate`), their state-file form.  Pure.
* ``throttle``  -- the throttling file: read it safely, merge, hand each change to its applier.
* ``network``   -- :class:`~wrapper.throttling.network.NetworkLimit`, the one owner of a job's
  network limit: the outbound class, the source read or the inbound policer, and
  ``network_directions``.
* ``netlimit``  -- the outbound class: an HTB class fed by an nftables table (changes the host).
* ``bandwidth`` -- the source read: virt-v2v's ``--bandwidth-file`` (bits per second).
* ``inbound``   -- the source read where virt-v2v has no ``bandwidth-option``: an nftables
  policer on the input hook, in the outbound class's table (changes the host).
* ``host``      -- what the host offers: cgroup hierarchies, tc/nft/ip, interfaces (read-only).
* ``tcnft``     -- pure builders of tc/nft/ip commands and parsers of their output.

The wing imports only the core's leaf modules (errors, jobinput, leases, procinfo) and the
security wing; never wrapper.job or wrapper.cli.
"""
