"""The observe wing: reading state files and showing them to people and
to Prometheus (docs/contract.md §5, §2 for the subcommands).

It owns: the ``status`` and ``metrics`` subcommands, the metrics text and
the per-conversion textfile of ``--metrics-dir``.  Every file it reads is
treated as hostile (no link followed, no FIFO waited on, sizes bounded).

Modules:

* ``summary``  -- the library: reads state files as hostile input (bounded
  size, JSON depth, numbers, counts) and says what a conversion is (VM,
  target, stage, disks, progress, outcome, stale); no argparse, no terminal.
* ``status``   -- ``virt-v2v-wrapper status``: draws summaries as the text,
  ``--watch`` and ``--json`` views, every text from a file escaped.
* ``metrics``  -- Prometheus exposition text of summaries, the textfile
  rewritten with the state file, pruning of finished conversions' textfiles
  (the running job imports it: it uses ``summary``, never ``status``).
* ``history``  -- the copy rate this host last measured from a source host
  (``inspect``'s time estimate), from finished state files read by ``summary``.
* ``exporter`` -- ``virt-v2v-wrapper metrics``: print once, ``--listen``
  (read-only HTTP; bounded connections, request size and request time),
  ``--prune``.

Rules: observe never changes anything -- no process is signalled, no state
file rewritten -- and never imports ``wrapper.reclaim``; ``wrapper.cli``
decides when a reclaim runs.  It may import the standard library, the
security wing and the core's leaf modules (``errors``, ``settings``,
``runner``, ``rate``, ``jobfiles``); never ``wrapper.cli``, ``job``,
``monitor`` or another wing (checked: .importlinter).  The core imports it
in three places only: ``cli`` (the subcommands), ``job`` (the textfile,
through ``metrics``) and ``inspection`` (``history``).
"""
