"""The source-read limit: bits in the bandwidth file, its permissions, the argv (both directions: test_network.py)."""
import errno
import json
import os
import shutil
import signal
import stat
import tempfile
import time
from types import SimpleNamespace

import pytest

from wrapper import checks, v2v
from wrapper.throttling import bandwidth, limits
from wrapper.errors import ThrottleError
from wrapper.security.secrets import SecretDir
from tests import wrapperrun as wr
from tests.fake_virt_v2v import CAPABILITIES
from tests.fakes import RecordingRunner, make_fake_v2v
from tests.test_v2v import CAPS1, CAPS2, PATHS, SSH, VDDK, config

NOBODY = 65534


# ---- bytes/s -> bits/s -----------------------------------------------------------------------
@pytest.mark.parametrize("value, text", [
    (None, "0"),                          # nbdkit: rate 0 = no limit
    (1, "8"),
    (1048576, "8388608"),                 # 1 MiB/s = 8 Mibit/s
    (125000000, "1000000000"),            # 1 Gbit/s
    (limits.MAX_NETWORK, str(8 * limits.MAX_NETWORK)),
])
def test_file_text_is_bits_per_second(value, text):
    assert bandwidth.file_text(value and limits.NetworkRate(value)) == text


def test_file_text_of_a_parsed_limit():
    assert bandwidth.file_text(limits.parse_network(" 2097152 ")) == "16777216"
    assert bandwidth.file_text(limits.parse_network("unlimited")) == "0"
    with pytest.raises(ThrottleError):
        limits.parse_network("0")            # 0 would mean unlimited to nbdkit: never a limit


# ---- argv -----------------------------------------------------------------------------------
def paths_with_file(path="/s/bandwidth"):
    return v2v.RunPaths(machine_readable_log=PATHS.machine_readable_log,
                        vmware_password_file=PATHS.vmware_password_file,
                        ssh_auth_sock=PATHS.ssh_auth_sock, bandwidth_file=path)


@pytest.mark.parametrize("source", [SSH, VDDK])
def test_argv_names_the_file_when_virt_v2v_has_the_option(source):
    with_file = v2v.build_command(config(source), CAPS2, paths_with_file())
    without = v2v.build_command(config(source), CAPS2, PATHS)
    assert with_file == without[:-1] + ["--bandwidth-file", "/s/bandwidth", without[-1]]
    assert not any(a.startswith("--bandwidth") and a != "--bandwidth-file" for a in with_file)


def test_argv_without_the_capability_has_no_bandwidth_option():
    assert CAPS2.has("bandwidth-option") and not CAPS1.has("bandwidth-option")
    argv = v2v.build_command(config(SSH), CAPS1, paths_with_file())
    assert argv == v2v.build_command(config(SSH), CAPS1, PATHS)
    assert not any("bandwidth" in a for a in argv)


# ---- the file ---------------------------------------------------------------------------------
def read(d):
    with open(os.path.join(d.path, bandwidth.FILE_NAME)) as f:
        return f.read()


def test_rate_changes_and_removal_are_written(tmp_path):
    with SecretDir(str(tmp_path)) as d:
        bw = bandwidth.BandwidthFile(d)
        assert bw.path == os.path.join(d.path, "bandwidth")
        assert read(d) == "0"                               # unlimited until a limit comes
        before = "0"
        rate = limits.NetworkRate
        for value, text in ((rate(1048576), "8388608"), (rate(3145728), "25165824"), (None, "0"),
                            (rate(1), "8")):
            with open(bw.path) as reader:                   # nbdkit reading at that moment
                bw.set(value)
                assert read(d) == text and bw.value == value
                # replaced by rename, never rewritten in place: the reader has the old value
                assert reader.read() == before and os.fstat(reader.fileno()).st_nlink == 0
            before = text
        st = os.stat(bw.path)
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == os.geteuid()
        bw.close()
        # only the file: the spare temporary file went with close()
        assert os.listdir(d.path) == ["bandwidth"]
    assert os.listdir(str(tmp_path)) == []                  # it went with the private directory


def test_initial_value(tmp_path):
    with SecretDir(str(tmp_path)) as d:
        bandwidth.BandwidthFile(d, limits.NetworkRate(1000)).close()
        assert read(d) == "8000"


def test_a_failed_write_keeps_the_previous_rate(tmp_path, monkeypatch):
    with SecretDir(str(tmp_path)) as d:
        bw = bandwidth.BandwidthFile(d, limits.NetworkRate(1048576))

        def full(*a):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(os, "fsync", full)
        with pytest.raises(OSError):
            bw.set(limits.NetworkRate(2097152))
        monkeypatch.undo()
        assert read(d) == "8388608" and bw.value == limits.NetworkRate(1048576)
        bw.close()


def as_user(uid, gid, fn):
    """Run ``fn()`` in a child as uid:gid (no supplementary groups); its errno or 0."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            fn()
        except OSError as e:
            code = e.errno or 99
        except BaseException:
            code = 98
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="changes owners and users")
def test_the_run_as_user_reads_it_but_cannot_change_it():
    """Group = the run-as user's; owner root: nbdkit (that user) can read the rate, not
    write the file, not replace it, not add one; another user cannot even reach it."""
    parent = tempfile.mkdtemp(prefix="v2vw-bw-", dir="/var/tmp")   # pytest's tmp is 0700
    os.chmod(parent, 0o755)
    try:
        _run_as_user_checks(parent)
    finally:
        shutil.rmtree(parent)


def _run_as_user_checks(parent):
    gid = 4242                                  # a group only the run-as user is in
    with SecretDir(parent, NOBODY, gid) as d:
        bw = bandwidth.BandwidthFile(d, limits.NetworkRate(1048576))
        st = os.stat(bw.path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, gid, 0o640)
        dst = os.stat(d.path)
        assert (dst.st_uid, dst.st_gid, stat.S_IMODE(dst.st_mode)) == (0, gid, 0o710)

        def read_it():
            with open(bw.path) as f:
                assert f.read() == "8388608"

        def write_it():
            open(bw.path, "w").close()

        def replace_it():
            tmp = os.path.join(d.path, "mine")
            open(tmp, "w").close()
            os.rename(tmp, bw.path)

        def remove_it():
            os.unlink(bw.path)

        assert as_user(NOBODY, gid, read_it) == 0
        for attempt in (write_it, replace_it, remove_it):
            assert as_user(NOBODY, gid, attempt) == errno.EACCES, attempt.__name__
        assert as_user(NOBODY + 1 if NOBODY < 65535 else 1, NOBODY, read_it) == errno.EACCES
        bw.set(None)                              # and root still replaces it
        assert as_user(NOBODY, gid, lambda: None) == 0
        with open(bw.path) as f:
            assert f.read() == "0"
        assert os.stat(bw.path).st_gid == gid
        bw.close()


# ---- --check-throttling's line ------------------------------------------------------------------
def settings_for(tmp_path):
    return SimpleNamespace(virt_v2v_path=lambda: "/usr/bin/virt-v2v", run_as=None, environ={})


def caps_runner(text):
    return RecordingRunner({("/usr/bin/virt-v2v", "--machine-readable"): (0, text, "")})


def test_check_reports_the_source_read_mechanism(tmp_path):
    with open("tests/data/virt-v2v--machine-readable.txt") as f:
        caps = f.read()
    line = checks.source_read_report(settings_for(tmp_path), caps_runner(caps))
    assert line.startswith("network source read: available (virt-v2v reports bandwidth-option")
    line = checks.source_read_report(settings_for(tmp_path),
                                     caps_runner(caps.replace("bandwidth-option\n", "")))
    assert line.startswith("network source read: inbound policing (virt-v2v does not report "
                           "bandwidth-option: what the conversion receives is dropped")
    line = checks.source_read_report(settings_for(tmp_path), caps_runner("hello\n"))
    assert line.startswith("network source read: unavailable (") and "did not answer" in line



# ---- through the CLI, with the fake virt-v2v -------------------------------------------------
def cli_env(dirs):
    """No cgroup hierarchy: the outbound limiter stays off this host's interfaces."""
    empty = os.path.join(dirs.root, "no-cgroups")
    os.makedirs(empty, exist_ok=True)
    return wr.env(VIRT_V2V_WRAPPER_CGROUP_ROOT=empty)


def cli_job(dirs, **kw):
    job = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1",
           "vmware_password": "pw", "vmware_fingerprint": ":".join(["AB"] * 20),
           "output_dir": dirs.out, "daemonize": False}
    job.update(kw)
    return job


def throttle(doc, value, expect):
    tmp = doc["throttling_file"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"network": value}, f)
    os.rename(tmp, doc["throttling_file"])
    return wr.wait_state(doc["state_file"], lambda s: s["throttling"]["network"] == expect)


def test_cli_rate_changes_and_removal_reach_the_file_and_it_goes_on_sigterm(tmp_path):
    dirs = wr.WrapperDirs(tmp_path)
    record = os.path.join(dirs.root, "record.json")
    exe = make_fake_v2v(dirs.bin, record=record, hold=60)
    p = wr.start(dirs.args(exe), cli_job(dirs, throttling={"network": "1048576"}),
                 env=cli_env(dirs))
    try:
        doc = json.loads(p.stdout.readline())
        state = wr.wait_state(doc["state_file"], lambda s: s.get("started"))
        assert state["throttling"]["network"] == "1048576"
        assert state["throttling"]["network_directions"] == ["source-read"]
        assert "outbound traffic" in state["last_message"]["message"]
        (secrets,) = wr.secret_dirs(dirs.state)
        path = os.path.join(secrets, "bandwidth")
        wr.wait_state(doc["state_file"], lambda s: os.path.exists(record))
        time.sleep(0.2)
        rec = json.load(open(record))
        i = rec["argv"].index("--bandwidth-file")
        assert rec["argv"][i + 1] == path and rec["argv"][-1] == "testvm"
        # virt-v2v found the job's limit there before it started: in bits
        assert rec["bandwidth"] == "8388608"
        assert not any("1048576" in a or "8388608" in a for a in rec["argv"])
        s = throttle(doc, 3 * 1048576, "3145728")
        assert open(path).read() == "25165824" and s["throttling"]["network_directions"] == \
            ["source-read"]
        s = throttle(doc, "unlimited", None)
        assert open(path).read() == "0" and s["throttling"]["network_directions"] == []
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 2
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert wr.read_state(doc["state_file"])["finished"]
    assert wr.secret_dirs(dirs.state) == [] and not os.path.exists(path)
    log = open(doc["wrapper_log"]).read()
    assert "throttling: network outbound traffic not limited" in log
    assert "the read from the source is not limited" not in log


def test_cli_without_the_capability_says_so_once(tmp_path):
    dirs = wr.WrapperDirs(tmp_path)
    record = os.path.join(dirs.root, "record.json")
    exe = make_fake_v2v(dirs.bin, record=record,
                        capabilities=CAPABILITIES.replace("bandwidth-option\n", ""))
    r = wr.run(dirs.args(exe), cli_job(dirs, throttling={"network": "1048576"}),
               env=cli_env(dirs))
    doc = json.loads(r.stdout.splitlines()[0])
    state = wr.read_state(doc["state_file"])
    assert state["finished"] and "failed" not in state
    assert not any("bandwidth" in a for a in json.load(open(record))["argv"])
    log = open(doc["wrapper_log"]).read()
    assert log.count("does not report bandwidth-option: the read from the source is limited "
                     "by policing what the conversion receives") == 1, log
    # the outbound limiter is off in this test too, and the inbound policer lives in its
    # table: the limit applies nowhere
    assert state["throttling"]["network"] is None
    assert state["throttling"]["network_directions"] == []


def test_parallel_copies_share_the_limit(tmp_path):
    """--parallel N: N input nbdkits read at once, each with its own rate filter on
    this one file, so each gets 1/N and the source read stays within the limit."""
    rate = limits.NetworkRate
    assert bandwidth.file_text(rate(2097152), 2) == "8388608"
    assert bandwidth.file_text(rate(2097152), 3) == "5592405"
    assert bandwidth.file_text(rate(1), 16) == "1"           # never 0 (which is unlimited)
    assert bandwidth.file_text(None, 4) == "0"
    with SecretDir(str(tmp_path)) as d:
        bw = bandwidth.BandwidthFile(d)
        bw.shares = 2
        bw.set(rate(1048576))
        assert read(d) == "4194304" and bw.value == rate(1048576)   # the state shows the limit
