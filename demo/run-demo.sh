#!/bin/bash
# virt-v2v-wrapper demo: one command on a fresh Debian 12 machine, as root.
#
#   demo/run-demo.sh [--ovirt] [testvm|testvm2]   (as root; a non-root user: sudo demo/run-demo.sh)
#
# --ovirt: convert to an oVirt engine through its API (virt-v2v -o rhv-upload) instead of a
# local directory. No oVirt installation is needed: the stand-in engine of the tests
# (tests/ovirt_standin: HTTPS, the oVirt API's XML, SSO) and a real ovirt-imageio daemon run
# on 127.0.0.1 for the demo, and the demo shows what the engine was left with (the VM, its
# disks, what imageio received, the requests). It also installs the oVirt SDK, nbdkit's python
# plugin and ovirt-imageio (.ci/deps-ovirt.sh) into a venv of Debian's python3 in the cache
# directory, whose python3 goes first on virt-v2v's PATH (its helper scripts need the SDK).
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

OVIRT=
if [ "${1:-}" = --ovirt ]; then
    OVIRT=1
    shift
fi
VM=${1:-testvm2}
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEMO_DIR=${DEMO_DIR:-/var/tmp/v2vw-demo}

if [ "$(id -u)" != 0 ]; then
    echo "run-demo.sh: run as root (installs packages, runs sshd and virt-v2v)" >&2
    exit 1
fi
case "$VM" in testvm|testvm2) ;; *) echo "usage: $0 [--ovirt] [testvm|testvm2]" >&2; exit 2 ;; esac

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

PYTHON=python3
if [ -n "$OVIRT" ]; then
    echo "== 1b/4 the oVirt SDK for virt-v2v, and ovirt-imageio for the stand-in (first run ~1 min)"
    [ -n "${SKIP_DEPS:-}" ] || bash "$REPO/.ci/deps-ovirt.sh" --packages-only
    V2V_BIN=$(cd "$REPO" && /usr/bin/python3 -c 'import sys
from tests.integration.guestimage import default_cache_dir
from tests.ovirt_standin.v2vpython import ensure_v2v_python
print(ensure_v2v_python(default_cache_dir()))')
    [ -n "${SKIP_DEPS:-}" ] || bash "$REPO/.ci/deps-ovirt.sh" "$V2V_BIN/python3"
    # the wrapper, the stand-in and virt-v2v's helper scripts all use this python3
    export PATH="$V2V_BIN:$PATH"
    PYTHON="$V2V_BIN/python3"
fi

echo "== 2/4 guest images (first run ~95 s, then cached)"
exec "$PYTHON" - "$REPO" "$DEMO_DIR" "$VM" "$OVIRT" <<'PYEOF'
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

repo, demo_dir, vm, ovirt = sys.argv[1], sys.argv[2], sys.argv[3], bool(sys.argv[4])
sys.path.insert(0, os.path.join(repo, "tests", "integration"))
sys.path.insert(0, repo)
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


def start_ovirt(stack):
    """The stand-in engine and a real imageio daemon on 127.0.0.1 (stopped on exit)."""
    import secrets
    from tests.ovirt_standin.engine import make_pki
    from tests.ovirt_standin.world import start_world
    top = os.path.join(demo_dir, time.strftime("ovirt-%Y%m%d-%H%M%S"))
    os.makedirs(os.path.join(top, "pki"), mode=0o700)
    os.chmod(top, 0o755)
    world = start_world(make_pki(os.path.join(top, "pki")), top,
                        password="demo-" + secrets.token_hex(8))
    stack.callback(world.stop)
    cafile, _ = world.write_client_files(os.path.join(top, "client"))
    say("stand-in oVirt engine: %s (data center %s, cluster %s, storage domain %s, %s); "
        "imageio daemon pid %d" % (world.engine.api_url, world.data_center.name,
                                    world.cluster.name, world.storage_domain.name,
                                    world.storage_domain.storage_type, world.imageio.pid))
    return world, {"rhv_url": world.engine.api_url, "rhv_password": world.engine.password,
                   "rhv_cluster": world.cluster.name, "rhv_storage": world.storage_domain.name,
                   "rhv_cafile": cafile}


def show_engine(world):
    engine, imageio = world.engine, world.imageio
    for vm_obj in engine.vms.values():
        print("  VM %s (%s) in cluster %s" % (vm_obj.name, vm_obj.id, world.cluster.name))
    for disk in engine.disks.values():
        print("  disk %s: %s, %d MiB, %s, status %s" % (
            disk.id, disk.name, disk.provisioned_size >> 20,
            "sparse" if disk.sparse else "preallocated", disk.status()))
    served = imageio.served()
    allocated = sum(os.stat(t.path).st_blocks * 512 for t in imageio.tickets.values()
                    if os.path.exists(t.path))
    print("  imageio received %d MiB of writes and %d MiB of zeroes; its files allocate %d MiB"
          % (served.get("WRITE bytes", 0) >> 20, served.get("ZERO bytes", 0) >> 20,
             allocated >> 20))
    print("  requests the engine answered: " + ", ".join(
        "%s %d" % kv for kv in sorted(engine.counts().items())))


images = guestimage.ensure_guest_images()
say("guest images ready: %s, %s" % (images.os_disk, images.data_disk))
out_dir = os.path.join(demo_dir, time.strftime("out-%Y%m%d-%H%M%S"))
state_dir, log_dir = os.path.join(demo_dir, "state"), os.path.join(demo_dir, "logs")

with contextlib.ExitStack() as stack:
    print("== 3/4 fake ESXi host%s" % (" and stand-in oVirt engine" if ovirt else ""), flush=True)
    esxi = stack.enter_context(fake_esxi.FakeEsxi({"os": images.os_disk,
                                                   "data": images.data_disk}))
    say("fake ESXi: sshd on 127.0.0.1:%d, VM %s" % (esxi.port, esxi.vm_uri(vm)))
    if ovirt:
        world, target = start_ovirt(stack)
    else:
        os.makedirs(out_dir)
        world, target = None, {"output_dir": out_dir}
    job = dict({
        "vm_name": esxi.vm_uri(vm),
        "transport_method": "ssh",
        "ssh_key": esxi.client_private_key_text,
        "source_disks": [esxi.vddk_style_path(vm, d) for d in esxi.disk_files(vm)],
    }, **target)
    argv = [sys.executable, "-m", "wrapper", "--state-dir", state_dir, "--log-dir", log_dir]
    print("== 4/4 conversion through virt-v2v-wrapper", flush=True)
    print("$ cd %s && python3 -m wrapper %s < job.json" % (repo, " ".join(argv[3:])))
    shown = dict(job, ssh_key="<private key of the fake ESXi client, %d bytes>" % len(job["ssh_key"]))
    if "rhv_password" in shown:
        shown["rhv_password"] = "<the stand-in engine's password>"
    print("job.json = " + json.dumps(shown, indent=2))
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
    if not ok:
        say("conversion FAILED: %s" % state.get("last_message", {}).get("message"))
    elif world is not None:
        say("conversion succeeded; what the stand-in oVirt engine now holds:")
        show_engine(world)
    else:
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
    if world is not None and not ok:
        say("left on the stand-in engine after the cleanup: %d disk(s), %d VM(s)"
            % (len(world.engine.disks), len(world.engine.vms)))
print("logs: virt-v2v %s\n      wrapper  %s" % (paths["v2v_log"], paths["wrapper_log"]))
sys.exit(0 if ok else 1)
PYEOF
