"""Host checks: ``--checks`` lists them, ``--check-<name>`` runs one.

A check is ``fn(settings, runner) -> (ok, reason)``; :func:`registry` builds
the table each time (no module-level mutable state).
"""
from wrapper import isodomain, netlimit


def check_rhv_guest_tools(settings, runner):
    path = isodomain.find_iso(settings.iso_domain_root)
    if path:
        return True, "drivers ISO found: %s" % path
    return False, "no Windows drivers ISO found in an ISO domain under %s" % settings.iso_domain_root


def registry():
    return {"rhv-guest-tools": check_rhv_guest_tools,
            "throttling": netlimit.check_throttling}
