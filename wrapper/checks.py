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
    """cpu and outbound network limits decide the answer; the source read's
    limit (virt-v2v's own) is reported on a line of its own."""
    # imported here: every run builds the option list, few run this check
    from wrapper.throttling import host
    ok, text = host.check_throttling(settings, runner)
    return ok, text + "\n" + source_read_report(settings, runner)


def source_read_report(settings, runner, resolve_user=None):
    """Asks the virt-v2v program as the user that would run it (never root
    unless that is root: a broad sudo rule may let the caller name it)."""
    from wrapper import users, v2v
    from wrapper.throttling import bandwidth
    from wrapper.errors import WrapperError
    try:
        user = (resolve_user or users.resolve_run_as)(settings, None)
        caps = v2v.probe_capabilities(settings.virt_v2v_path(), runner, user=user,
                                      env=v2v.build_env(None, settings.environ, user))
    except WrapperError as e:
        return "network source read: unavailable (%s)" % e
    if bandwidth.supported(caps):
        return ("network source read: available (virt-v2v reports %s: --bandwidth-file, "
                "nbdkit rate filter on the ssh and vddk inputs)" % bandwidth.CAPABILITY)
    return ("network source read: inbound policing (virt-v2v does not report %s: what the "
            "conversion receives is dropped over the limit on this host's input hook, "
            "cgroup v2 only)" % bandwidth.CAPABILITY)


def registry():
    return {"rhv-guest-tools": check_rhv_guest_tools,
            "throttling": check_throttling}
