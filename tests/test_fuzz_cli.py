"""A seeded fuzzer: mutated jobs through the command line.

Most jobs go through :func:`wrapper.cli.main` in this process with nothing real started
(tests/inprocess.py: a fake capability probe, virt-v2v, ssh-agent and pre-flight probes, and
the daemon staying in this process); a seeded sample of them (``FUZZ_REAL``, default 100),
and every job whose meaning depends on being a process of its own (a relative path, read
from the job's working directory; ``/proc/self``), go through the real command line
(``python3 -m wrapper``), whose fake virt-v2v converts in a fraction of a second.  A fresh
interpreter per job made 2000 jobs take some 1000 s.

Every job, however broken, must end in one of two ways:

* refused (exit 1): exactly one line on stderr, ``virt-v2v-wrapper: error: ...``,
  naming a key when the mutation targeted one; nothing on stdout; nothing left
  in the state directory; nothing in the log directory but the wrapper log;
* accepted (exit 0, or 2 for a failed foreground conversion): one JSON line on
  stdout, and the state file ends with ``"finished": true`` (daemon runs are
  waited for), no secret directory left behind;

never a traceback, a "Logging error", another exit code or a hang.  At the end
no process started for the fuzz may be left.  Network limits are never left valid in a
job (they would shape this host's interfaces).  In this process: a daemonized job's
caller side is not run (the daemon is this process), so its stdout is empty and its state
file is found in the state directory; the announcement of daemonized jobs is checked on
the real command line's sample; no command but the capability probe may be run, and no
exception may leave ``main()``.  A hang in this process ends the test run (faulthandler
prints where it hung).

Environment: ``FUZZ_SEED`` (default below, printed), ``FUZZ_COUNT`` (default
2000), ``FUZZ_REAL`` (how many through the real command line, default 100; ``all``: every
job, as before), ``FUZZ_ONLY`` (comma-separated case numbers, to replay some),
``FUZZ_REPORT`` (a file to write every failure to, not only the first 20).
"""
import concurrent.futures
import copy
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Optional

import pytest

from tests import inprocess
from tests import wrapperrun as wr
from tests.fakes import data, make_fake_v2v, rhv_upload_path
from wrapper.throttling import limits
from wrapper.config import KNOWN_KEYS

DEFAULT_SEED = 20260301
SEED = int(os.environ.get("FUZZ_SEED", DEFAULT_SEED))
COUNT = int(os.environ.get("FUZZ_COUNT", 2000))
ONLY = {int(n) for n in os.environ.get("FUZZ_ONLY", "").split(",") if n.strip()}
REAL = os.environ.get("FUZZ_REAL", "100")
WORKERS = 4
TIMEOUT = 20
PREFIX = "virt-v2v-wrapper: error: "
FP = ":".join(["AB"] * 20)
MAX_REPORTED = 20
ANNOUNCED = ["state_file", "throttling_file", "v2v_log", "wrapper_log"]
OPTION_NAMES = ("--state-dir", "--log-dir", "--virt-v2v", "--run-as", "run_as")

CONTROL = [chr(c) for c in list(range(0x01, 0x20)) + list(range(0x7f, 0xa0))]
ODD_TEXT = ["\u2028", "\u202e", "\u2066", "\ufeff", "\u00e9", "\U0001f600", " ", "\u3000"]
MALFORMED_URIS = {
    "vm_name": ["ssh://[::1/x.vmx", "ssh://h]/x.vmx", "ssh://[1.2.3.4]/x.vmx", "ssh://h:99999/x.vmx",
                "ssh://h:port/x.vmx", "ssh://", "ssh:///x.vmx", "ssh://[::1]", "x://[h", "ssh://a[b@h/x.vmx"],
    "vmware_uri": ["esx://[h", "esx://h]", "esx://h:99999", "esx://h:x", "esx://[v1.x]", "10.2.0.20", "://h"],
    "rhv_url": ["https://[x", "https://[x]/api", "https:///api", "https://h:70000/api", "ftp://h/api",
                "https://127.0.0.1:port/api", "https:"],
}
BAD_VALUES = [5, -1, 1.5, True, False, None, [], {}, "", " ", "x", [1, "a"], {"a": "b"}, "\n",
              10 ** 30, 1e308, -0.0]


@dataclass
class Case:
    index: int
    seed: str
    mutation: str
    raw: bytes
    key: Optional[str] = None     # the job key the mutation targeted (the refusal names a key)
    home: Optional[str] = None    # what to put at the default vault path, if anything


@dataclass
class Result:
    case: Case
    outcome: str
    problems: list
    returncode: Optional[int] = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    real: bool = True             # through the real command line (else cli.main in-process)


# -- the world the jobs live in ---------------------------------------------------------
class World:
    """``engine``: a stand-in oVirt engine the rhv seeds point at (their
    pre-flight then passes, so their mutants get past it); None: a closed port."""

    def __init__(self, root, engine=None):
        self.root = str(root)
        self.engine = engine
        self.shared = self._dir("shared")
        self.out = self._dir("shared/out")
        self.esd = self._dir("shared/esd")
        self.iso_root = self._dir("shared/mnt")
        images = self._dir("shared/mnt/srv:_iso/sd/images/11111111-1111-1111-1111-111111111111")
        self._dir("shared/mnt/srv:_iso/sd/dom_md")
        self._file(os.path.join(images, "virtio-win-0.1.240.iso"), "ISO")
        self.iso = self._file("shared/drivers.iso", "ISO")
        self.ca = self._file("shared/ca.pem", open(engine.pki.ca).read() if engine else "CA")
        vault = {"vm1": [{"device": "/dev/sda1", "key": "k1"}], "other": []}
        self.vaults = {
            "good": self._file("shared/vault.json", json.dumps(vault), 0o600),
            "world-readable": self._file("shared/vault-open.json", json.dumps(vault), 0o644),
            "group-writable": self._file("shared/vault-group.json", json.dumps(vault), 0o620),
            "invalid-utf8": self._file("shared/vault-utf8.json", b'{"vm1": "\xff"}', 0o600),
            "deep": self._file("shared/vault-deep.json", b"[" * 100000, 0o600),
            "large": self._file("shared/vault-large.json", b"{}" + b" " * (1 << 20), 0o600),
            "bad-entries": self._file("shared/vault-entries.json", b'{"vm1": [{"device": "/dev/sda\\n"}]}', 0o600),
            "missing": os.path.join(self.shared, "vault-missing.json"),
        }
        self.vaults["directory"] = self._dir("shared/vault-dir.json")
        fifo = os.path.join(self.shared, "vault-fifo.json")
        os.mkfifo(fifo, 0o600)
        self.vaults["fifo"] = fifo
        for name, target in (("symlink", self.vaults["good"]), ("dangling", "/nonexistent/vault")):
            link = os.path.join(self.shared, "vault-%s.json" % name)
            os.symlink(target, link)
            self.vaults[name] = link
        hard = os.path.join(self.shared, "vault-hard.json")
        os.link(self.vaults["good"], hard)       # 2 links: read with the caller's rights like any other
        self.vaults["hard-link"] = hard
        self.vaults["good"] = self._file("shared/vault-good.json", json.dumps(vault), 0o600)
        bin_dir = self._dir("bin")
        self.virt_v2v = make_fake_v2v(bin_dir, log=data("run05-vmx-ssh-port-uri.vx.log"),
                                      mr=data("run05-vmx-ssh-port-uri.vx.mr.log"), duration=0.1, chunks=4)
        self.path = rhv_upload_path(bin_dir)
        self.ssh_key = self._make_key()
        self.jobs = self._dir("jobs")

    def _dir(self, rel):
        path = os.path.join(self.root, rel)
        os.makedirs(path, exist_ok=True)
        return path

    def _file(self, rel, content, mode=0o644):
        path = os.path.join(self.root, rel)
        with open(path, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        os.chmod(path, mode)
        return path

    def _make_key(self):
        keygen = shutil.which("ssh-keygen")
        if not keygen:
            return None
        path = os.path.join(self.root, "id_fuzz")
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", path], check=True, timeout=60)
        with open(path) as f:
            return f.read()

    def seeds(self):
        vddk = {"vm_name": "vm1", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1?no_verify=1",
                "vmware_password": "pw", "vmware_fingerprint": FP}
        ssh = {"vm_name": "ssh://root@127.0.0.1:2222/vmfs/volumes/ds/vm1/vm1.vmx", "transport_method": "ssh"}
        rhv = {"rhv_url": self.engine.api_url if self.engine else "https://127.0.0.1:9/ovirt-engine/api",
               "rhv_password": self.engine.password if self.engine else "pw", "rhv_cluster": "Default",
               "rhv_storage": "data"}
        local = {"output_dir": self.out}
        seeds = {
            "vddk-local": dict(vddk, **local, daemonize=False),
            "vddk-local-daemon": dict(vddk, **local),
            "vddk-everything": dict(vddk, **local, daemonize=False, output_format="qcow2", allocation="sparse",
                                    network_mappings=[{"source": "VM Network", "destination": "ovirtmgmt"},
                                                      {"source": "b", "destination": "c",
                                                       "mac_address": "00:50:56:aa:bb:cc"}],
                                    source_disks=["[datastore1] vm1/vm1.vmdk"], virtio_win=self.iso,
                                    throttling={"cpu": "50", "network": "unlimited"},
                                    luks_keys_vault=self.vaults["good"], vm_uuid="u", two_phase=False),
            "vddk-iso-domain": dict(vddk, **local, daemonize=False, virtio_win="virtio-win-0.1.240.iso"),
            "vddk-install-drivers": dict(vddk, **local, install_drivers=True, daemonize=False),
            "export-domain-dir": dict(vddk, export_domain=self.esd, daemonize=False),
            "rhv-insecure": dict(vddk, **rhv, insecure_connection=True, allocation="sparse", daemonize=False),
            "rhv-cafile-daemon": dict(vddk, **rhv, rhv_cafile=self.ca, allocation="preallocated"),
            "ssh-agent-keys": dict(ssh, **local, daemonize=False),
        }
        if self.ssh_key:
            seeds["ssh-key"] = dict(ssh, **local, ssh_key=self.ssh_key, daemonize=False)
            seeds["ssh-key-daemon"] = dict(ssh, **local, ssh_key=self.ssh_key,
                                           throttling={"cpu": "25%"})
        for kind in ("world-readable", "directory", "fifo"):
            seeds["vault-" + kind] = dict(vddk, **local, daemonize=False, luks_keys_vault=self.vaults[kind])
        # a link is followed as the caller's own open() follows it (wrapper/security/boundary.py)
        seeds["vault-symlink-good"] = dict(vddk, **local, daemonize=False, luks_keys_vault=self.vaults["symlink"])
        return seeds


# -- mutations ------------------------------------------------------------------------------
def _strings(value, path=()):
    """(path, string) of every string in ``value``."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, path + (i,))


def _set(job, path, value):
    target = job
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value


def _insert(rng, text, piece):
    at = rng.randint(0, len(text))
    return text[:at] + piece + text[at:]


def _dumps(job, rng):
    """JSON text as UTF-8 or ASCII; lone surrogates always as escapes (encoded
    as bytes they are invalid UTF-8, which is the raw-utf8 mutation's business)."""
    if rng.random() < 0.5:
        try:
            return json.dumps(job, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            pass
    return json.dumps(job).encode("ascii")


def mutate(rng, world, seed_name, seed, index):
    """One Case: a seed with one (sometimes two) mutations."""
    job = copy.deepcopy(seed)
    case = Case(index, seed_name, "none", b"")
    kind = rng.choices(
        ["none", "wrong-type", "missing", "extra", "control", "nul", "surrogate", "odd-text", "huge-string",
         "huge-number", "leading-dash", "relative-path", "malformed-uri", "bad-vault", "default-vault",
         "daemonize", "deep-value", "empty", "raw-utf8", "raw-truncate", "raw-top-level", "raw-deep",
         "raw-huge", "raw-misc", "double"],
        weights=[6, 8, 5, 5, 8, 4, 4, 3, 3, 4, 4, 4, 5, 4, 3, 3, 2, 3, 4, 3, 2, 1, 1, 2, 4])[0]
    if kind == "double":
        first = mutate(rng, world, seed_name, seed, index)
        if first.mutation.startswith("raw-"):
            return first
        try:
            job = json.loads(first.raw.decode("utf-8", "surrogatepass"))
        except ValueError:
            return first
        if not isinstance(job, dict):
            return first
        second = mutate(rng, world, seed_name, job, index)
        second.mutation = "double(%s, %s)" % (first.mutation, second.mutation)
        second.key = None          # two changes: the refusal may name either, or another key
        second.home = second.home or first.home
        return second
    case.mutation = kind
    keys = sorted(job)
    strings = list(_strings(job))
    if kind == "wrong-type":
        key = rng.choice(keys + ["daemonize", "install_drivers", "insecure_connection", "throttling",
                                 "network_mappings", "source_disks"])
        value = rng.choice(BAD_VALUES)
        if key in job and type(job[key]) is type(value) and job[key] == value:
            value = [value]
        job[key] = value
        case.key, case.mutation = key, "wrong-type %s=%s" % (key, _short(value))
    elif kind == "missing":
        key = rng.choice(keys)
        del job[key]
        case.key, case.mutation = key, "missing %s" % key
    elif kind == "extra":
        name = rng.choice(["vm_uuid", "osp_x", "warm", "x" * rng.randint(1, 300),
                           "bad\nname", "\x1b[31mred", "s\ud800", "", "\u2028"])
        job[name] = rng.choice(BAD_VALUES + ["a\nb", {"deep": [["\x1b"]]}, "x" * 5000, "\x00", "\udc80"])
        case.mutation = "extra %s" % _short(name)
    elif kind in ("control", "nul", "surrogate", "odd-text", "huge-string", "leading-dash", "empty"):
        path, text = rng.choice(strings)
        piece = {"control": lambda: rng.choice(CONTROL), "nul": lambda: "\x00",
                 "surrogate": lambda: rng.choice(["\ud800", "\udfff", "\udbff", "\udc00"]),
                 "odd-text": lambda: rng.choice(ODD_TEXT)}.get(kind)
        if piece is not None:
            value = _insert(rng, text, piece())
        elif kind == "huge-string":
            value = rng.choice(["x", "\n", "\u00e9", "1"]) * rng.choice([4097, 70000, 1000000])
        elif kind == "leading-dash":
            value = rng.choice(["-", "--", "-o ", "--help "]) + text
        else:
            value = rng.choice(["", " ", "\t", "\u3000"])
        _set(job, path, value)
        case.key = str(path[0])
        case.mutation = "%s %s" % (kind, ".".join(map(str, path)))
    elif kind == "huge-number":
        key = rng.choice(["throttling.cpu", "throttling.network", "throttling", "vm_name", "daemonize",
                          "network_mappings", "source_disks"])
        value = rng.choice(["1" * 401, 10 ** 400, 1e308, "9" * 17, 100001, "100001%", "1" * 21,
                            10 ** 15 + 1, -5, 0, "0", "1e5", "inf", "NaN"])
        if key.startswith("throttling."):
            throttling = job.get("throttling") if isinstance(job.get("throttling"), dict) else {}
            throttling[key.split(".")[1]] = value
            job["throttling"] = throttling
        else:
            job[key] = value
        case.key, case.mutation = key.split(".")[0], "huge-number %s" % key
    elif kind == "relative-path":
        choices = [("output_dir", "out"), ("output_dir", "./out/"), ("output_dir", "nope"),
                   ("export_domain", "esd"), ("export_domain", "../shared/esd"), ("virtio_win", "./drivers.iso"),
                   ("virtio_win", "nope/drivers.iso"), ("rhv_cafile", "ca.pem"), ("luks_keys_vault", "vault-good.json")]
        key, value = rng.choice(choices)
        job[key] = value
        case.mutation = "relative-path %s=%s" % (key, value)
        case.key = None        # may well be accepted
    elif kind == "malformed-uri":
        key = rng.choice(sorted(MALFORMED_URIS))
        job[key] = rng.choice(MALFORMED_URIS[key])
        case.key, case.mutation = key, "malformed-uri %s=%s" % (key, job[key])
    elif kind == "bad-vault":
        name = rng.choice(sorted(world.vaults))
        job["luks_keys_vault"] = rng.choice([world.vaults[name], world.vaults[name] + "\x00", "/dev/zero",
                                             "/proc/self/fd/0", "/"])
        case.key, case.mutation = "luks_keys_vault", "bad-vault %s" % _short(job["luks_keys_vault"])
    elif kind == "default-vault":
        job.pop("luks_keys_vault", None)
        case.home = rng.choice(["fifo", "directory", "dangling", "symlink", "world-readable", "good"])
        case.mutation = "default-vault %s" % case.home
    elif kind == "daemonize":
        job["daemonize"] = rng.choice([True, False, None, "no", 0, 1, "false"])
        case.key, case.mutation = "daemonize", "daemonize=%s" % _short(job["daemonize"])
    elif kind == "deep-value":
        key = rng.choice(keys + ["throttling", "network_mappings", "vm_uuid"])
        depth = rng.choice([10, 63, 65, 1000, 100000])
        job[key] = "__DEEP__"
        raw = _dumps(job, rng).replace(b'"__DEEP__"', b"[" * depth + b"]" * depth)
        case.raw, case.mutation, case.key = raw, "deep-value %s depth %d" % (key, depth), None
        return case
    if kind == "none" and seed_name.startswith("vault-") and seed_name != "vault-symlink-good":
        case.key = "luks_keys_vault"
    case.raw = _dumps(job, rng)
    if len(case.raw) > 1 << 20:
        case.key = None            # refused as a whole: too large
    if kind.startswith("raw-"):
        case.raw = raw_mutation(rng, case.raw, kind)
        case.mutation = "%s" % kind
        case.key = None
    return case


def raw_mutation(rng, raw, kind):
    if kind == "raw-utf8":
        bad = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\x80"])
        quote = [m.start() + 1 for m in re.finditer(rb'"', raw)]
        at = rng.choice(quote) if quote else 0
        return raw[:at] + bad + raw[at:]
    if kind == "raw-truncate":
        return raw[:rng.randint(0, max(0, len(raw) - 1))]
    if kind == "raw-top-level":
        return rng.choice([b"[" + raw + b"]", b'"job"', b"5", b"null", b"true", b"[]", b"", b"   \n"])
    if kind == "raw-deep":
        return rng.choice([b"[", b'{"a":']) * rng.choice([1000, 100000])
    if kind == "raw-huge":
        return raw[:-1] + b', "pad": "' + b"x" * (1 << 20) + b'"}'
    return rng.choice([b"\xef\xbb\xbf" + raw, raw + b" garbage", raw[:-1] + b', "daemonize": "no"}',
                       raw.replace(b": ", b": NaN, \"x\": ", 1), raw + b"\x00", raw.replace(b'"', b"'"),
                       raw[:-1] + b', "throttling": {"cpu": Infinity}}'])


def _short(value):
    try:
        text = repr(value)
    except ValueError:
        text = "<big>"
    return text if len(text) <= 40 else text[:39] + "\u2026"


def _network_is_limited(raw):
    """True when the job would set a real network limit (tc on this host's interfaces)."""
    try:
        job = json.loads(raw.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError):
        return False
    throttling = job.get("throttling") if isinstance(job, dict) else None
    if not isinstance(throttling, dict) or "network" not in throttling:
        return False
    try:
        return limits.parse_network(throttling["network"]) is not None
    except Exception:
        return False


def make_cases(world, count=COUNT):
    rng = random.Random(SEED)
    seeds = world.seeds()
    names = sorted(seeds)
    cases = []
    while len(cases) < count:
        name = rng.choice(names)
        case = mutate(rng, world, name, seeds[name], len(cases))
        if _network_is_limited(case.raw):
            continue
        cases.append(case)
    return cases


# -- running one case --------------------------------------------------------------------------
def _prepare_home(world, home, kind):
    os.makedirs(home)
    if kind is None:
        return
    path = os.path.join(home, ".v2v_luks_keys_vault.json")
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "dangling":
        os.symlink("/nonexistent/vault", path)
    elif kind == "symlink":
        os.symlink(world.vaults["good"], path)
    else:
        with open(path, "w") as f:
            json.dump({"vm1": [{"device": "/dev/sda1", "key": "k"}]}, f)
        os.chmod(path, 0o644 if kind == "world-readable" else 0o600)


def _environment(world, home):
    env = wr.env(HOME=home, PATH=world.path, VIRT_V2V_WRAPPER_VDSM_CA=world.ca,
                 VIRT_V2V_WRAPPER_SYSTEMD_MARKER=os.path.join(world.root, "no-systemd"),
                 VIRT_V2V_WRAPPER_CGROUP_ROOT=os.path.join(world.root, "no-cgroup"),
                 VIRT_V2V_WRAPPER_LOCK_DIR=os.path.join(world.root, "lock"),
                 VIRT_V2V_WRAPPER_OVIRT_CLEANUP_TIMEOUT="5")
    for name in list(env):
        if name.startswith(("SUDO_", "VIRT_V2V_WRAPPER_RUN_AS", "VIRT_V2V_WRAPPER_LOG_DIR",
                            "VIRT_V2V_WRAPPER_STATE_DIR", "VIRT_V2V_WRAPPER_ISO")) or name == "SSH_AUTH_SOCK":
            env.pop(name)
    return env


def _leftovers(state_dir):
    return sorted(n for n in os.listdir(state_dir)
                  if n.startswith(("v2v-wrapper-secrets-", "v2v-wrapper-agent-")) or n.endswith(".tmp"))


def run_case(world, case, baseline=None, real=True):
    started = time.monotonic()
    result = (_run_case if real else _run_case_in_process)(world, case, baseline or {})
    result.seconds = time.monotonic() - started
    result.real = real
    return result


def needs_a_process(case):
    """A job whose meaning depends on being a process of its own: a relative path (read
    from the working directory, world.shared for the real command line) or /proc/self."""
    return case.mutation.startswith("relative-path") or b"/proc/self" in case.raw


def real_sample(cases, count=REAL):
    """The indexes to run through the real command line: a seeded sample of ``count``
    (``all``: every one) and every case that needs a process of its own."""
    if count == "all":
        return {c.index for c in cases}
    rng = random.Random("real-sample-%d" % SEED)
    picked = rng.sample(range(len(cases)), min(int(count), len(cases)))
    return {cases[i].index for i in picked} | {c.index for c in cases if needs_a_process(c)}


def _job_dirs(world, case):
    base = os.path.join(world.jobs, "%s" % case.index)
    state, logs, home = (os.path.join(base, d) for d in ("state", "logs", "home"))
    os.makedirs(state)
    os.makedirs(logs)
    _prepare_home(world, home, case.home)
    return state, logs, home


def _wrapper_args(world, state, logs):
    return ["--state-dir", state, "--log-dir", logs, "--virt-v2v", world.virt_v2v,
            "--iso-domain-root", world.iso_root]


def _run_case_in_process(world, case, baseline):
    state, logs, home = _job_dirs(world, case)
    o = inprocess.run_main(_wrapper_args(world, state, logs), case.raw, _environment(world, home),
                           world.virt_v2v, hang_after=3 * TIMEOUT)
    result = Result(case, "refused" if o.returncode == 1 else "accepted", [], o.returncode,
                    o.stdout, o.stderr + (o.escaped or ""), real=False)
    if o.other_commands:
        result.problems.append("ran %s (only the capability probe may run)"
                               % "; ".join(" ".join(c) for c in o.other_commands))
    if o.escaped:
        result.problems.append("an exception left main(): %s" % o.escaped.strip().splitlines()[-1])
        result.outcome = "escaped"
        return result
    _judge(case, result, state, logs, baseline, daemonized=o.daemonized)
    return result


def _run_case(world, case, baseline):
    state, logs, home = _job_dirs(world, case)
    argv = wr.wrapper_cmd(*_wrapper_args(world, state, logs))
    try:
        p = subprocess.run(argv, input=case.raw, capture_output=True, timeout=TIMEOUT, cwd=world.shared,
                           env=_environment(world, home))
    except subprocess.TimeoutExpired as e:
        return Result(case, "hang", ["no exit within %ds" % TIMEOUT],
                      stdout=(e.stdout or b"").decode("utf-8", "replace"),
                      stderr=(e.stderr or b"").decode("utf-8", "replace"))
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    result = Result(case, "refused" if p.returncode == 1 else "accepted", [], p.returncode, out, err)
    _judge(case, result, state, logs, baseline)
    return result


def _judge(case, result, state, logs, baseline, daemonized=False):
    """The properties every job's end must have, whichever way it ran."""
    problems = result.problems
    for word in ("Traceback", "Logging error"):
        if word in result.stdout or word in result.stderr:
            problems.append("%r in the output" % word)
    if result.returncode not in (0, 1, 2):
        problems.append("exit code %s" % result.returncode)
        result.outcome = "bad-exit"
    elif result.returncode == 1:
        _check_refused(case, result, state, logs, baseline.get(case.seed))
    elif daemonized:
        _check_daemon_in_process(case, result, state)
    else:
        _check_accepted(case, result, state)


def _check_refused(case, result, state, logs, seed_refusal):
    problems = result.problems
    lines = result.stderr.splitlines()
    if len(lines) != 1 or not result.stderr.endswith("\n") or not lines[0].startswith(PREFIX):
        problems.append("stderr is not exactly one 'virt-v2v-wrapper: error:' line")
    elif result.stderr == seed_refusal:
        pass                             # refused as the unmutated seed is: the mutation did not matter
    elif case.key is not None and not _names_a_key(lines[0][len(PREFIX):], case.key):
        problems.append("the refusal names no job key (mutated %s)" % case.key)
    if result.stdout:
        problems.append("stdout is not empty")
    left = os.listdir(state)
    if left:
        problems.append("left in the state dir: %s" % ", ".join(sorted(left)))
    extra = [n for n in os.listdir(logs) if not n.endswith("-wrapper.log")]
    if extra or len(os.listdir(logs)) > 1:
        problems.append("left in the log dir: %s" % ", ".join(sorted(os.listdir(logs))))


def _names_a_key(message, key):
    if key in message:
        return True
    m = re.match(r"([^\s:]+):", message)
    if m and (re.split(r"[.\[]", m.group(1))[0] in KNOWN_KEYS or m.group(1) in OPTION_NAMES):
        return True
    return any(re.search(r"\b%s\b" % re.escape(k), message) for k in KNOWN_KEYS)


def _check_accepted(case, result, state_dir):
    problems = result.problems
    lines = result.stdout.splitlines()
    try:
        doc = json.loads(lines[0]) if len(lines) == 1 else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or sorted(doc) != ANNOUNCED:
        problems.append("stdout is not one JSON line announcing %s" % ", ".join(ANNOUNCED))
        return
    _check_finished(result, doc["state_file"], state_dir)


def _check_daemon_in_process(case, result, state_dir):
    """In this process the daemon side ran (no caller side): nothing on stdout, and the
    one state file in the state directory."""
    if result.stdout:
        result.problems.append("the daemon wrote to stdout")
    states = [n for n in os.listdir(state_dir) if n.endswith(".state")]
    if len(states) != 1:
        result.problems.append("not one state file in the state dir: %s" % ", ".join(states))
        return
    _check_finished(result, os.path.join(state_dir, states[0]), state_dir)


def _check_finished(result, state_file, state_dir):
    problems = result.problems
    deadline = time.monotonic() + TIMEOUT
    state = None
    while time.monotonic() < deadline:
        try:
            state = wr.read_state(state_file)
        except (OSError, ValueError):
            state = None
        if state is not None and state.get("finished") is True:
            break
        time.sleep(0.1)
    if state is None or state.get("finished") is not True:
        problems.append("the state file never got \"finished\": true (last: %s)" % _short(state))
        result.outcome = "unfinished"
        return
    if state.get("failed"):
        result.outcome = "accepted-failed"
        message = (state.get("last_message") or {}).get("message", "")
        if "virt-v2v-wrapper failed" in message:
            problems.append("wrapper error in the state: %s" % message)
    else:
        result.outcome = "accepted-ok"
    left = _leftovers(state_dir)
    for _ in range(20):                 # finished is written last, but give cleanup a moment
        if not left:
            break
        time.sleep(0.1)
        left = _leftovers(state_dir)
    if left:
        problems.append("left after the run: %s" % ", ".join(left))


# -- processes left behind -------------------------------------------------------------------
def processes_mentioning(text):
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open("/proc/%s/stat" % pid) as f:
                if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if text in cmdline:
            found[int(pid)] = cmdline.strip()
    return found


def _describe(result):
    case = result.case
    raw = case.raw if len(case.raw) <= 300 else case.raw[:300] + b"...(%d bytes)" % len(case.raw)
    return ("#%s (%s) seed %s, mutation %s%s: %s\n    job: %r\n    exit %s; stderr: %s" % (
        case.index, "real command line" if result.real else "in-process", case.seed, case.mutation,
        ", default vault %s" % case.home if case.home else "",
        "; ".join(result.problems), raw, result.returncode, _short_text(result.stderr)))


def _short_text(text, limit=1200):
    text = text.strip()
    return repr(text if len(text) <= limit else "..." + text[-limit:])


@pytest.fixture
def fuzz_engine(ovirt_engine):
    dc = ovirt_engine.add_data_center("dc1")
    ovirt_engine.add_cluster("Default", dc)
    ovirt_engine.add_storage_domain("data", "nfs", data_center=dc)
    return ovirt_engine


@pytest.mark.fuzz
def test_fuzz_the_command_line(tmp_path_factory, capsys, fuzz_engine):
    root = tmp_path_factory.mktemp("fuzz")
    world = World(root, fuzz_engine)
    cases = make_cases(world)
    if ONLY:
        cases = [c for c in cases if c.index in ONLY]
    real = real_sample(cases)
    started = time.monotonic()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    # the seeds as they are first, both ways: how each is refused, if it is (this host may
    # lack something a seed needs, e.g. keys in ~/.ssh), is the baseline of its mutants
    seeds = [Case("seed-" + name, name, "none", json.dumps(job).encode())
             for name, job in sorted(world.seeds().items())]
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool, \
            inprocess.nothing_real_starts(world.ssh_key):
        seed_results = list(pool.map(lambda c: run_case(world, c), seeds))
        seed_results += [run_case(world, Case("in-process-" + c.index, c.seed, c.mutation, c.raw), real=False)
                         for c in seeds]
        baseline = {True: {}, False: {}}
        for r in seed_results:
            if r.outcome == "refused":
                baseline[r.real][r.case.seed] = r.stderr
        # the sample through the real command line in the pool, the rest in this thread
        futures = [pool.submit(run_case, world, c, baseline[True]) for c in cases if c.index in real]
        results = [run_case(world, c, baseline[False], real=False) for c in cases if c.index not in real]
        results += [f.result() for f in futures]
    results.sort(key=lambda r: r.case.index)
    elapsed = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_self = (self_after.ru_utime + self_after.ru_stime) - (self_before.ru_utime + self_before.ru_stime)
    deadline = time.monotonic() + 15
    left = processes_mentioning(world.root)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_mentioning(world.root)
    for pid in left:                     # ours: stop them so they do not outlive the test
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    outcomes = {}
    for r in results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    failures = [r for r in seed_results + results if r.problems]
    slowest = sorted(results, key=lambda r: -r.seconds)[:3]
    n_real = sum(r.real for r in results)
    per_mode = "; ".join("%s %.1f s in all, %.2f s a job" % (
        name, sum(r.seconds for r in rs), sum(r.seconds for r in rs) / len(rs))
        for name, rs in (("real command line", [r for r in results if r.real]),
                         ("in-process", [r for r in results if not r.real])) if rs)
    summary = ("fuzz: seed %d (FUZZ_SEED), %d jobs (+%d seeds; %d through the real command line with "
               "%d workers, %d in-process) in %.1fs (%.0f CPU-seconds in the processes, %.0f in this one); "
               "outcomes: "
               "%s; %d with problems; slowest: %s"
               % (SEED, len(results), len(seed_results), n_real, WORKERS, len(results) - n_real,
                  elapsed, cpu, cpu_self,
                  ", ".join("%s %d" % kv for kv in sorted(outcomes.items())), len(failures),
                  ", ".join("#%s %.1fs" % (r.case.index, r.seconds) for r in slowest)))
    seed_lines = ["  seed %s (%s): %s%s" % (r.case.seed, "real" if r.real else "in-process", r.outcome,
                                           (" (%s)" % r.stderr.strip()[:200])
                                      if r.outcome == "refused" else "") for r in seed_results]
    with capsys.disabled():
        print("\n" + summary + "\n  time per job: " + per_mode + "\n" + "\n".join(seed_lines))
    report = [summary]
    report += [_describe(r) for r in failures[:MAX_REPORTED]]
    if os.environ.get("FUZZ_REPORT"):
        with open(os.environ["FUZZ_REPORT"], "w") as f:
            for r in failures:
                f.write(_describe(r).replace("\n    ", " | ") + " | stderr: " + repr(r.stderr[-3000:]) + "\n")
    if left:
        report.append("processes left behind: %s" % "; ".join("%d %s" % kv for kv in sorted(left.items())))
    assert len(results) == (len(ONLY) if ONLY else COUNT)
    assert not failures and not left, "\n".join(report)


def test_fuzz_cases_are_reproducible(tmp_path):
    world_a = World(tmp_path / "a")
    world_b = World(tmp_path / "b")
    a = [(c.seed, c.mutation.split()[0], c.home, len(c.raw)) for c in make_cases(world_a, 200)]
    b = [(c.seed, c.mutation.split()[0], c.home, len(c.raw)) for c in make_cases(world_b, 200)]
    assert a == b and len({m for _s, m, _h, _n in a}) > 20


def test_network_limits_never_reach_a_job():
    assert _network_is_limited(b'{"throttling": {"network": "1024"}}')
    assert not _network_is_limited(b'{"throttling": {"network": "unlimited"}}')
    assert not _network_is_limited(b'{"throttling": {"network": "1' + b"0" * 400 + b'"}}')
    assert not _network_is_limited(b'{"throttling": {"network": "\xff"}}')
