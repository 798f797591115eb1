"""What the installed virt-v2v says it accepts (docs/contract.md §3.4).

Probed once per job, as the run-as user with virt-v2v's environment, within
:data:`PROBE_BUDGET` seconds in all (the optional probes side by side, once the
capabilities came back):

* ``--machine-readable``: the capability lines (required: a program that does
  not answer like virt-v2v refuses the job);
* ``--version``: the release, for the logs, ``--version`` and ``--check-virt-v2v``;
* ``--help``: the options it takes.  ``--smp`` and ``-m/--memsize`` (2.10) have no
  capability line, and 2.8 removed ``--password-file``, ``--vddk-*``,
  ``--vdsm-*``, ``--compressed``, ``--no-trim``, ``--qemu-boot`` and ``--vmtype``;
* for a VDDK job only, ``-i libvirt -ic esx://… -it vddk -io ?``: the ``-io vddk-*``
  keys (``vddk-compression`` came in 2.10 with no capability line).

The parsers are pure functions over the text; :func:`probe` is the only side
effect and takes the runner as a seam.  A failed ``--version``, ``--help`` or
``-io ?`` leaves that part unknown, and whatever needs it is not passed.
"""
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

from wrapper.errors import CommandError, ConversionError, JobError

log = logging.getLogger(__name__)

PROBE_BUDGET = 60.0          # seconds for every probe of one job together
# 2.8 renamed the outputs in the capability list; the old -o names stay accepted
OUTPUT_RENAMES = {"local": "disk", "rhv": "ovirt", "rhv-upload": "ovirt-upload"}
# any host: -io ? only selects the input module, it connects to nothing
VDDK_QUERY = ["-i", "libvirt", "-ic", "esx://probe.invalid/", "-it", "vddk", "-io", "?"]
_VERSION = re.compile(r"\bvirt-v2v\s+v?(\d+)\.(\d+)(?:\.(\d+))?")
_HELP_LINE = re.compile(r"^\s{1,8}(-[-\w]+(?:\[[^\]]*\])?(?:,\s*-[-\w]+(?:\[[^\]]*\])?)*)")
_IO_KEY = re.compile(r"^\s*-io\s+([a-z][-a-z0-9]*)", re.M)


def parse_version(text):
    """``virt-v2v 2.10.0`` -> ``(2, 10, 0)``; None when it says no such thing."""
    m = _VERSION.search(text or "")
    if not m:
        return None
    return tuple(int(g or 0) for g in m.groups())


def parse_help_options(text):
    """The option names ``--help`` lists (``-b``, ``--bridge``, ``--smp`` ...)."""
    names = set()
    for line in (text or "").splitlines():
        m = _HELP_LINE.match(line)
        if not m:
            continue
        for word in m.group(1).split(","):
            names.add(word.strip().split("[", 1)[0])
    return frozenset(names)


def parse_io_keys(text):
    """The ``-io`` keys an ``-io ?`` answer lists (``vddk-libdir``, ...)."""
    return frozenset(_IO_KEY.findall(text or ""))


@dataclass(frozen=True)
class Capabilities:
    """Everything the probe learnt.  ``options`` and ``vddk_keys`` are None
    when not known (not asked, or the answer failed): nothing that needs them
    is passed then."""
    lines: tuple = ()
    version: Optional[tuple] = None
    options: Optional[frozenset] = None
    vddk_keys: Optional[frozenset] = None

    def has(self, name):
        return name in self.lines

    @property
    def major(self):
        """virt-v2v 2.x announces ``virt-v2v-2.0``; 1.4x has no such line."""
        majors = [int(m.group(1)) for m in (re.match(r"^virt-v2v-(\d+)\.", c) for c in self.lines) if m]
        return max(majors) if majors else 1

    @property
    def version_text(self):
        return ".".join(str(n) for n in self.version) if self.version else "unknown"

    def accepts(self, option):
        """``--help`` lists ``option`` (False when the help is not known)."""
        return self.options is not None and option in self.options

    def takes_vddk(self, key):
        """``-io ?`` of ``-it vddk`` lists ``key`` (False when not known)."""
        return self.vddk_keys is not None and key in self.vddk_keys

    def output_name(self, old):
        """The ``-o`` name to pass: the new one where the capabilities print it (2.8+)."""
        new = OUTPUT_RENAMES.get(old)
        return new if new and self.has("output:" + new) else old

    def upload_option(self, name):
        """An ``-oo`` key of the oVirt upload: ``ovirt-<name>`` with ``-o ovirt-upload``, else ``rhv-<name>``."""
        return ("ovirt-" if self.output_name("rhv-upload") == "ovirt-upload" else "rhv-") + name

    def lacks_output(self, old):
        """The output is missing from a list that names outputs (2.10+ prints the oVirt
        ones only when they are built in).  A list naming no output at all says nothing."""
        if not any(line.startswith("output:") for line in self.lines):
            return False
        return not (self.has("output:" + old) or self.has("output:" + OUTPUT_RENAMES.get(old, old)))

    def features(self):
        """What this virt-v2v enables in the wrapper, as short words (for the reports)."""
        words = []
        for what, on in (("bandwidth-file", self.has("bandwidth-option")),
                         ("mac", self.has("mac-option")),
                         ("parallel", self.has("parallel-option")),
                         ("smp", self.accepts("--smp")),
                         ("memsize", self.accepts("--memsize")),
                         ("vddk-compression", self.takes_vddk("vddk-compression"))):
            if on:
                words.append(what)
        outputs = [o for o in ("local", "rhv", "rhv-upload") if not self.lacks_output(o)]
        words.append("outputs " + ",".join(self.output_name(o) for o in outputs) if outputs
                     else "no outputs the wrapper uses")
        return words


def parse_capabilities(text, **kw):
    return Capabilities(tuple(line.strip() for line in text.splitlines() if line.strip()), **kw)


def _ask(runner, argv, env, user, deadline, clock):
    left = max(1.0, deadline - clock())
    return runner(argv, env=env, timeout=left, user=user)


def _optional(runner, argv, env, user, deadline, clock):
    """The output of a probe whose failure only leaves something unknown."""
    try:
        res = _ask(runner, argv, env, user, deadline, clock)
    except CommandError as e:
        log.warning("virt-v2v probe %s failed (%s): what it tells is treated as unknown",
                    " ".join(argv[1:]), e)
        return None
    return res.out + "\n" + (res.err or "")


def probe(virt_v2v, runner, env=None, user=None, vddk=False, clock=time.monotonic):
    """Ask the installed ``virt_v2v`` what it accepts, as ``user`` with ``env``
    (the program may be one the caller named: never more rights than
    virt-v2v itself).  ``vddk``: also ask for the ``-io vddk-*`` keys."""
    deadline = clock() + PROBE_BUDGET
    try:
        res = _ask(runner, [virt_v2v, "--machine-readable"], env, user, deadline, clock)
    except CommandError as e:
        raise ConversionError("cannot query virt-v2v capabilities (%s)" % e) from None
    lines = parse_capabilities(res.out).lines
    if "virt-v2v" not in lines:
        raise ConversionError("%s --machine-readable did not answer like virt-v2v" % virt_v2v)
    asks = [[virt_v2v, "--version"], [virt_v2v, "--help"]] + ([[virt_v2v] + VDDK_QUERY] if vddk else [])
    # side by side: each is a process start, and the caller waits for its answer meanwhile
    with ThreadPoolExecutor(max_workers=len(asks)) as pool:
        texts = list(pool.map(lambda argv: _optional(runner, argv, env, user, deadline, clock), asks))
    version_text, help_text, io_text = texts + [None] * (3 - len(texts))
    options = parse_help_options(help_text) if help_text is not None else None
    return Capabilities(lines, version=parse_version(version_text),
                        options=options or None,
                        vddk_keys=parse_io_keys(io_text) if io_text is not None else None)


def describe(caps):
    """One line: the version and what it enables."""
    return "virt-v2v %s: %s" % (caps.version_text, ", ".join(caps.features()))


def job_refusal(config, caps, settings):
    """Why the installed virt-v2v cannot run this job as the administrator set
    it up (a JobError to refuse it with, one line), or None.  Asked before
    anything starts, so such a job never becomes a failed conversion."""
    from wrapper.config import ExportDomainTarget, RhvUploadTarget, VddkSource
    target, release = config.target, "virt-v2v %s" % caps.version_text
    for kind, key, old in ((RhvUploadTarget, "rhv_url", "rhv-upload"),
                           (ExportDomainTarget, "export_domain", "rhv")):
        if isinstance(target, kind) and caps.lacks_output(old):
            return JobError(key, "%s was built without the oVirt outputs (it lists neither "
                                 "output:%s nor output:%s): use output_dir, or a virt-v2v with "
                                 "oVirt support" % (release, old, OUTPUT_RENAMES[old]))
    return settings_refusal(caps, settings, vddk=isinstance(config.source, VddkSource))


def settings_refusal(caps, settings, vddk=True):
    """A JobError for the first administrator setting this virt-v2v does not
    take (``vddk``: count the VDDK ones), or None."""
    release = "virt-v2v %s" % caps.version_text
    if vddk and settings.vddk_compression and not caps.takes_vddk("vddk-compression"):
        return JobError("--vddk-compression", "%s does not take -io vddk-compression (its -io ? "
                                              "does not list it; virt-v2v 2.10 added it): unset "
                                              "it or VIRT_V2V_WRAPPER_VDDK_COMPRESSION" % release)
    if settings.appliance_memsize and not caps.accepts("--memsize"):
        return JobError("--appliance-memsize", "%s does not take --memsize (its --help does not "
                                               "list it; virt-v2v 2.10 added it): unset "
                                               "it or VIRT_V2V_WRAPPER_APPLIANCE_MEMSIZE" % release)
    return None
