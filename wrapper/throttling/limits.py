"""Throttling values: parsing and merging (docs/contract.md §6).  Pure functions.

Every value is parsed and bounded here, once, and the rest of the wrapper
takes the parsed form: ``cpu`` is a string like ``"50%"``; ``network`` a
:class:`NetworkRate` (bytes/s, with its bits/s for virt-v2v's bandwidth
file); ``None`` means unlimited / never set.  The state file keeps
:func:`state_text` of them (the network limit as a string of digits).
"""
import math
import re
from dataclasses import dataclass

from wrapper.errors import ThrottleError
from wrapper.security.text import short

KEYS = ("cpu", "network")
UNLIMITED = "unlimited"
MAX_CPU_PERCENT = 100000              # a thousand CPUs
MAX_CPU_TEXT = 16                     # characters of the number
MAX_NETWORK = 10 ** 15                # bytes per second (8 Pbit/s)
MAX_NETWORK_TEXT = 20                 # digits
_CPU = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*%?")
_DIGITS = re.compile(r"[0-9]+")


def _unlimited(value):
    return value is None or (isinstance(value, str) and len(value) < 64
                             and value.strip().lower() == UNLIMITED)


def parse_cpu(value):
    """'50', '50%', 50 -> '50%'; 'unlimited'/None -> None."""
    if _unlimited(value):
        return None
    if isinstance(value, bool):
        raise ThrottleError("cpu limit must be a percentage, not %s" % short(value))
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ThrottleError("cpu limit %s is not a percentage like '50%%'" % short(value))
        if not 0 < value <= MAX_CPU_PERCENT:
            raise ThrottleError("cpu limit %s must be more than 0%% and at most %d%%"
                                % (short(value), MAX_CPU_PERCENT))
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ThrottleError("cpu limit must be a string like '50%%', not %s" % short(value))
    m = _CPU.fullmatch(text)
    if not m:
        raise ThrottleError("cpu limit %s is not a percentage like '50%%'" % short(value))
    if len(m.group(1)) > MAX_CPU_TEXT:
        raise ThrottleError("cpu limit %s is too long (at most %d characters of number)"
                            % (short(value), MAX_CPU_TEXT))
    number = float(m.group(1))
    if number <= 0:
        raise ThrottleError("cpu limit %s must be more than 0%%" % short(value))
    if number > MAX_CPU_PERCENT:
        raise ThrottleError("cpu limit %s is too large (at most %d%%)" % (short(value), MAX_CPU_PERCENT))
    return "%s%%" % (int(number) if number.is_integer() else number)


@dataclass(frozen=True)
class NetworkRate:
    """A network limit in force: bytes per second on the wire, 0 < n <= MAX_NETWORK.

    The bounds are checked here and nowhere else; the limiters (the outbound
    class, the bandwidth file) take this type and convert nothing."""
    bytes_per_second: int

    def __post_init__(self):
        n = self.bytes_per_second
        if isinstance(n, bool) or not isinstance(n, int):
            raise ThrottleError("network limit must be a whole number of bytes per second, not %s"
                                % short(n))
        if n <= 0:
            raise ThrottleError("network limit %s is not a positive number of bytes per second"
                                % short(n))
        if n > MAX_NETWORK:
            raise ThrottleError("network limit %s is too large (at most %d bytes per second)"
                                % (short(n), MAX_NETWORK))

    @property
    def bits_per_second(self):
        return self.bytes_per_second * 8

    def __str__(self):
        return str(self.bytes_per_second)


def parse_network(value):
    """'1048576', 1048576, 1048576.0 -> NetworkRate(1048576); 'unlimited'/None -> None."""
    if _unlimited(value):
        return None
    if isinstance(value, bool):
        raise ThrottleError("network limit must be bytes per second, not %s" % short(value))
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return NetworkRate(int(value))          # a whole JSON number
    if not isinstance(value, str):
        raise ThrottleError("network limit must be bytes per second as digits, not %s" % short(value))
    text = value.strip()
    if not _DIGITS.fullmatch(text):
        raise ThrottleError("network limit %s is not a positive number of bytes per second"
                            % short(value))
    if len(text) > MAX_NETWORK_TEXT:            # bounded before int() ever sees it
        raise ThrottleError("network limit %s is too long (at most %d digits)" % (short(value), MAX_NETWORK_TEXT))
    return NetworkRate(int(text))


PARSERS = {"cpu": parse_cpu, "network": parse_network}


def parse_limits(data):
    """Parse a throttling document into ``(changes, problems)``.

    ``changes`` maps each known key present to its normalised value; a value
    that does not parse goes to ``problems`` (key, message) instead and is
    ignored.  Unknown keys are ignored.
    """
    if not isinstance(data, dict):
        return {}, [(None, "throttling data must be a JSON object")]
    changes, problems = {}, []
    for key in KEYS:
        if key in data:
            try:
                changes[key] = PARSERS[key](data[key])
            except ThrottleError as e:
                problems.append((key, str(e)))
    return changes, problems


def state_text(value):
    """A parsed value -> its form in the state file (JSON): the network
    limit as a string of digits, the cpu limit as it is, None as None."""
    return str(value) if isinstance(value, NetworkRate) else value


def cpu_quota_property(cpu):
    """'50%' -> 'CPUQuota=50%'; None -> 'CPUQuota=' (removes the limit)."""
    return "CPUQuota=%s" % (cpu or "")
