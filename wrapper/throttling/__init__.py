"""The throttling wing: the CPU and network limits of one conversion
(docs/contract.md §6).

It owns: the limit values (parsing, bounds, normal forms), the throttling
file the orchestrator drops, and enforcing the limits -- the outbound
traffic through tc and nftables, the read from the source through virt-v2v's
``--bandwidth-file``.  The CPU limit is applied by the launcher
(``wrapper.systemd``'s ``CPUQuota``), handed in as an applier.

Modules:

* ``limits``    -- pure parsing and merging of ``cpu``/``network`` values.
* ``throttle``  -- ``Throttler``: picks up the throttling file (untrusted,
  by descriptor), merges it into the limits in force, calls the appliers.
* ``netlimit``  -- ``NetLimiter``: one HTB class per conversion, nftables
  classification by cgroup, its lock directory and clean-up.
* ``tcnft``     -- pure tc/nft/ip command building and output parsing.
* ``bandwidth`` -- the source read's limit, a root-owned file in the
  private directory that virt-v2v's nbdkit re-reads.
* ``host``      -- planned (issue 19): host detection (interfaces, cgroup
  version) moved out of ``netlimit``.

Imports: the standard library, the security wing, and the core's leaf
modules (``errors``, ``jobinput``, ``procinfo``, ``leases``, ``runner``).
Never ``wrapper.cli``, ``job``, ``monitor`` or another wing's internals.
The core (``config``, ``job``, ``v2v``, ``systemd``, ``checks``) imports it.
"""
