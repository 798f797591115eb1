"""A fake ESXi host for ``virt-v2v -i vmx -it ssh`` on loopback.

What virt-v2v 2.2 does with an ``ssh://root@127.0.0.1:PORT/vmfs/volumes/DS/VM/VM.vmx`` source
(see /work/shared/lab/virt-v2v/REPORT.md): ``scp`` the .vmx (SFTP), ``ssh ... test -f
<disk>-flat.vmdk`` (needs a shell), then ``nbdkit ssh path=<disk>-flat.vmdk`` (libssh, SFTP).
So we need an sshd that serves the host filesystem with a ``/vmfs/volumes/...`` tree in it.

How it leaves no trace:

* ``/vmfs``: by default sshd runs in a private mount namespace (``unshare --mount``) and
  ``chroot``s into a tmpfs whose top-level entries are recursive bind mounts of the host's
  ``/*`` plus ``/vmfs`` bound to this instance's datastore dir. The host's ``/`` is never
  touched, the mounts vanish with the namespace when sshd exits, and several instances can
  run at once, each with its own ``/vmfs``. Fallback (``vmfs_mode="symlink"``, or "auto"
  when unshare is not permitted): a ``/vmfs`` symlink, created only if ``/vmfs`` is absent
  and removed on exit.
* Host key trust: one line ``[127.0.0.1]:PORT ssh-ed25519 KEY v2vw-fake-esxi:PID:BASE`` is
  appended to the running user's ``~/.ssh/known_hosts`` (passwd home: OpenSSH ignores
  ``$HOME``), exactly that line is removed on exit, and marked lines whose PID is dead or
  whose BASE dir is gone are dropped on start. Both OpenSSH (scp/ssh) and libssh (nbdkit's
  ssh plugin) read that file. Edits are serialised with flock on ``~/.ssh`` and written
  by atomic rename so a concurrent reader never sees a partial file.
* Everything else (keys, config, log, datastore) lives in one ``/var/tmp/v2vw-esxi-*`` dir,
  removed on exit. Flat extents are symlinks to the cached guest images (no copying GBs);
  virt-v2v only reads them (it puts a cow overlay in front of the ssh plugin).

Authentication is by the caller's ssh-agent (the wrapper starts its own, loaded with the job's
``ssh_key`` = :attr:`FakeEsxi.client_private_key_text`). :class:`SshAgent` is a small agent
for tests that do not go through the wrapper.
"""

import fcntl
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

log = logging.getLogger(__name__)

MARKER = "v2vw-fake-esxi"
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


class VmSpec(NamedTuple):
    name: str
    disks: Sequence[str]       # keys of the images dict ("os", "data"), one per scsi0:N
    flat_present: bool = True  # False: descriptor and vmx exist, -flat.vmdk does not


# testvm: 1 disk; testvm2: OS + data disk; brokenvm: vmx present, flat vmdk missing
# (virt-v2v 2.2 then fails with the misleading "does not support guests with snapshots").
DEFAULT_VMS = (
    VmSpec("testvm", ("os",)),
    VmSpec("testvm2", ("os", "data")),
    VmSpec("brokenvm", ("os",), flat_present=False),
)


# ---------------------------------------------------------------- pure helpers

def disk_file_names(vm: str, count: int) -> List[str]:
    """VMware's naming: first disk ``vm.vmdk``, further ones ``vm_1.vmdk``, ``vm_2.vmdk``..."""
    return [vm + ".vmdk" if i == 0 else "%s_%d.vmdk" % (vm, i) for i in range(count)]


def flat_name(descriptor: str) -> str:
    return descriptor[:-len(".vmdk")] + "-flat.vmdk"


def vmdk_descriptor(flat_file: str, size_bytes: int, cid: int = 0x2a2a2a2a) -> str:
    """monolithicFlat descriptor (same shape as qemu-img/ESXi write) for a raw extent."""
    if size_bytes % 512:
        raise ValueError("disk size %d is not a multiple of 512" % size_bytes)
    sectors = size_bytes // 512
    cylinders = min(sectors // (16 * 63), 16383)
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        "CID=%08x\n"
        "parentCID=ffffffff\n"
        'createType="monolithicFlat"\n'
        "\n"
        "# Extent description\n"
        'RW %d FLAT "%s" 0\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        'ddb.virtualHWVersion = "14"\n'
        'ddb.geometry.cylinders = "%d"\n'
        'ddb.geometry.heads = "16"\n'
        'ddb.geometry.sectors = "63"\n'
        'ddb.adapterType = "lsilogic"\n'
        % (cid, sectors, flat_file, cylinders))


def vmx_text(vm: str, disk_files: Sequence[str], mac_suffix: int = 0) -> str:
    """A .vmx like ESXi writes: pvscsi controller, one scsi0:N per disk, two NICs
    (ethernet0 on network "VM Network", ethernet1 bridged on "VM Network 2")."""
    lines = [
        '.encoding = "UTF-8"',
        'config.version = "8"',
        'virtualHW.version = "14"',
        'displayName = "%s"' % vm,
        'guestOS = "debian10-64"',
        'memsize = "1024"',
        'numvcpus = "2"',
        'cpuid.coresPerSocket = "1"',
        'scsi0.present = "TRUE"',
        'scsi0.virtualDev = "pvscsi"',
    ]
    for i, f in enumerate(disk_files):
        lines += [
            'scsi0:%d.present = "TRUE"' % i,
            'scsi0:%d.deviceType = "scsi-hardDisk"' % i,
            'scsi0:%d.fileName = "%s"' % (i, f),
        ]
    lines += [
        'ethernet0.present = "TRUE"',
        'ethernet0.virtualDev = "vmxnet3"',
        'ethernet0.networkName = "VM Network"',
        'ethernet0.addressType = "generated"',
        'ethernet0.generatedAddress = "00:50:56:aa:%02x:cc"' % mac_suffix,
        'ethernet1.present = "TRUE"',
        'ethernet1.virtualDev = "e1000"',
        'ethernet1.networkName = "VM Network 2"',
        'ethernet1.connectionType = "bridged"',
        'ethernet1.addressType = "generated"',
        'ethernet1.generatedAddress = "00:50:56:aa:%02x:dd"' % mac_suffix,
    ]
    return "\n".join(lines) + "\n"


def sshd_config_text(*, port: int, host_key: Path, authorized_keys: Path,
                     sftp_server: str) -> str:
    return "\n".join([
        "Port %d" % port,
        "ListenAddress 127.0.0.1",
        "HostKey %s" % host_key,
        # never write /run/sshd.pid: that belongs to the system sshd, if any
        "PidFile none",
        "AuthorizedKeysFile %s" % authorized_keys,
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        # virt-v2v opens several connections per disk; parallel conversions multiply that
        "MaxStartups 100",
        "MaxSessions 100",
        "Subsystem sftp %s" % sftp_server,
        "LogLevel VERBOSE",
        "",
    ])


def known_hosts_line(port: int, host_pubkey: str, owner_pid: int, base: Path) -> str:
    keytype, key = host_pubkey.split()[:2]
    return "[127.0.0.1]:%d %s %s %s:%d:%s" % (port, keytype, key, MARKER, owner_pid, base)


def _pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (killed, not yet reaped) counts as dead."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: assume alive, never remove another run's line
    # "pid (comm) S ...": comm may contain spaces/parens, so split after the last ')'
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def is_stale_marked_line(line: str, pid_alive=_pid_alive, isdir=os.path.isdir) -> bool:
    """A line we wrote whose owner is gone (pid dead or base dir removed)."""
    fields = line.split()
    if len(fields) < 4 or not fields[3].startswith(MARKER + ":"):
        return False
    _, _, rest = fields[3].partition(":")
    pid_text, _, base = rest.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return True
    return not pid_alive(pid) or not isdir(base)


def _die_with_parent():
    """preexec_fn: SIGTERM the child (sshd, after unshare/chroot exec) when we die, so a
    SIGKILLed test run does not leave an sshd behind. Survives execve (sshd is not setuid)."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def remove_stale_bases(workdir: Path, pid_alive=_pid_alive) -> List[Path]:
    """Remove v2vw-esxi-* dirs left by owners that died without cleaning up (SIGKILL)."""
    removed = []
    for base in sorted(Path(workdir).glob("v2vw-esxi-*")):
        try:
            pid = int((base / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not fully created yet, or not ours: leave it
        if pid_alive(pid):
            continue
        root = base / "root"
        if root.exists() and os.path.ismount(str(root)):
            continue
        shutil.rmtree(str(base), ignore_errors=True)
        removed.append(base)
    return removed


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def namespace_launch_script(root: Path, vmfs: Path, sshd_argv: Sequence[str]) -> str:
    """Shell run under ``unshare --mount --propagation private``: build a tmpfs root that
    mirrors the host's ``/*`` by rbind mounts, add ``/vmfs``, chroot, exec sshd."""
    q = _shquote
    return "\n".join([
        "set -e",
        "R=%s" % q(str(root)),
        'mount -t tmpfs -o mode=755 v2vw-esxi-root "$R"',
        "for e in /* /.[!.]*; do",
        '  [ -e "$e" ] || [ -L "$e" ] || continue',
        '  n=${e#/}',
        '  if [ -L "$e" ]; then ln -s "$(readlink "$e")" "$R/$n"',
        '  elif [ -d "$e" ]; then mkdir "$R/$n"; mount --rbind "$e" "$R/$n"',
        '  else : > "$R/$n"; mount --bind "$e" "$R/$n"',
        "  fi",
        "done",
        'mkdir "$R/vmfs"',
        'mount --bind %s "$R/vmfs"' % q(str(vmfs)),
        'exec chroot "$R" %s' % " ".join(q(a) for a in sshd_argv),
        "",
    ])


def _shquote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def namespace_supported() -> bool:
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


# ---------------------------------------------------------------- known_hosts editing

class KnownHosts:
    """Adds/removes our marked line in a known_hosts file, atomically and under flock."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.created_dir = False
        self.created_file = False

    def _lock(self):
        fd = os.open(str(self.path.parent), os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _rewrite(self, keep, add: Optional[str] = None):
        try:
            old = self.path.read_text().splitlines(True)
        except FileNotFoundError:
            old = []
        new = [l for l in old if keep(l)]
        if add is not None:
            if new and not new[-1].endswith("\n"):
                new[-1] += "\n"
            new.append(add + "\n")
        if new == old:
            return
        target = Path(os.path.realpath(str(self.path)))  # keep a symlinked file a symlink
        fd, tmp = tempfile.mkstemp(dir=str(target.parent), prefix=".v2vw-kh-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write("".join(new))
            if target.exists():
                st = target.stat()
                os.chmod(tmp, st.st_mode & 0o7777)
                os.chown(tmp, st.st_uid, st.st_gid)
            else:
                os.chmod(tmp, 0o644)
            os.replace(tmp, str(target))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def add(self, line: str):
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(mode=0o700, parents=True)
            self.created_dir = True
        self.created_file = not self.path.exists()
        fd = self._lock()
        try:
            host = line.split()[0]
            # drop stale lines of ours, and any line of ours for the same [host]:port
            self._rewrite(lambda l: not is_stale_marked_line(l)
                          and not (MARKER in l and l.split()[:1] == [host]),
                          add=line)
        finally:
            os.close(fd)

    def remove(self, line: str):
        if not self.path.parent.is_dir():
            return
        fd = self._lock()
        try:
            self._rewrite(lambda l: l.rstrip("\n") != line)
            if self.created_file and self.path.exists() and self.path.stat().st_size == 0:
                self.path.unlink()
        finally:
            os.close(fd)
        if self.created_dir:
            try:
                self.path.parent.rmdir()
            except OSError:
                pass  # something else put files there meanwhile; not ours to delete


def default_known_hosts() -> Path:
    # OpenSSH and libssh use the passwd home dir, not $HOME (verified in the lab).
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh" / "known_hosts"


# ---------------------------------------------------------------- the fake host

class FakeEsxi:
    """Context manager: datastore + sshd on 127.0.0.1:<free port>. See module docstring.

    ``images``: mapping of disk kind -> raw image path, e.g. ``{"os": ..., "data": ...}``
    (:func:`guestimage.ensure_guest_images` provides them).
    """

    def __init__(self, images: Dict[str, Path], *, datastore: str = "datastore1",
                 vms: Sequence[VmSpec] = DEFAULT_VMS, vmfs_mode: str = "auto",
                 known_hosts: Optional[Path] = None, workdir: Path = Path("/var/tmp"),
                 start_timeout: float = 20.0, argv_prefix: Sequence[str] = ()):
        """``argv_prefix``: run sshd under it, e.g. ``nsenter --net=...`` to serve on the
        127.0.0.1 of another network namespace."""
        if vmfs_mode not in ("auto", "namespace", "symlink"):
            raise ValueError("vmfs_mode must be auto, namespace or symlink")
        self.images = {k: Path(v) for k, v in images.items()}
        self.datastore = datastore
        self.vms = {vm.name: vm for vm in vms}
        self.vmfs_mode = vmfs_mode
        self.known_hosts = KnownHosts(known_hosts or default_known_hosts())
        self.workdir = Path(workdir)
        self.start_timeout = start_timeout
        self.argv_prefix = list(argv_prefix)
        self.base: Optional[Path] = None
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self._kh_line: Optional[str] = None
        self.vmfs_mode_used: Optional[str] = None  # "namespace" or "symlink" once started
        self._vmfs_symlink = False
        self._log_file = None

    # ---- public API

    @property
    def client_key_path(self) -> Path:
        return self.ssh_dir / "client_ed25519"

    @property
    def client_private_key_text(self) -> str:
        return self.client_key_path.read_text()

    @property
    def host_public_key(self) -> str:
        return (self.ssh_dir / "host_ed25519.pub").read_text().strip()

    @property
    def ssh_dir(self) -> Path:
        return self._base() / "ssh"

    @property
    def sshd_log(self) -> Path:
        return self.ssh_dir / "sshd.log"

    @property
    def datastore_dir(self) -> Path:
        """Where the datastore lives on the host (seen as /vmfs/volumes/<ds> over ssh)."""
        return self._base() / "vmfs" / "volumes" / self.datastore

    def vm_path(self, vm: str) -> str:
        """Remote path of the .vmx (as sshd clients see it)."""
        self._check_vm(vm)
        return "/vmfs/volumes/%s/%s/%s.vmx" % (self.datastore, vm, vm)

    def vm_uri(self, vm: str, user: str = "root") -> str:
        return "ssh://%s@127.0.0.1:%d%s" % (user, self.port, self.vm_path(vm))

    def disk_files(self, vm: str) -> List[str]:
        self._check_vm(vm)
        return disk_file_names(vm, len(self.vms[vm].disks))

    def flat_path(self, vm: str, disk: str) -> str:
        """Remote path of a disk's -flat.vmdk (what nbdkit's ssh plugin opens)."""
        return "/vmfs/volumes/%s/%s/%s" % (self.datastore, vm, flat_name(_vmdk(disk)))

    def vddk_style_path(self, vm: str, disk: str) -> str:
        """``[datastore1] vm/disk.vmdk``, the form clients put in ``source_disks``."""
        self._check_vm(vm)
        return "[%s] %s/%s" % (self.datastore, vm, _vmdk(disk))

    def ssh_argv(self, *command: str) -> List[str]:
        """ssh to the fake host the way virt-v2v does (agent auth, trusted host key)."""
        return ["ssh", "-o", "BatchMode=yes", "-p", str(self.port), "root@127.0.0.1",
                *command]

    # ---- lifecycle

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        missing = [k for vm in self.vms.values() for k in vm.disks if k not in self.images]
        if missing:
            raise ValueError("no image for disk kind(s) %s" % sorted(set(missing)))
        for stale in remove_stale_bases(self.workdir):
            log.info("removed stale fake ESXi dir %s", stale)
        self.base = Path(tempfile.mkdtemp(prefix="v2vw-esxi-", dir=str(self.workdir)))
        os.chmod(str(self.base), 0o755)
        (self.base / "owner.pid").write_text(str(os.getpid()))
        self.ssh_dir.mkdir()
        self._make_datastore()
        self._make_keys()
        mode = self.vmfs_mode
        if mode == "auto":
            mode = "namespace" if namespace_supported() else "symlink"
        self.vmfs_mode_used = mode
        if mode == "symlink":
            self._make_vmfs_symlink()
        self._start_sshd(mode)
        self._kh_line = known_hosts_line(self.port, self.host_public_key, os.getpid(),
                                         self.base)
        self.known_hosts.add(self._kh_line)
        log.info("fake ESXi on 127.0.0.1:%d (%s), datastore %s", self.port, mode,
                 self.datastore_dir)

    def stop(self):
        """Idempotent; removes everything it created, even after a partial start."""
        errors = []
        for step in (self._stop_sshd, self._remove_known_hosts, self._remove_vmfs_symlink,
                     self._remove_base):
            try:
                step()
            except Exception as exc:  # keep cleaning; report at the end
                log.exception("fake ESXi cleanup step %s failed", step.__name__)
                errors.append(exc)
        if errors:
            raise errors[0]

    # ---- internals

    def _base(self) -> Path:
        if self.base is None:
            raise RuntimeError("FakeEsxi not started")
        return self.base

    def _check_vm(self, vm: str):
        if vm not in self.vms:
            raise KeyError("unknown fake VM %r (have %s)" % (vm, sorted(self.vms)))

    def _make_datastore(self):
        for n, vm in enumerate(self.vms.values()):
            d = self.datastore_dir / vm.name
            d.mkdir(parents=True)
            files = disk_file_names(vm.name, len(vm.disks))
            for kind, desc in zip(vm.disks, files):
                image = self.images[kind]
                (d / desc).write_text(vmdk_descriptor(flat_name(desc),
                                                      image.stat().st_size))
                if vm.flat_present:
                    # zero-copy: virt-v2v only reads the extent (cow overlay in front)
                    os.symlink(str(image.resolve()), str(d / flat_name(desc)))
            (d / (vm.name + ".vmx")).write_text(vmx_text(vm.name, files, mac_suffix=n))

    def _make_keys(self):
        for name, comment in (("host_ed25519", "v2vw-fake-esxi-host"),
                              ("client_ed25519", "v2vw-fake-esxi-client")):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                            "-f", str(self.ssh_dir / name)], check=True,
                           stdin=subprocess.DEVNULL)
        shutil.copyfile(str(self.ssh_dir / "client_ed25519.pub"),
                        str(self.ssh_dir / "authorized_keys"))

    def _make_vmfs_symlink(self):
        vmfs = Path("/vmfs")
        if os.path.lexists(str(vmfs)):
            raise RuntimeError("/vmfs already exists; cannot use vmfs_mode=symlink "
                               "(use the namespace mode, which needs unshare --mount)")
        os.symlink(str(self._base() / "vmfs"), str(vmfs))
        self._vmfs_symlink = True

    def _start_sshd(self, mode: str):
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        sftp = SFTP_SERVER if os.path.exists(SFTP_SERVER) else "internal-sftp"
        last_log = ""
        for _attempt in range(5):
            self.port = find_free_port()
            cfg = self.ssh_dir / "sshd_config"
            cfg.write_text(sshd_config_text(
                port=self.port, host_key=self.ssh_dir / "host_ed25519",
                authorized_keys=self.ssh_dir / "authorized_keys", sftp_server=sftp))
            subprocess.run([SSHD, "-t", "-f", str(cfg)], check=True,
                           stdin=subprocess.DEVNULL)
            sshd_argv = [SSHD, "-D", "-e", "-f", str(cfg)]
            if mode == "namespace":
                root = self._base() / "root"
                root.mkdir(exist_ok=True)
                script = self.ssh_dir / "launch.sh"
                script.write_text(namespace_launch_script(root, self._base() / "vmfs",
                                                          sshd_argv))
                argv = ["unshare", "--mount", "--propagation", "private", "sh", str(script)]
            else:
                argv = sshd_argv
            argv = self.argv_prefix + argv
            self._log_file = open(str(self.sshd_log), "ab")
            # own process group: the per-connection sshd children can be ended with it
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=self._log_file, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=_die_with_parent)
            if self._wait_listening():
                return
            last_log = self.sshd_log.read_text(errors="replace")[-2000:]
            self._stop_sshd()
            if "Address already in use" not in last_log:
                break
            log.info("port %d taken meanwhile, retrying", self.port)
        raise RuntimeError("fake ESXi sshd did not start: %s" % last_log)

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        needle = "Server listening on 127.0.0.1 port %d" % self.port
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if needle in self.sshd_log.read_text(errors="replace"):
                return True
            time.sleep(0.05)
        return False

    def _stop_sshd(self):
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            # per-connection children (same process group, which we created) still alive?
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _remove_known_hosts(self):
        line, self._kh_line = self._kh_line, None
        if line is not None:
            self.known_hosts.remove(line)

    def _remove_vmfs_symlink(self):
        if self._vmfs_symlink:
            self._vmfs_symlink = False
            if os.path.islink("/vmfs") and os.readlink("/vmfs") == str(self._base() / "vmfs"):
                os.unlink("/vmfs")

    def _remove_base(self):
        base, self.base = self.base, None
        if base is None or not base.exists():
            return
        # The namespace mounts never reach the host's mount table, but never rmtree
        # through a mount point if that assumption were ever wrong.
        root = base / "root"
        if root.exists() and os.path.ismount(str(root)):
            raise RuntimeError("%s is still a mount point; not removing %s" % (root, base))
        shutil.rmtree(str(base))


def _vmdk(disk: str) -> str:
    return disk if disk.endswith(".vmdk") else disk + ".vmdk"


# ---------------------------------------------------------------- ssh-agent for tests

class SshAgent:
    """A throwaway ssh-agent holding one key (the wrapper starts its own; tests that run
    virt-v2v directly use this). ``.env`` gives ``{"SSH_AUTH_SOCK": ...}``."""

    def __init__(self, key_text: str, workdir: Path = Path("/var/tmp")):
        self.key_text = key_text
        self.workdir = Path(workdir)
        self.dir: Optional[Path] = None
        self.proc: Optional[subprocess.Popen] = None

    @property
    def sock(self) -> Path:
        return self.dir / "agent.sock"

    @property
    def env(self) -> Dict[str, str]:
        return {"SSH_AUTH_SOCK": str(self.sock)}

    def __enter__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="v2vw-agent-", dir=str(self.workdir)))
        try:
            self.proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(self.sock)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while not self.sock.exists():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("ssh-agent did not start")
                time.sleep(0.02)
            key = self.dir / "key"
            fd = os.open(str(key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.key_text)
            try:
                subprocess.run(["ssh-add", "-q", str(key)], env=dict(os.environ, **self.env),
                               check=True, stdin=subprocess.DEVNULL)
            finally:
                key.unlink()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.dir is not None:
            shutil.rmtree(str(self.dir), ignore_errors=True)
            self.dir = None
