"""Faults the wrapper cannot prevent but must survive: the state filesystem
fills up during a run; the daemon is killed with SIGKILL (no cleanup code
runs).  Afterwards nothing may be left running or lying around, and the state
file must say how the run ended.
"""
import os
import re
import signal
import subprocess
import time

import pytest

from tests.integration import attack
from tests.integration.attack import SOURCE_ROOT, ssh_job, vddk_job, wrapper_args
from tests.integration.fx_attack import *  # noqa: F401,F403 (fixtures)

pytestmark = pytest.mark.integration


def started(s):
    return s.get("started") or s.get("finished")


# -- 8. the state filesystem fills up -------------------------------------------------------
def test_full_state_filesystem_still_ends_with_finished(scratch):
    state = scratch.tmpfs("state", size="512k", mode="0755")
    logs = scratch.dir("logs")
    out = scratch.dir("out", 0o777)
    exe = scratch.fake(**attack.progress_scenario(duration=8, chunks=80))
    run = scratch.start(wrapper_args(state, logs, exe), vddk_job(out, daemonize=False))
    doc = run.announce()
    assert attack.wait_state(doc["state_file"], started, 30), run.stderr[-2000:]
    fill = os.path.join(state, "fill")
    dd = subprocess.run(["dd", "if=/dev/zero", "of=" + fill, "bs=4k"], capture_output=True, text=True, timeout=60)
    assert "No space left" in dd.stderr, dd.stderr
    rc = run.wait(90)
    final = attack.read_json(doc["state_file"])
    log_tail = attack.tail(doc["wrapper_log"], 30)
    os.unlink(fill)
    left = [n for n in os.listdir(state) if n != os.path.basename(doc["state_file"])]
    attack.note("full-state-fs", rc=rc, finished=bool(final and final.get("finished")),
                last_message=(final or {}).get("last_message"), traceback="Traceback" in log_tail, left=left)
    assert rc is not None, "the wrapper did not end (disk full)"
    assert final is not None, "the state file is not valid JSON after the disk filled up"
    assert final.get("finished") is True, "no finished in the state file: %s\nlog tail:\n%s" % (final, log_tail)
    assert "Traceback" not in log_tail, log_tail
    assert left == [], "left in the state dir: %s" % left


# -- 9. SIGKILL of the daemon -----------------------------------------------------------------
def _kill_daemon_during_copy(scratch, job, exe_scenario):
    state = scratch.dir("state")
    logs = scratch.dir("logs")
    exe = scratch.fake(**exe_scenario)
    run = scratch.start(wrapper_args(state, logs, exe), job)
    assert run.wait(30) == 0, run.stderr[-2000:]
    doc = run.announce(1)
    s = attack.wait_state(doc["state_file"], lambda s: s.get("started"), 30)
    assert s, "never started; log tail:\n%s" % attack.tail(doc["wrapper_log"])
    wrapper_pid, v2v_pid = s["wrapper_pid"], s["pid"]
    time.sleep(1)                           # virt-v2v is replaying its log (copying)
    assert attack.pid_alive(wrapper_pid) and attack.pid_alive(v2v_pid)
    secret_dirs = attack.leftovers(state)
    assert secret_dirs, "no secret directory during the run?"
    os.kill(wrapper_pid, signal.SIGKILL)
    assert attack.wait_until(lambda: not attack.pid_alive(wrapper_pid), 10)
    return state, logs, doc, v2v_pid


def test_sigkill_ssh_agent_and_virt_v2v_die_and_status_reclaims(scratch):
    out = scratch.dir("out", 0o777)
    key = attack.ssh_key(scratch)
    state, logs, doc, v2v_pid = _kill_daemon_during_copy(
        scratch, ssh_job(out, key), attack.progress_scenario(duration=60, chunks=600))
    wlog = open(doc["wrapper_log"]).read()
    agents = [int(p) for p in re.findall(r"ssh-agent started \(pid (\d+)", wlog)]
    assert agents, "no ssh-agent was started?"
    t0 = time.monotonic()
    agent_gone = attack.wait_until(lambda: not any(attack.pid_alive(p) for p in agents), 15)
    v2v_gone = attack.wait_until(lambda: not attack.pid_alive(v2v_pid), max(1, 15 - (time.monotonic() - t0)))
    status = subprocess.run([attack.WRAPPER_PYTHON, "-m", "wrapper", "status", "--state-dir", state],
                            capture_output=True, text=True, timeout=60, cwd=SOURCE_ROOT, env=scratch.env())
    final = attack.read_json(doc["state_file"]) or {}
    left = attack.leftovers(state, scratch.tmp)
    attack.note("sigkill-ssh", agent_gone=bool(agent_gone), v2v_gone=bool(v2v_gone),
                status_rc=status.returncode, final={k: final.get(k) for k in ("failed", "finished", "last_message")},
                left=left)
    assert agent_gone, "ssh-agent %s outlived the SIGKILLed wrapper by 15 s" % agents
    assert v2v_gone, "virt-v2v (pid %d) outlived the SIGKILLed wrapper by 15 s" % v2v_pid
    assert "Traceback" not in status.stderr, status.stderr
    assert left == [], "left after status: %s" % left
    assert final.get("failed") is True and final.get("finished") is True, final
    assert "died" in final["last_message"]["message"], final["last_message"]


def test_sigkill_vddk_next_wrapper_start_reclaims(scratch):
    out = scratch.dir("out", 0o777)
    state, logs, doc, v2v_pid = _kill_daemon_during_copy(
        scratch, vddk_job(out), attack.progress_scenario(duration=60, chunks=600))
    v2v_gone = attack.wait_until(lambda: not attack.pid_alive(v2v_pid), 15)
    exe = scratch.fake("bin2", hold=0.1)
    nxt = scratch.start(wrapper_args(state, logs, exe), vddk_job(out, daemonize=False))
    rc = nxt.wait(60)
    new_doc = nxt.announce(1) if rc == 0 else {}
    final = attack.read_json(doc["state_file"]) or {}
    left = attack.leftovers(state, scratch.tmp)
    attack.note("sigkill-vddk-reclaim-on-start", v2v_gone=bool(v2v_gone), next_rc=rc,
                final={k: final.get(k) for k in ("failed", "finished", "last_message")}, left=left)
    assert v2v_gone, "virt-v2v (pid %d) outlived the SIGKILLed wrapper by 15 s" % v2v_pid
    assert rc == 0, nxt.stderr[-2000:]
    assert new_doc["state_file"] != doc["state_file"]
    assert left == [], "the dead run's secret directory is still there: %s" % left
    assert final.get("failed") is True and final.get("finished") is True, final
    assert "died" in final["last_message"]["message"], final["last_message"]
