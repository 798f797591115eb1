"""The inbound half of a network limit, where virt-v2v cannot limit its source read.

virt-v2v reports ``bandwidth-option`` up to 2.13.3 and then no more: upstream removed
``--bandwidth``/``--bandwidth-file`` ("better done at a system or container level").  On
such a virt-v2v the read from the source (nbdkit's ssh/vddk plugin pulling the disks from
ESXi) is what a network limit is mostly for, so the wrapper limits what the conversion
*receives* on the host instead (docs/contract.md §6: the ``inbound`` direction).

How: one more chain, ``in``, in the conversion's own nftables table (the one
:class:`wrapper.throttling.netlimit.NetLimiter` made for its outbound classification, so it
has the same match on the conversion's cgroup and the same lifetime: ``close()``, the
reclaim of a dead wrapper's leftovers and every way out delete the table, and the chain goes
with it).  The chain hooks ``input`` and holds one rule::

    socket cgroupv2 level N "<cgroup>" limit rate over R bytes/second burst B bytes counter drop

``socket cgroupv2`` looks up the local socket a packet is for and matches the cgroup the
socket was made in, which is the conversion's (the rule exists before the conversion runs,
like the outbound one).  A packet over the rate is dropped: the sender's TCP backs off, so
the rate at the source follows the limit.  That is a policer, not a shaper (a packet that
already came in cannot be queued back).  ``limit`` counts IP packet bytes, coalesced (GRO/GSO)
packets of 64 KiB and more included.  Measured on kernel 6.18 (bench/inbound_policer.py, the
figures are in its docstring), TCP lands at 96-104 % of the limit at the receiver with
cubic, bbr and reno and any burst, even 0: that kernel's byte bucket holds one second at the
rate plus the burst.  So a new rule (a changed limit) starts with about a second's worth
to spend, and :func:`burst` (an eighth of a second, at least four 64 KiB packets) is a
margin for kernels whose bucket holds the burst alone, where a burst smaller than one
coalesced packet would pass nothing.

Only with cgroup v2: the ``net_cls`` match (``meta cgroup``) reads the packet's socket,
which on input is known only for connections the kernel's early demux found; a limit that
works for some connections only is not offered.

A new rate replaces the rule in one transaction (``nft -f``: the old one holds until the new
one does); ``None`` deletes the chain.  Command text is built by the pure functions here.
"""
import logging

from wrapper.errors import CommandError, ThrottleError

log = logging.getLogger(__name__)

CHAIN = "in"
MIN_BURST = 256 << 10       # bytes: four 64 KiB GRO packets
BURST_DIVISOR = 8           # burst = an eighth of a second at the rate ...
MAX_BURST = 1 << 30         # ... at most 1 GiB
# The kernel refuses (EOVERFLOW) a byte limit whose rate + burst, times 10^9 ns, does not fit
# in 64 bits (or, before 6.4, silently wraps): about 18.4 GB/s.  Faster limits are policed at
# this rate, which no host's input comes close to.
MAX_RATE = 16 << 30         # bytes per second


def burst(rate):
    """Burst in bytes for ``rate`` bytes per second."""
    return max(MIN_BURST, min(MAX_BURST, rate // BURST_DIVISOR))


def policed_rate(rate):
    return min(rate, MAX_RATE)


def _chain_decl(table):
    return ("add chain inet %s %s { type filter hook input priority 0; policy accept; }\n"
            % (table, CHAIN))


def ruleset(table, match, rate, burst_bytes=None):
    """Input for ``nft -f -``: (re)place the inbound rule of ``table`` at ``rate`` bytes/s
    (``burst_bytes``: :func:`burst` unless a benchmark tries another)."""
    r = policed_rate(rate)
    b = burst(r) if burst_bytes is None else burst_bytes
    return (_chain_decl(table)
            + "flush chain inet %s %s\n" % (table, CHAIN)
            + "add rule inet %s %s %s limit rate over %d bytes/second burst %d bytes "
              "counter drop\n" % (table, CHAIN, match, r, b))


def removal(table):
    """Input for ``nft -f -``: no inbound rule in ``table`` (whether there was one or not)."""
    return (_chain_decl(table)
            + "flush chain inet %s %s\n" % (table, CHAIN)
            + "delete chain inet %s %s\n" % (table, CHAIN))


class InboundPolicer:
    """The inbound limit of one conversion, in the table of its outbound ``limiter`` (a
    started NetLimiter: ``started``, ``mechanism``, ``minor``, ``table``, ``match``).
    ``set(rate)`` any number of times; nothing to close: the table is the limiter's."""

    def __init__(self, limiter, runner, log=log):
        self.limiter = limiter
        self._run = runner
        self.log = log
        self.rate = None

    def _unavailable(self):
        """Why the limiter's table cannot carry the rule (None: it can)."""
        lim = self.limiter
        if not lim.started:
            return "the conversion is not classified yet"
        if lim.mechanism is None or not lim.mechanism.available:
            return "network limits are unavailable on this host: %s" % (
                lim.mechanism.reason if lim.mechanism else "unknown")
        if lim.minor is None or lim.match is None:
            return "the network limiter was closed"
        if lim.mechanism.name != "cgroup2":
            return ("inbound traffic is matched by cgroup v2 only (this host classifies "
                    "by %s)" % lim.mechanism.name)
        return None

    def set(self, rate):
        """Police inbound traffic at ``rate`` (a NetworkRate), or lift it with None.
        ThrottleError when it cannot be applied."""
        why = self._unavailable()
        if why is not None:
            if rate is None:
                self.rate = None
                return
            raise ThrottleError(why)
        lim = self.limiter
        text = removal(lim.table) if rate is None else \
            ruleset(lim.table, lim.match, rate.bytes_per_second)
        try:
            self._run(["nft", "-f", "-"], input=text)
        except CommandError as e:
            raise ThrottleError("could not apply the inbound limit: %s" % e) from None
        self.rate = rate
        if rate is not None:
            self.log.info("network limit: inbound policed at %d B/s (nft table inet %s, chain %s)",
                          rate.bytes_per_second, lim.table, CHAIN)
