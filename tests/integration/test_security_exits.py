"""Ways out the caller or the host forces on the wrapper: an answer that
cannot be written, a terminal hung up under a foreground run, a session leader
that exits while the daemon detaches, directories it cannot use, a job too big
to read.  Each must end in a clean exit: one line on stderr, nothing started or
left behind, or a state file that says ``finished``.
"""
import json
import os
import re
import shlex
import subprocess
import time

import pytest

from tests.integration import attack
from tests.integration.attack import SOURCE_ROOT, ssh_job, vddk_job, wrapper_args
from tests.integration.fx_attack import *  # noqa: F401,F403 (fixtures)

pytestmark = pytest.mark.integration

DETACH_RUNS = int(os.environ.get("V2VW_DETACH_RUNS", "30"))


def agent_pids(wrapper_log_text):
    return [int(p) for p in re.findall(r"ssh-agent started \(pid (\d+)", wrapper_log_text)]


def read_logs(logs):
    text = ""
    for name in sorted(os.listdir(logs)):
        if name.endswith("-wrapper.log"):
            with open(os.path.join(logs, name), errors="replace") as f:
                text += f.read()
    return text


# -- 2. the answer cannot be written -----------------------------------------------------
@pytest.mark.parametrize("daemonize", [True, False], ids=["daemon", "foreground"])
@pytest.mark.parametrize("stdout", ["closed", "broken"], ids=["stdout-closed", "stdout-epipe"])
def test_unwritable_answer_refuses_and_cleans_up(scratch, stdout, daemonize):
    state = scratch.dir("state")
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    record = os.path.join(out, "record.json")
    exe = scratch.fake(record=record, hold=5)
    key = attack.ssh_key(scratch)
    run = scratch.start(wrapper_args(state, logs, exe), ssh_job(out, key, daemonize=daemonize), stdout=stdout)
    rc = run.wait(30)
    time.sleep(2)                         # a daemon that should not exist would have started virt-v2v by now
    wlog = read_logs(logs)
    agents = agent_pids(wlog)
    live_agents = [p for p in agents if attack.pid_alive(p)] + attack.procs_mentioning(scratch.root, "ssh-agent")
    states = [os.path.join(state, n) for n in os.listdir(state) if n.endswith(".state")]
    finals = [attack.read_json(p) for p in states]
    attack.note("unwritable-answer-%s-%s" % (stdout, "daemon" if daemonize else "foreground"), rc=rc,
                stderr=run.stderr[-400:], virt_v2v_ran=os.path.exists(record), agents_started=len(agents),
                agents_left=len(set(live_agents)), left=attack.leftovers(state, scratch.tmp), states=finals)
    assert rc is not None, "the wrapper hung"
    assert rc == 1, "exit %s; stderr: %s" % (rc, run.stderr[-2000:])
    attack.assert_one_error_line(run.stderr)
    assert not os.path.exists(record), "virt-v2v was started although the caller never got the answer"
    assert not live_agents, "ssh-agent left running: %s" % live_agents
    assert attack.leftovers(state, scratch.tmp) == [], wlog[-3000:]
    for final in finals:
        assert final is not None and final.get("failed") is True and final.get("finished") is True, final


# -- 4. SIGHUP: the terminal of a foreground run goes away ------------------------------------
def test_sighup_from_a_hung_up_terminal_stops_virt_v2v(scratch):
    state = scratch.dir("state")
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    exe = scratch.fake(**attack.progress_scenario(duration=60, chunks=600))
    job = scratch.file("job.json", json.dumps(vddk_job(out, daemonize=False)), 0o600)
    cmd = " ".join(shlex.quote(a) for a in [attack.WRAPPER_PYTHON, "-m", "wrapper", *wrapper_args(state, logs, exe)])
    # not the last command: the shell stays the session leader, the wrapper its child
    session = attack.PtySession(scratch, "%s < %s; echo wrapper-exited-$?" % (cmd, shlex.quote(job)),
                                env=scratch.env())
    doc = session.answer(30)
    s = attack.wait_state(doc["state_file"], lambda s: s.get("started"), 30)
    assert s, "never started: %s" % session.text()[-2000:]
    v2v_pid, wrapper_pid = s["pid"], s["wrapper_pid"]
    leader = session.proc.pid
    assert os.getsid(leader) == leader and os.getsid(wrapper_pid) == leader
    with open("/proc/%d/stat" % wrapper_pid) as f:
        assert int(f.read().rsplit(")", 1)[1].split()[4]) != 0, "the wrapper has no controlling terminal"
    time.sleep(1)
    t0 = time.monotonic()
    session.hangup()
    final = attack.wait_state(doc["state_file"], lambda s: s.get("finished"), 40)
    took = round(time.monotonic() - t0, 1)
    v2v_gone = attack.wait_until(lambda: not attack.pid_alive(v2v_pid), 10)
    last = attack.read_json(doc["state_file"])
    attack.note("sighup", finished=bool(final), seconds=took, v2v_gone=bool(v2v_gone),
                wrapper_alive=attack.pid_alive(wrapper_pid), last_message=(last or {}).get("last_message"),
                secret_dirs=len(attack.leftovers(state)))
    assert final, "no finished state %ss after the hangup (wrapper %s); last state: %s; log tail:\n%s" % (
        took, "alive" if attack.pid_alive(wrapper_pid) else "gone", last, attack.tail(doc["wrapper_log"]))
    assert final.get("failed") is True
    assert "SIGHUP" in final["last_message"]["message"], final["last_message"]
    assert v2v_gone, "virt-v2v (pid %d) still runs after the hangup" % v2v_pid
    assert attack.leftovers(state) == []
    assert attack.wait_until(lambda: not attack.pid_alive(wrapper_pid), 10)


# -- 5. detaching while the session leader exits ---------------------------------------------
def test_daemon_survives_its_session_leader_exiting(scratch):
    """``script`` gives the wrapper a pty session whose leader exits as soon as
    the wrapper's caller process does: every run that answered with exit 0
    must get its daemon through (started, finished, secrets gone)."""
    state = scratch.dir("state")
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    exe = scratch.fake(hold=0.3)
    env = scratch.env(SHELL="/bin/sh")
    base = " ".join(shlex.quote(a) for a in [attack.WRAPPER_PYTHON, "-m", "wrapper", *wrapper_args(state, logs, exe)])
    answered, refused = [], []
    for i in range(DETACH_RUNS):
        job = scratch.file("job-%d.json" % i, json.dumps(vddk_job(out)), 0o600)
        # odd runs: the shell is the session leader; even runs: sh execs the wrapper, which leads
        cmd = "%s < %s%s" % (base, shlex.quote(job), "; exit $?" if i % 2 else "")
        p = subprocess.run(["script", "-qec", cmd, "/dev/null"], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=60, env=env, cwd=SOURCE_ROOT)
        doc = None
        for line in p.stdout.replace("\r", "\n").splitlines():
            if line.startswith("{") and "state_file" in line:
                doc = json.loads(line)
        if p.returncode == 0 and doc:
            answered.append((i, doc))
        else:
            refused.append((i, p.returncode, p.stdout[-300:], p.stderr[-300:]))
    deadline = time.monotonic() + 45
    lost = []
    for i, doc in answered:
        final = attack.wait_state(doc["state_file"], lambda s: s.get("finished"),
                                  max(0.5, deadline - time.monotonic()))
        if not (final and final.get("started") and "failed" not in final):
            lost.append((i, attack.read_json(doc["state_file"]), attack.tail(doc["wrapper_log"], 3)))
    left = attack.leftovers(state)
    attack.note("detach-from-session-leader", runs=DETACH_RUNS, answered=len(answered), refused=len(refused),
                daemon_lost=len(lost), lost_runs=[x[0] for x in lost], secret_dirs_left=len(left))
    assert not refused, "runs that did not answer with exit 0: %s" % refused[:3]
    assert not lost, "%d of %d answered runs never finished (no daemon): %s" % (
        len(lost), len(answered), lost[:3])
    assert left == []


# -- 7. directories the wrapper cannot use ----------------------------------------------------
@pytest.mark.parametrize("which", ["state", "log"])
@pytest.mark.parametrize("how", ["user-vs-root-dir", "root-vs-readonly-fs"])
def test_unusable_directory_is_refused_in_one_line(scratch, attack_users, which, how):
    user = attack_users.caller if how == "user-vs-root-dir" else None
    good_state = scratch.dir("state", 0o755, owner=user)
    good_logs = scratch.dir("logs", 0o755, owner=user)
    out = scratch.dir("out", 0o777)
    record = os.path.join(out, "record.json")
    bad = scratch.dir("rootdir", 0o755) if user else scratch.tmpfs("readonly", size="64k", ro=True)
    exe = scratch.fake(record=record)
    state, logs = (bad, good_logs) if which == "state" else (good_state, bad)
    env = scratch.user_wrapper_env(user) if user else scratch.env()
    run = scratch.start(wrapper_args(state, logs, exe), vddk_job(out, daemonize=False), user=user, env=env)
    rc = run.wait(30)
    attack.note("unusable-%s-dir-%s" % (which, how), rc=rc, stderr=run.stderr[-500:])
    assert rc == 1, "exit %s: %s" % (rc, run.stderr[-2000:])
    attack.assert_one_error_line(run.stderr, "--%s-dir" % which)
    assert not os.path.exists(record)


# -- 10. a job too large to be one ---------------------------------------------------------
def test_oversized_job_is_refused(scratch):
    state = scratch.dir("state")
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    record = os.path.join(out, "record.json")
    exe = scratch.fake(record=record)
    job = vddk_job(out, daemonize=False, padding="x" * (2 << 20))
    run = scratch.start(wrapper_args(state, logs, exe), job)
    rc = run.wait(30)
    attack.note("oversized-job", rc=rc, stderr=run.stderr[-300:], virt_v2v_ran=os.path.exists(record))
    assert rc == 1, "exit %s: %s" % (rc, run.stderr[-500:])
    attack.assert_one_error_line(run.stderr)
    assert not os.path.exists(record)
    assert os.listdir(state) == []
