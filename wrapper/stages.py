"""Stage names: the ``stage`` of the state file (docs/contract.md §5).

virt-v2v announces its stages as text ("Copying disk 1/2", "Creating output
metadata", "Finishing off"); the parser (wrapper.progress) recognises them,
the state (wrapper.state) records them, and metrics and ``status``
(wrapper.observe) classify them.  All of them take the words from here.
"""

COPYING = "Copying disk"                       # "Copying disk N/M", N counted from 1
# Stages after the copy: the disk being copied is complete even if the last
# bar frame (100 %) was never printed.
AFTER_COPY = ("Creating output metadata", "Finishing off")
# What ``status`` shows before virt-v2v has announced a stage of its own.
STARTING, STARTED = "Starting", "Started"


def copying(index, count):
    """The stage for copying disk ``index`` (0-based) of ``count``."""
    return "%s %d/%d" % (COPYING, index + 1, count)


def is_copying(stage):
    return stage.startswith(COPYING)


def is_after_copy(stage):
    return stage.startswith(AFTER_COPY)
