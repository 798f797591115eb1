"""The observe wing: reading state files and showing them to people and
to Prometheus (docs/contract.md §5, §2 for the subcommands).

It owns: the ``status`` and ``metrics`` subcommands, the metrics text and
the per-conversion textfile of ``--metrics-dir``.  Every file it reads is
treated as hostile (no link followed, no FIFO waited on, sizes bounded).

Modules:

* ``status``   -- ``virt-v2v-wrapper status``: reads state files, draws the
  text, ``--watch`` and ``--json`` views.
* ``metrics``  -- Prometheus exposition text, the textfile rewritten with the
  state file, pruning of finished conversions' textfiles.
* ``exporter`` -- ``virt-v2v-wrapper metrics``: print once, ``--listen``
  (read-only HTTP), ``--prune``.
* ``summary``  -- planned (issue 19): reading and summarising state files as
  a library, with no argparse and no terminal code.

Rules: observe never changes anything -- no process is signalled, no state
file rewritten -- and never imports ``wrapper.reclaim``; ``wrapper.cli``
decides when a reclaim runs.  It may import the standard library, the
security wing and the core's leaf modules (``errors``, ``settings``,
``runner``, ``rate``, ``jobfiles``); never ``wrapper.cli``, ``job``,
``monitor`` or another wing.  The core imports it in two places only:
``cli`` (the subcommands) and ``job`` (the textfile, through ``metrics``).
"""
