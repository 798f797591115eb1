"""Throttling values: parsing and merging (SPEC §6).  Pure functions.

Normalised forms kept in the state file and handed to the limiters:
``cpu`` is a string like ``"50%"``; ``network`` a string of digits (bytes/s);
``None`` means unlimited / never set.
"""
import re

from wrapper.errors import ThrottleError

KEYS = ("cpu", "network")
UNLIMITED = "unlimited"


def parse_cpu(value):
    """'50', '50%', 50 -> '50%'; 'unlimited'/None -> None."""
    if value is None or (isinstance(value, str) and value.strip().lower() == UNLIMITED):
        return None
    if isinstance(value, bool):
        raise ThrottleError("cpu limit must be a percentage, not %r" % value)
    if isinstance(value, (int, float)):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ThrottleError("cpu limit must be a string like '50%%', not %r" % (value,))
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%?", text)
    if not m:
        raise ThrottleError("cpu limit %r is not a percentage like '50%%'" % value)
    number = float(m.group(1))
    if number <= 0:
        raise ThrottleError("cpu limit %r must be more than 0%%" % value)
    return "%s%%" % (int(number) if number.is_integer() else number)


def parse_network(value):
    """'1048576', 1048576 -> '1048576'; 'unlimited'/None -> None."""
    if value is None or (isinstance(value, str) and value.strip().lower() == UNLIMITED):
        return None
    if isinstance(value, bool):
        raise ThrottleError("network limit must be bytes per second, not %r" % value)
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ThrottleError("network limit must be bytes per second as digits, not %r" % (value,))
    if not re.fullmatch(r"\d+", text) or int(text) <= 0:
        raise ThrottleError("network limit %r is not a positive number of bytes per second" % value)
    return str(int(text))


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


def cpu_quota_property(cpu):
    """'50%' -> 'CPUQuota=50%'; None -> 'CPUQuota=' (removes the limit)."""
    return "CPUQuota=%s" % (cpu or "")
