"""Parallel disk copies (``--parallel N``, virt-v2v 2.8+) with true per-disk progress
(docs/contract.md §3.4 and §5).

virt-v2v 2.8 added ``--parallel N`` (capability ``parallel-option``): up to N
``nbdcopy`` processes copy a multi-disk VM's disks at once.  Their progress
bars then interleave in the verbose log with nothing that says which disk a
frame belongs to, so "the disk being copied" no longer exists and the log's
order credits the wrong disk.  Each disk is credited instead from its own
nbdcopy: a root-owned shim (``wrapper/shims/nbdcopy``) is put first on
virt-v2v's ``PATH`` while parallel copies are in effect.  It runs the real
nbdcopy unchanged except that the progress goes to a pipe
(``--progress=FD``, nbdcopy(1): ``N/100`` lines) and comes back as
``virt-v2v-wrapper: nbdcopy inK progress N/100`` lines on stderr, ``inK``
being the input socket of the disk (the one the ``'--unix' '…/inK'`` nbdkit
line names).  The figure is nbdcopy's own, so zero and sparse regions count
as copied, exactly as with the serial bar.

Each input nbdkit has its own rate filter on the one ``--bandwidth-file``: while
copies overlap the monitor divides the limit between the disks being copied
(wrapper.throttling.network.NetworkLimit.share_source_read).

Only administrators choose N (``--parallel``/``--parallel-max`` or their
``VIRT_V2V_WRAPPER_*`` variables), never the job.  The shim is used only when
it and every directory above it belong to root and nobody else may write
them (docs/security.md): otherwise the copy stays serial, with a warning.
Everything here is pure but :func:`shim_problem`'s ``lstat``.
"""
import logging
import os
import stat
from dataclasses import dataclass

log = logging.getLogger(__name__)

CAPABILITY = "parallel-option"
MAX_STREAMS = 64        # virt-v2v accepts any N; more nbdcopy at once is no plan
SHIM_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "shims")
SHIM_NAME = "nbdcopy"
TAG = "virt-v2v-wrapper: nbdcopy in"     # what the shim prints (wrapper.progress reads it)


@dataclass(frozen=True)
class Plan:
    streams: int = 1            # nbdcopy processes at once; 1: serial, as virt-v2v < 2.8
    shim_dir: str = None        # put first on virt-v2v's PATH when streams > 1

    @property
    def parallel(self):
        return self.streams > 1


SERIAL = Plan()


def count(text):
    """A setting's text -> int in 1..MAX_STREAMS, or None."""
    text = (text or "").strip()
    if not text.isdigit() or len(text) > 3:
        return None
    n = int(text)
    return n if 1 <= n <= MAX_STREAMS else None


def settings_problem(settings):
    """One line about a bad ``parallel``/``parallel_max`` setting, or None."""
    for opt, attr in (("parallel", "parallel"), ("parallel-max", "parallel_max")):
        if count(getattr(settings, attr)) is None:
            return "--%s (VIRT_V2V_WRAPPER_%s) must be a whole number from 1 to %d, not %r" % (
                opt, attr.upper(), MAX_STREAMS, getattr(settings, attr))
    return None


def shim_problem(directory=SHIM_DIR, lstat=os.lstat):
    """Why the shim in ``directory`` must not go on virt-v2v's PATH, or None:
    it and every directory up to / must be root's and writable by no one else
    (the run-as user could otherwise put any nbdcopy there)."""
    path = os.path.join(directory, SHIM_NAME)
    try:
        st = lstat(path)
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o001:
            return "%s is not a program everybody may run" % path
        checked = [(path, st)]
        here = directory
        while True:
            checked.append((here, lstat(here)))
            parent = os.path.dirname(here)
            if parent == here:
                break
            here = parent
    except OSError as e:
        return "%s: %s" % (e.filename or path, e.strerror or e)
    for name, st in checked:
        if st.st_uid != 0 or st.st_mode & 0o022:
            return "%s is owned by uid %d with mode %o: it must be root's and writable only by root" % (
                name, st.st_uid, stat.S_IMODE(st.st_mode))
        if name != path and not stat.S_ISDIR(st.st_mode):
            return "%s is not a directory" % name
    return None


def plan(settings, caps, disk_count, shim_dir=SHIM_DIR, lstat=os.lstat):
    """How many disks virt-v2v copies at once for this job.  ``disk_count``: the
    job's ``source_disks`` (0 when it lists none: the VM may have several)."""
    wanted = min(count(settings.parallel) or 1, count(settings.parallel_max) or 1)
    if wanted < 2 or disk_count == 1:
        return SERIAL
    if not caps.has(CAPABILITY):
        log.info("virt-v2v does not report %s: disks are copied one at a time", CAPABILITY)
        return SERIAL
    problem = shim_problem(shim_dir, lstat)
    if problem:
        log.warning("copying disks one at a time: the per-disk progress shim cannot be used (%s)",
                    problem)
        return SERIAL
    streams = min(wanted, disk_count) if disk_count else wanted
    log.info("copying up to %d disks at once (--parallel)", streams)
    return Plan(streams, shim_dir)


def command(argv, the_plan):
    """virt-v2v's argv with ``--parallel N`` before the guest name (the last
    argument); unchanged when serial."""
    if not the_plan.parallel:
        return list(argv)
    return list(argv[:-1]) + ["--parallel", str(the_plan.streams)] + list(argv[-1:])


def environment(env, the_plan):
    """virt-v2v's environment with the shim first on PATH; unchanged when serial."""
    env = dict(env)
    if the_plan.parallel:
        env["PATH"] = the_plan.shim_dir + os.pathsep + env.get("PATH", os.defpath)
    return env
