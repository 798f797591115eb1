"""Pure command building and output parsing for the network limiter (tc, nft, ip, /proc).

No side effects: :mod:`wrapper.throttling.netlimit` runs these argv lists through its runner.  Tested
with exact lists and captured tool output in tests/test_netlimit.py.
"""
import collections
import json
import re

from wrapper.errors import ThrottleError

ROOT_MAJOR = 0x7632                 # "v2"
ROOT_HANDLE = "%x:" % ROOT_MAJOR
MAX_MINOR = 0xffff
QUANTUM = 60000                     # bytes; HTB warns when rate/r2q is out of 1000..200000
DIRECT_QLEN = 1000                  # direct queue length even on txqueuelen-0 devices
CGROUP_PREFIX = "v2v-wrapper-"
TABLE_PREFIX = "v2vw_"
NET_CLS_DIRS = ("net_cls", "net_cls,net_prio", "net_prio,net_cls")

Link = collections.namedtuple("Link", "name index up loopback master")


# ---- pure: names, argv, rulesets ------------------------------------------------------------
def classid(minor):
    return "%x:%x" % (ROOT_MAJOR, minor)


def net_cls_classid(minor):
    return (ROOT_MAJOR << 16) | minor


def table_name(tag, minor):
    return "%s%x_%s" % (TABLE_PREFIX, minor, re.sub(r"[^A-Za-z0-9_]", "_", tag)[:60])


def cgroup_name(tag):
    return CGROUP_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", tag)


def tc_root_add_argv(dev):
    return ["tc", "qdisc", "add", "dev", dev, "root", "handle", ROOT_HANDLE, "htb",
            "direct_qlen", str(DIRECT_QLEN)]


def tc_root_del_argv(dev):
    return ["tc", "qdisc", "del", "dev", dev, "root", "handle", ROOT_HANDLE]


def tc_class_argv(verb, dev, minor, rate):
    """verb 'add' or 'change'; rate in bytes per second (tc's 'bps' means bytes/s)."""
    return ["tc", "class", verb, "dev", dev, "parent", ROOT_HANDLE, "classid", classid(minor),
            "htb", "rate", "%dbps" % rate, "ceil", "%dbps" % rate, "quantum", str(QUANTUM)]


def tc_class_del_argv(dev, minor):
    return ["tc", "class", "del", "dev", dev, "classid", classid(minor)]


# What a cgroup path may hold to be pasted into nft's input: the conversion's
# cgroup may sit in a subtree its caller owns (a plain child inherits the
# wrapper's cgroup, delegated to the user who ran sudo), and a name with a quote,
# a semicolon or a brace would be nft statements of the caller's choosing run by
# root (security review, 2026-12-06).
_SAFE_CGROUP_PATH = re.compile(r"[A-Za-z0-9_.@:+=/-]{0,4096}")


def match_cgroupv2(nft_path, level):
    """The nft match for a cgroup v2 path (relative; empty for the root), or
    ThrottleError when the path holds anything but ``[A-Za-z0-9_.@:+=/-]``
    (systemd's unit and slice names fit)."""
    if not _SAFE_CGROUP_PATH.fullmatch(nft_path) or "//" in nft_path:
        raise ThrottleError("the cgroup path %r cannot be matched safely by nft" % nft_path)
    return 'socket cgroupv2 level %d "%s"' % (level, nft_path)


def match_net_cls(minor):
    return "meta cgroup 0x%08x" % net_cls_classid(minor)


def nft_ruleset(table, match, minor):
    """Input for ``nft -f -``.  One statement per line: nft 1.0.6 fails to parse
    ``meta priority set 7632:1;`` inside a one-line block."""
    return ("table inet %s {\n"
            "  chain out {\n"
            "    type filter hook output priority 0; policy accept;\n"
            "    %s meta priority set %s counter\n"
            "  }\n"
            "}\n") % (table, match, classid(minor))


def nft_delete_argv(table):
    return ["nft", "delete", "table", "inet", table]


# ---- pure: parsing --------------------------------------------------------------------------
def parse_links(text):
    """``ip -j link show`` -> [Link]."""
    links = []
    for d in json.loads(text or "[]"):
        flags = d.get("flags", [])
        links.append(Link(d["ifname"], d.get("ifindex"), "UP" in flags,
                          "LOOPBACK" in flags or d.get("link_type") == "loopback", d.get("master")))
    return links


def candidate_devices(links):
    """Interfaces to shape: up, not loopback, not a bridge port / bond slave."""
    return [l.name for l in links if l.up and not l.loopback and not l.master]


def parse_root_qdisc(text):
    """``tc -j qdisc show dev X`` -> (kind, handle) of the root qdisc, or None."""
    for q in json.loads(text or "[]"):
        if q.get("root"):
            return q.get("kind"), q.get("handle")
    return None


def root_owner(root):
    """'none' (kernel default, handle 0:), 'ours' (our shared htb) or 'foreign'."""
    if root is None or root[1] in ("0:", None):
        return "none"
    if root == ("htb", ROOT_HANDLE):
        return "ours"
    return "foreign"


def parse_classes(text):
    """``tc class show dev X`` (text; iproute2 6.1 prints htb classes as text even with -j)
    -> set of our minors."""
    minors = set()
    for m in re.finditer(r"^class htb ([0-9a-f]+):([0-9a-f]+) ", text or "", re.M):
        if int(m.group(1), 16) == ROOT_MAJOR:
            minors.add(int(m.group(2), 16))
    return minors


def parse_nft_tables(text):
    """``nft -j list tables`` -> [(family, name)]."""
    out = []
    for item in json.loads(text or "{}").get("nftables", []):
        if "table" in item:
            out.append((item["table"]["family"], item["table"]["name"]))
    return out


def parse_proc_cgroup(text):
    """``/proc/PID/cgroup`` -> {hierarchy: path}; cgroup2 is under key ''."""
    out = {}
    for line in (text or "").splitlines():
        num, controllers, path = line.split(":", 2)
        if num == "0" and controllers == "":
            out[""] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


def cgroup_level(path):
    return len([p for p in path.split("/") if p])
