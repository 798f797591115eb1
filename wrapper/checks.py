"""Host checks: ``--checks`` lists them, ``--check-<name>`` runs one.

A check is ``fn(settings, runner) -> (ok, reason)``; :func:`registry` builds
the table each time (no module-level mutable state).
"""
from wrapper import isodomain


def check_rhv_guest_tools(settings, runner):
    path = isodomain.find_iso(settings.iso_domain_root)
    if path:
        return True, "drivers ISO found: %s" % path
    return False, "no Windows drivers ISO found in an ISO domain under %s" % settings.iso_domain_root


def check_throttling(settings, runner):
    # imported here: every run builds the option list, few run this check
    from wrapper import netlimit
    return netlimit.check_throttling(settings, runner)


def registry():
    return {"rhv-guest-tools": check_rhv_guest_tools,
            "throttling": check_throttling}
