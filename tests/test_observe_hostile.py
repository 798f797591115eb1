"""status, metrics and the exporter read every file as hostile (issue 20, class 6):
planted state files that nest deep, carry absurd numbers, NaN, terminal escapes,
newlines, or come huge and many; connections that drip or never end."""
import io
import json
import os
import socket
import threading
import time
import urllib.request

import pytest

from test_metrics import families
from test_status import T0, alive_all, make_state, run_status, write
from wrapper.observe import exporter, metrics, status
from wrapper.observe import summary as lib

STATE = "v2v-import-20270115T080000-100.state"
HUGE_INT = "9" * 400
EVIL = "\x1b[2J\x1b]0;owned\x07vm\nfile  /etc/shadow\r\u2028[FINISHED]\u202e"


def plant(directory, name, text, mode=0o644):
    path = os.path.join(str(directory), name)
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape"))
    os.chmod(path, mode)
    os.utime(path, (T0, T0))
    return path


def strict_utf8_stdout():
    """A stdout that fails as a real one does on text that is not UTF-8."""
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)


def no_nan_json(text):
    def refuse(token):
        raise AssertionError("%s in --json output" % token)
    return json.loads(text, parse_constant=refuse)


# -- reading ---------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "[" * 100000 + "]" * 100000,
    '{"disks": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"a": ' + '{"b": ' * (lib.MAX_DEPTH + 1) + "1" + "}" * (lib.MAX_DEPTH + 2),
])
def test_deep_nesting_is_invalid_not_a_recursion_error(tmp_path, text):
    reading = lib.read_state(plant(tmp_path, STATE, text))
    assert reading.kind == lib.INVALID and reading.data is None


def test_brackets_inside_strings_are_not_nesting(tmp_path):
    text = json.dumps({"vm": "[" * 5000 + "{" * 5000, "stage": "\\\"[[["})
    reading = lib.read_state(plant(tmp_path, STATE, text))
    assert reading.data["vm"].startswith("[[[") and reading.kind is None


def test_numbers_out_of_range_read_as_null(tmp_path):
    text = ('{"started_at": 1e309, "finished_at": -1e309, "progress": NaN, "pid": %s, '
            '"wrapper_pid": -Infinity, "disk_count": %s, "return_code": 1e400, '
            '"disks": [{"path": "a", "progress": Infinity}], '
            '"copy": {"size": %s, "rate": 1e308, "eta": %s, "disks": [{"size": %s}]}}'
            % (HUGE_INT, HUGE_INT, HUGE_INT, HUGE_INT, "1" + "0" * 5000))
    reading = lib.read_state(plant(tmp_path, STATE, text))
    data = reading.data
    assert data["started_at"] is data["finished_at"] is data["progress"] is None
    assert data["pid"] is data["wrapper_pid"] is data["disk_count"] is None
    assert data["disks"][0]["progress"] is None and data["copy"]["size"] is None
    assert data["copy"]["rate"] is None          # 1e308 is finite but no rate
    s = lib.summarize(reading, T0, alive_all)
    assert s["disks"][0]["progress"] == 0.0 and s["elapsed"] is None
    json.dumps(s, allow_nan=False)
    assert families(metrics.exposition([s], T0, exporter=True))["v2v_conversion_info"]


def test_a_state_in_memory_with_absurd_numbers_still_gives_metrics():
    """A virt-v2v that reports an absurd disk size must not break the job's
    own .prom file (nor, through it, every scrape)."""
    s = make_state("copying")
    s.set("copy", {"size": 10 ** 400, "bytes_copied": 10 ** 400, "rate": float("inf"),
                   "eta": float("nan"), "disks": [{"size": 10 ** 400, "bytes_copied": -10 ** 400,
                                                   "eta": 1e308}]})
    s.set("progress", 10 ** 400)
    s.set("started_at", -10 ** 400)
    s.set("throttling", {"cpu": "1e999%", "network": 1e300})
    f = families(metrics.state_exposition(s.data, "/s/" + STATE, T0))
    assert "v2v_disk_size_bytes" not in f and "v2v_conversion_size_bytes" not in f
    assert "v2v_conversion_throttle_network_bytes_per_second" not in f
    assert f["v2v_conversion_progress_ratio"][0][1] == 0.75      # from the disks, then


def test_a_huge_file_is_refused_unread(tmp_path):
    path = plant(tmp_path, STATE, '{"vm": "' + "x" * (lib.STATE_MAX + 1) + '"}')
    reading = lib.read_state(path)
    assert reading.kind == lib.UNREADABLE and "larger than" in reading.problem


def test_texts_lists_and_keys_are_bounded(tmp_path):
    disks = [{"path": "d%d" % i, "progress": 1} for i in range(5000)]
    data = {"vm": "v" * 5000, "disks": disks, "copy": {"disks": [{"size": 1}] * 5000},
            **{"k%d" % i: i for i in range(400)}}
    path = plant(tmp_path, STATE, json.dumps(data))
    s = lib.summarize(lib.read_state(path), T0, alive_all)
    assert len(s["vm"]) == lib.MAX_TEXT and len(s["disks"]) == lib.MAX_DISKS
    assert len(lib.tame(data)) == lib.MAX_KEYS


def test_scan_keeps_the_newest_files_only(tmp_path):
    for i in range(lib.MAX_FILES + 40):
        path = plant(tmp_path, "v2v-import-%05d.state" % i, "{}")
        os.utime(path, (T0 + i, T0 + i))
    found = lib.scan(str(tmp_path))
    assert len(found) == lib.MAX_FILES
    assert os.path.basename(found[0]) == "v2v-import-00040.state"
    assert lib.scan(str(tmp_path), limit=3) == [str(tmp_path / ("v2v-import-%05d.state" % i))
                                                for i in (549, 550, 551)]


FUTURE = T0 + 10 * 365 * 86400       # mtimes another user sets on its own entries
OTHER_UID = 65534


def plant_decoys(directory, count=lib.MAX_FILES):
    """What another user leaves in a shared state directory: symlinks, a
    FIFO and regular files of its own under the wrapper's names, all newer
    than any real conversion (lutimes on its own entries is free)."""
    for i in range(count):
        link = os.path.join(str(directory), "v2v-import-20300101T000000-%012x.state" % i)
        os.symlink("/nonexistent", link)
        os.utime(link, (FUTURE, FUTURE), follow_symlinks=False)
        forged = plant(directory, "v2v-import-20300102T000000-%012x.state" % i,
                       json.dumps({"vm": "forged", "pid": 1, "disks": [{"path": "/dev/sda"}]}))
        os.chown(forged, OTHER_UID, OTHER_UID)
        os.utime(forged, (FUTURE, FUTURE))
    fifo = os.path.join(str(directory), "v2v-import-fifo.state")
    os.mkfifo(fifo)
    os.utime(fifo, (FUTURE, FUTURE))


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's files needs root")
def test_scan_filters_before_the_cut(tmp_path):
    """Review F2: another user's entries are skipped before the newest-N cut,
    so they cannot push a real conversion out of it (they used to fill it)."""
    real = write(tmp_path / STATE, make_state("copying"))
    plant_decoys(tmp_path)
    assert lib.scan(str(tmp_path)) == [real]
    assert lib.scan(str(tmp_path), owners={OTHER_UID}) == sorted(
        str(tmp_path / ("v2v-import-20300102T000000-%012x.state" % i)) for i in range(lib.MAX_FILES))


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's files needs root")
def test_status_and_exporter_see_the_real_conversion_among_decoys(tmp_path):
    write(tmp_path / STATE, make_state("copying"))
    plant_decoys(tmp_path)
    rc, out, _ = run_status(["--json", "--state-dir", str(tmp_path)])
    convs = no_nan_json(out)["conversions"]
    assert rc == 0 and [c["vm"] for c in convs] == ["vm1"]
    f = families(exporter.Collector(str(tmp_path), clock=lambda: T0 + 60, alive=alive_all).text())
    assert [labels["vm"] for labels, _ in f["v2v_conversion_info"]] == ["vm1"]
    assert {labels["outcome"]: v for labels, v in f["v2v_exporter_state_files"]}["unreadable"] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's files needs root")
def test_status_never_shows_another_users_state_file_as_a_conversion(tmp_path):
    """Review F3: a forged 'running' state file of another user is not listed,
    and named explicitly it is unreadable, not a live conversion."""
    forged = write(tmp_path / STATE, make_state("copying", vm="forged"))
    os.chown(forged, OTHER_UID, OTHER_UID)
    rc, out, _ = run_status(["--plain", "--state-dir", str(tmp_path)])
    assert rc == 0 and "forged" not in out and out == "no conversions in %s\n" % tmp_path
    rc, out, _ = run_status(["--json", forged])
    conv = no_nan_json(out)["conversions"][0]
    assert rc == status.EXIT_UNREADABLE and conv["outcome"] == lib.UNREADABLE
    assert "owned by uid %d" % OTHER_UID in conv["problem"] and "vm" not in conv


# -- the view ----------------------------------------------------------------------
def test_plain_text_escapes_what_files_say(tmp_path):
    data = make_state("failed", vm=EVIL, target=EVIL, throttling={"cpu": EVIL, "network": EVIL})
    data.set("stage", EVIL)
    data.data["disks"][0]["path"] = EVIL
    data.error(EVIL)
    path = write(tmp_path / STATE, data)
    rc, out, _ = run_status(["--plain", path])
    _, clean, _ = run_status(["--plain", write(tmp_path / ("x" + STATE), make_state("failed"))])
    assert rc == 0 and "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert "\u2028" not in out and "\u202e" not in out
    assert out.count("\n") == clean.count("\n")       # no forged line
    assert "\\x1b[2J\\x1b]0;owned\\x07vm\\nfile" in out and "\\u202e" in out


def test_terminal_output_has_only_its_own_escapes(tmp_path):
    data = make_state("copying", vm=EVIL)
    data.set("stage", EVIL)
    path = write(tmp_path / STATE, data)
    tty = io.StringIO()
    run_status([path], stdout=tty, tty=True, term_size=lambda: os.terminal_size((200, 50)))
    out = tty.getvalue()
    assert "\x1b[2J" not in out and "\x1b]0" not in out and "\x07" not in out
    assert "\\x1b[2J" in out


def test_hostile_file_names_are_escaped_and_never_break_the_output(tmp_path):
    plant(tmp_path, "v2v-import-\x1b[31m\nfake\udcff.state", "{}")
    plant(tmp_path, "v2v-import-b.state", "[" * 100000)
    out = strict_utf8_stdout()
    rc = status.main(["--plain", "--state-dir", str(tmp_path)], stdout=out, stderr=io.StringIO(),
                     environ={}, clock=lambda: T0 + 60, alive=alive_all)
    text = out.buffer.getvalue().decode("utf-8")
    assert rc == 1 and "\x1b" not in text
    assert "v2v-import-\\x1b[31m\\nfake\\xff.state" in text
    jout = strict_utf8_stdout()
    status.main(["--json", "--state-dir", str(tmp_path)], stdout=jout, stderr=io.StringIO(),
                environ={}, clock=lambda: T0 + 60, alive=alive_all)
    assert len(no_nan_json(jout.buffer.getvalue().decode("ascii"))["conversions"]) == 2


def test_json_output_is_always_valid_json(tmp_path):
    plant(tmp_path, STATE, '{"started_at": 1e309, "finished_at": -1e308, "progress": NaN,'
                           ' "copy": {"rate": Infinity, "at": 1e308, "eta": 1e307},'
                           ' "disks": [{"path": "\\u001b[2J", "progress": -Infinity}]}')
    rc, out, err = run_status(["--json", "--state-dir", str(tmp_path)])
    conv = no_nan_json(out)["conversions"][0]
    assert rc == 0 and err == "" and conv["started_at"] is None
    assert conv["disks"][0]["path"] == "\x1b[2J"      # JSON carries it escaped, as data


def test_metrics_label_of_a_name_that_is_not_utf8(tmp_path):
    plant(tmp_path, "v2v-import-\udcfe.state", '{"vm": "a\\"b\\nc\\\\"}')
    text = exporter.Collector(str(tmp_path), alive=alive_all).text()
    text.encode("utf-8")
    info = families(text)["v2v_conversion_info"]
    assert info[0][0]["vm"] == 'a"b\nc\\'


# -- the exporter's connections ------------------------------------------------------
@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setattr(exporter, "REQUEST_TIMEOUT", 3.0)
    monkeypatch.setattr(exporter, "SLOT_WAIT", 0.5)
    write(tmp_path / STATE, make_state("copying"))
    server = exporter.Server(("127.0.0.1", 0), exporter.Collector(str(tmp_path), alive=alive_all),
                             max_connections=4)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def scrape(server):
    url = "http://127.0.0.1:%d/metrics" % server.server_address[1]
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read().decode()


def connect(server, first=b""):
    c = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=30)
    if first:
        c.sendall(first)
    return c


def answer(c):
    data = b""
    while True:
        chunk = c.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_headers_past_the_limit_get_431(served):
    c = connect(served, b"GET /metrics HTTP/1.0\r\n")
    try:
        for _ in range(exporter.MAX_REQUEST // 64 + 2):
            c.sendall(b"X-Pad: " + b"a" * 55 + b"\r\n")
    except OSError:
        pass                     # it may close before the last header
    assert answer(c).startswith(b"HTTP/1.0 431")
    c.close()


def test_a_request_that_drips_is_cut_at_the_deadline(served):
    c = connect(served, b"GET /met")
    started = time.monotonic()
    ended = None
    for _ in range(60):
        try:
            c.sendall(b"r")
        except OSError:
            ended = time.monotonic()
            break
        c.settimeout(0.5)
        try:
            if c.recv(1) == b"":
                ended = time.monotonic()
                break
        except socket.timeout:
            pass
    c.close()
    assert ended is not None and ended - started >= exporter.REQUEST_TIMEOUT - 0.5
    assert scrape(served)[0] == 200


def test_slow_connections_past_the_limit_do_not_stop_a_scrape(served):
    idle = [connect(served, b"GET /") for _ in range(12)]
    try:
        status_code, text = scrape(served)
        assert status_code == 200 and families(text)["v2v_disk_transfers"]
        closed = 0
        for c in idle:
            c.settimeout(5)
            try:
                closed += c.recv(1) == b""
            except (socket.timeout, OSError):
                pass
        assert closed >= len(idle) - 4 + 1          # cut off to make room (4 slots)
    finally:
        for c in idle:
            c.close()
