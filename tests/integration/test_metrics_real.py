"""Issue 13 end to end: one real virt-v2v 2.2 conversion watched by the real node_exporter and
the real prometheus from Debian's packages (.ci/deps-prometheus.sh installs them; nothing is
started by the packages -- the test starts its own on 127.0.0.1 and ends them by PID).

* The wrapper runs with ``--metrics-dir``; ``prometheus-node-exporter
  --collector.textfile.directory`` points at it and is scraped over HTTP while the conversion
  runs and after.
* ``virt-v2v-wrapper metrics --listen 127.0.0.1:0`` serves the state directory; a real
  ``prometheus`` scrapes it every second and answers PromQL through its HTTP API.
* ``virt-v2v-wrapper status`` is run during the copy (rate and time left), and the estimates
  written to the state file are compared with the real end of the copy.

The VM has the test OS disk and a blank sparse 4 GiB disk (nothing on disk, but nbdkit's ssh
plugin reads every byte), so that the copy lasts long enough (~20-60 s) for rates and
estimates to mean something.  Set V2VW_CAPTURE_TO=<file> to keep what was seen
(docs/metrics-capture.txt was made that way).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import pytest

from tests import wrapperrun as wr

try:
    from . import fake_esxi as fx
    from .test_real_conversions import Run, assert_succeeded, ssh_job
except ImportError:     # pragma: no cover - depends on how pytest was started
    import fake_esxi as fx
    from test_real_conversions import Run, assert_succeeded, ssh_job

pytestmark = pytest.mark.integration
# a test dependency (tests/run-all.sh installs it); without it (an RPM %check) nothing runs here
text_string_to_metric_families = pytest.importorskip("prometheus_client.parser").text_string_to_metric_families

GiB = 1 << 30
BIG = 4 * GiB
NODE_EXPORTER = "prometheus-node-exporter"
PROMETHEUS = "prometheus"


def require_prometheus():
    missing = [p for p in (NODE_EXPORTER, PROMETHEUS) if shutil.which(p) is None]
    if missing:
        pytest.skip("needs %s (run .ci/deps-prometheus.sh)" % ", ".join(missing))


class Daemon:
    """A program we start and end by its PID."""

    def __init__(self, name, argv, workdir):
        self.name = name
        self.log = os.path.join(workdir, name + ".log")
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=workdir)

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_http(url, daemon, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert daemon.proc.poll() is None, "%s exited:\n%s" % (daemon.name, daemon.text()[-3000:])
        try:
            return http_get(url)
        except OSError:
            time.sleep(0.2)
    raise AssertionError("%s never answered on %s:\n%s" % (daemon.name, url, daemon.text()[-3000:]))


def scrape(url, raw=None):
    """{sample name: [(labels, value)]} as the reference parser reads it (the text itself is
    appended to ``raw`` when given)."""
    out = {}
    text = http_get(url)
    if raw is not None:
        raw.append(text)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples, name, **labels):
    found = [v for l, v in samples.get(name, []) if all(l.get(k) == w for k, w in labels.items())]
    return found[0] if len(found) == 1 else None


def promql(base, query):
    doc = json.loads(http_get(base + "/api/v1/query?" + urllib.parse.urlencode({"query": query})))
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


class MeteredRun(Run):
    """A Run with --metrics-dir.  The monitoring side (metrics dir, node_exporter, prometheus,
    the exporter) lives outside the run's root, whose mention in a command line marks a
    leftover of the conversion."""

    def __init__(self, name):
        super().__init__(name)
        self.monitor_root = tempfile.mkdtemp(prefix="v2vw-mon-", dir="/var/tmp")
        self.metrics_dir = os.path.join(self.monitor_root, "metrics")
        os.makedirs(self.metrics_dir)

    def cleanup(self):
        super().cleanup()
        shutil.rmtree(self.monitor_root, ignore_errors=True)

    def args(self):
        return super().args() + ["--metrics-dir", self.metrics_dir]


@pytest.fixture
def big_esxi(guest_images):
    """A fake ESXi host with one VM: the test OS disk + a blank sparse 4 GiB disk."""
    fx_dir = tempfile.mkdtemp(prefix="v2vw-big-", dir="/var/tmp")
    big = os.path.join(fx_dir, "big.img")
    with open(big, "wb") as f:
        f.truncate(BIG)
    images = {"os": guest_images.os_disk, "big": big}
    try:
        with fx.FakeEsxi(images, vms=(fx.VmSpec("bigvm", ("os", "big")),)) as esxi:
            yield esxi
    finally:
        shutil.rmtree(fx_dir, ignore_errors=True)


@pytest.fixture
def daemons():
    started = []
    yield started
    for d in reversed(started):
        d.stop()


def test_node_exporter_and_prometheus_watch_a_real_conversion(big_esxi, v2v_env, daemons):
    require_prometheus()
    run = MeteredRun("metrics")
    work = os.path.join(run.monitor_root, "prom")
    os.makedirs(work)
    try:
        _watch(run, work, big_esxi, v2v_env, daemons)
    finally:
        run.cleanup()


def _watch(run, work, esxi, v2v_env, daemons):
    # node_exporter: only the textfile collector, on a free port of 127.0.0.1
    node_port = fx.find_free_port()
    node = Daemon("node_exporter", [NODE_EXPORTER, "--web.listen-address=127.0.0.1:%d" % node_port,
                                    "--collector.disable-defaults", "--collector.textfile",
                                    "--collector.textfile.directory=%s" % run.metrics_dir], work)
    daemons.append(node)
    node_url = "http://127.0.0.1:%d/metrics" % node_port
    # the wrapper's own exporter on a port it picks (the state dir by environment: a command
    # line naming the run's root would count as a leftover of the conversion)
    exp_log = os.path.join(work, "exporter.log")
    exp_err = open(exp_log, "w+")
    exp = subprocess.Popen(wr.wrapper_cmd("metrics", "--listen", "127.0.0.1:0"),
                           stdout=subprocess.DEVNULL, stderr=exp_err, cwd=wr.ROOT,
                           env=wr.env(VIRT_V2V_WRAPPER_STATE_DIR=run.state_dir))
    exporter = Daemon.__new__(Daemon)
    exporter.name, exporter.log, exporter.proc = "exporter", exp_log, exp
    daemons.append(exporter)
    deadline = time.monotonic() + 30
    exp_url = None
    while exp_url is None and time.monotonic() < deadline:
        exp_err.seek(0)
        for line in exp_err.read().splitlines():
            if "serving http://" in line:
                exp_url = line.split("serving ", 1)[1].split()[0]
        time.sleep(0.1)
    assert exp_url, open(exp_log).read()
    exp_target = urllib.parse.urlsplit(exp_url).netloc
    # prometheus scraping the exporter (and node_exporter) every second
    prom_port = fx.find_free_port()
    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n"
                "  - job_name: v2v\n    static_configs:\n      - targets: ['%s']\n"
                "  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n"
                % (exp_target, node_port))
    prom = Daemon("prometheus", [PROMETHEUS, "--config.file=%s" % config,
                                 "--storage.tsdb.path=%s" % os.path.join(work, "tsdb"),
                                 "--web.listen-address=127.0.0.1:%d" % prom_port], work)
    daemons.append(prom)
    prom_base = "http://127.0.0.1:%d" % prom_port
    wait_http(node_url, node)
    wait_http(prom_base + "/-/ready", prom, timeout=120)

    # -- the conversion ------------------------------------------------------------
    os_disk = esxi.vddk_style_path("bigvm", "bigvm")
    big_disk = esxi.vddk_style_path("bigvm", "bigvm_1")
    run.start(ssh_job(esxi, "bigvm", output_dir=run.out, daemonize=False,
                      source_disks=[os_disk, big_disk]), v2v_env)
    seen = {"node": [], "exporter": [], "status": [], "raw": []}
    last = [0.0]

    def watch(state):
        now = time.monotonic()
        if now - last[0] >= 0.5 and not state.get("finished"):
            last[0] = now
            for key, url in (("node", node_url), ("exporter", exp_url)):
                raw = seen["raw"] if key == "node" else None
                seen[key].append((now - run.t0, state.get("stage"), scrape(url, raw)))
            copy = state.get("copy") or {}
            disks = copy.get("disks") or []
            if len(disks) == 2 and "started_at" in disks[1] and "finished_at" not in disks[1] \
                    and disks[1].get("eta") and copy.get("eta"):
                text = subprocess.run(
                    wr.wrapper_cmd("status", "--plain", run.state_file), capture_output=True,
                    text=True, cwd=wr.ROOT, env=wr.env(), timeout=60).stdout
                if "[RUNNING]" in text:       # the copy may have ended meanwhile
                    seen["status"].append(text)
        return state.get("finished")

    state = run.wait(watch)
    assert run.proc.wait(timeout=60) == 0, run.stderr()[-3000:]
    run.print_sequence()
    assert_succeeded(run, state)
    tag = state["tag"]

    # -- node_exporter, while it ran and after ------------------------------------------
    def during(key):
        return [(t, stage, s) for t, stage, s in seen[key]
                if value(s, "v2v_conversion_state", tag=tag, state="copying") == 1]
    for key in ("node", "exporter"):
        copying = during(key)
        assert copying, "%s never showed the copy: %s" % (key, [st for _, st, _ in seen[key]])
        partial = [value(s, "v2v_disk_transfers", tag=tag, disk_id="2") for _, _, s in copying]
        assert any(p is not None and 0 < p < 100 for p in partial), partial
        assert any(value(s, "v2v_disk_remaining_seconds", tag=tag, disk="2") is not None
                   for _, _, s in copying), "no time left was ever exported by %s" % key
        assert any((value(s, "v2v_disk_copy_rate_bytes_per_second", tag=tag, disk="2") or 0) > 0
                   for _, _, s in copying)
    after = scrape(node_url)
    assert value(after, "node_textfile_scrape_error") == 0
    assert value(after, "v2v_conversion_state", tag=tag, state="succeeded") == 1
    assert value(after, "v2v_conversion_return_code", tag=tag) == 0
    assert value(after, "v2v_disk_transfers", tag=tag, disk_id="1") == 100
    assert value(after, "v2v_disk_transfers", tag=tag, disk_id="2") == 100
    assert value(after, "v2v_disk_size_bytes", tag=tag, disk="2") == BIG
    assert value(after, "v2v_disk_copied_bytes_total", tag=tag, disk="2") == BIG
    assert value(after, "v2v_conversion_end_timestamp_seconds", tag=tag) == state["finished_at"]
    prom_files = os.listdir(run.metrics_dir)
    assert prom_files == ["v2v-import-%s.prom" % tag]
    assert oct(os.stat(os.path.join(run.metrics_dir, prom_files[0])).st_mode & 0o777) == "0o644"

    # -- prometheus: PromQL over its HTTP API ------------------------------------------------
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = promql(prom_base, 'max(v2v_disk_transfers{job="v2v"})')
        ok = promql(prom_base, 'v2v_conversion_state{job="v2v",state="succeeded",tag="%s"}' % tag)
        if result and float(result[0]["value"][1]) == 100 and ok and ok[0]["value"][1] == "1":
            break
        time.sleep(1)
    else:
        raise AssertionError("prometheus never saw the end: %s\n%s" % (result, prom.text()[-3000:]))
    copied = promql(prom_base, 'max_over_time(v2v_conversion_state{job="v2v",state="copying",tag="%s"}[15m])'
                    % tag)
    assert copied and copied[0]["value"][1] == "1", "prometheus never scraped the copy: %s" % copied
    via_node = promql(prom_base, 'max(v2v_disk_transfers{job="node"})')
    assert via_node and float(via_node[0]["value"][1]) == 100
    targets = json.loads(http_get(prom_base + "/api/v1/targets"))["data"]["activeTargets"]
    assert {t["labels"]["job"]: t["health"] for t in targets} == {"v2v": "up", "node": "up"}

    # -- status and the estimates ---------------------------------------------------------
    assert seen["status"], "status never ran while an estimate was settled during the copy"
    shown = [t for t in seen["status"] if " left   " in t and "MiB/s" in t]
    assert shown, seen["status"][-1]
    seen["status"] = shown[len(shown) // 2]
    accuracy = eta_accuracy(run.states)
    print("\n" + accuracy["report"])
    assert accuracy["estimates"], "no settled estimate during the copy"
    # the last estimate made in the second half of the copy is within a third of the copy's
    # length of the real end (a loose bound: CI machines are shared)
    late = [e for e in accuracy["estimates"] if e["elapsed"] >= accuracy["duration"] / 2]
    assert late and abs(late[-1]["error"]) <= accuracy["duration"] / 3, accuracy["report"]
    capture = os.environ.get("V2VW_CAPTURE_TO")
    if capture:
        with open(capture, "w") as f:
            f.write(capture_text(seen, node_url, after, prom_base, tag, accuracy))


def eta_accuracy(states):
    """Each distinct overall estimate written during the copy vs the real end of the copy."""
    final = states[-1][1]["copy"]
    ends = [d.get("finished_at") for d in final["disks"]]
    starts = [d.get("started_at") for d in final["disks"]]
    assert all(ends) and all(starts), final
    start, end = min(starts), max(ends)
    estimates, seen = [], set()
    for _, s in states:
        c = s.get("copy") or {}
        if c.get("eta") in (None, 0) or c["at"] in seen or c["at"] >= end:
            continue
        seen.add(c["at"])
        predicted = c["at"] + c["eta"]
        estimates.append({"elapsed": c["at"] - start, "left": end - c["at"], "eta": c["eta"],
                          "error": predicted - end})
    lines = ["copy from %.1f to %.1f: %.1f s; %d settled overall estimates"
             % (0, end - start, end - start, len(estimates)),
             "%8s %9s %9s %9s" % ("at (s)", "real left", "estimated", "error")]
    for e in estimates:
        lines.append("%8.1f %9.1f %9.1f %+9.1f" % (e["elapsed"], e["left"], e["eta"], e["error"]))
    if estimates:
        errs = sorted(abs(e["error"]) for e in estimates)
        lines.append("median |error| %.1f s, max %.1f s (%.0f %% / %.0f %% of the copy)" % (
            errs[len(errs) // 2], errs[-1], 100 * errs[len(errs) // 2] / (end - start),
            100 * errs[-1] / (end - start)))
    return {"estimates": estimates, "duration": end - start, "report": "\n".join(lines)}


def capture_text(seen, node_url, after, prom_base, tag, accuracy):
    out = ["# Metrics of one real virt-v2v 2.2 conversion (fake ESXi over ssh, OS disk + blank",
           "# 4 GiB disk), captured by tests/integration/test_metrics_real.py",
           "# (V2VW_CAPTURE_TO=docs/metrics-capture.txt).", "",
           "## virt-v2v-wrapper status --plain, during the copy of disk 2", "",
           seen["status"].rstrip(), "",
           "## node_exporter (textfile collector) scraped during the copy (v2v_ lines, disk 1's left out)",
           ""]
    mid = [raw for (_, _, s), raw in zip(seen["node"], seen["raw"])
           if (value(s, "v2v_disk_transfers", tag=tag, disk_id="2") or 0) > 0
           and value(s, "v2v_conversion_state", tag=tag, state="copying") == 1]
    if mid:
        out += [line for line in mid[len(mid) // 2].splitlines()
                if line.startswith("v2v_") and 'disk="1"' not in line and 'disk_id="1"' not in line]
    out += ["", "## PromQL through prometheus's HTTP API after the end", ""]
    for q in ('max(v2v_disk_transfers{job="v2v"})',
              'v2v_conversion_state{job="v2v",state="succeeded"}',
              'max_over_time(v2v_conversion_copy_rate_bytes_per_second{job="v2v"}[15m])'):
        out.append("%s => %s" % (q, json.dumps([r["value"][1] for r in promql(prom_base, q)])))
    out += ["", "## Overall time left, as written to the state file, vs the real end of the copy", "",
            accuracy["report"], ""]
    return "\n".join(out) + "\n"


if __name__ == "__main__":    # pragma: no cover
    sys.exit(pytest.main([__file__, "-s"]))
