"""Attacks on the files the root wrapper creates, reads and removes in
directories other users can write: real users, real racing processes, real
symlinks, FIFOs and hard links (docs/security.md, docs/contract.md §4-§7).

Actors: the run-as user (runs virt-v2v), the sudo caller (SUDO_UID of a real
user), another local user.  The wrapper runs as root unless said otherwise,
virt-v2v is the fake (tests/fake_virt_v2v.py), and PID 1 is not systemd, so
daemon mode falls back to a plain child process.
"""
import collections
import errno
import glob
import json
import os
import signal
import subprocess
import time

import pytest

from tests.integration import attack
from tests.integration.attack import vddk_job, wrapper_args
from tests.integration.fx_attack import *  # noqa: F401,F403 (fixtures)

pytestmark = pytest.mark.integration

RACE_SECONDS = float(os.environ.get("V2VW_RACE_SECONDS", "45"))
RACE_ITERATIONS = int(os.environ.get("V2VW_RACE_ITERATIONS", "80"))
RACE_PARALLEL = 2
THROTTLE_RACE_SECONDS = float(os.environ.get("V2VW_THROTTLE_RACE_SECONDS", "12"))


def started(s):
    return s.get("started") or s.get("finished")


def finished(s):
    return s.get("finished")


def _stop(run, timeout=40):
    if run.proc.poll() is None:
        run.proc.send_signal(signal.SIGTERM)
    return run.wait(timeout)


# -- 1. the secret directory against the run-as user --------------------------------------
def test_run_as_user_cannot_swap_secret_files_for_symlinks(scratch, attack_users):
    """The run-as user, in a tight loop, renames a symlink to a root-only file
    over every entry of every secret directory (and chmods the directory).
    Root must never chown or write the target: it stays root:root 0600 with
    its content, and no swap inside a secret directory ever succeeds."""
    runas = attack_users.runas
    state = scratch.dir("state", 0o1777)            # shared, like /tmp
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    scratch.dir("rootonly", 0o700)
    target = scratch.file("rootonly/shadow", "ROOTSECRET-%s\n" % os.urandom(8).hex(), 0o600)
    vault = scratch.file("rootonly/vault.json", json.dumps(
        {"testvm": [{"device": "/dev/sda1", "key": "luks-%s" % os.urandom(4).hex()}]}), 0o600)
    before = attack.file_facts(target)
    exe = scratch.fake(hold=0.05)
    args = wrapper_args(state, logs, exe, "--run-as", runas.name)
    racer = attack.secret_racer(scratch, runas, state, target)
    time.sleep(0.3)
    assert racer.alive(), "the racer did not start"
    outcomes = collections.Counter()
    iterations, lost_at, hung = 0, None, []
    t0 = time.monotonic()
    while iterations < RACE_ITERATIONS and time.monotonic() - t0 < RACE_SECONDS and lost_at is None:
        batch = [scratch.start(args, vddk_job(out, daemonize=False, luks_keys_vault=vault))
                 for _ in range(RACE_PARALLEL)]
        deadline = time.monotonic() + 30
        while any(r.proc.poll() is None for r in batch) and time.monotonic() < deadline:
            if attack.file_facts(target) != before:
                break                        # lost: no need to wait for a wedged run
            time.sleep(0.02)
        for r in batch:
            rc = r.wait(0.1 if r.proc.poll() is None else 5)
            outcomes[rc] += 1
            if rc is None:
                hung.append(r.dir)
            iterations += 1
        if attack.file_facts(target) != before:
            lost_at = iterations
        for name in os.listdir(state):          # keep the racer's listdir cheap
            if name.startswith("v2v-import-"):
                os.unlink(os.path.join(state, name))
    stats = racer.stop()
    after = attack.file_facts(target)
    attack.note("secret-dir-symlink-race", iterations=iterations, lost_at=lost_at,
                seconds=round(time.monotonic() - t0, 1), outcomes={str(k): v for k, v in outcomes.items()},
                hung=len(hung), racer={k: v for k, v in stats.items() if k != "swapped"},
                swapped=stats["swapped"][:6], target_after={k: str(v) for k, v in after.items()})
    assert after == before, ("race lost after %d runs: the root-only target is now %r (was %r); racer swapped %s"
                             % (iterations, after, before, stats["swapped"][:6]))
    assert stats["swaps"] == 0, "the run-as user replaced entries of a secret dir: %s" % stats["swapped"][:6]
    assert stats["chmods"] == 0, "the run-as user could chmod a secret dir"
    assert stats["dirs_seen"] >= iterations // 2, "the racer saw only %d of %d secret dirs" % (
        stats["dirs_seen"], iterations)
    assert not hung, "runs that never ended: %s" % hung
    assert outcomes == {0: iterations}, "runs under attack did not all succeed: %s" % dict(outcomes)
    assert attack.leftovers(state) == []


def test_secret_dir_ownership_and_modes(scratch, attack_users):
    """Seen from inside virt-v2v (the fake records what it finds): the secret
    directory is root's, group of the run-as user, 0710; the files 0600 and
    the run-as user's."""
    runas = attack_users.runas
    state = scratch.dir("state", 0o1777)
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    record = os.path.join(out, "record.json")
    exe = scratch.fake(record=record, hold=4)
    run = scratch.start(wrapper_args(state, logs, exe, "--run-as", runas.name),
                        vddk_job(out, daemonize=False))
    doc = run.announce()
    assert attack.wait_state(doc["state_file"], started, 30), run.stderr[-2000:]
    assert attack.wait_until(lambda: os.path.exists(record), 15), "virt-v2v never ran as %s; log tail:\n%s" % (
        runas.name, attack.tail(doc["wrapper_log"], 15))
    rec = json.load(open(record))
    pw_file = rec["argv"][rec["argv"].index("-ip") + 1]
    sdir = os.path.dirname(pw_file)
    st = os.lstat(sdir)
    facts = {"dir": (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777))}
    for name in os.listdir(sdir):
        fst = os.lstat(os.path.join(sdir, name))
        facts[name] = (fst.st_uid, fst.st_gid, oct(fst.st_mode & 0o7777))
    rc = run.wait(30)
    assert rc == 0, run.stderr[-2000:]
    assert facts["dir"] == (0, runas.gid, oct(0o710)), facts
    assert facts["vmware_password"] == (runas.uid, runas.gid, oct(0o600)), facts
    assert rec["files"][pw_file]["uid"] == runas.uid and rec["files"][pw_file]["mode"] == 0o600
    # the source read's limit: root's, readable (by virt-v2v, as the run-as user) through the
    # group, not writable by that user (tests/test_bandwidth.py tries writing and replacing)
    assert facts["bandwidth"] == (0, runas.gid, oct(0o640)), facts
    assert rec["bandwidth"] == "0" and rec["argv"][rec["argv"].index("--bandwidth-file") + 1] == \
        os.path.join(sdir, "bandwidth")
    assert attack.leftovers(state) == []


AGENT_RACE_SECONDS = float(os.environ.get("V2VW_AGENT_RACE_SECONDS", "15"))


def test_run_as_user_cannot_turn_its_agent_dir_against_root(scratch, attack_users):
    """The ssh-agent directory is the run-as user's own: it plants symlinks to
    a root-only directory and file in it and keeps exchanging (renameat2
    RENAME_EXCHANGE) a subdirectory with such a symlink, and the agent
    directory itself too.  Root's cleanup must never follow them: the
    root-only directory keeps its entries, the file its owner and content."""
    runas = attack_users.runas
    state = scratch.dir("state", 0o1777)
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    rootdir = scratch.dir("rootonly", 0o700)
    target = scratch.file("rootonly/shadow", "ROOTSECRET-%s\n" % os.urandom(8).hex(), 0o600)
    scratch.file("rootonly/keep", "keep\n", 0o600)
    before = (attack.file_facts(rootdir), attack.file_facts(target))
    key = attack.ssh_key(scratch)
    exe = scratch.fake(hold=0.2)
    args = wrapper_args(state, logs, exe, "--run-as", runas.name)
    racer = attack.agent_racer(scratch, runas, state, rootdir, target)
    outcomes = collections.Counter()
    runs, hung = 0, 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < AGENT_RACE_SECONDS:
        batch = [scratch.start(args, attack.ssh_job(out, key, daemonize=False)) for _ in range(RACE_PARALLEL)]
        for r in batch:
            rc = r.wait(30)
            outcomes[rc] += 1
            hung += rc is None
            runs += 1
        if (attack.file_facts(rootdir), attack.file_facts(target)) != before:
            break
    stats = racer.stop()
    agents = attack.wait_until(lambda: not attack.procs_mentioning(scratch.root, "ssh-agent"), 10)
    after = (attack.file_facts(rootdir), attack.file_facts(target))
    attack.note("agent-dir-race", runs=runs, outcomes={str(k): v for k, v in outcomes.items()}, racer=stats)
    assert after == before, "root's cleanup followed the run-as user's links: %r -> %r" % (before, after)
    assert not hung, "runs that never ended under the attack"
    assert agents, "ssh-agents left: %s" % attack.procs_mentioning(scratch.root, "ssh-agent")
    assert stats["agent_dirs"] > 0 and stats["exchanges"] > 0, stats
    # the attack may get a run refused (1), but virt-v2v must still run in most
    assert set(outcomes) <= {0, 1} and outcomes[0] >= runs // 2, "outcomes under attack: %s" % dict(outcomes)
    assert not [p for p in attack.leftovers(state) if "secrets" in p]


# -- 3. the throttling file against the sudo caller ----------------------------------------
def test_caller_swapping_the_throttling_file_leaks_nothing_and_never_hangs(scratch, attack_users):
    """The sudo caller loops: a valid throttling file, then a symlink to a
    root-only JSON file carrying a marker, a FIFO, a hard link to a root file.
    The marker must never reach the log, state or stderr, 77% is never in
    force, and SIGTERM during the race still ends the run (no FIFO hang)."""
    caller = attack_users.caller
    state = scratch.dir("state", 0o1777)
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    marker = "TOPSECRET-%s" % os.urandom(6).hex()
    scratch.dir("rootonly", 0o700)
    secret = scratch.file("rootonly/secret.json", json.dumps({"cpu": "77%", "note": marker}), 0o600)
    linkable = scratch.file("root-owned.json", json.dumps({"cpu": "77%", "note": marker}), 0o600)
    secret_before = attack.file_facts(secret)
    exe = scratch.fake(hold=120)
    run = scratch.start(wrapper_args(state, logs, exe), vddk_job(out, daemonize=False), env=scratch.env(sudo=caller))
    doc = run.announce()
    assert attack.wait_state(doc["state_file"], started, 30), run.stderr[-2000:]
    racer = attack.throttle_racer(scratch, caller, doc["throttling_file"], secret, linkable)
    cpus = collections.Counter()
    t0 = time.monotonic()
    while time.monotonic() - t0 < THROTTLE_RACE_SECONDS and run.proc.poll() is None:
        s = attack.read_json(doc["state_file"])
        if s:
            cpus[str(s["throttling"].get("cpu"))] += 1
        time.sleep(0.05)
    t_term = time.monotonic()
    rc = _stop(run, 40)                        # during the race
    ended_after = round(time.monotonic() - t_term, 1)
    stats = racer.stop()
    final = attack.read_json(doc["state_file"]) or {}
    with open(doc["wrapper_log"], errors="replace") as f:
        wlog = f.read()
    state_text = open(doc["state_file"]).read()
    attack.note("throttling-file-swap-race", racer=stats, cpu_values_seen=dict(cpus), rc=rc,
                ended_after_sigterm=ended_after if rc is not None else None,
                leaked_in_log=marker in wlog, leaked_on_stderr=marker in run.stderr,
                log_lines=wlog.count("\n"))
    assert rc is not None, "SIGTERM did not end the run within 40 s (hung on a FIFO?); log tail:\n%s" % (
        attack.tail(doc["wrapper_log"]))
    assert marker not in wlog, "the root-only file leaked into the wrapper log: %s" % [
        line for line in wlog.splitlines() if marker in line][:3]
    assert marker not in run.stderr and marker not in state_text
    assert "77%" not in cpus and "77" not in cpus
    assert final.get("finished") is True, final
    assert attack.leftovers(state) == [], attack.tail(doc["wrapper_log"])
    assert attack.file_facts(secret) == secret_before
    assert stats["symlink"] > 0 and stats["fifo"] > 0, "the racer never swapped: %s" % stats


# -- 6. entries pre-created by another local user for the predicted tags -----------------------
PLANT = r'''
import json, os, sys
state, logs = sys.argv[1:3]
planted = {}
for tag in sys.argv[3:]:
    base = "v2v-import-" + tag
    p = os.path.join(state, base + ".state"); os.mkdir(p, 0o755); planted[p] = "dir"
    p = os.path.join(logs, base + "-wrapper.log"); os.mkfifo(p, 0o644); planted[p] = "fifo"
    p = os.path.join(logs, base + ".log")
    with open(p, "w") as f:
        f.write("not yours\n")
    os.chmod(p, 0o644); planted[p] = "file"
    p = os.path.join(state, base + ".throttle")
    with open(p, "w") as f:
        json.dump({"cpu": "10"}, f)
    os.chmod(p, 0o644); planted[p] = "throttle"
print(json.dumps(planted))
'''


@pytest.mark.parametrize("reader", [True, False], ids=["fifo-with-reader", "fifo-without-reader"])
def test_entries_precreated_for_predicted_tags_are_not_adopted(scratch, attack_users, reader):
    """Another user predicts the tags of a wrapper about to start and plants,
    for each: a directory at the state file path, a FIFO at the wrapper log
    path (held open by a reader of theirs, or not: a writer would then block),
    a file at the v2v log path, a throttling file.  The wrapper must neither
    hang nor traceback nor touch them, and run under another tag."""
    other = attack_users.other
    state = scratch.dir("state", 0o1777)
    logs = scratch.dir("logs", 0o1777)
    out = scratch.dir("out", 0o777)
    exe = scratch.fake(**attack.progress_scenario(duration=1))
    gated = attack.Gated(scratch, wrapper_args(state, logs, exe), vddk_job(out, daemonize=False))
    planted = json.loads(attack.as_user(other, PLANT, state, logs, *gated.tags(8)).stdout)
    fifos = [p for p, kind in planted.items() if kind == "fifo"]
    fifo_reader = attack.fifo_reader(scratch, other, fifos) if reader else None
    if fifo_reader:
        time.sleep(0.5)                  # it holds every FIFO open: a writer's open would succeed at once
        assert fifo_reader.alive()
    before = {p: attack.file_facts(p) for p in planted}
    gated.open()
    rc = gated.run.wait(30)
    got = fifo_reader.stop() if fifo_reader else {"bytes": {}, "writer_seen": {}, "sample": {}}
    attack.note("precreated-entries-" + ("reader" if reader else "noreader"), rc=rc, hung=rc is None,
                fifo_bytes=sum(got["bytes"].values()), fifo_writer_seen=sum(got["writer_seen"].values()),
                stderr_tail=gated.run.stderr[-300:])
    assert rc is not None, "the wrapper hung on entries another user planted; stderr: %s" % gated.run.stderr[-2000:]
    assert "Traceback" not in gated.run.stderr, gated.run.stderr[-3000:]
    assert sum(got["bytes"].values()) == 0, "the wrapper wrote into another user's FIFO: %s" % got["sample"]
    assert sum(got["writer_seen"].values()) == 0, "the wrapper opened another user's FIFO for writing"
    changed = [p for p in planted if attack.file_facts(p) != before[p]]
    assert not changed, "entries of another user were adopted or changed: %s" % [
        (p, before[p], attack.file_facts(p)) for p in changed]
    assert rc == 0, gated.run.stderr[-3000:]
    doc = gated.run.announce(1)
    assert not set(doc.values()) & set(planted), doc
    final = attack.read_json(doc["state_file"])
    assert final and final.get("finished") is True and "failed" not in final, final
    for path in doc.values():
        if os.path.exists(path):
            assert os.lstat(path).st_uid != other.uid


PLANT_MANY = r'''
import os, sys, time
state, logs, first_pid, pids, seconds = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
now, n = time.time(), 0
for second in range(seconds):
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now + second))
    for pid in range(first_pid, first_pid + pids):
        base = "v2v-import-%s-%d" % (stamp, pid)
        os.close(os.open(os.path.join(state, base + ".state"), os.O_CREAT | os.O_WRONLY, 0o644))
        n += 1
        if pid == first_pid:
            for d, suffix in ((logs, ".log"), (logs, "-wrapper.log"), (state, ".throttle")):
                os.close(os.open(os.path.join(d, base + suffix), os.O_CREAT | os.O_WRONLY, 0o644))
                n += 1
print(n)
'''


def test_100000_planted_names_do_not_stop_a_job_start(scratch, attack_users):
    """Another user plants every state name the old <time>-<pid> scheme could
    use in the next 20 seconds, for 5000 PIDs around the wrapper's (about
    100 000 empty files): the start is not delayed past its first tag and
    adopts nothing."""
    other = attack_users.other
    state = scratch.tmpfs("state", size="64m", mode="1777")
    logs = scratch.tmpfs("logs", size="16m", mode="1777")
    out = scratch.dir("out", 0o777)
    exe = scratch.fake(**attack.progress_scenario(duration=1))
    gated = attack.Gated(scratch, wrapper_args(state, logs, exe), vddk_job(out, daemonize=False))
    t0 = time.monotonic()
    planted = int(attack.as_user(other, PLANT_MANY, state, logs, max(1, gated.pid - 2500), 5000, 20,
                                 timeout=600).stdout)
    plant_seconds = round(time.monotonic() - t0, 1)
    gated.open()
    rc = gated.run.wait(60)
    doc = gated.run.announce(1) if rc == 0 else {}
    wlog = open(doc["wrapper_log"]).read() if doc else ""
    attack.note("planted-100000-names", planted=planted, plant_seconds=plant_seconds, rc=rc,
                tag_retries="earlier tags" in wlog)
    assert planted >= 100000
    assert rc == 0, gated.run.stderr[-2000:]
    assert "earlier tags" not in wlog                  # the first tag drawn was free
    tag = os.path.basename(doc["state_file"])[len("v2v-import-"):-len(".state")]
    assert tag.split("-")[1] != str(gated.pid) and len(tag.split("-")[1]) == 12
    assert attack.read_json(doc["state_file"]).get("finished") is True
    assert all(os.lstat(p).st_uid == 0 for p in (doc["state_file"], doc["wrapper_log"]))


@pytest.mark.parametrize("which", ["state", "log", "metrics"])
def test_a_directory_owned_by_another_user_is_refused(scratch, attack_users, which):
    """A state, log or metrics directory of another unprivileged user (even
    one that looks private, 0755) is refused in one line naming the option
    and its variable: that user could swap or forge what is in it."""
    other, caller = attack_users.other, attack_users.caller
    dirs = {w: scratch.dir(w, 0o755) for w in ("state", "log", "metrics")}
    dirs[which] = scratch.dir("theirs", 0o755, owner=other)
    out = scratch.dir("out", 0o777)
    record = os.path.join(out, "record.json")
    exe = scratch.fake(record=record)
    args = wrapper_args(dirs["state"], dirs["log"], exe) + ["--metrics-dir", dirs["metrics"]]
    run = scratch.start(args, vddk_job(out, daemonize=False), env=scratch.env(sudo=caller))
    rc = run.wait(30)
    attack.note("foreign-%s-dir" % which, rc=rc, stderr=run.stderr[-300:])
    assert rc == 1, run.stderr[-2000:]
    attack.assert_one_error_line(run.stderr, "--%s-dir (VIRT_V2V_WRAPPER_%s_DIR)" % (which, which.upper()))
    assert "owned by uid %d" % other.uid in run.stderr
    assert not os.path.exists(record)
    assert os.listdir(dirs[which]) == []


def test_a_lock_directory_of_another_user_refuses_the_start(scratch, attack_users):
    """Somebody else made the lock directory first: without leases a kill -9
    would leave the secrets and a state file that never finishes, so the
    start is refused, loudly, in one line naming the variable."""
    other = attack_users.other
    state, logs = scratch.dir("state"), scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    record = os.path.join(out, "record.json")
    lock = scratch.dir("their-lock", 0o700, owner=other)
    exe = scratch.fake(record=record)
    run = scratch.start(wrapper_args(state, logs, exe), vddk_job(out, daemonize=False),
                        env=scratch.env(VIRT_V2V_WRAPPER_LOCK_DIR=lock))
    rc = run.wait(30)
    attack.note("foreign-lock-dir", rc=rc, stderr=run.stderr[-300:])
    assert rc == 1, run.stderr[-2000:]
    attack.assert_one_error_line(run.stderr, "VIRT_V2V_WRAPPER_LOCK_DIR")
    assert "owned by uid 0" in run.stderr and str(other.uid) in run.stderr
    assert not os.path.exists(record) and os.listdir(state) == [] and os.listdir(logs) == []


def _held_run_as_caller(scratch, caller, state):
    """A foreground run invoked "through sudo" by ``caller``, held in the copy
    until stopped; returns (run, announced paths) once virt-v2v started."""
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    exe = scratch.fake(hold=60)
    run = scratch.start(wrapper_args(state, logs, exe), vddk_job(out, daemonize=False), env=scratch.env(sudo=caller))
    doc = run.announce()
    assert attack.wait_state(doc["state_file"], started, 30), run.stderr[-2000:]
    return run, doc


PLANT_THROTTLE = r'''
import json, os, sys
tf = sys.argv[1]
d = os.path.dirname(tf)
state = os.path.dirname(d)
tried = {}
def attempt(name, fn):
    try:
        fn()
        tried[name] = "done"
    except OSError as e:
        tried[name] = e.errno
attempt("create", lambda: os.close(os.open(tf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)))
attempt("symlink", lambda: os.symlink("/etc/shadow", tf))
attempt("mkdir", lambda: os.mkdir(tf))
attempt("rename-dir", lambda: os.rename(d, os.path.join(state, "moved")))
attempt("remove-dir", lambda: os.rmdir(d))
attempt("list", lambda: os.listdir(d))
print(json.dumps(tried))
'''


def test_another_user_cannot_plant_or_replace_the_throttling_file(scratch, attack_users):
    """The throttling file is in the job's own directory, which belongs to the
    sudo caller (0700) inside a sticky shared state directory: another user
    can neither create, link, block nor replace it, nor move the directory;
    the caller writes it with a plain create (as an SFTP put does), replaces
    it with a rename, and both are read."""
    other, caller = attack_users.other, attack_users.caller
    run, doc = _held_run_as_caller(scratch, caller, scratch.dir("state", 0o1777))
    tf = doc["throttling_file"]
    st = os.lstat(os.path.dirname(tf))
    tried = json.loads(attack.as_user(other, PLANT_THROTTLE, tf).stdout)
    attack.write_as(caller, tf, json.dumps({"cpu": "50"}))

    def reads():
        return open(doc["wrapper_log"]).read().count("throttling file read")
    first = attack.wait_until(lambda: reads() >= 1, 10)
    attack.as_user(caller, "import os,sys\nopen(sys.argv[1]+'.new','w').write(sys.argv[2])\n"
                           "os.rename(sys.argv[1]+'.new',sys.argv[1])\n", tf, json.dumps({"cpu": "25"}))
    second = attack.wait_until(lambda: reads() >= 2, 10)
    rc = _stop(run)
    attack.note("throttling-dir-vs-other-user", tried=tried, mode=oct(st.st_mode & 0o7777),
                owner=st.st_uid, first=bool(first), second=bool(second))
    assert (st.st_uid, st.st_mode & 0o7777) == (caller.uid, 0o700)
    assert all(v in (errno.EACCES, errno.EPERM) for v in tried.values()), tried
    assert first and second, "the caller's throttling files were not read; log tail:\n%s" % attack.tail(
        doc["wrapper_log"])
    assert rc is not None and not os.path.lexists(os.path.dirname(tf))
    assert attack.read_json(doc["state_file"]).get("finished") is True


def test_what_the_caller_moves_into_its_throttling_directory_is_removed_with_its_rights(
        scratch, attack_users):
    """The review's F4: the caller moves into its throttling directory a
    directory of its own holding a root-owned directory (with root's file)
    and another user's private directory.  The wrapper's cleanup must not
    delete them for the caller, nor flatten their entries into its reach;
    what the caller may remove goes, the rest stays and is reported."""
    other, caller = attack_users.other, attack_users.caller
    run, doc = _held_run_as_caller(scratch, caller, scratch.dir("state", 0o1777))
    scratch.dir("home", 0o755, owner=caller)
    loot = scratch.dir("home/loot", 0o755, owner=caller)
    scratch.dir("home/loot/root-owned", 0o755)
    scratch.file("home/loot/root-owned/important.conf", "root's\n", 0o644)
    scratch.dir("home/loot/other-private", 0o700, owner=other)
    scratch.file("home/loot/other-private/thesis.tex", "other's\n", 0o600, owner=other)
    scratch.file("home/loot/mine", "the caller's own\n", 0o644, owner=caller)
    inside = os.path.join(os.path.dirname(doc["throttling_file"]), "loot")
    attack.as_user(caller, "import os,sys\nos.rename(sys.argv[1], sys.argv[2])\n", loot, inside)
    rc = _stop(run)
    assert rc is not None
    # left where the caller put them: in its directory, moved aside to a hidden name first
    state_dir = os.path.dirname(os.path.dirname(inside))
    found = glob.glob(os.path.join(state_dir, ".rm-*", "loot")) + [inside]
    inside = next(p for p in found if os.path.isdir(p)) if any(os.path.isdir(p) for p in found) else inside
    moved = os.path.join(inside, "root-owned", "important.conf")
    kept = [p for p in (moved, os.path.join(inside, "other-private", "thesis.tex")) if os.path.exists(p)]
    attack.note("throttling-dir-removal-rights", kept=len(kept), rc=rc)
    assert len(kept) == 2, "root removed what only root or the other user may remove"
    with open(moved) as f:
        assert f.read() == "root's\n"
    assert not os.path.exists(os.path.join(inside, "mine"))     # the caller's own: removed
    assert attack.read_json(doc["state_file"]).get("finished") is True


# -- 10. bad inputs --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_luks_vault_that_is_not_a_regular_file(scratch, kind):
    state = scratch.dir("state")
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    record = os.path.join(out, "record.json")
    vault = scratch.fifo("vault", 0o600) if kind == "fifo" else scratch.dir("vault", 0o700)
    exe = scratch.fake(record=record)
    run = scratch.start(wrapper_args(state, logs, exe), vddk_job(out, daemonize=False, luks_keys_vault=vault))
    t0 = time.monotonic()
    rc = run.wait(15)
    attack.note("luks-vault-" + kind, rc=rc, hung=rc is None, seconds=round(time.monotonic() - t0, 1),
                stderr=run.stderr[-300:])
    assert rc is not None, "the wrapper hung on a %s as luks_keys_vault" % kind
    assert rc == 1, run.stderr[-2000:]
    attack.assert_one_error_line(run.stderr, "luks_keys_vault")
    assert not os.path.exists(record)
    assert os.listdir(state) == []


# (An undeletable throttling file -- the caller's in a sticky directory a non-root wrapper
# could not clean -- no longer exists: the file is in the job's own directory, which the
# wrapper empties by descriptor.  Reading such a file once is tests/test_throttle.py's.)


# -- 11. who owns and who can read what --------------------------------------------------------
POLL_STATES = r'''
import json, os, sys, time
state, stop = sys.argv[1], sys.argv[2]
reads = bad = 0
sample = []
while not os.path.exists(stop):
    for name in os.listdir(state):
        if not name.endswith(".state"):
            continue
        try:
            with open(os.path.join(state, name), "rb") as f:
                raw = f.read()
        except (FileNotFoundError, PermissionError):
            continue
        reads += 1
        try:
            json.loads(raw)
        except ValueError:
            bad += 1
            sample = sample[:4] + [raw[:60].decode("utf-8", "replace")]
print(json.dumps({"reads": reads, "bad": bad, "sample": sample}))
'''


def test_a_reader_polling_during_real_starts_never_sees_an_empty_state_file(scratch, attack_users):
    """Another user's process reads every state file in a tight loop while 12
    real wrappers start (4 at a time): each name must appear with its first
    complete content, never empty or torn."""
    state = scratch.dir("state", 0o1777)
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    exe = scratch.fake(hold=0.2)
    stop = scratch.path("stop-polling")
    poller = subprocess.Popen([attack.SYSTEM_PYTHON, "-c", POLL_STATES, state, stop], stdout=subprocess.PIPE,
                              text=True, **attack.demote(attack_users.other))
    rcs = []
    try:
        for _ in range(3):
            runs = [scratch.start(wrapper_args(state, logs, exe), vddk_job(out, daemonize=False))
                    for _ in range(4)]
            rcs += [r.wait(90) for r in runs]
    finally:
        open(stop, "w").close()
        seen = json.loads(poller.communicate(timeout=30)[0])
    attack.note("state-file-polled-during-starts", starts=len(rcs), **seen)
    assert rcs == [0] * 12, rcs
    assert seen["reads"] > 0
    assert seen["bad"] == 0, "empty or torn state files seen: %s" % seen


SQUAT_TAGS = r"""
import ctypes, json, os, re, struct, sys
state, logs, stop, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
tag_re = re.compile(r"v2v-import-(\d{8}T\d{6}-[0-9a-f]{12})")
libc = ctypes.CDLL(None, use_errno=True)
IN_CREATE, IN_MOVED_TO, IN_NONBLOCK = 0x100, 0x80, 0o4000
fd = libc.inotify_init1(IN_NONBLOCK)
for d in (state, logs):
    if libc.inotify_add_watch(fd, d.encode(), IN_CREATE | IN_MOVED_TO) < 0:
        sys.exit("inotify_add_watch %s: errno %d" % (d, ctypes.get_errno()))
seen, planted, won = set(), [], []
def squat(tag, name):
    # mode "state": plant <tag>.state for any name showing a tag (the review's F6);
    # mode "throttle": take <tag>.throttle.d once <tag>.state shows it (after the fix)
    try:
        if mode == "state":
            os.symlink("/nonexistent", os.path.join(state, "v2v-import-%s.state" % tag))
        elif name.endswith(".state"):
            os.mkdir(os.path.join(state, "v2v-import-%s.throttle.d" % tag))
        else:
            return
        planted.append(tag)
    except FileExistsError:
        won.append(tag)          # the wrapper had taken it first
while not os.path.exists(stop):
    try:
        buf = os.read(fd, 65536)
    except BlockingIOError:
        continue                 # a tight loop: react as fast as a local user can
    pos = 0
    while pos < len(buf):
        _wd, _mask, _cookie, length = struct.unpack_from("iIII", buf, pos)
        name = buf[pos + 16:pos + 16 + length].rstrip(b"\0").decode("utf-8", "replace")
        pos += 16 + length
        m = tag_re.search(name)
        if m and (m.group(1), name.endswith(".state")) not in seen:
            seen.add((m.group(1), name.endswith(".state")))
            squat(m.group(1), name)
print(json.dumps({"planted": planted, "too_late": won}))
"""


@pytest.mark.parametrize("mode", ["state", "throttle"])
def test_a_squatter_watching_the_shared_state_dir_refuses_no_start(scratch, attack_users, mode):
    """Review F6: another user watches a world-writable state directory (and
    the readable log directory) with inotify in a tight loop, and for every
    tag any new name shows plants a symlink at ``v2v-import-<tag>.state``
    ("state"), or takes ``v2v-import-<tag>.throttle.d`` the moment the state
    file shows the tag ("throttle").  The state file is taken before any
    name shows the tag, and a taken throttling name gives way to one with a
    fresh token: every start succeeds."""
    state = scratch.dir("state", 0o1777)
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    exe = scratch.fake(hold=0.1)
    stop = scratch.path("stop-squatting")
    squatter = scratch.popen([attack.SYSTEM_PYTHON, "-c", SQUAT_TAGS, state, logs, stop, mode],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             **attack.demote(attack_users.other))
    time.sleep(0.5)                                  # its watches are in place
    rcs, errors = [], []
    try:
        for _ in range(8):
            run = scratch.start(wrapper_args(state, logs, exe), vddk_job(out, daemonize=False))
            rcs.append(run.wait(90))
            errors += [run.stderr[-300:]] if rcs[-1] else []
    finally:
        open(stop, "w").close()
        out_text, err_text = squatter.communicate(timeout=30)
    assert squatter.returncode == 0, err_text
    seen = json.loads(out_text)
    assert rcs == [0] * 8, errors
    announced = [os.path.basename(os.path.dirname(r.announce(1)["throttling_file"]))
                 for r in scratch.runs]
    fresh = [n for n in announced if n.count(".") == 3]   # v2v-import-<tag>.<token>.throttle.d
    attack.note("squatter-watching-state-dir", mode=mode, starts=len(rcs), rcs=rcs,
                planted=len(seen["planted"]), too_late=len(seen["too_late"]),
                fresh_throttle_names=len(fresh))
    assert len(seen["planted"]) + len(seen["too_late"]) >= 8      # it saw every job's names
    if mode == "state":
        assert seen["planted"] == [] and fresh == []   # always too late
    else:
        assert len(fresh) == len(seen["planted"])      # each name it won gave way to a fresh one
    assert not set(announced) & {"v2v-import-%s.throttle.d" % t for t in seen["planted"]}


def test_logs_and_state_belong_to_root_and_are_readable_by_the_caller(scratch, attack_users):
    caller = attack_users.caller
    state = scratch.dir("state")
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    exe = scratch.fake(**attack.progress_scenario(duration=1))
    run = scratch.start(wrapper_args(state, logs, exe), vddk_job(out, daemonize=False), env=scratch.env(sudo=caller))
    rc = run.wait(60)
    assert rc == 0, run.stderr[-2000:]
    doc = run.announce(1)
    wst = os.lstat(doc["wrapper_log"])
    assert (wst.st_uid, wst.st_mode & 0o7777) == (0, 0o644), "wrapper log is uid %d mode %o" % (
        wst.st_uid, wst.st_mode & 0o7777)
    sst = os.lstat(doc["state_file"])
    assert (sst.st_uid, sst.st_mode & 0o7777) == (0, 0o644)
    assert json.loads(attack.read_as(caller, doc["state_file"]))["finished"] is True
    assert "starting" in attack.read_as(caller, doc["wrapper_log"])
    attack.read_as(caller, doc["v2v_log"])


def test_state_dir_created_by_the_wrapper_lets_the_caller_throttle(scratch, attack_users):
    caller = attack_users.caller
    state = scratch.path("new-state")
    run, doc = _held_run_as_caller(scratch, caller, state)
    created = attack.as_user(caller, "import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT|os.O_EXCL,0o644)\n"
                                     "os.write(fd,b'{\"cpu\": \"50\"}')\n", doc["throttling_file"], check=False)
    read = created.returncode == 0 and attack.wait_until(
        lambda: "throttling file read" in open(doc["wrapper_log"]).read(), 10)
    readable = attack.as_user(caller, "import json,sys\njson.load(open(sys.argv[1]))\n", doc["state_file"],
                              check=False).returncode == 0
    rc = _stop(run)
    st = os.stat(state)
    attack.note("created-state-dir", mode=oct(st.st_mode & 0o7777), uid=st.st_uid, gid=st.st_gid,
                caller_created=created.returncode == 0, read=bool(read))
    assert created.returncode == 0, "the caller cannot create the throttling file in %s (mode %o, %d:%d): %s" % (
        state, st.st_mode & 0o7777, st.st_uid, st.st_gid, created.stderr.strip())
    assert read, "the caller's throttling file was not read"
    assert readable
    assert rc is not None


# -- 8. files the caller names (--job, *_file secrets) against another user ---------------
_SWAPPER = r"""
import os, sys, time
path, target, until = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
tmp_link, tmp_file = path + ".l", path + ".f"
n = 0
while time.monotonic() < until:
    for make in (lambda p: os.symlink(target, p), lambda p: open(p, "w").write("{}")):
        tmp = tmp_link if n % 2 == 0 else tmp_file
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        make(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            pass
        n += 1
print(n)
"""


def test_another_user_cannot_redirect_a_named_file_to_a_root_secret(scratch, attack_users):
    """The job names a password file in a shared sticky directory.  Another user races to
    put there, in turn, a symlink to a root-only file and a regular file of their own,
    renamed over each other many times a second.  Every wrapper run (the caller is the
    sudo caller) must refuse -- the caller's own open() of the link is denied (the target
is root's), the file is not the caller's -- and no refusal,
    log line or output ever carries the root-only content."""
    other, caller = attack_users.other, attack_users.caller
    shared = scratch.dir("shared", 0o1777)
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    scratch.dir("rootonly", 0o700)
    secret_text = "ROOTSECRET-%s" % os.urandom(8).hex()
    target = scratch.file("rootonly/shadow", secret_text + "\n", 0o600)
    named = os.path.join(shared, "pw")
    job = vddk_job(out, vmware_password_file=named)
    del job["vmware_password"]
    exe = scratch.fake()
    racer = subprocess.Popen([attack.SYSTEM_PYTHON, "-c", _SWAPPER, named, target, str(RACE_SECONDS / 3)],
                             stdout=subprocess.PIPE, text=True, env=attack.user_env(other), cwd="/",
                             **attack.demote(other))
    try:
        outcomes = collections.Counter()
        while racer.poll() is None and sum(outcomes.values()) < RACE_ITERATIONS:
            run = attack.Run(scratch, wrapper_args(scratch.dir(scratch.unique("state"), 0o1777), logs, exe,
                                                   "--validate"), job, env=scratch.env(sudo=caller))
            assert run.wait(30) is not None, "the wrapper hung"
            text = run.stdout + run.stderr
            assert secret_text not in text
            assert run.proc.returncode == 1, text
            # the caller's own open() decides (wrapper/security/boundary.py): the link
            # leads to a file the caller cannot read, the file is not the caller's
            outcomes["link" if "Permission denied" in text else "theirs" if "owned by uid %d" % other.uid in text
                     else "missing" if "No such file or directory" in text else text] += 1
    finally:
        swaps = racer.communicate(timeout=RACE_SECONDS)[0].strip()
    assert set(outcomes) <= {"link", "theirs", "missing"}, outcomes
    assert outcomes["link"] and outcomes["theirs"], outcomes
    attack.note("named-file-race", runs=sum(outcomes.values()), swaps=int(swaps or 0), **outcomes)
    for name in os.listdir(logs):
        with open(os.path.join(logs, name), errors="replace") as f:
            assert secret_text not in f.read()


def test_a_fifo_or_a_foreign_dir_as_the_job_file_never_blocks(scratch, attack_users):
    other = attack_users.other
    shared = scratch.dir("shared", 0o1777)
    theirs = scratch.dir("theirs", 0o755, owner=other)
    attack.as_user(other, "import os,sys\nos.mkfifo(sys.argv[1])\n", os.path.join(shared, "job.json"))
    attack.write_as(other, os.path.join(theirs, "job.json"), "{}")
    exe = scratch.fake()
    state, logs = scratch.dir("state", 0o1777), scratch.dir("logs")
    for path, words in ((os.path.join(shared, "job.json"), "is not a regular file"),
                        (os.path.join(theirs, "job.json"), "owned by uid %d, not by you or root" % other.uid)):
        run = attack.Run(scratch, wrapper_args(state, logs, exe, "--job", path), "")
        assert run.wait(20) is not None, "the wrapper blocked on %s" % path
        assert run.proc.returncode == 1 and words in run.stderr, run.stderr
        assert run.stderr.count("\n") == 1
    assert os.listdir(state) == []
