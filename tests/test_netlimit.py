"""wrapper.throttling.netlimit: command building and parsing (exact lists), detection, and the limiter's
life cycle against a small stateful fake of tc/nft/ip (the real kernel is in
tests/integration/test_netlimit_real.py)."""
import json
import logging
import os
import re
import shutil
import signal
import types

import pytest

from wrapper.throttling import host
from wrapper.throttling import netlimit as nl
from wrapper.throttling import tcnft as tn
from wrapper.throttling.limits import NetworkRate as Rate
from wrapper.errors import CommandError, ThrottleError
from wrapper.runner import Result

# ---- captured from the real tools (iproute2 6.1, nftables 1.0.6) ------------------------------
IP_LINK = json.dumps([
    {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "qdisc": "noqueue",
     "operstate": "UNKNOWN", "txqlen": 1000, "link_type": "loopback"},
    {"ifindex": 2, "ifname": "eth0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
     "qdisc": "pfifo_fast", "operstate": "UP", "link_type": "ether"},
    {"ifindex": 3, "ifname": "eth1", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
     "qdisc": "pfifo", "operstate": "UP", "link_type": "ether"},
    {"ifindex": 4, "link": "d1", "ifname": "d1p", "flags": ["BROADCAST", "MULTICAST", "UP"],
     "qdisc": "noqueue", "master": "br0", "operstate": "UP", "link_type": "ether"},
    {"ifindex": 5, "ifname": "eth2", "flags": ["BROADCAST", "MULTICAST"], "qdisc": "noop",
     "operstate": "DOWN", "link_type": "ether"},
])
QDISC_DEFAULT = '[{"kind":"pfifo_fast","handle":"0:","root":true,"refcnt":2,"options":{"bands":3}}]'
QDISC_NOQUEUE = '[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}}]'
QDISC_OURS = ('[{"kind":"htb","handle":"7632:","root":true,"refcnt":3,"options":{"r2q":10,'
              '"default":"0","direct_packets_stat":0,"direct_qlen":1000}}]')
QDISC_FOREIGN = '[{"kind":"pfifo","handle":"1:","root":true,"refcnt":2,"options":{"limit":100}}]'
CLASSES = ("class htb 7632:1 root prio 0 rate 8388Kbit ceil 8388Kbit burst 1598b cburst 1598b \n"
           "class htb 7632:a root prio 0 rate 67108Kbit ceil 67108Kbit burst 1585b cburst 1585b \n"
           "class htb 1:5 root prio 0 rate 8Kbit ceil 8Kbit burst 1600b cburst 1600b \n")
NFT_TABLES = ('{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", '
              '"json_schema_version": 1}}, {"table": {"family": "inet", "name": "v2vw_1_job", '
              '"handle": 1}}, {"table": {"family": "ip", "name": "filter", "handle": 2}}]}')
PROC_CGROUP_HYBRID = ("9:name=systemd:/s/system.slice/x.service\n8:pids:/s/system.slice/x.service\n"
                      "1:cpu,cpuacct:/\n0::/s/system.slice/x.service\n")


# ---- pure builders ----------------------------------------------------------------------------
def test_tc_argv():
    assert tn.tc_root_add_argv("eth0") == ["tc", "qdisc", "add", "dev", "eth0", "root", "handle",
                                           "7632:", "htb", "direct_qlen", "1000"]
    assert tn.tc_root_del_argv("eth0") == ["tc", "qdisc", "del", "dev", "eth0", "root", "handle", "7632:"]
    assert tn.tc_class_argv("add", "eth0", 10, 1048576) == [
        "tc", "class", "add", "dev", "eth0", "parent", "7632:", "classid", "7632:a", "htb",
        "rate", "1048576bps", "ceil", "1048576bps", "quantum", "60000"]
    assert tn.tc_class_argv("change", "va", 1, 8388608)[2] == "change"
    assert tn.tc_class_del_argv("va", 0x1f) == ["tc", "class", "del", "dev", "va", "classid", "7632:1f"]


def test_nft_text_and_names():
    assert tn.classid(1) == "7632:1"
    assert tn.net_cls_classid(1) == 0x76320001
    assert tn.match_net_cls(1) == "meta cgroup 0x76320001"
    assert tn.match_cgroupv2("unified/sd/system.slice/x.service", 3) == \
        'socket cgroupv2 level 3 "unified/sd/system.slice/x.service"'
    assert tn.table_name("v2v-job.1/x", 0x2a) == "v2vw_2a_v2v_job_1_x"
    assert tn.cgroup_name("job 1/x") == "v2v-wrapper-job_1_x"
    assert tn.nft_ruleset("v2vw_1_j", "meta cgroup 0x76320001", 1) == (
        "table inet v2vw_1_j {\n"
        "  chain out {\n"
        "    type filter hook output priority 0; policy accept;\n"
        "    meta cgroup 0x76320001 meta priority set 7632:1 counter\n"
        "  }\n"
        "}\n")
    assert tn.nft_delete_argv("v2vw_1_j") == ["nft", "delete", "table", "inet", "v2vw_1_j"]


# ---- parsers ----------------------------------------------------------------------------------
def test_parse_links_and_candidates():
    links = tn.parse_links(IP_LINK)
    assert links[0] == tn.Link("lo", 1, True, True, None)
    assert links[3].master == "br0"
    assert tn.candidate_devices(links) == ["eth0", "eth1"]      # no lo, no bridge port, no down
    assert tn.parse_links("") == []


def test_parse_root_qdisc_and_owner():
    assert tn.parse_root_qdisc(QDISC_DEFAULT) == ("pfifo_fast", "0:")
    assert tn.root_owner(tn.parse_root_qdisc(QDISC_DEFAULT)) == "none"
    assert tn.root_owner(tn.parse_root_qdisc(QDISC_NOQUEUE)) == "none"
    assert tn.root_owner(tn.parse_root_qdisc(QDISC_OURS)) == "ours"
    assert tn.root_owner(tn.parse_root_qdisc(QDISC_FOREIGN)) == "foreign"
    assert tn.root_owner(("htb", "1:")) == "foreign"            # someone else's htb
    assert tn.root_owner(tn.parse_root_qdisc("[]")) == "none"


def test_parse_classes_only_ours():
    assert tn.parse_classes(CLASSES) == {1, 10}
    assert tn.parse_classes("") == set()


def test_parse_nft_tables():
    assert tn.parse_nft_tables(NFT_TABLES) == [("inet", "v2vw_1_job"), ("ip", "filter")]


def test_parse_proc_cgroup_and_level():
    cg = tn.parse_proc_cgroup(PROC_CGROUP_HYBRID)
    assert cg[""] == "/s/system.slice/x.service"
    assert cg["name=systemd"] == "/s/system.slice/x.service"
    assert cg["cpu"] == cg["cpuacct"] == "/"
    assert tn.cgroup_level(cg[""]) == 3
    assert tn.cgroup_level("/") == 0
    assert host.nft_path("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/a/b") == "unified/a/b"
    assert host.nft_path("/sys/fs/cgroup", "/sys/fs/cgroup", "/system.slice/x") == "system.slice/x"
    assert host.nft_path("/sys/fs/cgroup", "/sys/fs/cgroup", "/") == ""


# ---- a small stateful fake of ip/tc/nft -------------------------------------------------------
class FakeNet:
    """Answers ip/tc/nft like the kernel would, and records every argv."""

    def __init__(self, roots=None, links=IP_LINK, nft_check_rc=0, fail=None):
        self.links = links
        self.roots = dict(roots or {"eth0": ("pfifo_fast", "0:"), "eth1": ("pfifo", "1:")})
        self.classes = {}           # dev -> {minor: rate}
        self.tables = {}            # name -> ruleset text
        self.calls, self.inputs = [], []
        self.nft_check_rc = nft_check_rc
        self.fail = fail            # argv prefix that fails

    def __call__(self, argv, *, input=None, env=None, timeout=None, check=True):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        if input is not None:
            self.inputs.append(input)
        if self.fail and argv[:len(self.fail)] == self.fail:
            rc, out, err = 2, "", "RTNETLINK answers: Operation not permitted\n"
        else:
            rc, out, err = self._answer(argv, input)
        if check and rc:
            raise CommandError(argv, rc, out, err)
        return Result(tuple(argv), rc, out, err)

    def _answer(self, argv, input):
        if argv in (["tc", "-V"], ["nft", "--version"], ["ip", "-V"]):
            return 0, "version\n", ""
        if argv == ["ip", "-j", "link", "show"]:
            return 0, self.links, ""
        if argv[:4] == ["tc", "-j", "qdisc", "show"]:
            kind, handle = self.roots.get(argv[5], ("noqueue", "0:"))
            return 0, json.dumps([{"kind": kind, "handle": handle, "root": True}]), ""
        if argv[:3] == ["tc", "qdisc", "add"]:
            dev = argv[4]
            if self.roots.get(dev, ("", "0:"))[1] != "0:":
                return 2, "", "Error: Exclusivity flag on, cannot modify.\n"
            self.roots[dev] = ("htb", "7632:")
            return 0, "", ""
        if argv[:3] == ["tc", "qdisc", "del"]:
            dev = argv[4]
            if self.classes.get(dev):
                raise AssertionError("root deleted while classes remain on %s" % dev)
            self.roots[dev] = ("pfifo_fast", "0:")
            return 0, "", ""
        if argv[:3] == ["tc", "class", "show"]:
            text = "".join("class htb 7632:%x root prio 0 rate %dbps \n" % (m, r)
                           for m, r in sorted(self.classes.get(argv[4], {}).items()))
            return 0, text, ""
        if argv[:3] in (["tc", "class", "add"], ["tc", "class", "change"]):
            dev, minor, rate = argv[4], int(argv[8].split(":")[1], 16), int(argv[11][:-3])
            have = self.classes.setdefault(dev, {})
            if (argv[2] == "add") == (minor in have):
                return 2, "", "RTNETLINK answers: File exists\n"
            have[minor] = rate
            return 0, "", ""
        if argv[:3] == ["tc", "class", "del"]:
            dev, minor = argv[4], int(argv[6].split(":")[1], 16)
            if minor not in self.classes.get(dev, {}):
                return 2, "", "RTNETLINK answers: No such file or directory\n"
            del self.classes[dev][minor]
            return 0, "", ""
        if argv == ["nft", "-c", "-f", "-"]:
            return self.nft_check_rc, "", "" if not self.nft_check_rc else "Error: Could not process rule\n"
        if argv == ["nft", "-f", "-"]:
            self.tables[re.search(r"table inet (\S+)", input).group(1)] = input
            return 0, "", ""
        if argv[:3] == ["nft", "delete", "table"]:
            return (0, "", "") if self.tables.pop(argv[4], None) else (1, "", "No such file\n")
        raise AssertionError("unexpected command %r" % argv)

    def changes(self):
        """The calls that change something (not show/version/probe)."""
        return [c for c in self.calls if not ({"show", "-V", "--version", "-c"} & set(c))]


@pytest.fixture
def hybrid(tmp_path):
    """A cgroup_root like a hybrid host without net_cls, and a fake /proc."""
    root = tmp_path / "cgroup"
    unit = root / "unified" / "s" / "system.slice" / "x.service"
    unit.mkdir(parents=True)
    (root / "unified" / "cgroup.controllers").write_text("")
    (unit / "cgroup.procs").write_text("")
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cgroup").write_text(PROC_CGROUP_HYBRID)
    me = proc / str(os.getpid())
    me.mkdir()
    shutil.copy("/proc/self/stat", me / "stat")
    return root, proc


def limiter(fake, hybrid, tmp_path, tag="job", **kw):
    root, proc = hybrid
    return nl.NetLimiter(tag, runner=fake, cgroup_root=str(root), lock_dir=str(tmp_path / "lock"),
                         proc_root=str(proc), **kw)


# ---- detection --------------------------------------------------------------------------------
def test_detect_cgroup2_probes_the_kernel(hybrid):
    fake = FakeNet()
    m = host.detect(fake, str(hybrid[0]))
    assert (m.name, m.available, m.path) == ("cgroup2", True, str(hybrid[0] / "unified"))
    assert fake.inputs == [tn.nft_ruleset("v2vw_probe", 'socket cgroupv2 level 0 "unified"', 0)]


def test_detect_prefers_net_cls(hybrid):
    (hybrid[0] / "net_cls,net_prio").mkdir()
    (hybrid[0] / "net_cls,net_prio" / "net_cls.classid").write_text("0\n")
    m = host.detect(FakeNet(), str(hybrid[0]))
    assert (m.name, m.available) == ("net_cls", True)
    assert host.detect(FakeNet(), str(hybrid[0]), prefer="cgroup2").name == "cgroup2"


def test_detect_unavailable_reasons(hybrid, tmp_path):
    m = host.detect(FakeNet(nft_check_rc=1), str(hybrid[0]))
    assert not m.available and "nft cannot match cgroup2: Error: Could not process rule" in m.reason

    def no_nft(argv, **kw):
        if argv[0] == "nft":
            raise CommandError(argv, 127, "", "No such file or directory: 'nft'")
        return Result(tuple(argv), 0, "", "")
    assert host.detect(no_nft, str(hybrid[0])) == host.Mechanism("none", False, "nft is not installed")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert host.detect(FakeNet(), str(empty)).reason == "no net_cls or cgroup2 hierarchy under %s" % empty


def test_host_interfaces_and_their_roots():
    fake = FakeNet(roots={"eth0": ("htb", "7632:"), "eth1": ("pfifo", "1:")})
    assert host.devices(fake) == ["eth0", "eth1"]        # up, not loopback, not a bridge port
    assert host.devices(fake, shapeable=False) == ["eth0", "eth1", "d1p", "eth2"]
    assert [host.root_of(fake, d) for d in ("eth0", "eth1", "eth2")] == ["ours", "foreign", "none"]
    fake.classes = {"eth0": {1: 1000, 0xa: 2000}}
    assert host.minors(fake, "eth0") == {1, 0xa} and host.minors(fake, "eth1") == set()
    assert all(c[0] in ("ip", "tc") and ("show" in c) for c in fake.calls)   # it only looks


def test_check_throttling_text(hybrid, tmp_path):
    root = hybrid[0]
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    sd = tmp_path / "run-systemd-system"
    sd.mkdir()
    settings = types.SimpleNamespace(cgroup_root=str(root), systemd_marker=str(sd))
    ok, text = host.check_throttling(settings, FakeNet())
    assert ok
    assert text.splitlines() == [
        "cpu: available (systemd CPUQuota through cgroup v1 cpu.cfs_quota_us)",
        "network: available (cgroup2 at %s/unified, nft socket cgroupv2, tc htb)" % root]
    ok, text = host.throttling_report(FakeNet(), str(root), str(tmp_path / "nope"))
    assert not ok
    assert text.splitlines()[0] == "cpu: unavailable (systemd is not the init system (no %s/nope))" % tmp_path
    ok, text = host.throttling_report(FakeNet(nft_check_rc=1), str(root), str(sd))
    assert not ok and text.splitlines()[1].startswith("network: unavailable (nft cannot match cgroup2")


def test_detect_cpu_pure_v2(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    sd = tmp_path / "sd"
    sd.mkdir()
    assert host.detect_cpu(str(tmp_path), str(sd)).available
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    assert not host.detect_cpu(str(tmp_path), str(sd)).available


# ---- the limiter ------------------------------------------------------------------------------
def test_cgroup2_life_cycle(hybrid, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    fake = FakeNet()
    lim = limiter(fake, hybrid, tmp_path)
    lim.set_rate(Rate(1048576))                 # before start: remembered, nothing run
    assert fake.calls == []
    lim.start(4242, dedicated_cgroup=True)
    assert lim.minor == 1 and lim.mechanism.name == "cgroup2"
    assert fake.tables == {"v2vw_1_job": tn.nft_ruleset(
        "v2vw_1_job", 'socket cgroupv2 level 3 "unified/s/system.slice/x.service"', 1)}
    # what the inbound policer (wrapper.throttling.inbound) puts in the same table
    assert lim.match == 'socket cgroupv2 level 3 "unified/s/system.slice/x.service"'
    assert lim.runner is fake
    assert fake.changes() == [
        ["nft", "-f", "-"],
        tn.tc_root_add_argv("eth0"),
        tn.tc_class_argv("add", "eth0", 1, 1048576)]            # eth1 is foreign: skipped
    assert "not shaping eth1: its root qdisc is not ours" in caplog.text
    assert lim.devices == ["eth0"] and lim.rate == Rate(1048576)
    del fake.calls[:]
    lim.set_rate(Rate(8388608))
    lim.set_rate(Rate(8388608))                 # same value again is fine
    assert fake.changes() == [tn.tc_class_argv("change", "eth0", 1, 8388608)] * 2
    del fake.calls[:]
    lim.set_rate(None)
    assert fake.changes() == [tn.tc_class_del_argv("eth0", 1), tn.tc_root_del_argv("eth0")]
    assert fake.roots["eth0"] == ("pfifo_fast", "0:") and lim.rate is None
    del fake.calls[:]
    lim.close()
    assert fake.changes() == [tn.nft_delete_argv("v2vw_1_job")]
    assert fake.tables == {} and os.listdir(tmp_path / "lock") == ["netlimit.lock"]
    assert lim.match is None and lim.minor is None
    del fake.calls[:]
    lim.close()                                 # idempotent: nothing more to do
    assert fake.calls == []
    with pytest.raises(ThrottleError, match="closed"):
        lim.set_rate(Rate(5))
    lim.set_rate(None)


def test_close_with_limit_in_force_removes_everything(hybrid, tmp_path):
    fake = FakeNet()
    with limiter(fake, hybrid, tmp_path) as lim:
        lim.start(4242, dedicated_cgroup=True)
        lim.set_rate(Rate(1000))
    assert fake.classes == {"eth0": {}} and fake.tables == {}
    assert fake.roots == {"eth0": ("pfifo_fast", "0:"), "eth1": ("pfifo", "1:")}


def test_concurrent_limiters_share_root_and_never_collide(hybrid, tmp_path):
    fake = FakeNet()
    a, b = limiter(fake, hybrid, tmp_path, "a"), limiter(fake, hybrid, tmp_path, "b")
    a.start(4242, True)
    b.start(4242, True)
    assert (a.minor, b.minor) == (1, 2) and set(fake.tables) == {"v2vw_1_a", "v2vw_2_b"}
    a.set_rate(Rate(1000))
    b.set_rate(Rate(2000))
    assert fake.classes == {"eth0": {1: 1000, 2: 2000}}
    assert fake.calls.count(tn.tc_root_add_argv("eth0")) == 1
    a.close()
    assert fake.roots["eth0"] == ("htb", "7632:")          # b still uses it
    c = limiter(fake, hybrid, tmp_path, "c")
    c.start(4242, True)
    assert c.minor == 1                                     # a's number is free again
    c.close()
    b.close()
    assert fake.roots["eth0"] == ("pfifo_fast", "0:") and fake.tables == {}


def test_minor_in_kernel_but_unreserved_is_not_reused(hybrid, tmp_path):
    fake = FakeNet(roots={"eth0": ("htb", "7632:"), "eth1": ("pfifo", "1:")})
    fake.classes = {"eth0": {1: 5}}                     # e.g. made by a wrapper on another lock_dir
    lim = limiter(fake, hybrid, tmp_path)
    lim.start(4242, True)
    assert lim.minor == 2


def test_dead_owner_is_reclaimed(hybrid, tmp_path):
    fake = FakeNet(roots={"eth0": ("htb", "7632:"), "eth1": ("pfifo", "1:")})
    fake.classes = {"eth0": {1: 5}}
    fake.tables = {"v2vw_1_dead": "..."}
    (tmp_path / "lock").mkdir()
    (tmp_path / "lock" / "netlimit-1.owner").write_text(json.dumps(
        {"pid": 999999999, "start": 1, "tag": "dead", "table": "v2vw_1_dead", "cgroup": None}))
    lim = limiter(fake, hybrid, tmp_path)
    lim.start(4242, True)
    assert lim.minor == 1
    assert fake.tables.keys() == {"v2vw_1_job"}
    assert fake.classes == {"eth0": {}} and fake.roots["eth0"] == ("pfifo_fast", "0:")
    lim.close()


def fake_rmdir(monkeypatch):
    """A real cgroupfs drops the control files on rmdir; a tmp dir needs them removed first."""
    real = os.rmdir

    def rmdir(path):
        for f in os.listdir(path):
            os.unlink(os.path.join(path, f))
        real(path)
    monkeypatch.setattr(nl.os, "rmdir", rmdir)


def test_net_cls_moves_pid_into_own_cgroup(hybrid, tmp_path, monkeypatch):
    root = hybrid[0]
    nc = root / "net_cls"
    nc.mkdir()
    (nc / "net_cls.classid").write_text("0\n")
    (nc / "cgroup.procs").write_text("")
    fake = FakeNet()
    lim = limiter(fake, hybrid, tmp_path)
    lim.start(4242, dedicated_cgroup=True)
    own = nc / "v2v-wrapper-job"
    assert lim.mechanism.name == "net_cls"
    assert (own / "net_cls.classid").read_text() == str(0x76320001)
    assert (own / "cgroup.procs").read_text() == "4242"
    assert fake.tables == {"v2vw_1_job": tn.nft_ruleset("v2vw_1_job", "meta cgroup 0x76320001", 1)}
    owner = json.loads((tmp_path / "lock" / "netlimit-1.owner").read_text())
    assert owner["cgroup"] == str(own) and owner["pid"] == os.getpid()
    fake_rmdir(monkeypatch)
    lim.close()
    assert (nc / "cgroup.procs").read_text() == "4242"       # leftover process moved back out
    assert not own.exists()


def test_cgroup2_without_dedicated_cgroup_makes_a_child(hybrid, tmp_path, monkeypatch):
    fake = FakeNet()
    lim = limiter(fake, hybrid, tmp_path)
    lim.start(4242, dedicated_cgroup=False)
    unit = hybrid[0] / "unified" / "s" / "system.slice" / "x.service"
    assert (unit / "v2v-wrapper-job" / "cgroup.procs").read_text() == "4242"
    assert 'socket cgroupv2 level 4 "unified/s/system.slice/x.service/v2v-wrapper-job"' in \
        fake.tables["v2vw_1_job"]
    fake_rmdir(monkeypatch)
    lim.close()
    assert (unit / "cgroup.procs").read_text() == "4242"
    assert not (unit / "v2v-wrapper-job").exists()


def test_unavailable_host(hybrid, tmp_path, caplog):
    fake = FakeNet(nft_check_rc=1)
    lim = limiter(fake, hybrid, tmp_path)
    lim.start(4242, True)
    assert "network limits unavailable" in caplog.text
    lim.set_rate(None)
    with pytest.raises(ThrottleError, match="^network limits are unavailable on this host: nft cannot"):
        lim.set_rate(Rate(1000))
    lim.close()
    assert fake.changes() == []


def test_no_interface_to_shape(hybrid, tmp_path):
    fake = FakeNet(roots={"eth0": ("prio", "1:"), "eth1": ("pfifo", "1:")})
    lim = limiter(fake, hybrid, tmp_path)
    lim.start(4242, True)
    with pytest.raises(ThrottleError, match=r"no interface can carry the network limit \(skipped: eth0, eth1\)"):
        lim.set_rate(Rate(1000))
    lim.close()


def test_tc_failure_is_one_sentence(hybrid, tmp_path):
    fake = FakeNet(fail=["tc", "class", "add"])
    lim = limiter(fake, hybrid, tmp_path)
    lim.start(4242, True)
    with pytest.raises(ThrottleError) as e:
        lim.set_rate(Rate(1000))
    assert str(e.value) == ("could not apply the network limit: tc exited with status 2: "
                            "RTNETLINK answers: Operation not permitted")
    lim.close()
    assert fake.tables == {} and fake.roots["eth0"] == ("pfifo_fast", "0:")


def test_setup_failure_cleans_up_and_reports(hybrid, tmp_path):
    fake = FakeNet(fail=["nft", "-f", "-"])
    lim = limiter(fake, hybrid, tmp_path)
    lim.start(4242, True)                       # does not raise: the conversion goes on
    assert not lim.mechanism.available and "setting up failed" in lim.mechanism.reason
    assert not [f for f in os.listdir(tmp_path / "lock") if f.endswith(".owner")]
    with pytest.raises(ThrottleError, match="setting up failed"):
        lim.set_rate(Rate(1000))


def test_one_interface_failing_does_not_stop_the_others(hybrid, tmp_path, caplog):
    links = json.loads(IP_LINK)
    links.append(dict(links[1], ifindex=6, ifname="eth3"))
    fake = FakeNet(links=json.dumps(links), fail=["tc", "class", "add", "dev", "eth3"])
    lim = limiter(fake, hybrid, tmp_path)
    lim.start(4242, True)
    lim.set_rate(Rate(1000))
    assert lim.devices == ["eth0"] and fake.classes == {"eth0": {1: 1000}}
    assert "could not shape eth3: tc exited with status 2" in caplog.text
    assert fake.roots["eth3"] == ("pfifo_fast", "0:")      # its fresh root was taken away again
    lim.close()


# ---- the lock directory: a root process in world-writable /run/lock ---------------------------
def test_lock_dir_of_another_user_is_refused(hybrid, tmp_path, caplog):
    (tmp_path / "lock").mkdir(mode=0o700)
    os.chown(tmp_path / "lock", 65534, 65534)           # pre-created by someone else
    fake = FakeNet()
    lim = limiter(fake, hybrid, tmp_path)
    lim.set_rate(Rate(1000))
    lim.start(4242, True)                               # no traceback: the conversion goes on
    assert not lim.mechanism.available and "cannot apply network limits: " in lim.mechanism.reason
    assert "must be owned by uid %d" % os.geteuid() in caplog.text
    with pytest.raises(ThrottleError, match="cannot apply network limits: .*owner 65534"):
        lim.set_rate(Rate(1000))
    lim.close()
    assert os.listdir(tmp_path / "lock") == [] and fake.changes() == []


def test_lock_dir_writable_by_others_is_refused(hybrid, tmp_path):
    (tmp_path / "lock").mkdir()
    os.chmod(tmp_path / "lock", 0o1777)
    lim = limiter(FakeNet(), hybrid, tmp_path)
    lim.start(4242, True)
    assert "cannot apply network limits" in lim.mechanism.reason and "mode 1777" in lim.mechanism.reason


def test_symlink_as_lock_file_is_not_followed(hybrid, tmp_path):
    (tmp_path / "lock").mkdir(mode=0o700)
    target = tmp_path / "elsewhere" / "created-through-the-link"
    target.parent.mkdir()
    os.symlink(target, tmp_path / "lock" / "netlimit.lock")
    fake = FakeNet()
    lim = limiter(fake, hybrid, tmp_path)
    lim.start(4242, True)
    assert not lim.mechanism.available and "netlimit.lock" in lim.mechanism.reason
    assert not os.path.lexists(target) and os.path.islink(tmp_path / "lock" / "netlimit.lock")
    assert fake.tables == {}


def test_fifo_as_owner_file_does_not_hang(hybrid, tmp_path, caplog):
    (tmp_path / "lock").mkdir(mode=0o700)
    os.mkfifo(tmp_path / "lock" / "netlimit-1.owner")

    def hung(*_):
        raise AssertionError("reading the reservations blocked")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        lim = limiter(FakeNet(), hybrid, tmp_path)
        lim.start(4242, True)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert lim.minor == 2                                # an unreadable reservation stays reserved
    assert "unreadable reservation" in caplog.text and "not a regular file" in caplog.text
    lim.close()
    assert (tmp_path / "lock" / "netlimit-1.owner").exists()


def test_owner_files_are_written_by_descriptor_and_private(hybrid, tmp_path):
    lim = limiter(FakeNet(), hybrid, tmp_path)
    lim.start(4242, True)
    owner = tmp_path / "lock" / "netlimit-1.owner"
    assert os.stat(owner).st_mode & 0o777 == 0o600
    assert json.loads(owner.read_text())["pid"] == os.getpid()
    assert os.stat(tmp_path / "lock").st_mode & 0o777 == 0o700
    assert sorted(os.listdir(tmp_path / "lock")) == ["netlimit-1.owner", "netlimit.lock"]
    lim.close()


EVIL = ('a"; counter; }; }; add table inet pwned { chain c { type filter hook input priority -500; '
        'policy drop; }; }; table inet zz { chain c { #')


def test_a_cgroup_path_is_never_nft_syntax():
    """Security review: a caller who owns the cgroup a plain-child conversion
    inherits named it with nft statements, which root then ran."""
    for bad in (EVIL, 'x"y', "a;b", "a}b", "a b", "a\nb", "a//b", "a\\b", "ü"):
        with pytest.raises(ThrottleError, match="cannot be matched safely"):
            tn.match_cgroupv2(bad, 1)
    assert tn.match_cgroupv2("", 0) == 'socket cgroupv2 level 0 ""'
    assert tn.match_cgroupv2("user.slice/user-1000.slice/user@1000.service/app.slice/a-b_c.scope", 5)


def test_a_hostile_cgroup_name_leaves_the_limit_off_and_runs_no_nft(hybrid, tmp_path, caplog):
    root, proc = hybrid
    evil = root / "unified" / "s" / "system.slice" / EVIL.replace("/", "_")
    evil.mkdir()
    (evil / "cgroup.procs").write_text("")
    (proc / "4242" / "cgroup").write_text(PROC_CGROUP_HYBRID.replace("x.service", evil.name))
    fake = FakeNet()
    lim = limiter(fake, hybrid, tmp_path)
    lim.start(4242, dedicated_cgroup=False)
    assert "cannot be matched safely" in caplog.text
    assert not any("pwned" in t for t in fake.inputs) and not fake.tables
    with pytest.raises(ThrottleError):
        lim.set_rate(Rate(1000))
    lim.close()
