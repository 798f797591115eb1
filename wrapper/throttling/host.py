"""What this host offers for limits: cgroup hierarchies, tc/nft/ip, interfaces, root qdiscs.

Read-only look-ups, through the injected ``runner`` (``wrapper.runner.run`` signature) and
the files under ``cgroup_root``; the commands and the parsing of their output are the pure
builders of :mod:`wrapper.throttling.tcnft`.  :mod:`wrapper.throttling.netlimit` changes the
host, this module only looks at it; ``--check-throttling`` (:func:`check_throttling`) is the
same look-up the limiter makes at its start.
"""
import collections
import os

from wrapper.errors import CommandError
from wrapper.throttling.tcnft import (
    NET_CLS_DIRS, TABLE_PREFIX, candidate_devices, match_cgroupv2, match_net_cls, nft_ruleset,
    parse_classes, parse_links, parse_root_qdisc, root_owner)

Mechanism = collections.namedtuple("Mechanism", "name available reason path")
Mechanism.__new__.__defaults__ = (None,)


# ---- cgroup hierarchies ---------------------------------------------------------------------
def find_net_cls(cgroup_root):
    for d in NET_CLS_DIRS:
        p = os.path.join(cgroup_root, d)
        if os.path.exists(os.path.join(p, "net_cls.classid")):
            return p
    return None


def find_cgroup2(cgroup_root):
    for p in (cgroup_root, os.path.join(cgroup_root, "unified")):
        if os.path.exists(os.path.join(p, "cgroup.controllers")):
            return p
    return None


def nft_path(cgroup_root, v2dir, path):
    """A cgroup ``path`` of the v2 hierarchy at ``v2dir`` as nft names it (relative to
    ``cgroup_root``, no leading or trailing slash)."""
    rel = os.path.relpath(v2dir, cgroup_root)
    rel = "" if rel == "." else rel + "/"
    return (rel + path.lstrip("/")).rstrip("/")


# ---- tools ------------------------------------------------------------------------------------
def tool_missing(runner, argv):
    try:
        runner(argv, check=False)
    except CommandError as e:
        return e.rc == 127
    return False


def nft_check(runner, match):
    """None when nft accepts a ruleset with ``match``, else its first complaint."""
    try:
        r = runner(["nft", "-c", "-f", "-"], input=nft_ruleset(TABLE_PREFIX + "probe", match, 0),
                   check=False)
    except CommandError as e:
        return str(e)
    if r.rc == 0:
        return None
    lines = (r.err or r.out or "rc=%d" % r.rc).strip().splitlines()
    return lines[0] if lines else "rc=%d" % r.rc


# ---- what can be limited ----------------------------------------------------------------------
def detect(runner, cgroup_root="/sys/fs/cgroup", prefer=None):
    """Which classification this host supports.  ``prefer`` ('net_cls'/'cgroup2') forces one."""
    for tool in (["tc", "-V"], ["nft", "--version"], ["ip", "-V"]):
        if tool_missing(runner, tool):
            return Mechanism("none", False, "%s is not installed" % tool[0])
    net_cls, v2 = find_net_cls(cgroup_root), find_cgroup2(cgroup_root)
    order = [("net_cls", net_cls), ("cgroup2", v2)]
    if prefer:
        order = [o for o in order if o[0] == prefer]
    problems = []
    for name, path in order:
        if not path:
            continue
        match = match_net_cls(0) if name == "net_cls" else \
            match_cgroupv2(nft_path(cgroup_root, path, "/"), 0)
        err = nft_check(runner, match)
        if err:
            problems.append("nft cannot match %s: %s" % (name, err))
            continue
        how = "nft meta cgroup (net_cls classid)" if name == "net_cls" else "nft socket cgroupv2"
        return Mechanism(name, True, "%s at %s, %s, tc htb" % (name, path, how), path)
    if not problems:
        problems = ["no %s hierarchy under %s" % (" or ".join(n for n, _ in order), cgroup_root)]
    return Mechanism("none", False, "; ".join(problems))


def detect_cpu(cgroup_root="/sys/fs/cgroup", systemd_dir="/run/systemd/system"):
    if not os.path.isdir(systemd_dir):
        return Mechanism("none", False, "systemd is not the init system (no %s)" % systemd_dir)
    v2 = find_cgroup2(cgroup_root)
    if v2 and v2 == cgroup_root:
        with open(os.path.join(v2, "cgroup.controllers")) as f:
            if "cpu" in f.read().split():
                return Mechanism("cgroup2", True, "systemd CPUQuota through cgroup2 cpu.max", v2)
        return Mechanism("none", False, "cgroup2 has no cpu controller")
    for d in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        p = os.path.join(cgroup_root, d)
        if os.path.exists(os.path.join(p, "cpu.cfs_quota_us")):
            return Mechanism("cpu", True, "systemd CPUQuota through cgroup v1 cpu.cfs_quota_us", p)
    return Mechanism("none", False, "no cgroup cpu controller under %s" % cgroup_root)


def throttling_report(runner, cgroup_root="/sys/fs/cgroup", systemd_dir="/run/systemd/system"):
    """(both available, text): one line each for cpu and network."""
    found = (("cpu", detect_cpu(cgroup_root, systemd_dir)), ("network", detect(runner, cgroup_root)))
    text = "\n".join("%s: %s (%s)" % (what, "available" if m.available else "unavailable", m.reason)
                     for what, m in found)
    return all(m.available for _, m in found), text


def check_throttling(settings, runner):
    """``--check-throttling`` (wrapper.checks signature): can CPU and network limits be applied?"""
    return throttling_report(runner, settings.cgroup_root, settings.systemd_marker)


# ---- interfaces and their qdiscs ----------------------------------------------------------------
def devices(runner, shapeable=True):
    """Interfaces to shape; with shapeable=False every non-loopback one (for removal: an
    interface that went down or joined a bridge may still carry our class)."""
    links = parse_links(runner(["ip", "-j", "link", "show"]).out)
    return candidate_devices(links) if shapeable else [l.name for l in links if not l.loopback]


def root_of(runner, dev):
    """'none', 'ours' or 'foreign' (:func:`wrapper.throttling.tcnft.root_owner`)."""
    return root_owner(parse_root_qdisc(runner(["tc", "-j", "qdisc", "show", "dev", dev]).out))


def minors(runner, dev):
    """The minors of our classes on ``dev``."""
    return parse_classes(runner(["tc", "class", "show", "dev", dev], check=False).out)
