"""wrapper.jobfiles: names nobody can predict or take away, the caller's own
throttling directory, directories owned by someone else refused, and the
state file never visible empty (docs/security.md rules 1, 4, 5)."""
import itertools
import json
import logging
import os
import re
import stat
import threading
import time

import pytest

from wrapper import jobfiles, reclaim
from wrapper.errors import JobError
from wrapper.security import fsafe
from wrapper.settings import Settings
from wrapper.state import StateFile

NOW = 1767225600.0
OTHER_UID = 4242424                      # nobody on the host; root can chown to it


def counter_rand():
    """An injected random source: 000000000001, 000000000002, ..."""
    numbers = itertools.count(1)
    return lambda nbytes: "%0*x" % (2 * nbytes, next(numbers))


@pytest.fixture
def dirs(tmp_path):
    state, logs = tmp_path / "state", tmp_path / "log"
    state.mkdir()
    logs.mkdir()
    settings = Settings(state_dir=str(state), log_dir=str(logs))
    sfd, lfd = fsafe.open_dir(str(state)), fsafe.open_dir(str(logs))
    yield settings, state, logs, sfd, lfd
    os.close(sfd)
    os.close(lfd)


# ---- the tag ---------------------------------------------------------------------------------
def test_tag_is_the_time_and_the_random_source():
    rand = counter_rand()
    first = jobfiles.make_tag(NOW, rand)
    assert first == time.strftime("%Y%m%dT%H%M%S", time.localtime(NOW)) + "-000000000001"
    assert jobfiles.make_tag(NOW, rand).endswith("-000000000002")
    assert str(os.getpid()) not in first.split("-")[1]


def test_tag_has_48_random_bits_from_secrets():
    tags = {jobfiles.make_tag(NOW) for _ in range(200)}
    assert len(tags) == 200
    assert all(len(t.split("-")[1]) == 12 for t in tags)


@pytest.mark.parametrize("bad", ["", "../x", "AB/", "12 34", None])
def test_a_random_source_that_gives_no_hex_is_refused(bad):
    with pytest.raises(ValueError):
        jobfiles.make_tag(NOW, lambda n: bad)


def test_a_taken_name_draws_a_new_tag_and_is_left_alone(dirs, caplog):
    settings, state, logs, sfd, lfd = dirs
    tag1 = jobfiles.make_tag(NOW, counter_rand())
    (state / ("v2v-import-%s.state" % tag1)).write_text("theirs")
    os.mkfifo(logs / ("v2v-import-%s.log" % jobfiles.make_tag(NOW, lambda n: "%012x" % 2)))
    with caplog.at_level(logging.WARNING):
        r = jobfiles.reserve(settings, str(logs), sfd, lfd, now=NOW, rand=counter_rand())
    assert r.files.tag.endswith("-000000000003")
    assert (state / ("v2v-import-%s.state" % tag1)).read_text() == "theirs"
    assert "2 earlier tags" in caplog.text
    assert sorted(os.listdir(logs))[0].startswith("v2v-import-") and len(os.listdir(logs)) == 4
    ours = {os.path.basename(r.files.state_file), os.path.basename(os.path.dirname(r.files.throttle_file))}
    kept = {n for n in os.listdir(state) if not n.endswith(".tmp")}   # (+ the reserved spare)
    assert kept == ours | {"v2v-import-%s.state" % tag1}   # tag 2's given back
    r.give_back(keep_wrapper_log=False)
    assert len(os.listdir(logs)) == 1                      # only their FIFO
    assert os.listdir(state) == ["v2v-import-%s.state" % tag1]


def test_every_tag_taken_is_one_line_refusal(dirs):
    settings, state, logs, sfd, lfd = dirs
    (state / ("v2v-import-%s.state" % jobfiles.make_tag(NOW, lambda n: "0" * 12))).write_text("")
    with pytest.raises(JobError) as e:
        jobfiles.reserve(settings, str(logs), sfd, lfd, now=NOW, rand=lambda n: "0" * 12)
    assert "every tag tried was already in use" in str(e.value) and "\n" not in str(e.value)
    assert os.listdir(logs) == []


def test_names_of_the_old_scheme_planted_for_20_seconds_do_not_stop_a_start(dirs):
    """The old tag was <time>-<pid>: plant every name a start could have
    used in the next 20 seconds, for 100 PIDs around ours."""
    settings, state, logs, sfd, lfd = dirs
    pid = os.getpid()
    planted = 0
    for second in range(20):
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(NOW + second))
        for p in range(max(1, pid - 50), pid + 50):
            base = "v2v-import-%s-%d" % (stamp, p)
            for d, suffix in ((state, ".state"), (state, ".throttle"), (logs, ".log")):
                (d / (base + suffix)).touch()
                planted += 1
    r = jobfiles.reserve(settings, str(logs), sfd, lfd, now=NOW)
    assert planted >= 6000
    assert os.path.isdir(os.path.dirname(r.files.throttle_file))
    assert fsafe.lstat_at(lfd, os.path.basename(r.files.wrapper_log)).st_size == 0
    r.give_back(keep_wrapper_log=False)


# ---- the throttling directory ------------------------------------------------------------------
def test_throttling_file_is_in_a_private_directory_of_the_job(dirs):
    settings, state, logs, sfd, lfd = dirs
    r = jobfiles.reserve(settings, str(logs), sfd, lfd, now=NOW, rand=counter_rand())
    d = os.path.dirname(r.files.throttle_file)
    assert d == str(state / ("v2v-import-%s.throttle.d" % r.files.tag))
    assert os.path.basename(r.files.throttle_file) == "throttle"
    st = os.lstat(d)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()
    assert json.loads(r.files.announcement())["throttling_file"] == r.files.throttle_file
    first = json.loads(open(r.files.state_file).read())  # taken first, with a whole document
    assert first["tag"] == r.files.tag and first["disks"] == [] and first["disk_count"] == 0
    assert first["wrapper_pid"] == os.getpid() and first["started_at"] == NOW
    r.give_back()
    assert not os.path.lexists(d) and not os.path.lexists(r.files.state_file)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_throttling_directory_belongs_to_the_sudo_caller(dirs):
    settings, state, logs, sfd, lfd = dirs
    r = jobfiles.reserve(settings, str(logs), sfd, lfd, now=NOW, caller=(OTHER_UID, OTHER_UID))
    st = os.lstat(os.path.dirname(r.files.throttle_file))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OTHER_UID, OTHER_UID, 0o700)
    r.remove_throttle_dir()
    r.remove_throttle_dir()                                # idempotent
    assert not os.path.lexists(os.path.dirname(r.files.throttle_file))
    r.give_back(keep_wrapper_log=False)


def test_throttling_directory_is_removed_with_what_the_caller_left_in_it(dirs, tmp_path):
    settings, state, logs, sfd, lfd = dirs
    keep = tmp_path / "keep"
    keep.write_text("keep")
    r = jobfiles.reserve(settings, str(logs), sfd, lfd, now=NOW)
    d = os.path.dirname(r.files.throttle_file)
    os.symlink(keep, os.path.join(d, "throttle"))
    os.makedirs(os.path.join(d, *["n"] * 50))
    os.mkfifo(os.path.join(d, "fifo"))
    r.remove_throttle_dir()
    assert not os.path.lexists(d) and keep.read_text() == "keep"
    r.give_back(keep_wrapper_log=False)


def test_a_moved_throttling_directory_is_not_followed(dirs):
    settings, state, logs, sfd, lfd = dirs
    r = jobfiles.reserve(settings, str(logs), sfd, lfd, now=NOW)
    d = os.path.dirname(r.files.throttle_file)
    os.rename(d, str(state / "moved"))
    os.mkdir(d)
    (state / "moved" / "x").write_text("")
    open(os.path.join(d, "theirs"), "w").close()
    r.remove_throttle_dir()
    assert os.listdir(d) == ["theirs"]                    # the swapped-in one: left alone
    assert os.listdir(state / "moved") == []               # ours, by descriptor: emptied
    r.give_back(keep_wrapper_log=False)


# ---- directories owned by someone else --------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
@pytest.mark.parametrize("mode", [0o755, 0o1777, 0o700])
def test_a_directory_owned_by_another_user_is_refused(tmp_path, mode):
    d = tmp_path / "theirs"
    d.mkdir()
    os.chown(d, OTHER_UID, OTHER_UID)
    os.chmod(d, mode)
    with pytest.raises(JobError) as e:
        jobfiles.open_job_dir(str(d), "--state-dir", 0o755, {0})
    msg = str(e.value)
    assert msg.startswith("--state-dir (VIRT_V2V_WRAPPER_STATE_DIR): %s " % d)
    assert "owned by uid %d" % OTHER_UID in msg and "\n" not in msg
    fd = jobfiles.open_job_dir(str(d), "--state-dir", 0o755, {0, OTHER_UID})   # the caller's own
    os.close(fd)


def test_a_shared_directory_without_sticky_bit_is_still_refused(tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(JobError) as e:
        jobfiles.open_job_dir(str(d), "--log-dir", 0o755, {0, os.geteuid()})
    assert "without the sticky bit" in str(e.value) and "VIRT_V2V_WRAPPER_LOG_DIR" in str(e.value)


def test_a_created_state_directory_is_roots_and_closed_to_writers(tmp_path):
    mode, owner = jobfiles.state_dir_mode((OTHER_UID, OTHER_UID))
    fd = jobfiles.open_job_dir(str(tmp_path / "new" / "state"), "--state-dir", mode,
                               {0, os.geteuid()}, owner)
    st = os.fstat(fd)
    os.close(fd)
    assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == os.geteuid()


# ---- the lock directory ------------------------------------------------------------------------
def _book(lock_dir, create=True):
    return reclaim.open_book(Settings(lock_dir=str(lock_dir)), logging.getLogger("t"), create)


@pytest.mark.skipif(os.geteuid() != 0, reason="the leases are root's")
def test_a_lock_directory_owned_by_another_user_refuses_the_start(tmp_path):
    lock = tmp_path / "lock"
    lock.mkdir(mode=0o700)
    os.chown(lock, OTHER_UID, OTHER_UID)
    with pytest.raises(JobError) as e:
        _book(lock)
    assert str(e.value).startswith("VIRT_V2V_WRAPPER_LOCK_DIR: cannot keep the job's lease: ")
    assert "owned by uid 0" in str(e.value) and "(owner %d" % OTHER_UID in str(e.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="the leases are root's")
def test_a_lock_directory_where_others_can_create_it_refuses_the_start(tmp_path):
    shared = tmp_path / "run-lock"
    shared.mkdir()
    os.chmod(shared, 0o1777)                               # as /run/lock on many hosts
    with pytest.raises(JobError) as e:
        _book(shared / "virt-v2v-wrapper")
    assert "where users other than root can create entries" in str(e.value)
    assert not (shared / "virt-v2v-wrapper").exists()
    book = _book(tmp_path / "private" / "lock")            # a root-only parent: fine
    assert book is not None
    book.close()


def test_not_root_keeps_no_leases_quietly(tmp_path, monkeypatch):
    lock = tmp_path / "lock"
    lock.mkdir()
    os.chmod(lock, 0o777)
    monkeypatch.setattr(os, "geteuid", lambda: OTHER_UID)
    assert _book(lock) is None
    assert _book(tmp_path / "none", create=False) is None


def test_status_only_warns_about_a_bad_lock_directory(tmp_path, caplog, monkeypatch):
    lock = tmp_path / "lock"
    (lock / "jobs").mkdir(parents=True)
    os.chmod(lock, 0o777)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with caplog.at_level(logging.WARNING):
        assert reclaim.reclaim_at(Settings(lock_dir=str(lock)), None, logging.getLogger("t"),
                                  create=False) is None
    assert "VIRT_V2V_WRAPPER_LOCK_DIR" in caplog.text


# ---- the state file appears with its first complete content -----------------------------------
def test_state_file_is_linked_exclusively_never_over_an_existing_name(dirs):
    settings, state, logs, sfd, lfd = dirs
    (state / "s.state").write_text("theirs")
    sf = StateFile(str(state / "s.state"), dir_fd=sfd, exclusive=True)
    assert sf.write({"a": 1}) is False
    assert (state / "s.state").read_text() == "theirs"
    sf.close()
    assert sorted(os.listdir(state)) == ["s.state"]        # no temporary file left
    sf = StateFile(str(state / "t.state"), dir_fd=sfd, exclusive=True)
    assert sf.write({"a": 1}) and sf.write({"a": 2})      # then atomic rewrites
    assert json.loads((state / "t.state").read_text()) == {"a": 2}
    assert os.stat(state / "t.state").st_nlink == 1
    sf.discard()
    assert sorted(os.listdir(state)) == ["s.state"]


def test_a_reader_polling_during_many_starts_never_sees_an_empty_state_file(dirs):
    """Real concurrency: a thread reads every state name in a tight loop while
    jobs start (reserve, first write, rewrites, give back)."""
    settings, state, logs, sfd, lfd = dirs
    seen = {"reads": 0, "bad": []}
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            for name in os.listdir(state):
                if not name.endswith(".state"):
                    continue
                try:
                    with open(state / name, "rb") as f:
                        raw = f.read()
                except FileNotFoundError:
                    continue
                seen["reads"] += 1
                try:
                    json.loads(raw)
                except ValueError:
                    seen["bad"].append(raw[:40])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(150):
            r = jobfiles.reserve(settings, str(logs), sfd, lfd)
            sf = StateFile(r.files.state_file, dir_fd=sfd, adopt=r.state)
            assert sf.write({"disks": [], "n": i, "pad": "x" * 4000})
            sf.write({"disks": [], "n": i, "started": True, "pad": "y" * 4000})
            sf.discard()
            r.give_back(keep_wrapper_log=False)
    finally:
        stop.set()
        thread.join()
    assert seen["reads"] > 0
    assert seen["bad"] == []


# ---- a watcher of a shared state directory cannot learn the tag before the state file exists ---
_TAG_IN_NAME = re.compile(r"v2v-import-(\d{8}T\d{6}-[0-9a-f]{12})")


class Squatter:
    """An instantaneous attacker (docs/security.md: another local user in a
    world-writable state directory): after every name the wrapper creates, it
    lists the directories and plants a symlink at ``v2v-import-<tag>.state``
    for every tag any name shows (a log, the throttling directory, a
    temporary file) — before the wrapper can take that name itself."""

    def __init__(self, state_dir, *watched, throttle=False):
        """``throttle``: it takes ``v2v-import-<tag>.throttle.d`` instead, as
        soon as the state file shows the tag."""
        self.state_dir = state_dir
        self.watched = (state_dir,) + watched
        self.throttle = throttle
        self.planted = []

    def __call__(self):
        for d in self.watched:
            for name in os.listdir(d):
                m = _TAG_IN_NAME.search(name)
                if not m or (self.throttle and not name.endswith(".state")):
                    continue
                suffix = ".throttle.d" if self.throttle else ".state"
                target = os.path.join(self.state_dir, "v2v-import-%s%s" % (m.group(1), suffix))
                if not os.path.lexists(target):
                    (os.mkdir if self.throttle else lambda t: os.symlink("/nonexistent", t))(target)
                    self.planted.append(os.path.basename(target))

    def patch(self, monkeypatch):
        """Seam: every syscall that makes a name (open, mkdir, link, rename)
        lets the attacker act right after it."""
        for fn in ("open", "mkdir", "link", "rename", "replace"):
            monkeypatch.setattr(os, fn, self._after(getattr(os, fn)))

    def _after(self, real):
        def call(*args, **kwargs):
            result = real(*args, **kwargs)
            self()
            return result
        return call


@pytest.mark.parametrize("throttle", [False, True], ids=["state-name", "throttle-dir-name"])
def test_a_squatter_who_watches_the_state_directory_cannot_refuse_the_job(tmp_path, monkeypatch,
                                                                          throttle):
    from tests import inprocess
    from tests import wrapperrun as wr
    from tests.fakes import make_fake_v2v
    dirs = wr.WrapperDirs(tmp_path)
    exe = make_fake_v2v(dirs.bin)
    env = dict(wr.env(HOME=str(tmp_path)), VIRT_V2V_WRAPPER_CGROUP_ROOT=str(tmp_path / "no-cgroup"),
               VIRT_V2V_WRAPPER_SYSTEMD_MARKER=str(tmp_path / "no-systemd"),
               VIRT_V2V_WRAPPER_LOCK_DIR=str(tmp_path / "lock"))
    job = {"vm_name": "vm1", "transport_method": "vddk", "vmware_uri": "esx://root@127.0.0.1?no_verify=1",
           "vmware_password": "pw", "vmware_fingerprint": ":".join(["AB"] * 20),
           "output_dir": dirs.out, "daemonize": False}
    squatter = Squatter(dirs.state, dirs.logs, throttle=throttle)
    with monkeypatch.context() as m:
        squatter.patch(m)
        o = inprocess.run_main(dirs.args(exe), json.dumps(job).encode(), env, exe)
    assert o.escaped is None and o.returncode == 0, o.stderr
    answer = json.loads(o.stdout.splitlines()[0])
    assert wr.read_state(answer["state_file"])["finished"] is True
    assert os.path.basename(answer["state_file"]) not in squatter.planted
    throttle_dir = os.path.basename(os.path.dirname(answer["throttling_file"]))
    assert throttle_dir not in squatter.planted and throttle_dir.endswith(".throttle.d")
    # the state name is taken before any name shows the tag: nothing to plant;
    # the throttling directory's usual name is taken, and a fresh one used
    assert bool(squatter.planted) is throttle
    theirs = [n for n in os.listdir(dirs.state) if n in squatter.planted]
    assert sorted(theirs) == sorted(squatter.planted)     # untouched


def test_the_squatter_does_refuse_a_job_whose_names_show_the_tag_first(dirs, monkeypatch):
    """The attacker is real: a name of the tag made before the state file
    (the order that F6 of the review exploited) loses the state name to it."""
    settings, state, logs, sfd, lfd = dirs
    squatter = Squatter(str(state), str(logs))
    with monkeypatch.context() as m:
        squatter.patch(m)
        fd = fsafe.create(lfd, "v2v-import-%s.log" % jobfiles.make_tag(NOW, counter_rand()))
    os.close(fd)
    assert squatter.planted == ["v2v-import-%s.state" % jobfiles.make_tag(NOW, counter_rand())]
    r = jobfiles.reserve(settings, str(logs), sfd, lfd, now=NOW, rand=counter_rand())
    assert not r.files.tag.endswith("-000000000001")       # that tag's state name was theirs
    r.give_back(keep_wrapper_log=False)
