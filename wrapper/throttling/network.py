"""The network limit of one conversion, in both directions (docs/contract.md §6).

One :class:`NetworkLimit` per job owns

* the **outbound** class: what the conversion sends, shaped by
  :class:`wrapper.throttling.netlimit.NetLimiter` (HTB class fed by nftables);
* the **source read**: virt-v2v's ``--bandwidth-file``
  (:class:`wrapper.throttling.bandwidth.BandwidthFile`), when virt-v2v has it;
* ``network_directions`` in the state: which of the two carry the limit in force.

The job hands it the value the throttling file asked for (a parsed
:class:`wrapper.throttling.limits.NetworkRate`, or None) through :meth:`NetworkLimit.set`;
the limit is in force when at least one direction took it, and the other's failure is a
notice.  Both limiters are injected (any object with their methods), so tests use fakes.
"""
import logging

from wrapper.errors import CommandError, ThrottleError
from wrapper.throttling import bandwidth

log = logging.getLogger(__name__)

OUTBOUND = "outbound"
SOURCE_READ = "source-read"


class NetworkLimit:
    """``outbound``: ``started``, ``start(pids, dedicated_cgroup)``, ``set_rate(rate)``,
    ``close()`` (a NetLimiter).  ``source_read``: ``path``, ``set(rate)``, ``close()`` (a
    BandwidthFile), or None until :meth:`open_source_read` finds virt-v2v has one."""

    def __init__(self, state, outbound, source_read=None):
        self.state = state
        self.outbound = outbound
        self.source_read = source_read
        self._set_directions([])

    # -- the source read ------------------------------------------------------------------
    def open_source_read(self, caps, secret_dir, open_file=bandwidth.BandwidthFile):
        """The source read's limit (both inputs, ssh and vddk, take it), unlimited until the
        first :meth:`set`.  Returns the file's path for virt-v2v, or None when virt-v2v
        does not report the capability."""
        if not bandwidth.supported(caps):
            log.info("virt-v2v does not report %s: network limits shape only what the "
                     "conversion sends, the read from the source is not limited",
                     bandwidth.CAPABILITY)
            return None
        self.source_read = open_file(secret_dir)
        return self.source_read.path

    def share_source_read(self, readers):
        """``readers`` disks are being read at once (``--parallel``, wrapper/parallel.py):
        each input nbdkit has its own rate filter on the one bandwidth file, so each gets
        1/readers of the limit and their sum holds it.  Rewritten only when the number
        changes (the next disk starting, one finishing)."""
        readers = max(1, readers)
        if self.source_read is None or self.source_read.shares == readers:
            return
        self.source_read.shares = readers
        try:
            self.source_read.set(self.source_read.value)
        except OSError as e:
            log.warning("cannot share the source-read limit between %d disks: %s", readers, e)

    @property
    def source_read_path(self):
        return self.source_read.path if self.source_read is not None else None

    # -- a new value ----------------------------------------------------------------------
    def set(self, rate, conversion):
        """Apply ``rate`` (NetworkRate, or None for no limit) to both directions.
        ``conversion`` (``pids()``, ``dedicated_cgroup``) is what the outbound class
        catches.  ThrottleError when neither direction took it."""
        directions, failures = [], []
        try:
            self._set_outbound(rate, conversion)
            directions.append(OUTBOUND)
        except ThrottleError as e:
            failures.append(("outbound traffic", e))
        if self.source_read is not None:
            try:
                self.source_read.set(rate)
                directions.append(SOURCE_READ)
            except OSError as e:
                failures.append(("source read", ThrottleError(
                    "cannot write the bandwidth file: %s" % (e.strerror or e))))
        if not directions:
            raise failures[0][1]
        for what, e in failures:
            log.warning("throttling: network %s not limited: %s", what, e)
            self.state.notice("the network limit does not cover the %s: %s" % (what, e))
        self._set_directions(directions if rate is not None else [])

    def _set_outbound(self, rate, conversion):
        """Classification (nft table, cgroup) is set up with the first limit,
        so a conversion that is never limited leaves the host's firewall
        alone.  Later, every running process of the conversion is classified:
        with the unit's own cgroup (or net_cls) their sockets are caught too.
        Whatever goes wrong here is a limit not applied (docs/contract.md §6:
        logged and ignored), never the end of the conversion."""
        try:
            if rate is not None and not self.outbound.started:
                self.outbound.start(conversion.pids(), conversion.dedicated_cgroup)
            self.outbound.set_rate(rate)
        except (OSError, CommandError) as e:
            raise ThrottleError(str(e)) from None

    def _set_directions(self, directions):
        self.state["throttling"]["network_directions"] = list(directions)

    # -- the end --------------------------------------------------------------------------
    def close(self):
        """Remove the outbound class and everything it made, drop the bandwidth file's spare
        (the file itself goes with the job's private directory).  Both run whatever the
        other does."""
        try:
            self.outbound.close()
        finally:
            if self.source_read is not None:
                self.source_read.close()
