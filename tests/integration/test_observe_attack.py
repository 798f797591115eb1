"""Root's readers against another local user (issue 20, class 6): a real
unprivileged user plants hostile state files in a shared (sticky) directory
and root runs ``status``; the same user opens 150 slow connections to the
real exporter while root scrapes it.  Judged by what the attacker gets: a
traceback, raw escapes on root's terminal, invalid JSON, a refused scrape, or
the reader's memory.  The peak RSS figures are recorded with attack.note
(``V2VW_SOURCE_ROOT=<older tree>`` measures an older wrapper the same way).
"""
import json
import os
import re
import subprocess
import time
import urllib.request

import pytest

from tests.integration import attack
from tests.integration.fx_attack import *  # noqa: F401,F403 (fixtures)

pytestmark = pytest.mark.integration

PLANT = r'''
import json, os, sys
d, total, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
unit = b'{"path":"d"},'
body = unit * ((size - 40) // len(unit))
big = b'{"vm":"x","disks":[' + body[:-1] + b'],"finished":false}'
evil = "\x1b[2J\x1b]0;owned\x07\nvm   [FINISHED]\r\u2028"
small = {
    "deep": b"[" * 100000 + b"]" * 100000,
    "nan": b'{"started_at": 1e309, "progress": NaN, "pid": ' + b"9" * 400 + b', '
           b'"copy": {"size": Infinity, "disks": [{"size": ' + b"9" * 400 + b'}]}}',
    "evil": json.dumps({"vm": evil, "stage": evil, "target": evil, "started_at": 1e308,
                        "finished_at": -1e308, "disks": [{"path": evil, "progress": 1e308}],
                        "last_message": {"message": evil}}).encode(),
    "huge": b'{"vm": "' + b"x" * (4 << 20) + b'"}',
    "\x1b[31m\nname\xff": b"{}",
}
def put(name, data):
    fd = os.open(os.path.join(os.fsencode(d), b"v2v-import-" + os.fsencode(name) + b".state"),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    os.close(fd)
for name, data in small.items():
    put(name, data)
for i in range(total // size):
    put("planted-%05d" % i, big)
'''

SLOW = r'''
import socket, sys, time
port, count, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + (b"X-Pad: " + b"a" * 65000 + b"\r\n") * 99
def opened():
    c = socket.socket()
    c.settimeout(3)
    try:
        c.connect(("127.0.0.1", port))
        c.sendall(head)
    except OSError:
        pass
    return c
conns = [opened() for _ in range(count)]
end = time.monotonic() + hold
while time.monotonic() < end:
    for i, c in enumerate(conns):
        try:
            c.sendall(b"a")
        except OSError:
            c.close()
            conns[i] = opened()
    time.sleep(1)
print("held", len(conns))
'''


def peak_mb(argv, env):
    """Run ``argv`` under /usr/bin/time -v: (rc, stdout, stderr, peak RSS MB)."""
    p = subprocess.run(["/usr/bin/time", "-v"] + argv, env=env, cwd=attack.SOURCE_ROOT,
                       capture_output=True, timeout=900)
    err = p.stderr.decode("utf-8", "replace")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    return p.returncode, p.stdout, err, int(m.group(1)) / 1024 if m else None


DECOYS = r'''
import os, sys
d, count, future = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for i in range(count):
    name = os.path.join(d, "v2v-import-20300101T000000-%012x.state" % i)
    os.symlink("/nonexistent", name)
    os.utime(name, (future, future), follow_symlinks=False)
name = os.path.join(d, "v2v-import-20300102T000000-aaaaaaaaaaaa.state")
with open(name, "w") as f:
    f.write('{"vm": "forged", "pid": 1, "disks": [{"path": "/dev/sda", "progress": 42.0}]}')
os.utime(name, (future, future))
'''


def test_another_user_cannot_hide_or_forge_conversions(attack_users, scratch):
    """Review F2/F3: 512 symlinks with future mtimes and a forged 'running'
    file from another user; root's status and metrics still show the real
    conversion, and only it."""
    shared = scratch.dir("shared", 0o1777)
    with open(os.path.join(shared, "v2v-import-20270115T080000-100.state"), "w") as f:
        json.dump({"vm": "real-vm", "tag": "20270115T080000-100", "started_at": time.time() - 60,
                   "finished_at": time.time(), "finished": True, "disks": []}, f)
    attack.as_user(attack_users.other, DECOYS, shared, 512, time.time() + 10 * 365 * 86400)
    env = scratch.env(VIRT_V2V_WRAPPER_STATE_DIR=shared)
    p = subprocess.run([attack.WRAPPER_PYTHON, "-m", "wrapper", "status", "--json"], env=env,
                       cwd=attack.SOURCE_ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert [c["vm"] for c in json.loads(p.stdout)["conversions"]] == ["real-vm"]
    p = subprocess.run([attack.WRAPPER_PYTHON, "-m", "wrapper", "metrics"], env=env,
                       cwd=attack.SOURCE_ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert 'vm="real-vm"' in p.stdout and "forged" not in p.stdout
    assert 'v2v_exporter_state_files{outcome="unreadable"} 0' in p.stdout


@pytest.mark.skipif(not os.access("/usr/bin/time", os.X_OK), reason="needs /usr/bin/time")
def test_status_over_files_planted_by_another_user(attack_users, scratch):
    shared = scratch.dir("shared", 0o1777)
    attack.as_user(attack_users.other, PLANT, shared, 36 << 20, 250 << 10, timeout=300)
    env = scratch.env(VIRT_V2V_WRAPPER_STATE_DIR=shared)
    rc, out, err, _mb = peak_mb([attack.WRAPPER_PYTHON, "-m", "wrapper", "status", "--json"], env)
    assert rc == 0 and json.loads(out)["conversions"] == [], err[-2000:]   # none is root's
    # The same hostile content in root-owned files (virt-v2v's messages reach
    # root's own state files): read, bounded and escaped.
    for name in os.listdir(shared):
        os.chown(os.path.join(shared, name), 0, 0)
    figures = {}
    for mode in ("--plain", "--json"):
        rc, out, err, mb = peak_mb([attack.WRAPPER_PYTHON, "-m", "wrapper", "status", mode], env)
        figures[mode] = mb
        text = out.decode("utf-8")                  # strict: never a byte that is not UTF-8
        assert rc == 1 and "Traceback" not in err, err[-2000:]
        assert "\x1b" not in text and "\r" not in text and "\u2028" not in text
        if mode == "--json":
            convs = json.loads(text, parse_constant=lambda t: pytest.fail(t))["conversions"]
            assert len(convs) == 5 + (36 << 20) // (250 << 10)
        else:
            assert "\\x1b[2J\\x1b]0;owned\\x07\\nvm   [FINISHED]\\r\\u2028" in text
            assert not re.search(r"^vm", text, re.M)      # no line forged by a newline
    attack.note("status-planted-36MB", peak_rss_mb=figures)
    assert max(figures.values()) < 200


def exporter_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def test_exporter_under_slow_connections_from_another_user(attack_users, scratch):
    state_dir = scratch.dir("state", 0o755)
    with open(os.path.join(state_dir, "v2v-import-20270115T080000-100.state"), "w") as f:
        json.dump({"vm": "vm1", "tag": "20270115T080000-100", "started_at": time.time(),
                   "disks": [{"path": "a", "progress": 40}], "pid": 1, "wrapper_pid": 1}, f)
    server = scratch.popen([attack.WRAPPER_PYTHON, "-m", "wrapper", "metrics", "--listen",
                            "127.0.0.1:0", "--state-dir", state_dir],
                           env=scratch.env(), cwd=attack.SOURCE_ROOT, stderr=subprocess.PIPE)
    line = server.stderr.readline().decode()
    port = int(re.search(r"127\.0\.0\.1:(\d+)/metrics", line).group(1))
    url = "http://127.0.0.1:%d/metrics" % port
    with urllib.request.urlopen(url, timeout=30) as r:
        assert b"v2v_conversion_info" in r.read()
    idle_mb = exporter_rss(server.pid)[0]
    attacker = scratch.popen([attack.SYSTEM_PYTHON, "-c", SLOW, str(port), "150", "25"],
                             env=attack.user_env(attack_users.other), cwd="/",
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             **attack.demote(attack_users.other))
    answered, tried, most = 0, 0, 0.0
    deadline = time.monotonic() + 24
    time.sleep(3)
    while time.monotonic() < deadline and attacker.poll() is None:
        tried += 1
        try:
            with urllib.request.urlopen(url, timeout=15) as r:
                answered += b"v2v_conversion_info" in r.read()
        except OSError:
            pass
        most = max(most, exporter_rss(server.pid)[0])
        time.sleep(1)
    out, err = attacker.communicate(timeout=120)
    peak = exporter_rss(server.pid)[1]
    attack.note("exporter-150-slow-connections", idle_rss_mb=round(idle_mb, 1),
                max_rss_mb=round(most, 1), peak_rss_mb=round(peak, 1), scrapes=tried,
                answered=answered)
    assert b"held 150" in out, err.decode()[-2000:]
    assert server.poll() is None
    assert tried >= 5 and answered == tried
    assert peak < idle_mb + 100
