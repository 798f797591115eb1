"""The VDDK test world: a vSphere SOAP stand-in, a file-backed VDDK library, the real
nbdkit vddk plugin, or a stand-in plugin where that cannot be had (docs/contract.md §3,
transport_method "vddk").

:func:`ensure_world` builds (or finds cached) everything under /var/tmp/v2vw-vddk with
``build.sh`` and returns a :class:`World`. :class:`Standin` is one running vSphere: a
datastore directory of our own with one ``.vmx`` per VM and monolithicFlat VMDK pairs
whose flat extents are the given images, the SOAP stand-in serving it (ESXi, or vCenter
with ``vpx=True``), and a VDDK library directory whose configuration knows the same user,
password, thumbprint, VM morefs and datastore.

    world = ensure_world()
    with Standin(world, {"vm1": [os_img], "vm2": [os_img, data_img]}) as sim:
        sim.esx_uri(), sim.vpx_uri(), sim.thumbprint, sim.libdir, sim.password_file

Everything a run-as user needs (libdir, datastore, wrapper) is world-readable; the
password file is not.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build.sh"
CACHE_ENV = "V2VW_VDDK_CACHE"
DEFAULT_CACHE = "/var/tmp/v2vw-vddk"
BUILD_TIMEOUT = 900       # the first Go build takes ~90-150 s on a loaded 2-core machine
START_TIMEOUT = 60
DATASTORE = "datastore1"
USER = "root"
DEFAULT_PASSWORD = "vddk-test-Secret-1"   # what the stand-ins accept unless told otherwise
CONF_NAME = "v2vw-vixlib.conf"
SECTOR = 512


class World(NamedTuple):
    cache: Path
    plugin: str             # path of the nbdkit vddk plugin the tests use
    plugin_kind: str        # "real 1.42.3", or "stand-in" when the real one cannot be had
    wrapper_dir: Path       # put first on PATH: its nbdkit maps "vddk" to the plugin
    standin_wrapper_dir: Path   # the same, always with the stand-in plugin
    soapsim: Path
    vixlib: Path
    cert: Path
    key: Path
    thumbprint: str

    @property
    def real_plugin(self):
        return self.plugin_kind.startswith("real")


def parse_world(text):
    """build.sh's ``key=value`` lines -> dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def ensure_world(cache=None, timeout=BUILD_TIMEOUT):
    """Build or reuse the cached world; RuntimeError with the build's stderr tail on failure."""
    cache = Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    proc = subprocess.run(["bash", str(BUILD), str(cache)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (rc %d): %s" % (BUILD, proc.returncode, proc.stderr[-2000:]))
    kv = parse_world(proc.stdout)
    return World(cache=cache, plugin=kv["plugin"], plugin_kind=kv["plugin_kind"],
                 wrapper_dir=Path(kv["nbdkit_wrapper_dir"]),
                 standin_wrapper_dir=Path(kv["standin_wrapper_dir"]), soapsim=Path(kv["soapsim"]),
                 vixlib=Path(kv["vixlib"]), cert=Path(kv["cert"]), key=Path(kv["key"]),
                 thumbprint=kv["thumbprint"])


# ------------------------------------------------------------------ datastore files

def disk_file_names(vm, index):
    """(descriptor, flat extent) names of disk ``index`` of ``vm``: vm.vmdk, vm_1.vmdk, ..."""
    stem = vm if index == 0 else "%s_%d" % (vm, index)
    return stem + ".vmdk", stem + "-flat.vmdk"


def datastore_path(vm, index):
    """The disk as VMware and libvirt name it: ``[datastore1] vm/vm_1.vmdk``."""
    return "[%s] %s/%s" % (DATASTORE, vm, disk_file_names(vm, index)[0])


def vmdk_descriptor(flat_name, size):
    sectors = size // SECTOR
    return "\n".join([
        "# Disk DescriptorFile", "version=1", "CID=fffffffe", "parentCID=ffffffff",
        'createType="monolithicFlat"', "", "# Extent description",
        'RW %d FLAT "%s" 0' % (sectors, flat_name), "", "# The Disk Data Base", "#DDB", "",
        'ddb.adapterType = "lsilogic"',
        'ddb.geometry.cylinders = "%d"' % max(1, sectors // (255 * 63)),
        'ddb.geometry.heads = "255"', 'ddb.geometry.sectors = "63"',
        'ddb.virtualHWVersion = "14"', ""])


def vmx_text(vm, ndisks, uuid_byte=0):
    """A .vmx like ESXi writes: pvscsi disks, a vmxnet3 NIC on "VM Network"."""
    lines = [
        '.encoding = "UTF-8"', 'config.version = "8"', 'virtualHW.version = "14"',
        'displayName = "%s"' % vm, 'guestOS = "debian10-64"', 'memsize = "1024"',
        'numvcpus = "1"',
        'uuid.bios = "56 4d 2a 7b 8e 3c 11 22-33 44 55 66 77 88 99 %02x"' % uuid_byte,
        'scsi0.present = "TRUE"', 'scsi0.virtualDev = "pvscsi"',
        'ethernet0.present = "TRUE"', 'ethernet0.virtualDev = "vmxnet3"',
        'ethernet0.networkName = "VM Network"', 'ethernet0.addressType = "generated"',
        'ethernet0.generatedAddress = "00:50:56:aa:bb:%02x"' % uuid_byte]
    for i in range(ndisks):
        lines += ['scsi0:%d.present = "TRUE"' % i, 'scsi0:%d.deviceType = "scsi-hardDisk"' % i,
                  'scsi0:%d.fileName = "%s"' % (i, disk_file_names(vm, i)[0])]
    return "\n".join(lines) + "\n"


def library_config(*, password, thumbprint, morefs, datastore_dir, read_delay_us=0,
                   fail_read=None, calllog=None):
    """The VDDK stand-in's configuration text (see vixlib/vixlib.c)."""
    lines = ["user %s" % USER, "password %s" % password, "thumbprint %s" % thumbprint,
             "server 127.0.0.1", "datastore %s %s" % (DATASTORE, datastore_dir)]
    lines += ["vm %s" % m for m in morefs]
    if read_delay_us:
        lines.append("read_delay_us %d" % read_delay_us)
    if fail_read:
        lines.append("fail_read %d-%d" % fail_read)
    if calllog:
        lines.append("calllog %s" % calllog)
    return "\n".join(lines) + "\n"


def write_file(path, text, mode=0o644):
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(str(path), mode)   # not umask-dependent


# ------------------------------------------------------------------ one running vSphere

class Standin:
    """A running SOAP stand-in with its datastore and VDDK library directory.

    ``vms``: {name: [image path, ...]} (first = the boot disk). ``password``: what both the
    SOAP stand-in and the library accept; ``library_password`` overrides it for the
    library alone (a password VDDK refuses though libvirt took it). ``powered_on``: VM
    names shown running. ``fail_read``: (first, last) sector range whose reads fail;
    ``read_delay_us``: every VDDK read sleeps that long."""

    def __init__(self, world, vms, *, vpx=False, powered_on=(), password=DEFAULT_PASSWORD,
                 library_password=None, read_delay_us=0, fail_read=None, calllog=False):
        self.world = world
        self.vms = {name: [Path(p) for p in images] for name, images in vms.items()}
        self.vpx = vpx
        self.powered_on = tuple(powered_on)
        self.password = password
        self.library_password = library_password or password
        self.read_delay_us = read_delay_us
        self.fail_read = fail_read
        self.calllog = calllog
        self.root = None
        self.proc = None
        self.info = None

    # -- paths
    @property
    def libdir(self):
        return self.root / "libdir"

    @property
    def datastore_dir(self):
        return self.root / "ds"

    @property
    def password_file(self):
        return self.root / "password"

    @property
    def calllog_path(self):
        return self.root / "vddk-calls.log"

    @property
    def stderr_path(self):
        return self.root / "soapsim.log"

    @property
    def thumbprint(self):
        return self.world.thumbprint

    @property
    def address(self):
        """``127.0.0.1:PORT`` of the TLS front."""
        return self.info["url"].split("//", 1)[1].split("/", 1)[0]

    @property
    def morefs(self):
        return dict(self.info["morefs"])

    def esx_uri(self):
        return "esx://%s@%s/?no_verify=1" % (USER, self.address)

    def vpx_uri(self):
        """vCenter: ``vpx://root@HOST:PORT/DC/host?no_verify=1`` (a standalone host, whose
        compute resource has the host's name)."""
        return "vpx://%s@%s/%s/%s?no_verify=1" % (USER, self.address, self.info["datacenter"],
                                                  self.info["host"])

    # -- life
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _layout(self):
        ds, vmx = self.datastore_dir, self.root / "vmx"
        os.makedirs(str(vmx))
        for n, (vm, images) in enumerate(self.vms.items()):
            os.makedirs(str(ds / vm))
            for i, image in enumerate(images):
                desc, flat = disk_file_names(vm, i)
                os.symlink(str(image), str(ds / vm / flat))
                write_file(ds / vm / desc, vmdk_descriptor(flat, image.stat().st_size))
            write_file(vmx / (vm + ".vmx"), vmx_text(vm, len(images), uuid_byte=n + 1))
        write_file(self.password_file, self.password + "\n", mode=0o600)
        os.makedirs(str(self.libdir / "lib64"))
        os.symlink(str(self.world.vixlib), str(self.libdir / "lib64" / "libvixDiskLib.so.8"))

    def start(self):
        self.root = Path(tempfile.mkdtemp(prefix="v2vw-vddk-", dir="/var/tmp"))
        os.chmod(str(self.root), 0o755)      # the run-as user reads the datastore and libdir
        try:
            self._layout()
            self._start_soapsim()
            write_file(self.libdir / CONF_NAME, library_config(
                password=self.library_password, thumbprint=self.thumbprint,
                morefs=self.morefs.values(), datastore_dir=self.datastore_dir,
                read_delay_us=self.read_delay_us, fail_read=self.fail_read,
                calllog=self.calllog_path if self.calllog else None))
            if self.calllog:
                write_file(self.calllog_path, "", mode=0o666)
        except BaseException:
            self.stop()
            raise

    def _start_soapsim(self):
        ready = self.root / "ready.json"
        argv = [str(self.world.soapsim), "-l", "127.0.0.1:0", "-user", USER,
                "-password-file", str(self.password_file), "-ds", DATASTORE,
                "-ds-dir", str(self.datastore_dir), "-vmx-dir", str(self.root / "vmx"),
                "-cert", str(self.world.cert), "-key", str(self.world.key),
                "-ready-file", str(ready), "-vms", ",".join(self.vms)]
        if self.vpx:
            argv.append("-vpx")
        if self.powered_on:
            argv += ["-powered-on", ",".join(self.powered_on)]
        with open(str(self.stderr_path), "w") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         cwd=str(self.root))
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("soapsim did not start: %s" % self.stderr_path.read_text()[-2000:])
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None
        if self.root is not None and not os.environ.get("V2VW_KEEP_VDDK_WORLD"):
            shutil.rmtree(str(self.root), ignore_errors=True)
