"""Pre-flight for ``transport_method: "vddk"`` jobs, before the caller gets
its answer (docs/contract.md §4 step 3).

virt-v2v 2.2 finds most VDDK problems only after it started, and names some
of them poorly: a library directory without ``libvixDiskLib.so.N`` costs it
30 s ("nbdkit did not start up"), a wrong thumbprint an appliance start and
``VixDiskLib_Open ... Unknown error``.  So the wrapper asks first, as the
user virt-v2v will run as and with the environment it will get, bounded by
``VIRT_V2V_WRAPPER_VDDK_PREFLIGHT_TIMEOUT`` seconds in all:

1. ``nbdkit vddk libdir=DIR --dump-plugin``: nbdkit and its vddk plugin are
   installed (else it fails), and the plugin loads a ``libvixDiskLib.so.N``
   from DIR (it then prints ``vddk_library_version=N``);
2. the child :mod:`wrapper.vmware.probe` (the password on its stdin): which
   ``libvixDiskLib.so.N`` DIR holds; the certificate of ``vmware_uri``'s
   host:port (443 by default) has the SHA-1 ``vmware_fingerprint``; the login
   works; a VM named ``vm_name`` exists and is shut off.

Every problem is a :class:`~wrapper.errors.JobError` naming the job key or
setting and what to check, with its failure code (wrapper.causes:
``vddk_library_missing``, ``thumbprint_mismatch``, ``source_login_refused``,
``vm_not_found``, ``vm_powered_on``; None, i.e. ``job_refused``, for the
rest); :func:`check` raises the first, the others appended, all of them in
its ``.problems``.  Building the commands and reading their results are pure; the
commands run through the ``run_as`` seam (:func:`wrapper.runner.run_as`).
"""
import concurrent.futures
import json
import logging
import os
import sys
import time

from wrapper import runner as runner_mod
from wrapper.errors import JobError
from wrapper.security.text import oneline
from wrapper.settings import FALSE_WORDS, TRUE_WORDS, ENV_PREFIX
from wrapper.vmware import endpoint

log = logging.getLogger(__name__)

LIBDIR_KEY = "--vddk-libdir"
LIBRARY = "vddk_library_missing"        # failure codes: wrapper.causes.CATALOGUE
PLUGIN_PACKAGE = "nbdkit's vddk plugin (nbdkit-plugin-vddk)"
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); from wrapper.vmware import probe; "
        "sys.exit(probe.main())")
MIN_STEP = 1.0


def _who(user):
    return "%s (uid %d)" % (user.name, user.uid)


def _last_line(text):
    """The last ``error:`` line of ``text``, else its last line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    return oneline((errors or lines or [""])[-1], 200)


# -- 1. nbdkit vddk --dump-plugin ------------------------------------------------
def nbdkit_argv(libdir):
    return ["nbdkit", "vddk", "libdir=%s" % libdir, "--dump-plugin"]


def dump_fields(out):
    """key=value lines of ``--dump-plugin`` (the last of each key: with
    ``libdir=`` the plugin re-executes nbdkit and prints them twice)."""
    fields = {}
    for line in (out or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def read_nbdkit(result, user, libdir, listing, timeout):
    """Problems with nbdkit, its vddk plugin and the library directory
    (``listing``: the probe's view of it, or None), and the fields dumped."""
    if result.rc == 127:
        return [JobError(None, "nbdkit is not installed (virt-v2v reads VDDK disks through "
                               "nbdkit's vddk plugin): install nbdkit and %s" % PLUGIN_PACKAGE)], {}
    if result.rc == 124:
        return [JobError(None, "nbdkit vddk --dump-plugin did not finish within %g s as %s"
                         % (timeout, _who(user)))], {}
    fields = dump_fields(result.out)
    if result.rc != 0 and "cannot open plugin" in result.err:
        return [JobError(None, "%s is not installed (nbdkit vddk --dump-plugin as %s: %s): "
                               "install it" % (PLUGIN_PACKAGE, _who(user),
                                               _last_line(result.err)))], fields
    if listing is not None and not listing.get("exists"):
        return [JobError(LIBDIR_KEY, "the VDDK library directory %s does not exist or %s "
                                     "cannot reach it: install VDDK there, or point %s at it"
                         % (oneline(libdir, 200), _who(user), LIBDIR_KEY), code=LIBRARY)], fields
    if result.rc != 0:
        return [JobError(None, "nbdkit's vddk plugin fails with libdir=%s as %s: %s" % (
            oneline(libdir, 200), _who(user),
            _last_line(result.err or result.out) or "exit status %d" % result.rc))], fields
    if fields.get("vddk_library_version"):
        return [], fields
    return [_library_problem(user, libdir, listing)], fields


def _library_problem(user, libdir, listing):
    found = (listing or {}).get("libraries") or []
    where = oneline(libdir, 200)
    if not found:
        return JobError(LIBDIR_KEY, "no libvixDiskLib.so.N in %s/lib64 (nbdkit's vddk plugin "
                                    "loads lib64/libvixDiskLib.so.8, .7 or .6 from the VDDK "
                                    "library directory): install VDDK there, or point %s at it"
                        % (where, LIBDIR_KEY), code=LIBRARY)
    return JobError(LIBDIR_KEY, "%s holds %s but nbdkit's vddk plugin loads none of them as %s: "
                                "check that they are readable by that user and are a VDDK for "
                                "this machine (8, 7 or 6, with the libraries of its lib64/)"
                    % (where, ", ".join(oneline(f, 80) for f in found[:4]), _who(user)),
                    code=LIBRARY)


# -- 2. the probe ---------------------------------------------------------------
def probe_argv(python=None):
    return [python or sys.executable, "-I", "-c", BOOT, PACKAGE_ROOT]


def run_probe(run_as, user, env, timeout, stdin):
    """The probe with the wrapper's own Python, or (when the run-as user may not
    run that one: a virtualenv under root's home) the first ``python3`` on PATH."""
    result = None
    for python in (sys.executable, "python3"):
        result = run_as(user, probe_argv(python), env=env, timeout=timeout, input=stdin)
        if result.rc != 127:
            break
    return result


def question(source, vm, libdir, timeout):
    """The probe's stdin: one JSON line (it holds the password: never logged)."""
    return json.dumps({"uri": source.uri, "fingerprint": source.fingerprint, "vm": vm,
                       "libdir": libdir, "password": source.password.reveal(),
                       "timeout": timeout}) + "\n"


def read_probe(result, user, timeout):
    """The probe's answer (a dict); the JobError of a host that did not answer in
    time; or, when the probe itself could not run (no Python the run-as user may
    run, the wrapper's code unreadable to it), a text saying why: a pre-flight
    that cannot ask refuses nothing, it leaves the questions to virt-v2v."""
    if result.rc == 124:
        return JobError("vmware_uri", "the VDDK pre-flight did not finish within %g s: check "
                                      "that this host reaches vmware_uri's host" % timeout)
    if result.rc == 127:
        return "cannot run %s as %s: %s" % (oneline(result.argv[0], 200), _who(user),
                                            _last_line(result.err))
    try:
        answer = json.loads(result.out.strip().splitlines()[-1])
        if isinstance(answer, dict):
            return answer
    except (ValueError, IndexError):
        pass
    return "the probe failed as %s (exit status %d): %s" % (
        _who(user), result.rc, _last_line(result.err) or "no answer")


def server_problems(answer, source, vm, timeout):
    """Problems the probe's ``answer`` shows with the server, the login and the VM."""
    ep = endpoint.parse_uri(source.uri)
    if ep is None:
        return []
    where = "%s %s" % ("vCenter" if ep.kind == "vpx" else "ESXi host", ep.where())
    error = answer.get("error")
    if error:
        return [_server_error(error, ep, where, timeout)]
    states = answer.get("vms")
    if not isinstance(states, list):
        return [JobError(None, "the VDDK pre-flight got no list of VMs from %s" % where)]
    if not states:
        return [JobError("vm_name", "no VM named %s on %s (as %s): check vm_name (the VM's "
                                    "name in vSphere)" % (oneline(repr(vm), 200), where,
                                                          oneline(ep.user, 80)),
                     code="vm_not_found")]
    if "poweredOff" not in states:
        return [JobError("vm_name", "the VM %s on %s is %s: shut it down first (virt-v2v "
                                    "converts only a VM that is shut off)" % (
                                        oneline(repr(vm), 200), where,
                                        oneline(states[0], 40) or "not shut off"),
                     code="vm_powered_on")]
    return []


def _server_error(error, ep, where, timeout):
    step, text = error.get("step"), oneline(error.get("message") or "", 200)
    if step == "fingerprint":
        return JobError("vmware_fingerprint", "does not match the certificate of %s (%s): check "
                                              "vmware_fingerprint; the password was not sent"
                        % (where, text), code="thumbprint_mismatch")
    if step == "timeout":
        return JobError("vmware_uri", "%s did not answer within %g s: check vmware_uri's host "
                                      "and port, and that this host reaches it" % (where, timeout))
    if step == "connect":
        return JobError("vmware_uri", "cannot connect to %s (%s): check vmware_uri's host and "
                                      "port, and that this host reaches it" % (where, text))
    if step == "tls":
        return JobError("vmware_uri", "%s does not answer TLS (%s): check vmware_uri's port"
                        % (where, text))
    if step == "http":
        return JobError("vmware_uri", "%s is not a vSphere SOAP endpoint (%s): check vmware_uri"
                        % (where, text))
    if step == "login":
        return JobError("vmware_password", "login as %s to %s failed (%s): check vmware_password "
                                           "and the user in vmware_uri" % (
                                               oneline(ep.user, 80), where, text),
                        code="source_login_refused")
    if step == "vms":
        return JobError("vmware_uri", "%s cannot list the VMs on %s (%s): check that user's "
                                      "permissions" % (oneline(ep.user, 80), where, text))
    return JobError(None, "the VDDK pre-flight could not talk to %s (%s)" % (where, text))


# -- all of it --------------------------------------------------------------------
def check(source, vm, libdir, user, env, timeout, *, run_as=runner_mod.run_as,
          clock=time.monotonic):
    """Every check, within ``timeout`` seconds; raises one :class:`JobError`
    (the first problem, the others appended) or returns what was found."""
    t0 = clock()
    child_env = {"PATH": env.get("PATH", os.defpath), "LANG": "C.UTF-8"}
    # nbdkit and the probe at once: both bounded by ``timeout``, so is the whole
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        dump = pool.submit(run_as, user, nbdkit_argv(libdir), env=env, timeout=timeout)
        result = run_probe(run_as, user, child_env, timeout,
                           question(source, vm, libdir, max(MIN_STEP / 2, timeout - MIN_STEP)))
        nbdkit = dump.result()
    answer = read_probe(result, user, timeout)
    listing = answer.get("libdir") if isinstance(answer, dict) else None
    problems, fields = read_nbdkit(nbdkit, user, libdir, listing, timeout)
    if isinstance(answer, JobError):
        problems.append(answer)
    elif isinstance(answer, str):
        log.warning("VDDK pre-flight: %s; the VMware host is left to virt-v2v", answer)
        answer = {}
    else:
        problems += server_problems(answer, source, vm, timeout)
    log.info("VDDK pre-flight took %.1f s: %s", clock() - t0,
             "; ".join(str(p) for p in problems) if problems else "all passed")
    if problems:
        first = problems[0]
        error = JobError(first.key, first.message + "".join("; also %s" % p for p in problems[1:]),
                         code=first.code)
        error.problems = tuple(problems)     # each with its own key and failure code
        raise error
    facts = {"library": fields.get("vddk_dll"), "version": fields.get("vddk_library_version"),
             "server": answer.get("about", {}).get("fullName"),
             "fingerprint": answer.get("fingerprint")}
    log.info("VDDK pre-flight: VDDK %s (%s); %s", facts["version"], facts["library"],
             "%s, certificate %s, VM %s shut off" % (facts["server"], facts["fingerprint"], vm)
             if "vms" in answer else "the VMware host was not asked")
    return facts


def from_settings(settings):
    """(on, timeout) from the administrator's settings; a JobError naming the
    variable for a value that makes no sense."""
    word = str(settings.vddk_preflight).strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise JobError(ENV_PREFIX + "VDDK_PREFLIGHT", "must be one of %s" % "/".join(
            TRUE_WORDS + FALSE_WORDS[:-1]))
    try:
        timeout = float(settings.vddk_preflight_timeout)
        if not 0 < timeout <= 600:
            raise ValueError(timeout)
    except ValueError:
        raise JobError(ENV_PREFIX + "VDDK_PREFLIGHT_TIMEOUT", "must be a number of seconds "
                                                               "above 0 and at most 600") from None
    return word in TRUE_WORDS, timeout


def check_job(config, settings, user, env, *, run_as=runner_mod.run_as, clock=time.monotonic):
    """The pre-flight of a vddk job's ``config`` as ``user`` with virt-v2v's
    ``env``, unless the administrator turned it off."""
    on, timeout = from_settings(settings)
    if not on:
        log.info("VDDK pre-flight skipped (%sVDDK_PREFLIGHT=%s)", ENV_PREFIX, settings.vddk_preflight)
        return None
    return check(config.source, config.vm_name, settings.vddk_libdir, user, env, timeout,
                 run_as=run_as, clock=clock)
