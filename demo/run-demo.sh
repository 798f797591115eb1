#!/bin/bash
# virt-v2v-wrapper demo: one command on a fresh Debian 12 machine, as root.
#
#   demo/run-demo.sh [testvm|testvm2]        (as root; a non-root user: sudo demo/run-demo.sh)
#
# 1. installs the packages (.ci/deps-virt-v2v.sh: virt-v2v, nbdkit, libnbd-bin, sshd, ...)
# 2. builds (or reuses) a small Debian guest disk (+ a data disk for testvm2)
#    (~95 s the first time: debootstrap download; cached in /var/tmp/v2vw-cache afterwards)
# 3. starts a fake ESXi host: sshd on 127.0.0.1:<free port> serving
#    /vmfs/volumes/datastore1/<vm>/<vm>.vmx (private mount namespace; nothing left behind)
# 4. feeds `python3 -m wrapper` (virt-v2v-wrapper) a JSON job on stdin, exactly as an
#    orchestrator does over SSH: the wrapper prints its paths, detaches, and the demo follows
#    the state file until "finished", printing each stage and the per-disk progress.
#    The converted disk(s) and libvirt XML land in $DEMO_DIR/out-<time>/, the wrapper's and
#    virt-v2v's logs in $DEMO_DIR/logs, the state file in $DEMO_DIR/state.
#    A conversion takes ~1-2 min under TCG (software emulation).
#
# Env: DEMO_DIR (default /var/tmp/v2vw-demo), V2VW_CACHE_DIR (guest image cache),
#      LIBGUESTFS_BACKEND_SETTINGS (default force_tcg: nested/absent KVM is the common case
#      on CI and cloud VMs; set it to "" on a machine with working KVM for a ~3x faster run).
#      The wrapper passes LIBGUESTFS_* from its environment on to virt-v2v.
#
# Other distributions: step 1 knows apt (Debian; on Ubuntu it takes linux-image-generic
# for the appliance kernel, and /boot/vmlinuz-* must be readable); elsewhere install the
# equivalents by hand and run with SKIP_DEPS=1.
# Fedora / EL9 (EPEL for debootstrap): dnf install virt-v2v nbdkit nbdkit-ssh-plugin
# libnbd qemu-img openssh-server openssh-clients debootstrap e2fsprogs util-linux python3;
# the fake ESXi host expects sftp-server at /usr/lib/openssh/sftp-server (Fedora/EL:
# /usr/libexec/openssh/sftp-server, symlink it). Any distro: root, python3 >= 3.9,
# >= 1 GB free in /var/tmp (virt-v2v checks it) and ~2 GB for the appliance and images.
set -euo pipefail

VM=${1:-testvm2}
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEMO_DIR=${DEMO_DIR:-/var/tmp/v2vw-demo}

if [ "$(id -u)" != 0 ]; then
    echo "run-demo.sh: run as root (installs packages, runs sshd and virt-v2v)" >&2
    exit 1
fi
case "$VM" in testvm|testvm2) ;; *) echo "usage: $0 [testvm|testvm2]" >&2; exit 2 ;; esac

echo "== 1/4 packages"
if [ -n "${SKIP_DEPS:-}" ]; then
    echo "SKIP_DEPS set: not installing packages"
else
    bash "$REPO/.ci/deps-virt-v2v.sh"
fi

# no libvirtd is needed or assumed; the wrapper hands these on to virt-v2v
export LIBGUESTFS_BACKEND=direct
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS-force_tcg}
export LANG=C
mkdir -p "$DEMO_DIR"

echo "== 2/4 guest images (first run ~95 s, then cached)"
exec python3 - "$REPO" "$DEMO_DIR" "$VM" <<'PYEOF'
import json
import os
import signal
import subprocess
import sys
import time

repo, demo_dir, vm = sys.argv[1:4]
sys.path.insert(0, os.path.join(repo, "tests", "integration"))
import fake_esxi  # noqa: E402
import guestimage  # noqa: E402

T0 = time.monotonic()


def say(text):
    print("[%6.1fs] %s" % (time.monotonic() - T0, text), flush=True)


def read_state(path):
    try:
        with open(path) as f:
            return json.load(f)   # replaced atomically: always complete JSON
    except FileNotFoundError:
        return None


def follow(state_path, timeout=3600):
    """Print what changes in the state file (stage, per-disk progress) until finished."""
    shown_stage, shown_disks, state = None, None, None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(state_path) or {}
        if state.get("pid") and shown_stage is None:
            shown_stage = ""
            say("virt-v2v running as pid %d (kill -TERM it to cancel)" % state["pid"])
        stage = state.get("stage")
        if stage and stage != shown_stage:
            shown_stage = stage
            say("stage: %s" % stage)
        disks = [(d["path"], d["progress"]) for d in state.get("disks", [])]
        if disks != shown_disks and str(stage or "").startswith(("Copying", "Creating",
                                                                  "Finishing")):
            shown_disks = disks
            say("progress %5.1f %%  |  %s" % (state.get("progress", 0), "  ".join(
                "%s: %3s %%" % d for d in disks)))
        if state.get("finished"):
            return state
        time.sleep(0.5)
    raise SystemExit("the conversion did not finish within %d s" % timeout)


images = guestimage.ensure_guest_images()
say("guest images ready: %s, %s" % (images.os_disk, images.data_disk))
out_dir = os.path.join(demo_dir, time.strftime("out-%Y%m%d-%H%M%S"))
state_dir, log_dir = os.path.join(demo_dir, "state"), os.path.join(demo_dir, "logs")
os.makedirs(out_dir)

print("== 3/4 fake ESXi host", flush=True)
with fake_esxi.FakeEsxi({"os": images.os_disk, "data": images.data_disk}) as esxi:
    say("fake ESXi: sshd on 127.0.0.1:%d, VM %s" % (esxi.port, esxi.vm_uri(vm)))
    job = {
        "vm_name": esxi.vm_uri(vm),
        "transport_method": "ssh",
        "ssh_key": esxi.client_private_key_text,
        "output_dir": out_dir,
        "source_disks": [esxi.vddk_style_path(vm, d) for d in esxi.disk_files(vm)],
    }
    argv = [sys.executable, "-m", "wrapper", "--state-dir", state_dir, "--log-dir", log_dir]
    print("== 4/4 conversion through virt-v2v-wrapper", flush=True)
    print("$ cd %s && python3 -m wrapper %s < job.json" % (repo, " ".join(argv[3:])))
    print("job.json = " + json.dumps(dict(job, ssh_key="<private key of the fake ESXi "
                                          "client, %d bytes>" % len(job["ssh_key"])), indent=2))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(argv, input=json.dumps(job), stdout=subprocess.PIPE,
                          universal_newlines=True, cwd=repo, env=env)
    if proc.returncode != 0:
        raise SystemExit("the wrapper refused the job (exit %d)" % proc.returncode)
    paths = json.loads(proc.stdout)
    say("wrapper answered (and detached): " + proc.stdout.strip())
    try:
        state = follow(paths["state_file"])
    except KeyboardInterrupt:
        state = read_state(paths["state_file"]) or {}
        if state.get("wrapper_pid") and not state.get("finished"):
            say("interrupted: asking the wrapper (pid %d) to cancel" % state["wrapper_pid"])
            os.kill(state["wrapper_pid"], signal.SIGTERM)
            state = follow(paths["state_file"], timeout=120)
        raise SystemExit(130)

print("== result", flush=True)
print("final state (%s):" % paths["state_file"])
print(json.dumps(state, indent=2))
ok = not state.get("failed")
if ok:
    say("conversion succeeded; output in %s:" % out_dir)
    for name in sorted(os.listdir(out_dir)):
        st = os.stat(os.path.join(out_dir, name))
        if st.st_size < 1 << 20:
            print("  %-16s %6d bytes" % (name, st.st_size))
        else:
            print("  %-16s %6d MiB apparent, %5d MiB allocated" % (
                name, st.st_size >> 20, (st.st_blocks * 512) >> 20))
    print("  (libvirt XML + raw disks: e.g. virsh define %s/%s.xml on a libvirt host)"
          % (out_dir, vm))
else:
    say("conversion FAILED: %s" % state.get("last_message", {}).get("message"))
print("logs: virt-v2v %s\n      wrapper  %s" % (paths["v2v_log"], paths["wrapper_log"]))
sys.exit(0 if ok else 1)
PYEOF
