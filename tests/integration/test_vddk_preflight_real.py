"""The VDDK pre-flight (wrapper.vmware) against the real VDDK world
(tests/integration/vddk/: govmomi's simulator behind its TLS front, nbdkit's real vddk
plugin from Debian 13, the file-backed libvixDiskLib.so.8), as the run-as user
``v2vw-vddk`` (a vdsm:kvm look-alike).

Through the wrapper (``python3 -m wrapper``, pre-flight on, virt-v2v a fake that only
records: the real conversions are test_vddk_real.py's): a good job over esx:// and over
vpx:// is accepted; a wrong fingerprint, a wrong password, an unknown VM, a powered-on VM
and an empty library directory are each refused with their one line, exit 1, nothing left
in the state directory.  No conversion starts, so the whole file takes seconds (timings:
bench/vddk_preflight_bench.py).
"""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from tests import wrapperrun as wr
from tests.fakes import make_fake_v2v
from tests.integration.fx_vddk import vddk_path
from wrapper import runner
from wrapper.config import VddkSource
from wrapper.errors import JobError
from wrapper.security.secrets import Secret
from wrapper.users import RunUser
from wrapper.vmware import preflight

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch():
    """A directory the run-as user can reach (pytest's tmp_path is root's only)."""
    top = tempfile.mkdtemp(prefix="v2vw-vddkpf-", dir="/var/tmp")
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def sim(vddk_plugin, vddk_standin):
    return vddk_standin(vms=_one_vm(), powered_on=("running",))


def _one_vm():
    from tests.integration.guestimage import ensure_guest_images
    images = ensure_guest_images()
    return {"testvm": [images.os_disk], "running": [images.os_disk]}


def user_of(run_as):
    return RunUser(run_as.uid, run_as.gid, run_as.name, "/")


def empty_libdir(scratch):
    path = os.path.join(scratch, "empty-vddk")
    os.makedirs(os.path.join(path, "lib64"))
    os.chmod(path, 0o755)
    os.chmod(os.path.join(path, "lib64"), 0o755)
    return path


def run_wrapper(scratch, sim, run_as, libdir=None, **job):
    """One job through the wrapper with the pre-flight on; virt-v2v is a recording fake."""
    root = tempfile.mkdtemp(dir=scratch)
    os.chmod(root, 0o755)
    dirs = {k: os.path.join(root, k) for k in ("state", "logs", "out", "bin")}
    for d in dirs.values():
        os.makedirs(d)
        os.chmod(d, 0o755)
    os.chown(dirs["out"], run_as.uid, run_as.gid)
    exe = make_fake_v2v(dirs["bin"], python=shutil.which("python3", path="/usr/bin:/bin"),
                        log=os.path.join(wr.ROOT, "tests", "data", "run05-vmx-ssh-port-uri.vx.log"))
    j = {"vm_name": "testvm", "transport_method": "vddk", "vmware_uri": sim.esx_uri(),
         "vmware_password": sim.password, "vmware_fingerprint": sim.thumbprint,
         "output_dir": dirs["out"], "daemonize": False}
    j.update(job)
    args = ["--state-dir", dirs["state"], "--log-dir", dirs["logs"], "--virt-v2v", exe,
            "--run-as", run_as.name, "--vddk-libdir", str(libdir or sim.libdir)]
    env = wr.env(PATH=vddk_path(sim.world), LANG="C", VIRT_V2V_WRAPPER_VDDK_PREFLIGHT="on",
                 VIRT_V2V_WRAPPER_SYSTEMD_MARKER=os.path.join(root, "no-systemd"),
                 VIRT_V2V_WRAPPER_LOCK_DIR=os.path.join(root, "lock"))
    r = subprocess.run(wr.wrapper_cmd(*args), input=json.dumps(j), capture_output=True, text=True,
                       timeout=120, cwd=wr.ROOT, env=env)
    return r, dirs


def assert_refused(r, dirs, sim, *words):
    assert r.returncode == 1 and r.stdout == "", r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr
    assert os.listdir(dirs["state"]) == [] and os.listdir(dirs["out"]) == []
    logs = os.listdir(dirs["logs"])
    assert len(logs) == 1 and logs[0].endswith("-wrapper.log")     # no virt-v2v log: never started
    text = open(os.path.join(dirs["logs"], logs[0])).read()
    assert "VDDK pre-flight took" in text and sim.password not in text + r.stderr


def test_good_jobs_pass_over_esx_and_vpx(vddk_plugin, vddk_standin, vddk_run_as, scratch):
    for vpx in (False, True):
        sim = vddk_standin(vms=_one_vm(), vpx=vpx)
        uri = sim.vpx_uri() if vpx else sim.esx_uri()
        facts = preflight.check(VddkSource(uri, Secret(sim.password), sim.thumbprint.lower()),
                                "testvm", str(sim.libdir), user_of(vddk_run_as),
                                {"PATH": vddk_path(sim.world)}, 10, run_as=runner.run_as)
        assert facts["version"] == "8" and "libvixDiskLib.so.8" in facts["library"]
        assert facts["fingerprint"].replace(":", "") == sim.thumbprint.replace(":", "").upper()
        r, dirs = run_wrapper(scratch, sim, vddk_run_as, vmware_uri=uri)
        assert r.returncode == 0, r.stderr
        logs = [n for n in os.listdir(dirs["logs"]) if n.endswith("-wrapper.log")]
        text = open(os.path.join(dirs["logs"], logs[0])).read()
        assert "VDDK pre-flight took" in text and "all passed" in text
        assert ("vCenter" if vpx else "ESXi") in text or "VMware" in text


def test_wrong_fingerprint_refused(sim, vddk_run_as, scratch):
    wrong = ":".join(["AA"] * 20)
    r, dirs = run_wrapper(scratch, sim, vddk_run_as, vmware_fingerprint=wrong)
    assert_refused(r, dirs, sim, "vmware_fingerprint: does not match the certificate of ESXi host",
                   "password was not sent")


def test_wrong_password_refused(sim, vddk_run_as, scratch):
    r, dirs = run_wrapper(scratch, sim, vddk_run_as, vmware_password="not-" + sim.password)
    assert_refused(r, dirs, sim, "vmware_password: login as root to ESXi host", "failed")


def test_unknown_vm_refused(sim, vddk_run_as, scratch):
    r, dirs = run_wrapper(scratch, sim, vddk_run_as, vm_name="ghost")
    assert_refused(r, dirs, sim, "vm_name: no VM named 'ghost' on ESXi host")


def test_powered_on_vm_refused(sim, vddk_run_as, scratch):
    r, dirs = run_wrapper(scratch, sim, vddk_run_as, vm_name="running")
    assert_refused(r, dirs, sim, "vm_name: the VM 'running' on ESXi host", "is poweredOn",
                   "shut it down")


def test_empty_libdir_refused(sim, vddk_run_as, scratch):
    r, dirs = run_wrapper(scratch, sim, vddk_run_as, libdir=empty_libdir(scratch))
    assert_refused(r, dirs, sim, "--vddk-libdir: no libvixDiskLib.so.N in",
                   "lib64/libvixDiskLib.so.8, .7 or .6")


def test_without_the_plugin_refused(sim, vddk_run_as, scratch):
    """nbdkit first on PATH without the world's wrapper: Debian 12 has no vddk plugin."""
    config = subprocess.run(["nbdkit", "--dump-config"], capture_output=True, text=True).stdout
    plugindir = dict(line.split("=", 1) for line in config.splitlines() if "=" in line).get("plugindir")
    if plugindir and os.path.exists(os.path.join(plugindir, "nbdkit-vddk-plugin.so")):
        pytest.skip("this host has nbdkit's vddk plugin installed")
    with pytest.raises(JobError) as e:
        preflight.check(VddkSource(sim.esx_uri(), Secret(sim.password), sim.thumbprint), "testvm",
                        str(sim.libdir), user_of(vddk_run_as), {"PATH": "/usr/bin:/bin"}, 10,
                        run_as=runner.run_as)
    assert "vddk plugin (nbdkit-plugin-vddk) is not installed" in str(e.value)
