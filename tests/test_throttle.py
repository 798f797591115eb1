import json
import os
import time

import pytest

from wrapper.throttling import limits
from wrapper.errors import ThrottleError
from wrapper.state import State
from wrapper.throttling.throttle import Throttler


@pytest.mark.parametrize("value,expected", [
    ("50", "50%"), ("50%", "50%"), (50, "50%"), ("200%", "200%"), (" 12.5 % ", "12.5%"),
    ("unlimited", None), ("UNLIMITED", None), (None, None)])
def test_parse_cpu(value, expected):
    assert limits.parse_cpu(value) == expected


@pytest.mark.parametrize("value", ["0", "-5", "fast", True, [50], "50 percent"])
def test_parse_cpu_bad(value):
    with pytest.raises(ThrottleError):
        limits.parse_cpu(value)


@pytest.mark.parametrize("value,expected", [
    ("1048576", limits.NetworkRate(1048576)), (1048576, limits.NetworkRate(1048576)),
    ("unlimited", None), (None, None)])
def test_parse_network(value, expected):
    assert limits.parse_network(value) == expected


@pytest.mark.parametrize("value", ["0", "1.5", "1M", False, {}, "-1"])
def test_parse_network_bad(value):
    with pytest.raises(ThrottleError):
        limits.parse_network(value)


def test_cpu_quota_property():
    assert limits.cpu_quota_property("50%") == "CPUQuota=50%"
    assert limits.cpu_quota_property(None) == "CPUQuota="


class Recorder:
    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail

    def __call__(self, value):
        if self.fail:
            raise ThrottleError(self.fail)
        self.calls.append(value)


def throttler(path, state, appliers, uids):
    return Throttler(os.open(str(path.parent), os.O_RDONLY | os.O_DIRECTORY), path.name, state,
                     appliers, uids)


@pytest.fixture
def setup(tmp_path):
    state = State()
    cpu, net = Recorder(), Recorder()
    path = tmp_path / "job.throttle"
    t = throttler(path, state, {"cpu": cpu, "network": net}, {os.geteuid()})
    return t, state, cpu, net, path


def test_file_is_merged_applied_and_deleted(setup):
    t, state, cpu, net, path = setup
    path.write_text(json.dumps({"cpu": "50"}))
    t.step()
    assert not path.exists()
    assert cpu.calls == ["50%"] and net.calls == []
    assert state["throttling"] == {"cpu": "50%", "network": None}
    path.write_text(json.dumps({"network": 1048576, "other": 1}))
    t.step()
    assert state["throttling"] == {"cpu": "50%", "network": "1048576"}
    assert net.calls == [limits.NetworkRate(1048576)]    # the applier gets the parsed value
    path.write_text(json.dumps({"cpu": "50%", "network": " 1048576 "}))
    t.step()
    assert cpu.calls == ["50%"]          # unchanged: not applied again, not an error
    assert net.calls == [limits.NetworkRate(1048576)]
    assert "last_message" not in state.data
    path.write_text(json.dumps({"cpu": "unlimited", "network": None}))
    t.step()
    assert state["throttling"] == {"cpu": None, "network": None}


def test_bad_value_reported_and_ignored(setup):
    t, state, cpu, net, path = setup
    path.write_text(json.dumps({"cpu": "fast", "network": "2000"}))
    t.step()
    assert not path.exists()
    assert cpu.calls == [] and net.calls == [limits.NetworkRate(2000)]
    assert "cpu" in state["last_message"]["message"]


def test_malformed_file_deleted_after_settling(setup):
    t, state, cpu, net, path = setup
    path.write_text('{"cpu": "5')
    t.step()
    assert path.exists()                 # maybe still being written
    old = time.time() - 5
    os.utime(path, (old, old))
    t.step()
    assert not path.exists()
    assert "malformed" in state["last_message"]["message"]


def test_partial_file_completed_in_time_is_used(setup):
    t, state, cpu, net, path = setup
    path.write_text('{"cpu": ')
    t.step()
    path.write_text('{"cpu": "20"}')
    t.step()
    assert cpu.calls == ["20%"]


def test_foreign_owner_ignored_removed_and_reported(tmp_path):
    state = State()
    cpu = Recorder()
    path = tmp_path / "t"
    path.write_text(json.dumps({"cpu": "10"}))
    t = throttler(path, state, {"cpu": cpu}, {os.geteuid() + 4242})
    t.step()
    assert not path.exists() and cpu.calls == []       # removed: the caller can write theirs
    assert "owned by uid" in state["last_message"]["message"]


def test_symlink_not_followed(tmp_path):
    state = State()
    cpu = Recorder()
    real = tmp_path / "real"
    real.write_text(json.dumps({"cpu": "10", "note": "TOPSECRET"}))
    os.symlink(real, tmp_path / "t")
    throttler(tmp_path / "t", state, {"cpu": cpu}, {os.geteuid()}).step()
    assert cpu.calls == [] and real.exists() and not os.path.lexists(tmp_path / "t")
    assert "TOPSECRET" not in json.dumps(state.data)


def test_fifo_never_blocks(tmp_path):
    state = State()
    os.mkfifo(tmp_path / "t")
    start = time.monotonic()
    throttler(tmp_path / "t", state, {"cpu": Recorder()}, {os.geteuid()}).step()
    assert time.monotonic() - start < 30 and not os.path.lexists(tmp_path / "t")


def test_hard_link_refused(tmp_path):
    state = State()
    cpu = Recorder()
    (tmp_path / "other").write_text(json.dumps({"cpu": "10"}))
    os.link(tmp_path / "other", tmp_path / "t")
    throttler(tmp_path / "t", state, {"cpu": cpu}, {os.geteuid()}).step()
    assert cpu.calls == [] and (tmp_path / "other").exists()


def test_file_that_cannot_be_removed_is_read_once(setup, monkeypatch):
    t, state, cpu, net, path = setup
    path.write_text(json.dumps({"cpu": "10"}))
    from wrapper.security import fsafe
    monkeypatch.setattr(fsafe, "unlink_same", lambda *a: (_ for _ in ()).throw(PermissionError(1, "no")))
    for _ in range(5):
        t.step()
    assert cpu.calls == ["10%"] and path.exists()


def test_unavailable_limit_not_in_force(setup):
    t, state, cpu, net, path = setup
    t.appliers["cpu"] = Recorder(fail="CPU limits need systemd")
    t.apply({"cpu": "50%"})
    t.apply({"cpu": "40%"})
    assert state["throttling"]["cpu"] is None
    assert "need systemd" in state["last_message"]["message"]
    del t.appliers["network"]
    t.apply({"network": limits.NetworkRate(100)})
    assert state["throttling"]["network"] is None
