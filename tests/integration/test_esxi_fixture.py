"""The fake ESXi fixture works with the real programs: OpenSSH and its SFTP (what scp and
libssh in nbdkit's ssh plugin use). Cheap: no conversion here. Real virt-v2v conversions
from this fixture, driven through the wrapper, are in test_real_conversions.py.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    from . import fake_esxi as fe
except ImportError:  # pragma: no cover - depends on how pytest was started
    import fake_esxi as fe

# ---------------------------------------------------------------- pure helpers (no root)

def test_disk_file_names_follow_vmware_convention():
    assert fe.disk_file_names("vm", 3) == ["vm.vmdk", "vm_1.vmdk", "vm_2.vmdk"]
    assert fe.flat_name("vm_1.vmdk") == "vm_1-flat.vmdk"


def test_vmdk_descriptor_matches_qemu_img_geometry():
    text = fe.vmdk_descriptor("d-flat.vmdk", 64 * 1024 * 1024)
    assert 'RW 131072 FLAT "d-flat.vmdk" 0' in text
    assert 'ddb.geometry.cylinders = "130"' in text  # what qemu-img writes for 64 MiB
    with pytest.raises(ValueError):
        fe.vmdk_descriptor("x", 1000)


def test_vmx_text_has_one_scsi_entry_per_disk():
    text = fe.vmx_text("vm2", ["vm2.vmdk", "vm2_1.vmdk"])
    assert 'scsi0:0.fileName = "vm2.vmdk"' in text
    assert 'scsi0:1.fileName = "vm2_1.vmdk"' in text
    assert 'displayName = "vm2"' in text


def test_stale_marked_lines():
    alive = lambda pid: pid == 1  # noqa: E731
    line = "[127.0.0.1]:2222 ssh-ed25519 AAAA %s:%d:/base" % (fe.MARKER, 1)
    assert not fe.is_stale_marked_line(line, pid_alive=alive, isdir=lambda p: True)
    assert fe.is_stale_marked_line(line, pid_alive=alive, isdir=lambda p: False)
    dead = line.replace(":1:", ":999999:")
    assert fe.is_stale_marked_line(dead, pid_alive=alive, isdir=lambda p: True)
    # somebody else's line is never ours to remove
    assert not fe.is_stale_marked_line("[127.0.0.1]:2222 ssh-ed25519 AAAA user@host",
                                       pid_alive=alive, isdir=lambda p: False)


def test_known_hosts_edit_keeps_foreign_lines_and_removes_only_ours(tmp_path):
    kh = tmp_path / "dot-ssh" / "known_hosts"
    kh.parent.mkdir()
    foreign = "example.org ssh-ed25519 AAAAforeign\n"
    stale = "[127.0.0.1]:5 ssh-ed25519 AAAAold %s:999999999:/nonexistent\n" % fe.MARKER
    kh.write_text(foreign + stale)
    os.chmod(str(kh), 0o600)
    ours = fe.known_hosts_line(2222, "ssh-ed25519 AAAAnew comment", os.getpid(), tmp_path)
    k = fe.KnownHosts(kh)
    k.add(ours)
    assert kh.read_text() == foreign + ours + "\n"  # stale line dropped on start
    assert kh.stat().st_mode & 0o777 == 0o600
    k.remove(ours)
    assert kh.read_text() == foreign


def test_known_hosts_created_by_us_is_removed_again(tmp_path):
    kh = tmp_path / "dot-ssh" / "known_hosts"
    k = fe.KnownHosts(kh)
    line = fe.known_hosts_line(2222, "ssh-ed25519 AAAA", os.getpid(), tmp_path)
    k.add(line)
    assert kh.read_text() == line + "\n"
    k.remove(line)
    assert not kh.parent.exists()


# ---------------------------------------------------------------- the fixture itself

@pytest.mark.integration
def test_datastore_layout(fake_esxi, guest_images):
    ds = fake_esxi.datastore_dir
    assert fake_esxi.disk_files("testvm2") == ["testvm2.vmdk", "testvm2_1.vmdk"]
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(ds / "testvm2" / "testvm2_1.vmdk")],
        check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout)
    assert info["format"] == "vmdk"
    assert info["virtual-size"] == guest_images.data_disk.stat().st_size
    assert (ds / "brokenvm" / "brokenvm.vmx").is_file()
    assert not (ds / "brokenvm" / "brokenvm-flat.vmdk").exists()
    assert fake_esxi.vm_uri("testvm") == (
        "ssh://root@127.0.0.1:%d/vmfs/volumes/datastore1/testvm/testvm.vmx" % fake_esxi.port)
    assert fake_esxi.vddk_style_path("testvm2", "testvm2_1") == \
        "[datastore1] testvm2/testvm2_1.vmdk"


@pytest.mark.integration
def test_ssh_with_agent_sees_vmfs(fake_esxi, esxi_agent):
    env = dict(os.environ, **esxi_agent.env)
    ok = subprocess.run(fake_esxi.ssh_argv("test", "-f", fake_esxi.flat_path("testvm", "testvm")),
                        env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        universal_newlines=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    broken = subprocess.run(
        fake_esxi.ssh_argv("test", "-f", fake_esxi.flat_path("brokenvm", "brokenvm")),
        env=env, stdin=subprocess.DEVNULL, timeout=60)
    assert broken.returncode == 1


@pytest.mark.integration
def test_scp_of_vmx_uses_sftp(fake_esxi, esxi_agent, tmp_path):
    # what virt-v2v 2.2 runs first: scp -T -P PORT root@127.0.0.1:/vmfs/.../vm.vmx local
    dest = tmp_path / "source.vmx"
    subprocess.run(["scp", "-T", "-P", str(fake_esxi.port),
                    "root@127.0.0.1:" + fake_esxi.vm_path("testvm2"), str(dest)],
                   env=dict(os.environ, **esxi_agent.env), stdin=subprocess.DEVNULL,
                   check=True, timeout=60)
    assert 'scsi0:1.fileName = "testvm2_1.vmdk"' in dest.read_text()


@pytest.mark.integration
def test_without_agent_key_login_is_refused(fake_esxi, tmp_path):
    # proves authentication really goes through the agent: an empty agent fails
    with _EmptyAgent() as sock:
        env = dict(os.environ, SSH_AUTH_SOCK=sock)
        r = subprocess.run(fake_esxi.ssh_argv("true"), env=env, stdin=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert r.returncode == 255
    assert "Permission denied" in r.stderr


class _EmptyAgent:
    def __enter__(self):
        self.dir = Path(__import__("tempfile").mkdtemp(prefix="v2vw-agent-", dir="/var/tmp"))
        self.sock = str(self.dir / "s")
        self.proc = subprocess.Popen(["ssh-agent", "-D", "-a", self.sock],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(self.sock):
                break
            time.sleep(0.02)
        return self.sock

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(str(self.dir), ignore_errors=True)


@pytest.mark.integration
def test_start_stop_leaves_no_trace(guest_images):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    kh = fe.default_known_hosts()
    before = kh.read_text() if kh.exists() else None
    images = {"os": guest_images.os_disk, "data": guest_images.data_disk}
    with fe.FakeEsxi(images) as fx:
        base, pid = fx.base, fx.proc.pid
        assert fx.proc.poll() is None
        assert any(l.startswith("[127.0.0.1]:%d " % fx.port) for l in kh.read_text().splitlines())
        if fx.vmfs_mode_used == "namespace":
            assert not os.path.lexists("/vmfs") or os.path.realpath("/vmfs") != str(base / "vmfs")
    assert not base.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    after = kh.read_text() if kh.exists() else None
    if before is not None:
        assert after == before
    else:
        assert after is None or fe.MARKER not in after or str(base) not in after
    assert str(base) not in open("/proc/self/mountinfo").read()


@pytest.mark.integration
def test_two_instances_have_separate_vmfs(fake_esxi, esxi_agent, guest_images):
    images = {"os": guest_images.os_disk, "data": guest_images.data_disk}
    with fe.FakeEsxi(images) as other:
        if other.vmfs_mode_used != "namespace":
            pytest.skip("separate /vmfs views need the mount-namespace mode")
        (other.datastore_dir / "testvm" / "only-in-other").write_text("x")
        with fe.SshAgent(other.client_private_key_text) as other_agent:
            listing = subprocess.run(
                other.ssh_argv("ls", "/vmfs/volumes/datastore1/testvm"),
                env=dict(os.environ, **other_agent.env), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, universal_newlines=True, timeout=60, check=True)
        assert "only-in-other" in listing.stdout.split()
        listing = subprocess.run(
            fake_esxi.ssh_argv("ls", "/vmfs/volumes/datastore1/testvm"),
            env=dict(os.environ, **esxi_agent.env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, universal_newlines=True, timeout=60, check=True)
        assert "only-in-other" not in listing.stdout.split()
        assert "testvm.vmx" in listing.stdout.split()


_HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import fake_esxi
fx = fake_esxi.FakeEsxi({"os": sys.argv[2], "data": sys.argv[3]}).__enter__()
print(fx.proc.pid, fx.base, fx.port, flush=True)
time.sleep(600)
"""


def _wait_gone(pid, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not fe._pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.integration
def test_sigkilled_owner_leaves_nothing_after_next_start(guest_images):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(Path(fe.__file__).parent),
         str(guest_images.os_disk), str(guest_images.data_disk)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, universal_newlines=True)
    try:
        sshd_pid, base, port = holder.stdout.readline().split()
    finally:
        holder.kill()
        holder.wait()
    # sshd gets SIGTERM from PR_SET_PDEATHSIG when its owner dies
    assert _wait_gone(int(sshd_pid)), "sshd %s outlived its SIGKILLed owner" % sshd_pid
    images = {"os": guest_images.os_disk, "data": guest_images.data_disk}
    with fe.FakeEsxi(images):
        kh = fe.default_known_hosts().read_text()
        assert "[127.0.0.1]:%s " % port not in kh  # stale line of the dead owner dropped
        assert not Path(base).exists()             # stale dir of the dead owner removed
