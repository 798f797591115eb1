"""Pre-flight for ``rhv_url`` jobs: what virt-v2v ``-o rhv-upload`` needs,
checked before the caller gets its answer (docs/contract.md §4 step 3).

virt-v2v 2.2 contacts the engine, and runs the programs the upload needs,
only after the whole guest conversion: a minute here, hours on a big guest.
A missing SDK, a wrong password or a VM name already taken would be
reported only then, as "failed server prechecks, see earlier errors".  So
the wrapper asks the same questions first, bounded in time, and refuses the
job with one sentence naming the job key or the missing package:

* on this host, as the user virt-v2v will run as and with the environment
  it will get: the first ``python3`` on its ``PATH`` (which runs virt-v2v's
  helper scripts) imports ``ovirtsdk4`` and can read the CA file; ``nbdkit
  python`` (which writes the disks to imageio) runs a plugin with the imports
  of virt-v2v's, the way virt-v2v checks its own;
* on the engine (:func:`wrapper.ovirt.api.check_target`, as the wrapper
  itself, through the SDK): the login, the storage domain and the cluster in
  one data center, no VM of that name.

Building the probes and reading their results are pure functions; running
them goes through the ``run_as`` seam (:func:`wrapper.runner.run_as`).
"""
import json
import logging
import os
import re
import textwrap
import time

from wrapper.ovirt import api as ovirt_api
from wrapper.security import fsafe
from wrapper import runner as runner_mod, vmname
from wrapper.errors import JobError, WrapperError
from wrapper.security.text import oneline
from wrapper.security.secrets import PrivateDir

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 30
SDK_PACKAGE = "the oVirt SDK (ovirt-engine-sdk-python)"
# virt-v2v 2.2 checks its plugin with ``nbdkit python <plugin.py> --dump-plugin``,
# which runs the script: a plugin with the same imports as virt-v2v's, so a
# broken embedded interpreter (a python3 first on PATH that is a venv of
# another Python build: "undefined symbol" on ``import ssl``) fails here too.
PLUGIN_NAME = "rhv-upload-probe.py"
PLUGIN = textwrap.dedent("""\
    # virt-v2v-wrapper pre-flight: the imports of virt-v2v's rhv-upload plugin
    import json, queue, socket, ssl, threading, time
    from contextlib import contextmanager
    from http.client import HTTPConnection, HTTPSConnection
    from urllib.parse import urlparse
    import nbdkit

    API_VERSION = 2


    def open(readonly):
        return 1


    def get_size(h):
        return 0


    def pread(h, buf, offset, flags):
        pass
""")

# Run by the python3 virt-v2v will use, as virt-v2v's user: one JSON line.
# The CA file is opened like the SDK will (read), but non-blocking, so a FIFO
# put there cannot hang the check.
PROBE = textwrap.dedent("""\
    import json, os, sys
    r = {"python": sys.executable, "version": "%d.%d.%d" % sys.version_info[:3]}
    try:
        import ovirtsdk4, ovirtsdk4.types
        from ovirtsdk4.version import VERSION
        r["sdk"] = VERSION
    except Exception as e:
        r["sdk_error"] = "%s: %s" % (type(e).__name__, e)
    if sys.argv[1:] and sys.argv[1]:
        try:
            fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
            try:
                os.read(fd, 1)
            finally:
                os.close(fd)
            r["ca"] = "ok"
        except OSError as e:
            r["ca_error"] = e.strerror or str(e)
    print(json.dumps(r))
""")


def probe_argv(cafile):
    return ["python3", "-c", PROBE, cafile or ""]


def _who(user):
    return "%s (uid %d)" % (user.name, user.uid)


def _cause_line(text):
    """The Python exception line of a traceback, else the last line."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(?:Error|Exception): ", line)]
    return oneline((errors or lines or [""])[-1], 300)


def read_probe(result, user, path, cafile):
    """Problems (JobErrors) from the python3 probe's :class:`Result`, and
    what it found (for the log)."""
    where = "virt-v2v's PATH (%s)" % oneline(path, 300)
    if result.rc == 127:
        return [JobError(None, "no python3 on %s that %s can run (virt-v2v runs its "
                               "rhv-upload helper scripts with it): install python3 and %s"
                         % (where, _who(user), SDK_PACKAGE))], {}
    if result.rc == 124:
        return [JobError(None, "python3 on %s did not finish importing the oVirt SDK "
                               "within %d s" % (where, PROBE_TIMEOUT))], {}
    try:
        found = json.loads(result.out.strip().splitlines()[-1])
        if not isinstance(found, dict):
            raise ValueError(found)
    except (ValueError, IndexError):
        return [JobError(None, "python3 on %s failed as %s (exit status %d): %s" % (
            where, _who(user), result.rc, _cause_line(result.err) or "no output"))], {}
    problems = []
    python = oneline(str(found.get("python") or "python3"), 300)
    if "sdk" not in found:
        problems.append(JobError(None, "%s (the first python3 on virt-v2v's PATH, which runs "
                                       "its helper scripts) cannot import ovirtsdk4 (%s): "
                                       "install %s for it" % (
                                           python, oneline(str(found.get("sdk_error")), 120),
                                           SDK_PACKAGE)))
    if cafile and "ca" not in found:
        problems.append(JobError("rhv_cafile", "the CA file %s cannot be read by %s, who runs "
                                               "virt-v2v: %s" % (
                                                   oneline(cafile, 300), _who(user),
                                                   oneline(str(found.get("ca_error")), 100))))
    return problems, found


def nbdkit_argv(plugin_path):
    return ["nbdkit", "python", plugin_path, "--dump-plugin"]


def read_nbdkit(result, user):
    """Problems from ``nbdkit python <probe plugin> --dump-plugin``."""
    if result.rc == 0 and "python_version=" in result.out:
        return []
    if result.rc == 127:
        return [JobError(None, "nbdkit is not installed (virt-v2v writes the disks to oVirt "
                               "with its python plugin): install nbdkit-plugin-python")]
    if result.rc == 124:
        return [JobError(None, "nbdkit python did not start within %d s" % PROBE_TIMEOUT)]
    return [JobError(None, "nbdkit's python plugin cannot run virt-v2v's upload plugin as %s "
                           "(%s): install nbdkit-plugin-python; a python3 first on virt-v2v's "
                           "PATH must be, or be a venv of, the Python nbdkit embeds" % (
                               _who(user), _cause_line(result.err or result.out) or
                               "exit status %d" % result.rc))]


class _ProbeDir(PrivateDir):
    """Root's directory for the probe plugin: the run-as user may open the
    file in it by name (0711), not list, add, rename or replace anything."""

    prefix = "v2v-wrapper-probe-"


def run_nbdkit_probe(state_dir, user, env, run_as):
    with _ProbeDir(state_dir, mode=0o711) as d:
        fd = fsafe.create(d.fd, PLUGIN_NAME, os.O_WRONLY, 0o644)
        try:
            fsafe.write_all(fd, PLUGIN.encode())
        finally:
            os.close(fd)
        return run_as(user, nbdkit_argv(os.path.join(d.path, PLUGIN_NAME)), env=env,
                      timeout=PROBE_TIMEOUT)


def host_problems(config, env, user, state_dir, run_as=runner_mod.run_as):
    """The python3 and nbdkit checks, as ``user`` with virt-v2v's ``env``
    (the probe plugin in a directory of its own under ``state_dir``)."""
    target = config.target
    cafile = None if target.insecure else target.cafile
    problems, found = read_probe(run_as(user, probe_argv(cafile), env=env, timeout=PROBE_TIMEOUT),
                                 user, env.get("PATH", ""), cafile)
    if found.get("sdk"):
        log.info("pre-flight: %s (Python %s) imports ovirtsdk4 %s", found.get("python"),
                 found.get("version"), found["sdk"])
    problems += read_nbdkit(run_nbdkit_probe(state_dir, user, env, run_as), user)
    return problems


def check(config, settings, user, env, access, *, run_as=runner_mod.run_as,
          check_target=None, clock=time.monotonic):
    """Run every pre-flight check (the engine reached through ``access``, an
    :class:`~wrapper.ovirt.api.EngineAccess`); return the engine's
    :class:`~wrapper.ovirt.api.TargetFacts`.  Raises one :class:`JobError`:
    the first problem (its key and failure code), the others (if any) appended
    to its message; ``.problems`` lists them all, each with its own code."""
    t0 = clock()
    problems = host_problems(config, env, user, settings.state_dir, run_as)
    facts = None
    target = config.target
    check_target = check_target or ovirt_api.check_target
    try:
        name = vmname.display_name(config.vm_name, config.source.name)
        facts = check_target(access, target.storage, target.cluster, name,
                             timeout=float(settings.ovirt_preflight_timeout))
    except WrapperError as e:       # JobErrors name the key; SDK_MISSING names the package
        problems.append(e if isinstance(e, JobError) else JobError(None, str(e), code=e.code))
    log.info("pre-flight checks took %.1f s: %s", clock() - t0,
             "; ".join(str(p) for p in problems) if problems else "all passed")
    if problems:
        first = problems[0]
        rest = "".join("; also %s" % p for p in problems[1:])
        error = JobError(first.key, first.message + rest, code=first.code)
        error.problems = tuple(problems)     # each with its own key and failure code
        raise error
    log.info("pre-flight: storage domain %s (%s, storage type %s) and cluster %s (%s) in data "
             "center %s", target.storage, facts.storage_domain_id, facts.storage_type,
             target.cluster, facts.architecture, facts.data_center)
    return facts
