"""Prometheus metrics (wrapper/observe/metrics.py, wrapper/observe/exporter.py): the exposition text checked
by the prometheus_client parser, the textfile's lifetime, pruning, the exporter's HTTP side."""
import io
import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request

import pytest

from test_status import T0, alive_all, make_state, write
from tests import wrapperrun as wr
from tests.fakes import data, make_fake_v2v
from wrapper.observe import exporter, metrics
from wrapper.observe import summary as lib
from wrapper.security import fsafe
from wrapper import progress as ev
from wrapper import rate
from wrapper.state import apply

# the reference parser is a test dependency (tests/run-all.sh installs it; an RPM %check
# without it skips this module)
text_string_to_metric_families = pytest.importorskip("prometheus_client.parser").text_string_to_metric_families
MiB = 1 << 20
TAG = "20270115T080000-00000000a100"


def families(text):
    """Parse with the reference parser; {name: [(labels, value)]} (counters keep _total)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def summary(state, now=T0 + 60, mtime=T0 + 59, alive=alive_all):
    return lib.summarize(lib.Reading("/s/v2v-import-%s.state" % TAG, data=state.data,
                                           mtime=mtime), now, alive)


def measured(state, points, size=400 * MiB):
    clock = {"now": 0.0}
    tp = rate.Throughput(lambda: clock["now"], wall=lambda: T0 + clock["now"])
    state.sizes[0] = size
    apply(state, ev.CopyingDisk(0, 1))
    for t, pct in points:
        clock["now"] = t
        apply(state, ev.DiskProgress(pct))
        tp.update(state)
    return state


# -- the text ----------------------------------------------------------------------
def test_exposition_of_a_copying_conversion():
    s = make_state("fresh", disks=["[ds] vm1/vm1.vmdk"], throttling={"cpu": "50%", "network": "1048576"})
    s.set("started", True)
    s.set("pid", 200)
    s.set("stage", "Copying disk 1/1")
    measured(s, [(t, 2 * t) for t in range(0, 21)])          # 2 %/s of 400 MiB
    text = metrics.exposition([summary(s, now=T0 + 20)], T0 + 20)
    f = families(text)
    base = {"tag": TAG, "vm": "vm1"}
    assert f["v2v_conversion_info"] == [(dict(base, transport="vddk"), 1)]
    states = {labels["state"]: v for labels, v in f["v2v_conversion_state"]}
    assert states == {p: (1 if p == "copying" else 0) for p in metrics.PHASES}
    assert f["v2v_conversion_start_timestamp_seconds"] == [(base, T0)]
    assert "v2v_conversion_end_timestamp_seconds" not in f
    disk = dict(base, disk="1")
    assert f["v2v_disk_progress_ratio"] == [(disk, 0.4)]
    assert f["v2v_disk_size_bytes"] == [(disk, 400 * MiB)]
    assert f["v2v_disk_copied_bytes_total"] == [(disk, 160 * MiB)]
    assert f["v2v_disk_copy_rate_bytes_per_second"][0][1] == pytest.approx(8 * MiB, rel=0.01)
    assert f["v2v_disk_remaining_seconds"][0][1] == pytest.approx(30, abs=0.5)
    assert f["v2v_disk_transfers"] == [(dict(base, disk_id="1"), 40)]     # Forklift's: percent
    assert f["v2v_conversion_remaining_seconds"][0][1] == pytest.approx(30, abs=0.5)
    assert f["v2v_conversion_estimated_end_timestamp_seconds"][0][1] == pytest.approx(T0 + 50, abs=0.5)
    assert f["v2v_conversion_throttle_cpu_ratio"] == [(base, 0.5)]
    assert f["v2v_conversion_throttle_network_bytes_per_second"] == [(base, 1048576)]
    assert f["v2v_conversion_progress_ratio"] == [(base, 0.4)]
    # the text's own rules, beyond what the parser checks: HELP and TYPE once per family,
    # before its samples, all samples of a family together
    seen, current = set(), None
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in seen
            seen.add(name)
            current = name
        elif not line.startswith("#"):
            assert line.split("{")[0] == current
    assert text.endswith("\n")


@pytest.mark.parametrize("stage, phase", [("fresh", "starting"), ("finished", "succeeded"),
                                          ("failed", "failed")])
def test_one_hot_state_and_end(stage, phase):
    f = families(metrics.exposition([summary(make_state(stage))], T0 + 60))
    states = {labels["state"]: v for labels, v in f["v2v_conversion_state"]}
    assert [p for p, v in states.items() if v == 1] == [phase]
    if stage == "fresh":
        assert "v2v_conversion_end_timestamp_seconds" not in f
        assert "v2v_disk_remaining_seconds" not in f          # unknown: absent, not a guess
    else:
        assert f["v2v_conversion_end_timestamp_seconds"][0][1] == T0 + 3723
        assert f["v2v_conversion_return_code"][0][1] == (0 if stage == "finished" else 1)


def test_phases_from_the_stage():
    s = make_state("copying")
    for stage, phase in (("Inspecting the source", "converting"), ("Copying disk 2/2", "copying"),
                         ("Creating output metadata", "finishing"), ("Finishing off", "finishing")):
        s.set("stage", stage)
        assert metrics.phase(summary(s)) == phase
    assert metrics.phase(summary(s, now=T0 + 600, mtime=T0, alive=lambda p: False)) == "stale"


def test_label_values_are_escaped_and_no_message_becomes_a_label():
    vm = 'we"ird\\name\nline2'
    s = make_state("failed", vm=vm)
    s.set("last_message", {"message": 'secret-looking "text"', "type": "error"})
    text = metrics.exposition([summary(s)], T0 + 60)
    f = families(text)
    assert {labels["vm"] for labels, _ in f["v2v_conversion_info"]} == {vm}
    assert "secret-looking" not in text
    assert "Copying disk" not in text                        # no stage text either


@pytest.mark.parametrize("code, label", [
    ("vm_powered_on", "vm_powered_on"),
    ("no_such_code", "conversion_failed"),           # only catalogue codes become labels
    ('x"}\n{evil', "conversion_failed"),
    (None, "conversion_failed"),                      # a state file of an older wrapper
])
def test_a_failure_carries_its_code_as_a_label(code, label):
    s = make_state("failed")
    last = {"message": "m", "type": "error"}
    if code is not None:
        last["code"] = code
    s.set("last_message", last)
    text = metrics.exposition([summary(s)], T0 + 60)
    f = families(text)                                # the reference parser accepts it
    assert [(labels["code"], v) for labels, v in f["v2v_conversion_failure_info"]] == [(label, 1)]
    assert "evil" not in text


def test_no_failure_family_without_a_failure():
    s = make_state("finished")
    s.notice("the throttling file was malformed and was ignored")     # a notice, not a failure
    f = families(metrics.exposition([summary(s)], T0 + 60))
    assert "v2v_conversion_failure_info" not in f


def test_several_conversions_share_each_family():
    a = make_state("copying", tag="20270115T080000-1")
    b = make_state("finished", tag="20270115T080001-2")
    text = metrics.exposition([summary(a), summary(b)], T0 + 60)
    assert text.count("# TYPE v2v_disk_transfers gauge") == 1
    tags = {labels["tag"] for labels, _ in families(text)["v2v_disk_transfers"]}
    assert tags == {"20270115T080000-1", "20270115T080001-2"}


def test_exporter_counts_state_files_it_cannot_read(tmp_path):
    write(tmp_path / ("v2v-import-%s.state" % TAG), make_state("copying"))
    (tmp_path / "v2v-import-broken.state").write_text("{")
    (tmp_path / "v2v-import-huge.state").write_text(" " * (lib.STATE_MAX + 1))
    os.symlink("/etc/passwd", str(tmp_path / "v2v-import-link.state"))     # not a state file: skipped
    c = exporter.Collector(str(tmp_path), clock=lambda: T0 + 60, alive=alive_all)
    f = families(c.text())
    counts = {labels["outcome"]: v for labels, v in f["v2v_exporter_state_files"]}
    assert counts["running"] == 1 and counts["invalid"] == 1 and counts["unreadable"] == 1
    assert [labels["tag"] for labels, _ in f["v2v_conversion_info"]] == [TAG]


def test_exporter_shows_only_state_files_of_root_or_itself(tmp_path):
    path = write(tmp_path / ("v2v-import-%s.state" % TAG), make_state("copying"))
    c = exporter.Collector(str(tmp_path), clock=lambda: T0 + 60, alive=alive_all, owners={12345})
    f = families(c.text())
    assert "v2v_conversion_info" not in f
    assert not any(v for _labels, v in f["v2v_exporter_state_files"])    # not even counted
    assert os.path.exists(path)


# -- the textfile --------------------------------------------------------------------
@pytest.fixture
def mdir(tmp_path):
    d = tmp_path / "metrics"
    d.mkdir()
    fd = fsafe.open_dir(str(d))
    yield d, fd
    os.close(fd)


def test_metrics_file_is_rewritten_and_removed_by_inode(mdir):
    d, fd = mdir
    mf = metrics.MetricsFile(fd, TAG, clock=lambda: T0 + 60)
    assert mf.name == "v2v-import-%s.prom" % TAG
    assert mf.write(make_state("copying"), "/s/x.state")
    path = d / mf.name
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert families(path.read_text())["v2v_disk_transfers"]
    mf.write(make_state("finished"), "/s/x.state")
    assert "v2v_conversion_end_timestamp_seconds" in path.read_text()
    assert sorted(os.listdir(str(d))) == [mf.name] or all(
        n == mf.name or n.endswith(".tmp") for n in os.listdir(str(d)))
    mf.close()
    assert os.listdir(str(d)) == [mf.name]              # no temporary file left
    mf.remove()
    assert os.listdir(str(d)) == []


def test_a_taken_name_is_left_alone(mdir):
    d, fd = mdir
    (d / ("v2v-import-%s.prom" % TAG)).write_text("someone else's\n")
    os.symlink("/etc/passwd", str(d / "v2v-import-x.prom"))
    mf = metrics.MetricsFile(fd, TAG, clock=lambda: T0)
    assert mf.name != "v2v-import-%s.prom" % TAG and mf.name.startswith("v2v-import-%s-" % TAG)
    mf.write(make_state("copying"), "/s/x.state")
    mf.remove()
    mf.close()
    assert (d / ("v2v-import-%s.prom" % TAG)).read_text() == "someone else's\n"
    assert sorted(os.listdir(str(d))) == ["v2v-import-%s.prom" % TAG, "v2v-import-x.prom"]


def _prom(fd, tag, stage, mtime, d):
    mf = metrics.MetricsFile(fd, tag, clock=lambda: T0)
    mf.write(make_state(stage, tag=tag), "/s/x.state")
    mf.close()
    os.utime(str(d / mf.name), (mtime, mtime))
    return mf.name


def test_prune_removes_only_our_files_of_conversions_long_over(mdir):
    d, fd = mdir
    end = T0 + 3723                                      # make_state's finished_at
    old = _prom(fd, "20270115T080000-1", "finished", end, d)
    recent = _prom(fd, "20270115T080000-2", "failed", end, d)
    running = _prom(fd, "20270115T080000-3", "copying", end, d)
    abandoned = _prom(fd, "20270115T080000-4", "copying", end - metrics.ABANDONED, d)
    foreign = _prom(fd, "20270115T080000-5", "finished", end, d)
    if os.geteuid() == 0:
        os.chown(str(d / foreign), 65534, 65534)
        keep = [running, foreign]
    else:                       # a developer's tox: no other owner to give it to
        os.remove(str(d / foreign))
        keep = [running]
    (d / "notours.txt").write_text("x")
    # not rewritten for a day: gone whatever it says; ended: gone once keep has passed
    assert metrics.prune(fd, end + 100, keep=3600) == [abandoned]
    removed = metrics.prune(fd, end + 3600, keep=3600)
    assert sorted(removed) == sorted([old, recent])
    assert sorted(os.listdir(str(d))) == sorted(keep + ["notours.txt"])


def test_end_time_parses_the_latest():
    text = ('v2v_conversion_end_timestamp_seconds{tag="a",vm="b"} 10.5\n'
            'v2v_conversion_end_timestamp_seconds{tag="c",vm="d"} 12.0\nbroken{x="y"}\n')
    assert metrics.end_time(text) == 12.0
    assert metrics.end_time("v2v_disk_transfers{disk_id=\"1\"} 5\n") is None


# -- through the real CLI, with the fake virt-v2v -------------------------------------
def test_cli_job_keeps_a_prom_file_and_prunes_old_ones(tmp_path):
    dirs = wr.WrapperDirs(tmp_path)
    mdir = os.path.join(dirs.root, "metrics")
    exe = make_fake_v2v(dirs.bin, log=data("run05-vmx-ssh-port-uri.vx.log"),
                        mr=data("run05-vmx-ssh-port-uri.vx.mr.log"), duration=1)
    job = {"vm_name": "testvm", "transport_method": "vddk",
           "vmware_uri": "esx://root@127.0.0.1?no_verify=1", "vmware_password": "pw",
           "vmware_fingerprint": ":".join(["AB"] * 20), "output_dir": dirs.out, "daemonize": False}
    env = wr.env(VIRT_V2V_WRAPPER_METRICS_DIR=mdir, VIRT_V2V_WRAPPER_METRICS_KEEP="0")
    r = wr.run(dirs.args(exe), job, env=env)
    assert r.returncode == 0, r.stderr
    state = wr.read_state(json.loads(r.stdout)["state_file"])
    proms = os.listdir(mdir)
    assert proms == ["v2v-import-%s.prom" % state["tag"]]
    assert oct(os.stat(mdir).st_mode & 0o777) == "0o755"     # created by the wrapper
    f = families(open(os.path.join(mdir, proms[0])).read())
    states = {labels["state"]: v for labels, v in f["v2v_conversion_state"]}
    assert states["succeeded"] == 1 and f["v2v_conversion_return_code"][0][1] == 0
    assert f["v2v_disk_transfers"][0][1] == 100
    assert f["v2v_disk_size_bytes"][0][1] == 1073741824         # from the recorded log
    assert "pw" not in open(os.path.join(mdir, proms[0])).read().split()
    # the next wrapper start removes it (keep 0 s) and leaves its own
    r2 = wr.run(dirs.args(exe), job, env=env)
    assert r2.returncode == 0, r2.stderr
    tag2 = wr.read_state(json.loads(r2.stdout)["state_file"])["tag"]
    assert os.listdir(mdir) == ["v2v-import-%s.prom" % tag2]
    # and so does `metrics --prune`
    r3 = subprocess.run(wr.wrapper_cmd("metrics", "--prune", "--metrics-dir", mdir),
                        capture_output=True, text=True, env=env, cwd=wr.ROOT, timeout=60)
    assert r3.returncode == 0 and "removed %s/v2v-import-%s.prom" % (mdir, tag2) in r3.stdout
    assert os.listdir(mdir) == []


def test_cli_refused_job_leaves_no_prom_file(tmp_path):
    dirs = wr.WrapperDirs(tmp_path)
    mdir = os.path.join(dirs.root, "metrics")
    exe = make_fake_v2v(dirs.bin, log=data("run05-vmx-ssh-port-uri.vx.log"),
                        mr=data("run05-vmx-ssh-port-uri.vx.mr.log"))
    job = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": "esx://x",
           "vmware_password": "pw", "vmware_fingerprint": "bad", "output_dir": dirs.out}
    r = wr.run(dirs.args(exe) + ["--metrics-dir", mdir], job)
    assert r.returncode == 1
    assert not os.path.exists(mdir) or os.listdir(mdir) == []


def test_cli_unusable_metrics_dir_refuses_the_job(tmp_path):
    dirs = wr.WrapperDirs(tmp_path)
    exe = make_fake_v2v(dirs.bin, log=data("run05-vmx-ssh-port-uri.vx.log"),
                        mr=data("run05-vmx-ssh-port-uri.vx.mr.log"))
    bad = tmp_path / "open"
    bad.mkdir()
    os.chmod(str(bad), 0o777)                   # writable by all, no sticky bit
    job = {"vm_name": "testvm", "transport_method": "vddk",
           "vmware_uri": "esx://root@127.0.0.1?no_verify=1", "vmware_password": "pw",
           "vmware_fingerprint": ":".join(["AB"] * 20), "output_dir": dirs.out, "daemonize": False}
    r = wr.run(dirs.args(exe) + ["--metrics-dir", str(bad)], job)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "--metrics-dir" in r.stderr and "sticky" in r.stderr
    assert os.listdir(str(bad)) == [] and os.listdir(dirs.state) == []


def test_help_mentions_metrics():
    r = wr.run(["--help"], "")
    assert "--metrics-dir" in r.stdout and "VIRT_V2V_WRAPPER_METRICS_DIR" in r.stdout
    r = wr.run(["metrics", "--help"], "")
    assert r.returncode == 0 and "--listen" in r.stdout and "/metrics" in r.stdout


# -- the exporter -------------------------------------------------------------------
def test_metrics_once_and_usage_errors(tmp_path):
    write(tmp_path / ("v2v-import-%s.state" % TAG), make_state("copying"))
    out, err = io.StringIO(), io.StringIO()
    assert exporter.main(["--state-dir", str(tmp_path)], out, err, {}) == 0
    assert families(out.getvalue())["v2v_disk_transfers"]
    for bad in (["--listen", "nope"], ["--listen", "1.2.3.4:99999"], ["--bogus"]):
        err = io.StringIO()
        assert exporter.main(bad, io.StringIO(), err, {}) == 2
        assert err.getvalue().count("\n") == 1
    err = io.StringIO()
    assert exporter.main(["--prune"], io.StringIO(), err, {}) == 2 and "--metrics-dir" in err.getvalue()
    err = io.StringIO()
    assert exporter.main(["--state-dir", str(tmp_path / "nope")], io.StringIO(), err, {}) == 1


@pytest.mark.parametrize("text, address", [("127.0.0.1:9732", ("127.0.0.1", 9732)),
                                           ("[::1]:80", ("::1", 80)), (":0", ("", 0))])
def test_parse_listen(text, address):
    assert exporter.parse_listen(text) == address


def test_http_exporter_is_read_only(tmp_path):
    write(tmp_path / ("v2v-import-%s.state" % TAG), make_state("copying"))
    server = exporter.Server(("127.0.0.1", 0), exporter.Collector(str(tmp_path), alive=alive_all))
    before = sorted(os.listdir(str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = "http://127.0.0.1:%d" % server.server_address[1]
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"] == metrics.CONTENT_TYPE
            assert families(r.read().decode())["v2v_disk_transfers"]
        for method, path, code in (("POST", "/metrics", 405), ("PUT", "/metrics", 405),
                                   ("DELETE", "/metrics", 405), ("GET", "/../etc/passwd", 404),
                                   ("GET", "/state", 404)):
            req = urllib.request.Request(base + path, method=method, data=b"x" if method != "GET" else None)
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=10)
            assert e.value.code == code
        assert sorted(os.listdir(str(tmp_path))) == before
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian prometheus) not installed")
def test_promtool_accepts_the_exposition(tmp_path):
    s = make_state("copying", disks=["a", "b"], throttling={"cpu": "50%", "network": "1048576"})
    measured(s, [(t, 2 * t) for t in range(0, 21)])
    texts = [metrics.exposition([summary(s), summary(make_state("finished", tag="20270115T080001-2"))],
                                T0 + 20),
             exporter.Collector(str(tmp_path), alive=alive_all).text()]
    for text in texts:
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", (r.stdout, r.stderr)
