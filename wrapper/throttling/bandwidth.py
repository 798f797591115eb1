"""The source-read half of a network limit: virt-v2v's ``--bandwidth-file``.

virt-v2v 1.42 to 2.x report the ``bandwidth-option`` capability and accept
``--bandwidth-file FILE`` (virt-v2v(1)): the ``ssh`` and ``vddk`` inputs put
nbdkit's rate filter (``rate-file=FILE``) in front of the source, and nbdkit
re-reads the file while it runs, so the rate of the *read from the source*
follows what the file says within a fraction of a second.  Newer releases
dropped the option again: it is used only when the capability is reported.

The file holds one number: **bits** per second (the wrapper's limits are
bytes per second).  ``0`` is nbdkit's "no limit" (its token bucket skips a
zero rate); an empty or half-written file would be an error on every read,
so each write replaces the file atomically (rename of a complete file, as
nbdkit-rate-filter(1) asks).

Who may write it (docs/security.md): it lives in the job's private
directory (:class:`wrapper.security.secrets.SecretDir`, root-owned, mode 0710, group
= the run-as user's group) and is owned by root, group that group, mode
0640: nbdkit, running as the run-as user, can read it through the group;
that user cannot write it nor replace it (no write permission on the file
or the directory), and other users cannot reach it at all.
"""
import logging
import os

from wrapper.security import fsafe

log = logging.getLogger(__name__)

CAPABILITY = "bandwidth-option"
FILE_NAME = "bandwidth"
MODE = 0o640
UNLIMITED = "0"


def supported(caps):
    return caps.has(CAPABILITY)


def file_text(rate, shares=1):
    """A :class:`~wrapper.throttling.limits.NetworkRate` (or None) -> the file's content
    (bits/s).  ``shares``: input nbdkits reading at once (``--parallel``, wrapper/parallel.py;
    NetworkLimit.share_source_read), each with its own rate filter on this one file, so
    each gets its share of the limit."""
    if rate is None:
        return UNLIMITED
    return str(max(1, rate.bits_per_second // max(1, shares)))


def file_owner(secret_dir):
    """root keeps the file; the run-as user's group may read it (None: no change needed)."""
    if secret_dir.gid is None or secret_dir.gid == os.getegid():
        return None
    return (-1, secret_dir.gid)


class BandwidthFile:
    """The bandwidth file of one job, in its private directory.  ``set()``
    any number of times; it goes with the directory (SecretDir.remove), and
    :meth:`close` drops the spare temporary file kept for the next write."""

    def __init__(self, secret_dir, initial=None):
        self._file = fsafe.AtomicFile(secret_dir.fd, FILE_NAME, MODE, reserve=0,
                                      owner=file_owner(secret_dir))
        self.path = os.path.join(secret_dir.path, FILE_NAME)
        self.value = None
        self.shares = 1          # disks read at once (wrapper/parallel.py)
        self.set(initial)

    def set(self, rate):
        """Write ``rate`` (a NetworkRate, or None for no limit)."""
        self._file.write(file_text(rate, self.shares))
        self.value = rate

    def close(self):
        self._file.close()
