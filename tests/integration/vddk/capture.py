"""Capture the wrapper's logs of VDDK jobs against the test world into tests/data/vddk/.

    sudo .venv/bin/python -m tests.integration.vddk.capture [CASE ...]

Each case runs real virt-v2v 2.2 through the wrapper (foreground, as the run-as user
``v2vw-vddk``), then keeps, in tests/data/vddk/CASE/: ``v2v.log`` (virt-v2v's -v -x output,
trimmed), ``mr.log`` (its machine-readable messages), ``wrapper.log`` and ``state.json``
(the final state). Run directories, ports, the thumbprint and temporary names are
replaced by tokens (<RUN>, <SIM>, <WORLD>, <PORT>, <THUMBPRINT>, <TMP>).
"""

import json
import os
import re
import signal
import sys
import time

from tests.integration.fx_vddk import RUN_AS, RunAs
from tests.integration.guestimage import ensure_guest_images
from tests.integration.vddk import world as W
from tests.integration.vddkrun import VddkRun, tokenize, vddk_job

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "vddk")
MAX_LINES = 2000
# appliance and libguestfs chatter, nbdkit's filter chain and the output side: nothing
# about the VDDK input
NOISE = re.compile(r"^(\[ *\d+\.\d+\] (?!Opening|Inspecting|Checking|Mapping|Setting|Copying|"
                   r"Creating|Finishing|Converting|Assigning)|libguestfs: trace: |guestfsd: |"
                   r"commandrvf: |supermin: |  \w+=|\S+ \S+: \d+: warning : esxVI_|"
                   r"nbdkit: (\S+: )?debug: ((rate|multi-conn|cow|blocksize|cacheextents|retry):|"
                   r"registering |registered )|nbdkit: file\[\d+\]: )")


def trim(text):
    lines = [line[:600] for line in text.replace("\r", "\n").splitlines()
             if line.strip() and not NOISE.match(line)]
    if len(lines) > MAX_LINES:
        head, tail = lines[:MAX_LINES // 3], lines[-(MAX_LINES - MAX_LINES // 3):]
        lines = head + ["... (%d lines trimmed) ..." % (len(lines) - MAX_LINES)] + tail
    return "\n".join(lines) + "\n"


CASES = {
    # name: (Standin options, job changes, libdir ("standin", None: missing, "empty"), action)
    "success-esx-2disks": ({}, {"vm_name": "testvm2"}, "standin", None),
    "wrong-password": ({}, {"vmware_password": "not-the-password"}, "standin", None),
    "wrong-thumbprint": ({}, {"vmware_fingerprint": ":".join(["AB"] * 20)}, "standin", None),
    "vddk-refuses-password": ({"library_password": "only-vddk-knows"}, {}, "standin", None),
    "vm-not-found": ({}, {"vm_name": "novm"}, "standin", None),
    "vm-powered-on": ({"powered_on": ["testvm"]}, {}, "standin", None),
    "libdir-missing": ({}, {}, None, None),
    "libdir-empty": ({}, {}, "empty", None),
    "read-error": ({"fail_read": (200000, 200128)}, {}, "standin", None),
    "sigterm-during-copy": ({"read_delay_us": 5000}, {}, "standin", "sigterm"),
}


def sigterm_in_copy(run):
    state = run.wait(lambda s: (s.get("stage") or "").startswith("Copying disk")
                     or s.get("finished"))
    if not state.get("finished"):
        time.sleep(3)
        os.kill(state["wrapper_pid"], signal.SIGTERM)


def capture(name, world, images, run_as):
    opts, change, libdir, action = CASES[name]
    vms = {"testvm": [images.os_disk], "testvm2": [images.os_disk, images.data_disk]}
    with W.Standin(world, vms, **opts) as sim:
        if libdir == "empty":
            libdir = os.path.join(str(sim.root), "empty-libdir")
            os.mkdir(libdir)
        elif libdir == "standin":
            libdir = sim.libdir
        run = VddkRun(name, sim, run_as, libdir=libdir)
        try:
            job = vddk_job(sim, "testvm", daemonize=False)
            job.update(change)
            job.setdefault("output_dir", run.out)
            t0 = time.monotonic()
            if run.start(job) is None:
                print("%s: refused: %s" % (name, run.stderr()))
                return
            if action == "sigterm":
                sigterm_in_copy(run)
            state = run.wait_finished()
            took = time.monotonic() - t0
            save(name, run, sim, state)
            print("%s: %.1f s, finished %s failed %s" % (name, took, state.get("finished"),
                                                        state.get("failed")))
        finally:
            run.cleanup()


def save(name, run, sim, state):
    out = os.path.join(DATA, name)
    os.makedirs(out, exist_ok=True)
    files = {"v2v.log": trim(run.text("v2v_log")), "mr.log": run.machine_readable(),
             "wrapper.log": run.text("wrapper_log"),
             "state.json": json.dumps(state, indent=1, sort_keys=True) + "\n"}
    for fname, text in files.items():
        text = tokenize(text, run, sim)
        assert sim.password not in text, "the password leaked into %s" % fname
        with open(os.path.join(out, fname), "w") as f:
            f.write(text)


def main(argv):
    import pwd
    import subprocess
    names = argv or list(CASES)
    world = W.ensure_world()
    images = ensure_guest_images()
    try:
        pw = pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-g", "kvm", "-s", "/bin/sh",
                        RUN_AS], check=True)
        pw = pwd.getpwnam(RUN_AS)
    run_as = RunAs(RUN_AS, pw.pw_uid, pw.pw_gid)
    for name in names:
        capture(name, world, images, run_as)


if __name__ == "__main__":
    main(sys.argv[1:])
