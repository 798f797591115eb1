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


def _probe(settings, runner, resolve_user=None, vddk=False):
    """Asks the virt-v2v program as the user that would run it (never root
    unless that is root: a broad sudo rule may let the caller name it)."""
    from wrapper import users, v2v
    user = (resolve_user or users.resolve_run_as)(settings, None)
    return v2v.probe_capabilities(settings.virt_v2v_path(), runner, user=user, vddk=vddk,
                                  env=v2v.build_env(None, settings.environ, user))


def virt_v2v_report(settings, runner, resolve_user=None):
    """``(ok, line)``: the installed virt-v2v's version and what it enables
    (docs/contract.md §2, §3.4), for ``--version`` and ``--check-virt-v2v``."""
    from wrapper import v2vinfo
    from wrapper.errors import WrapperError
    from wrapper.settings import tuning_problem
    try:
        caps = _probe(settings, runner, resolve_user, vddk=True)
    except WrapperError as e:
        return False, "virt-v2v: unavailable (%s)" % e
    problem = tuning_problem(settings) or v2vinfo.settings_refusal(caps, settings)
    if problem:         # what every job (or every vddk job) would be refused for
        return False, "%s; but %s" % (v2vinfo.describe(caps), problem)
    return True, v2vinfo.describe(caps)


def check_virt_v2v(settings, runner):
    return virt_v2v_report(settings, runner)


def source_read_report(settings, runner, resolve_user=None):
    """The source read limit's line (asks virt-v2v as :func:`_probe` does)."""
    from wrapper.throttling import bandwidth
    from wrapper.errors import WrapperError
    try:
        caps = _probe(settings, runner, resolve_user)
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
            "throttling": check_throttling,
            "virt-v2v": check_virt_v2v}
