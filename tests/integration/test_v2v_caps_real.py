"""What the real virt-v2v releases accept, probed by the wrapper's own code
(docs/contract.md §3.4): the host's 2.2 and, when built, 2.6 (trixie) and 2.10
(sid) through tests/integration/worlds.py.

* the probe (wrapper.v2vinfo.probe) reads the same version, capabilities,
  options and ``-io vddk-*`` keys as the captured answers the unit tests use
  (tests/data/virt-v2v-<release>/caps/), so the fakes stay true;
* the argv the wrapper builds for a VDDK job, with every setting that release
  takes, gets past virt-v2v's option parsing and its ``-io`` check: with a
  second guest name added, it stops at "expecting a libvirt guest name", which
  virt-v2v checks after the ``-io`` keys and before connecting to anything.
  Without the version check, 2.2 and 2.6 would refuse ``vddk-compression``
  exactly there (the control)."""
import pathlib

import pytest

from tests.integration import worlds
from wrapper import config as cfg, v2v, v2vinfo
from wrapper.errors import CommandError
from wrapper.runner import Result
from wrapper.security.secrets import Secret

pytestmark = pytest.mark.integration
DATA = pathlib.Path(__file__).parent.parent / "data"
FP = ":".join(["AB"] * 20)
PARSED = "-i libvirt: expecting a libvirt guest name on the command line"


def world_or_skip(name):
    world = worlds.get(name, wait=600 if name != "host" else 0)
    if world is None:
        pytest.skip(worlds.not_ready_reason(name) if name != "host" else "no virt-v2v on this host")
    return world


def world_runner(world):
    """A runner (wrapper.runner.run's signature) that runs in ``world``, as root."""
    def run(argv, *, env=None, timeout=60, user=None, check=True, **_kw):
        proc = world.run([str(a) for a in argv], env={"LANG": "C"}, timeout=timeout)
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        return Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    return run


def captured(world, name):
    return (DATA / ("virt-v2v-%s" % world.version) / "caps" / name).read_text()


@pytest.fixture(params=["host", "trixie", "sid"])
def world(request):
    return world_or_skip(request.param)


def test_the_probe_reads_what_was_captured(world):
    caps = v2vinfo.probe("virt-v2v", world_runner(world), vddk=True)
    assert caps.version_text.startswith(world.version + ".")
    assert caps.version == v2vinfo.parse_version(captured(world, "version.txt"))
    assert caps.lines == v2vinfo.parse_capabilities(captured(world, "machine-readable.txt")).lines
    assert caps.options == v2vinfo.parse_help_options(captured(world, "help.txt"))
    assert caps.vddk_keys == v2vinfo.parse_io_keys(captured(world, "io-libvirt-esx-vddk.txt"))
    assert caps.vddk_keys and "--machine-readable" in caps.options


def _vddk_argv(caps, tuning):
    config = cfg.Config(vm_name="vm1", source=cfg.VddkSource("esx://root@127.0.0.1?no_verify=1",
                                                             Secret("pw"), FP),
                        target=cfg.LocalTarget("/"), throttling={"cpu": "250%"})
    paths = v2v.RunPaths(machine_readable_log="/dev/null", vmware_password_file="/dev/null",
                         vddk_config_file="/dev/null")
    return v2v.build_command(config, caps, paths, tuning=tuning) + ["vm2"]


def test_the_built_vddk_argv_passes_the_releases_own_checks(world):
    run = world_runner(world)
    caps = v2vinfo.probe("virt-v2v", run, vddk=True)
    wide = caps.takes_vddk("vddk-compression")
    assert wide == (world.version == "2.10") == caps.accepts("--smp") == caps.accepts("--memsize")
    tuning = v2v.Tuning(vddk_libdir="/nonexistent", vddk_transports="nbdssl:nbd",
                        vddk_compression="zlib" if wide else None,
                        appliance_memsize=2048 if caps.accepts("--memsize") else None, host_cpus=4)
    argv = _vddk_argv(caps, tuning)
    assert ("--smp" in argv) == ("-io" in argv and "vddk-compression=zlib" in argv) == wide
    r = run(argv, check=False)
    assert PARSED in r.out + r.err, (argv, r.out[-2000:], r.err[-2000:])
    if not wide:        # the control: what the probe kept out would have been refused
        forced = argv[:argv.index("-ip")] + ["-io", "vddk-compression=zlib"] + argv[argv.index("-ip"):]
        r = run(forced, check=False)
        assert "-io vddk-compression" in r.out + r.err and PARSED not in r.out + r.err
        r = run(["virt-v2v", "--smp", "2"] + argv[1:], check=False)
        assert "unrecognized option '--smp'" in r.out + r.err
