"""Capture real virt-v2v 2.2 ``-o rhv-upload`` failure logs against the
stand-in world (how tests/data/virt-v2v-2.2-rhv-upload/ was made).

    python -m tests.ovirt_standin.capture --out DIR [CASE ...]

Cases: wrong-password, vm-exists, imageio-500, finalize-fails,
createvm-job-fails, storage-unknown (default: all, in that order; one conversion at a time).
Each runs ``virt-v2v -v -x -i disk <test guest> -o rhv-upload ...`` as root
with tests/ovirt_standin/v2vpython.py's python3 first on PATH, writes
DIR/<case>.log (stdout+stderr, trimmed to ~300 KB keeping the head and the
tail) and adds what happened to DIR/summary.json: exit code, seconds, the
"virt-v2v: error:" line, what the engine kept (disks, unfinished transfers,
VMs) and its request counts.  The passwords are test values; a log holding
one is refused.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from tests.integration.guestimage import default_cache_dir, ensure_guest_images
from tests.ovirt_standin.engine import make_pki
from tests.ovirt_standin.v2vpython import ensure_v2v_python
from tests.ovirt_standin.world import start_world

PASSWORD = "Engine-Pa55word"
WRONG_PASSWORD = "Wrong-Pa55word"
VM_NAME = "capture-guest"
KEEP_HEAD = 40 * 1024
KEEP_TAIL = 250 * 1024
# imageio-500: writes reaching past 64 MiB of the disk fail (RLIMIT_FSIZE).
WRITE_LIMIT = 64 * 1024 * 1024

CASES = {
    "wrong-password": {"password": WRONG_PASSWORD},
    "vm-exists": {"existing_vm": True},
    "imageio-500": {"write_limit": WRITE_LIMIT},
    "finalize-fails": {"knobs": {"finalize_fails": True}},
    "createvm-job-fails": {"knobs": {"import_job_fails": True}},
    "storage-unknown": {"storage": "no-such-domain"},
}


def trim(data):
    if len(data) <= KEEP_HEAD + KEEP_TAIL:
        return data
    head = data[:KEEP_HEAD].rsplit(b"\n", 1)[0] + b"\n"
    tail = data[-KEEP_TAIL:].split(b"\n", 1)[1]
    cut = len(data) - len(head) - len(tail)
    return head + b"[... %d bytes of the verbose log cut here ...]\n" % cut + tail


def run_case(name, spec, out_dir, guest, v2v_bin, pki):
    work = tempfile.mkdtemp(prefix="v2vw-capture-", dir="/var/tmp")
    world = start_world(pki, work, password=PASSWORD, write_limit=spec.get("write_limit"))
    try:
        for knob, value in spec.get("knobs", {}).items():
            setattr(world.engine, knob, value)
        if spec.get("existing_vm"):
            world.engine.add_vm(VM_NAME, cluster=world.cluster)
        cafile, password_file = world.write_client_files(os.path.join(work, "client"))
        if "password" in spec:
            with open(password_file, "w") as f:
                f.write(spec["password"] + "\n")
        env = dict(os.environ, LANG="C", PATH="%s:%s" % (v2v_bin, os.environ["PATH"]),
                   LIBGUESTFS_BACKEND="direct", LIBGUESTFS_BACKEND_SETTINGS="force_tcg")
        argv = ["virt-v2v", "-v", "-x", "-i", "disk", str(guest), "-on", VM_NAME] + \
            world.virt_v2v_args(cafile, password_file, storage=spec.get("storage"))
        start = time.monotonic()
        proc = subprocess.run(argv, env=env, cwd=work, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800)
        seconds = round(time.monotonic() - start, 1)
        data = proc.stdout
        for secret in (PASSWORD, WRONG_PASSWORD):
            if secret.encode() in data:
                raise SystemExit("%s: the log holds a password, not saving it" % name)
        with open(os.path.join(out_dir, name + ".log"), "wb") as f:
            f.write(trim(data))
        errors = [line for line in data.decode("utf-8", "replace").splitlines()
                  if line.startswith("virt-v2v: error:")]
        engine = world.engine
        return {
            "exit": proc.returncode, "seconds": seconds, "error_lines": errors,
            "log_bytes": len(data),
            "disks_left": [{"id": d.id, "status": d.status()} for d in engine.disks.values()],
            "unfinished_transfers": engine.unfinished_transfers(),
            "transfer_phases": [t.phase for t in engine.transfers.values()],
            "vms": [v.name for v in engine.vms.values()],
            "jobs": [j.status() for j in engine.jobs],
            "requests": engine.counts(),
            "imageio": world.imageio.served(),
            "imageio_errors": world.imageio.errors()[:3],
        }
    finally:
        world.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.ovirt_standin.capture")
    parser.add_argument("--out", required=True)
    parser.add_argument("cases", nargs="*", metavar="CASE", help=", ".join(CASES))
    args = parser.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error("unknown case %s (cases: %s)" % (", ".join(unknown), ", ".join(CASES)))
    os.makedirs(args.out, exist_ok=True)
    guest = ensure_guest_images().os_disk
    v2v_bin = ensure_v2v_python(default_cache_dir())
    pki_dir = tempfile.mkdtemp(prefix="v2vw-capture-pki-", dir="/var/tmp")
    summary_path = os.path.join(args.out, "summary.json")
    try:
        with open(summary_path) as f:
            summary = json.load(f)
    except FileNotFoundError:
        summary = {}
    try:
        pki = make_pki(pki_dir)
        for name in args.cases or list(CASES):
            print("capture: %s ..." % name, file=sys.stderr, flush=True)
            summary[name] = run_case(name, CASES[name], args.out, guest, v2v_bin, pki)
            print("capture: %s: %s" % (name, json.dumps(summary[name])[:600]),
                  file=sys.stderr, flush=True)
            with open(summary_path, "w") as f:
                json.dump(summary, f, indent=1, sort_keys=True)
                f.write("\n")
    finally:
        shutil.rmtree(pki_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
