"""Host checks: ``--checks`` lists them, ``--check-<name>`` runs one.

A check is ``fn(settings, runner) -> (ok, reason)``; the registry is built by
:func:`registry` (no module-level mutable state) so other modules can add
theirs by name.
"""
from wrapper import isodomain


def check_rhv_guest_tools(settings, runner):
    path = isodomain.find_iso(settings.iso_domain_root)
    if path:
        return True, "drivers ISO found: %s" % path
    return False, "no Windows drivers ISO found in an ISO domain under %s" % settings.iso_domain_root


def registry():
    checks = {"rhv-guest-tools": check_rhv_guest_tools}
    try:
        from wrapper import netlimit
    except ImportError:
        netlimit = None
    if netlimit is not None and hasattr(netlimit, "check_throttling"):
        checks["throttling"] = netlimit.check_throttling
    return checks
