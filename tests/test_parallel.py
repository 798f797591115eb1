"""Parallel disk copies (wrapper/parallel.py, wrapper/shims/nbdcopy): the settings,
the plan, the shim's ownership check, the command line, and the shim itself run
against a stand-in nbdcopy."""
import os
import signal
import stat
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from wrapper import parallel
from wrapper.settings import resolve
from wrapper.v2v import parse_capabilities

CAPS_28 = parse_capabilities("virt-v2v\nvirt-v2v-2.0\nparallel-option\nbandwidth-option\n")
CAPS_22 = parse_capabilities("virt-v2v\nvirt-v2v-2.0\nbandwidth-option\n")
SHIM = os.path.join(parallel.SHIM_DIR, parallel.SHIM_NAME)


def settings(**env):
    return resolve({}, {"VIRT_V2V_WRAPPER_" + k.upper(): v for k, v in env.items()})


def fake_lstat(owners):
    """lstat that answers (uid, mode) from ``owners`` by path, root 0755 dirs otherwise."""
    def lstat(path):
        uid, mode = owners.get(path, (0, stat.S_IFDIR | 0o755))
        return SimpleNamespace(st_uid=uid, st_mode=mode)
    return lstat


ROOT_SHIM = {"/opt/w/shims/nbdcopy": (0, stat.S_IFREG | 0o755)}


# -- settings -------------------------------------------------------------------------
def test_defaults_and_environment_and_option():
    s = settings()
    assert (s.parallel, s.parallel_max) == ("2", "4")
    assert parallel.settings_problem(s) is None
    s = settings(parallel="3", parallel_max="8")
    assert (s.parallel, s.parallel_max) == ("3", "8")
    s = resolve({"parallel": "5"}, {"VIRT_V2V_WRAPPER_PARALLEL": "3"})
    assert s.parallel == "5"                          # the option wins


@pytest.mark.parametrize("attr,value", [
    ("parallel", "0"), ("parallel", "-1"), ("parallel", "two"), ("parallel", "65"),
    ("parallel", "1.5"), ("parallel_max", "0"), ("parallel_max", "1e3"), ("parallel_max", "99999"),
])
def test_bad_values_get_one_line(attr, value):
    problem = parallel.settings_problem(settings(**{attr: value}))
    assert problem and "\n" not in problem
    assert "VIRT_V2V_WRAPPER_%s" % attr.upper() in problem and repr(value) in problem


# -- the plan ---------------------------------------------------------------------------
def test_plan_needs_the_capability_and_more_than_one_disk():
    lstat = fake_lstat(ROOT_SHIM)
    s = settings()
    assert parallel.plan(s, CAPS_22, 2, "/opt/w/shims", lstat) == parallel.SERIAL
    assert parallel.plan(s, CAPS_28, 1, "/opt/w/shims", lstat) == parallel.SERIAL
    assert parallel.plan(s, CAPS_28, 2, "/opt/w/shims", lstat) == parallel.Plan(2, "/opt/w/shims")
    # source_disks not listed: the VM may have several
    assert parallel.plan(s, CAPS_28, 0, "/opt/w/shims", lstat).streams == 2


def test_plan_is_capped_by_parallel_max_and_the_disks():
    lstat = fake_lstat(ROOT_SHIM)
    assert parallel.plan(settings(parallel="8", parallel_max="3"), CAPS_28, 5,
                         "/opt/w/shims", lstat).streams == 3
    assert parallel.plan(settings(parallel="8", parallel_max="16"), CAPS_28, 5,
                         "/opt/w/shims", lstat).streams == 5
    assert parallel.plan(settings(parallel="1"), CAPS_28, 5, "/opt/w/shims", lstat) == parallel.SERIAL
    assert parallel.plan(settings(parallel_max="1"), CAPS_28, 5, "/opt/w/shims",
                         lstat) == parallel.SERIAL


@pytest.mark.parametrize("owners,word", [
    ({"/opt/w/shims/nbdcopy": (1000, stat.S_IFREG | 0o755)}, "uid 1000"),
    ({"/opt/w/shims/nbdcopy": (0, stat.S_IFREG | 0o775)}, "mode 775"),
    ({"/opt/w/shims/nbdcopy": (0, stat.S_IFREG | 0o750)}, "everybody"),
    ({"/opt/w/shims/nbdcopy": (0, stat.S_IFLNK | 0o777)}, "not a program"),
    (dict(ROOT_SHIM, **{"/opt/w/shims": (1000, stat.S_IFDIR | 0o755)}), "/opt/w/shims is owned"),
    (dict(ROOT_SHIM, **{"/opt": (0, stat.S_IFDIR | 0o777)}), "/opt is owned"),
    (dict(ROOT_SHIM, **{"/opt/w": (0, stat.S_IFLNK | 0o755)}), "not a directory"),
])
def test_a_shim_others_could_change_keeps_the_copy_serial(owners, word, caplog):
    lstat = fake_lstat(owners)
    problem = parallel.shim_problem("/opt/w/shims", lstat)
    assert problem and word in problem
    assert parallel.plan(settings(), CAPS_28, 2, "/opt/w/shims", lstat) == parallel.SERIAL
    assert "one at a time" in caplog.text


def test_a_missing_shim_keeps_the_copy_serial(tmp_path):
    assert "No such file" in parallel.shim_problem(str(tmp_path))
    assert parallel.plan(settings(), CAPS_28, 2, str(tmp_path)) == parallel.SERIAL


@pytest.mark.skipif(os.geteuid() != 0 or parallel.shim_problem() is not None,
                    reason="the checkout is not root's: %s" % parallel.shim_problem())
def test_the_shipped_shim_passes_its_own_check():
    assert parallel.plan(settings(), CAPS_28, 2).parallel


# -- the command line ---------------------------------------------------------------------
def test_command_and_environment():
    argv = ["virt-v2v", "-v", "-x", "-o", "local", "-os", "/out", "vm"]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C"}
    assert parallel.command(argv, parallel.SERIAL) == argv
    assert parallel.environment(env, parallel.SERIAL) == env
    the_plan = parallel.Plan(3, "/opt/w/shims")
    assert parallel.command(argv, the_plan) == argv[:-1] + ["--parallel", "3", "vm"]
    assert parallel.environment(env, the_plan) == {"PATH": "/opt/w/shims:/usr/bin:/bin", "LANG": "C"}
    assert env["PATH"] == "/usr/bin:/bin"               # not changed in place


# -- the shim, run ---------------------------------------------------------------------------
FAKE_NBDCOPY = """#!/bin/sh
# stand-in nbdcopy: records its argv, writes progress to --progress=FD (or a bar)
printf '%%s\\n' "$@" > "%(record)s"
fd=
for a in "$@"; do case "$a" in --progress=*) fd=${a#--progress=};; --progress) fd=bar;; esac; done
for n in 0 0 25 50 75 100; do
  if [ "$fd" = bar ]; then printf '\\r\\342\\226\\235 %%3d%%%% [****]' $n >&2
  elif [ -n "$fd" ]; then echo "$n/100" >&$fd; fi
  sleep %(pause)s >/dev/null 2>&1 & wait $!
done
echo "copied" >&2
exit %(rc)s
"""


def stand_in(tmp_path, rc=0, pause=0):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "argv"
    (bindir / "nbdcopy").write_text(FAKE_NBDCOPY % {"record": record, "rc": rc, "pause": pause})
    (bindir / "nbdcopy").chmod(0o755)
    env = dict(os.environ, PATH="%s:%s:/usr/bin:/bin" % (parallel.SHIM_DIR, bindir))
    return env, record


def run_shim(env, *args, **kw):
    return subprocess.run(["nbdcopy"] + list(args), env=env, capture_output=True, timeout=30, **kw)


def test_shim_tags_each_progress_step_with_its_disk(tmp_path):
    env, record = stand_in(tmp_path)
    res = run_shim(env, "nbd+unix:///?socket=/tmp/v2v.AbC/in1",
                   "nbd+unix:///vm-sdb?socket=/tmp/v2v.AbC/out0", "--requests=64", "--blkhash",
                   "--flush", "--progress")
    assert res.returncode == 0
    tagged = [line for line in res.stderr.decode().splitlines() if line.startswith("virt-v2v-wrapper")]
    assert tagged == ["virt-v2v-wrapper: nbdcopy in1 progress %d/100" % n for n in (0, 25, 50, 75, 100)]
    assert b"copied" in res.stderr and b"% [" not in res.stderr
    argv = record.read_text().splitlines()
    assert argv[0].startswith("--progress=") and argv[0][11:].isdigit()
    assert argv[1:] == ["nbd+unix:///?socket=/tmp/v2v.AbC/in1",
                        "nbd+unix:///vm-sdb?socket=/tmp/v2v.AbC/out0", "--requests=64", "--blkhash",
                        "--flush"]


def test_shim_passes_the_exit_status_on(tmp_path):
    env, _ = stand_in(tmp_path, rc=3)
    res = run_shim(env, "nbd+unix:///?socket=/t/in0", "out", "--progress")
    assert res.returncode == 3
    assert b"nbdcopy in0 progress 100/100" in res.stderr


@pytest.mark.parametrize("args", [
    ["nbd+unix:///?socket=/t/in0", "out"],                     # no progress asked (--quiet)
    ["nbd+unix:///?socket=/t/v2vssh.sock", "out", "--progress"],   # not a disk (the .vmx fetch)
    # an input naming an export may be one nbdkit serving several disks: no identity
    ["nbd+unix:///vm-sda?socket=/t/in0", "out", "--progress"],
    ["out", "nbd+unix:///?socket=/t/in0", "--progress"],        # inK as the destination
])
def test_shim_hands_anything_else_over_untouched(tmp_path, args):
    env, record = stand_in(tmp_path)
    res = run_shim(env, *args)
    assert res.returncode == 0 and b"virt-v2v-wrapper" not in res.stderr
    assert record.read_text().splitlines() == args


def test_shim_forwards_a_progress_fd_it_was_given(tmp_path):
    env, _ = stand_in(tmp_path)
    r, w = os.pipe()
    res = run_shim(env, "nbd+unix:///?socket=/t/in2", "out", "--progress=%d" % w, pass_fds=(w,))
    os.close(w)
    with os.fdopen(r) as f:
        forwarded = f.read().split()
    assert res.returncode == 0 and forwarded == ["0/100", "25/100", "50/100", "75/100", "100/100"]
    assert b"nbdcopy in2 progress 50/100" in res.stderr


def test_shim_without_a_real_nbdcopy_says_so(tmp_path):
    env = dict(os.environ, PATH="%s:%s" % (parallel.SHIM_DIR, tmp_path))
    res = subprocess.run([SHIM, "nbd+unix:///?socket=/t/in0", "out", "--progress"], env=env,
                         capture_output=True, timeout=30)
    assert res.returncode == 127 and b"not found" in res.stderr


def test_shim_passes_sigterm_to_nbdcopy(tmp_path):
    env, record = stand_in(tmp_path, pause=5)
    proc = subprocess.Popen(["nbdcopy", "nbd+unix:///?socket=/t/in0", "out", "--progress"], env=env,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGTERM
    assert b"copied" not in err           # the stand-in was stopped, not waited for


def test_shim_is_python_that_parses():
    with open(SHIM) as f:
        source = f.read()
    assert source.startswith("#!/usr/bin/python3 -I\n")
    compile(source, SHIM, "exec")
    assert os.stat(SHIM).st_mode & 0o755 == 0o755
    assert sys.version_info >= (3, 6)
