"""The network limit of one conversion, in every direction it can cover (docs/contract.md §6).

One :class:`NetworkLimit` per job owns

* the **outbound** class: what the conversion sends, shaped by
  :class:`wrapper.throttling.netlimit.NetLimiter` (HTB class fed by nftables);
* the **source read**: virt-v2v's ``--bandwidth-file``
  (:class:`wrapper.throttling.bandwidth.BandwidthFile`), when virt-v2v has it;
* else the **inbound** policer: what the conversion receives, dropped over the limit on the
  host's input hook (:class:`wrapper.throttling.inbound.InboundPolicer`, a chain in the
  outbound limiter's nft table), for a virt-v2v without ``bandwidth-option`` (upstream
  removed it after 2.13.3).  Never both: where virt-v2v limits the read itself, a second
  limit on the same bytes would only add drops;
* ``network_directions`` in the state: which of them carry the limit in force.

The job hands it the value the throttling file asked for (a parsed
:class:`wrapper.throttling.limits.NetworkRate`, or None) through :meth:`NetworkLimit.set`;
the limit is in force when at least one direction took it, and the others' failures are
notices.  The limiters are injected (any object with their methods), so tests use fakes.
"""
import logging

from wrapper.errors import CommandError, ThrottleError
from wrapper.throttling import bandwidth, inbound

log = logging.getLogger(__name__)

OUTBOUND = "outbound"
SOURCE_READ = "source-read"
INBOUND = "inbound"


class NetworkLimit:
    """``outbound``: ``started``, ``start(pids, dedicated_cgroup)``, ``set_rate(rate)``,
    ``close()``, ``runner`` (a NetLimiter).  ``source_read``: ``path``, ``set(rate)``,
    ``close()`` (a BandwidthFile), or None until :meth:`open_source_read` finds virt-v2v has
    one.  ``inbound``: ``set(rate)`` (an InboundPolicer), or None until
    :meth:`open_source_read` finds virt-v2v has no source-read limit."""

    def __init__(self, state, outbound, source_read=None, inbound=None):
        self.state = state
        self.outbound = outbound
        self.source_read = source_read
        self.inbound = inbound
        self._set_directions([])

    # -- the source read ------------------------------------------------------------------
    def open_source_read(self, caps, secret_dir, open_file=bandwidth.BandwidthFile,
                         open_inbound=None):
        """The source read's limit (both inputs, ssh and vddk, take it), unlimited until the
        first :meth:`set`.  Returns the file's path for virt-v2v, or None when virt-v2v
        does not report the capability: then what the conversion receives is policed
        instead (``open_inbound(outbound)``, by default an InboundPolicer)."""
        if not bandwidth.supported(caps):
            log.info("virt-v2v does not report %s: the read from the source is limited by "
                     "policing what the conversion receives on this host", bandwidth.CAPABILITY)
            self.inbound = (open_inbound or _policer)(self.outbound)
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
        """Apply ``rate`` (NetworkRate, or None for no limit) to every direction.
        ``conversion`` (``pids()``, ``dedicated_cgroup``) is what the outbound class and the
        inbound policer catch.  ThrottleError when no direction took it."""
        directions, failures = [], []
        for name, what, apply in self._appliers(rate, conversion):
            try:
                apply()
                directions.append(name)
            except ThrottleError as e:
                failures.append((what, e))
        if not directions:
            raise failures[0][1]
        for what, e in failures:
            log.warning("throttling: network %s not limited: %s", what, e)
            self.state.notice("the network limit does not cover the %s: %s" % (what, e))
        self._set_directions(directions if rate is not None else [])

    def _appliers(self, rate, conversion):
        """(direction, what it covers, apply) for each direction this job has."""
        out = [(OUTBOUND, "outbound traffic",
                lambda: self._classified(rate, conversion, self.outbound.set_rate))]
        if self.inbound is not None:
            out.append((INBOUND, "inbound traffic",
                        lambda: self._classified(rate, conversion, self.inbound.set)))
        if self.source_read is not None:
            out.append((SOURCE_READ, "source read", lambda: self._write_source_read(rate)))
        return out

    def _classified(self, rate, conversion, apply):
        """``apply(rate)`` once the conversion is classified.  Classification (nft table,
        cgroup) is set up with the first limit, so a conversion that is never limited
        leaves the host's firewall alone.  Later, every running process of the conversion
        is classified: with the unit's own cgroup (or net_cls) their sockets are caught too.
        Whatever goes wrong here is a limit not applied (docs/contract.md §6: logged and
        ignored), never the end of the conversion."""
        try:
            if rate is not None and not self.outbound.started:
                self.outbound.start(conversion.pids(), conversion.dedicated_cgroup)
            apply(rate)
        except (OSError, CommandError) as e:
            raise ThrottleError(str(e)) from None

    def _write_source_read(self, rate):
        try:
            self.source_read.set(rate)
        except OSError as e:
            raise ThrottleError("cannot write the bandwidth file: %s" % (e.strerror or e)) \
                from None

    def _set_directions(self, directions):
        self.state["throttling"]["network_directions"] = list(directions)

    # -- the end --------------------------------------------------------------------------
    def close(self):
        """Remove the outbound class and everything it made (the inbound rule is in its nft
        table), drop the bandwidth file's spare (the file itself goes with the job's private
        directory).  Both run whatever the other does."""
        try:
            self.outbound.close()
        finally:
            if self.source_read is not None:
                self.source_read.close()


def _policer(outbound):
    return inbound.InboundPolicer(outbound, outbound.runner)
