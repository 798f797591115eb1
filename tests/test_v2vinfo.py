"""What the installed virt-v2v accepts, and the command built from it
(docs/contract.md §3.4).  Fakes: the answers of virt-v2v 2.2, 2.6 and 2.10
captured in tests/data/virt-v2v-<release>/caps/ (real outputs), and a 2.10
built without the oVirt outputs (its list minus the output:ovirt* lines, as
2.10+ prints it).  Every argv is compared as an exact list."""
import pathlib

import pytest

from tests.fakes import RecordingRunner
from wrapper import config as cfg, v2v, v2vinfo
from wrapper.errors import ConversionError, JobError
from wrapper.security.secrets import Secret
from wrapper.settings import Settings

DATA = pathlib.Path(__file__).parent / "data"
RELEASES = ("2.2", "2.6", "2.10")
FP = ":".join(["AB"] * 20)
VDDK = cfg.VddkSource("esx://root@10.2.0.20?no_verify=1", Secret("pw"), FP)
SSH = cfg.SshSource(None)
RHV = cfg.RhvUploadTarget("https://engine/ovirt-engine/api", Secret("pw"), "Default", "data",
                          "/ca.pem", False)
PATHS = v2v.RunPaths(machine_readable_log="/m", vmware_password_file="/s/vmware_password",
                     rhv_password_file="/s/rhv_password")
HEAD = ["virt-v2v", "-v", "-x", "--machine-readable=file:/m", "--root", "first"]
VDDK_ARGS = ["-i", "libvirt", "-ic", "esx://root@10.2.0.20?no_verify=1", "-it", "vddk",
             "-io", "vddk-libdir=/opt/vmware-vix-disklib-distrib", "-io", "vddk-thumbprint=" + FP]
# every option 2.8 removed (issue 21); the wrapper must pass none of them
REMOVED_IN_2_8 = ("--password-file", "--compressed", "--no-trim", "--qemu-boot", "--vmtype",
                  "--vddk-libdir", "--vddk-thumbprint", "--vddk-config", "--vddk-transports",
                  "--vdsm-compat", "--vdsm-image-uuid")


def caps_text(release, name):
    return (DATA / ("virt-v2v-%s" % release) / "caps" / name).read_text()


def runner_for(release, machine_readable=None):
    """A runner answering the probes as ``release`` did."""
    return RecordingRunner({
        ("virt-v2v", "--machine-readable"): (0, machine_readable or caps_text(release, "machine-readable.txt"), ""),
        ("virt-v2v", "--version"): (0, caps_text(release, "version.txt"), ""),
        ("virt-v2v", "--help"): (0, caps_text(release, "help.txt"), ""),
        ("virt-v2v", "-i", "libvirt"): (0, caps_text(release, "io-libvirt-esx-vddk.txt"), ""),
    })


def probed(release, machine_readable=None):
    return v2vinfo.probe("virt-v2v", runner_for(release, machine_readable), vddk=True)


def without_ovirt():
    """2.10 built without the oVirt outputs: 2.10+ then does not print them."""
    lines = caps_text("2.10", "machine-readable.txt").splitlines()
    return "\n".join(line for line in lines if not line.startswith("output:ovirt")) + "\n"


def config(source=VDDK, target=cfg.LocalTarget("/out"), **kw):
    name = "ssh://root@h/vmfs/volumes/ds/vm/vm.vmx" if source is SSH else "vm1"
    return cfg.Config(vm_name=name, source=source, target=target, **kw)


# -- the parsers --------------------------------------------------------------------------
@pytest.mark.parametrize("release, version", [("2.2", (2, 2, 0)), ("2.6", (2, 6, 0)), ("2.10", (2, 10, 0))])
def test_each_release_is_read_from_its_own_answers(release, version):
    caps = probed(release)
    assert caps.version == version and caps.version_text == ".".join(map(str, version))
    assert caps.major == 2 and caps.has("bandwidth-option") and caps.has("mac-option")
    assert {"--bridge", "-b", "--network", "-n", "--machine-readable", "--root", "-io", "-oo",
            "--key", "--mac", "--bandwidth-file", "-v", "-x"} <= caps.options
    assert {"vddk-libdir", "vddk-thumbprint", "vddk-config", "vddk-transports"} <= caps.vddk_keys


def test_what_2_10_adds_and_2_8_removed_is_seen_in_the_help():
    old, new = probed("2.6"), probed("2.10")
    for option in ("--smp", "--memsize", "-m", "--parallel"):
        assert new.accepts(option) and not old.accepts(option), option
    for option in REMOVED_IN_2_8:
        assert old.accepts(option) and not new.accepts(option), option
    assert new.takes_vddk("vddk-compression") and not old.takes_vddk("vddk-compression")
    assert probed("2.2").vddk_keys == old.vddk_keys          # 2.6 lists what 2.2 did


def test_parsers_on_text_that_says_nothing():
    assert v2vinfo.parse_version("") is None and v2vinfo.parse_version("usage: foo") is None
    assert v2vinfo.parse_version("virt-v2v 1.42") == (1, 42, 0)
    assert v2vinfo.parse_help_options("no options here\n virt-v2v -ic uri") == frozenset()
    assert v2vinfo.parse_io_keys("No input options can be used in this mode.") == frozenset()


def test_a_probe_that_fails_leaves_only_that_part_unknown():
    runner = RecordingRunner({("virt-v2v", "--machine-readable"): (0, "virt-v2v\nvirt-v2v-2.0\n", ""),
                              ("virt-v2v", "--version"): (1, "", "boom"),
                              ("virt-v2v", "--help"): (124, "", "timed out")})
    caps = v2vinfo.probe("virt-v2v", runner)
    assert caps.version is None and caps.options is None and caps.vddk_keys is None
    assert not caps.accepts("--smp") and caps.version_text == "unknown"


def test_a_program_that_is_not_virt_v2v_is_refused():
    with pytest.raises(ConversionError, match="did not answer like virt-v2v"):
        v2vinfo.probe("virt-v2v", RecordingRunner({("virt-v2v",): (0, "hello\n", "")}))
    with pytest.raises(ConversionError, match="cannot query virt-v2v capabilities"):
        v2vinfo.probe("virt-v2v", RecordingRunner({("virt-v2v",): (127, "", "not found")}))


def test_the_probes_share_one_time_budget():
    """The capabilities get the whole budget, the others (side by side) what is left."""
    now, first_takes = [0.0], [45]

    def runner(argv, *, env=None, timeout=None, user=None, **_kw):
        timeouts[argv[1]] = timeout
        if argv[1] == "--machine-readable":
            now[0] += first_takes[0]          # a slow first answer
        return runner_for("2.10")(argv, env=env, timeout=timeout, user=user)
    timeouts = {}
    v2vinfo.probe("virt-v2v", runner, vddk=True, clock=lambda: now[0])
    assert timeouts == {"--machine-readable": 60.0, "--version": 15.0, "--help": 15.0, "-i": 15.0}
    now[0], first_takes[0] = 0.0, 75        # the first answer overruns the budget: a second each
    timeouts.clear()
    assert v2vinfo.probe("virt-v2v", runner, clock=lambda: now[0]).version == (2, 10, 0)
    assert timeouts == {"--machine-readable": 60.0, "--version": 1.0, "--help": 1.0}


# -- output names ---------------------------------------------------------------------------
@pytest.mark.parametrize("release, names", [
    ("2.2", ("local", "rhv", "rhv-upload", "rhv-")),
    ("2.6", ("local", "rhv", "rhv-upload", "rhv-")),
    ("2.10", ("disk", "ovirt", "ovirt-upload", "ovirt-"))])
def test_output_names_follow_the_capability_list(release, names):
    caps = probed(release)
    assert (caps.output_name("local"), caps.output_name("rhv"), caps.output_name("rhv-upload"),
            caps.upload_option("")) == names
    # the -oo names of the upload are the ones that release's -oo ? prints
    assert ("-oo %scafile=" % names[3]) in caps_text(release, "oo-%s.txt" % names[2])


def test_argv_on_2_10_uses_the_new_names():
    caps = probed("2.10")
    assert v2v.build_command(config(), caps, PATHS) == HEAD + VDDK_ARGS + [
        "-ip", "/s/vmware_password", "-o", "disk", "-os", "/out", "-of", "raw", "vm1"]
    c = config(SSH, cfg.ExportDomainTarget("nfs:/export"))
    assert v2v.build_command(c, caps, PATHS)[6:] == [
        "-i", "vmx", "-it", "ssh", "-o", "ovirt", "-os", "nfs:/export", "-of", "raw",
        "--bridge", "ovirtmgmt", "--network", "ovirtmgmt", "ssh://root@h/vmfs/volumes/ds/vm/vm.vmx"]
    argv = v2v.build_command(config(target=RHV), caps, PATHS, allocation="sparse")
    assert argv[argv.index("-o"):argv.index("-of")] == [
        "-o", "ovirt-upload", "-oc", "https://engine/ovirt-engine/api", "-os", "data",
        "-op", "/s/rhv_password", "-oo", "ovirt-cafile=/ca.pem", "-oo", "ovirt-cluster=Default",
        "-oo", "ovirt-direct", "-oo", "ovirt-verifypeer=true"]


def test_argv_on_2_2_keeps_the_old_names():
    argv = v2v.build_command(config(target=RHV), probed("2.2"), PATHS)
    assert argv[argv.index("-o"):argv.index("-of")] == [
        "-o", "rhv-upload", "-oc", "https://engine/ovirt-engine/api", "-os", "data",
        "-op", "/s/rhv_password", "-oo", "rhv-cafile=/ca.pem", "-oo", "rhv-cluster=Default",
        "-oo", "rhv-direct", "-oo", "rhv-verifypeer=true"]


TUNED = v2v.Tuning(vddk_libdir="/srv/vddk", vddk_transports="nbdssl:nbd", vddk_compression="zlib",
                   appliance_memsize=4096, host_cpus=8)


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("target", [cfg.LocalTarget("/out"), cfg.ExportDomainTarget("/exp"), RHV])
@pytest.mark.parametrize("source", [VDDK, SSH])
def test_every_option_the_wrapper_passes_is_in_that_releases_help(release, target, source):
    """The argv for every source and target, fully tuned, with a CPU limit
    and a bandwidth file: each option is one the release's --help lists."""
    caps = probed(release)
    paths = v2v.RunPaths(machine_readable_log="/m", vmware_password_file="/s/v", rhv_password_file="/s/r",
                         luks_key_files=(("/dev/sda1", "/s/k"),), bandwidth_file="/s/bw",
                         vddk_config_file="/s/vddk_config")
    c = config(source, target, throttling={"cpu": "250%"}, allocation="sparse",
               network_mappings=(cfg.NetworkMapping("a", "b", "00:11:22:33:44:55"),))
    tuning = TUNED if release == "2.10" else v2v.Tuning(vddk_transports="nbd", host_cpus=8)
    argv = v2v.build_command(c, caps, paths, tuning=tuning)
    options = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("-")]
    assert options and all(caps.accepts(o) for o in options), [o for o in options if not caps.accepts(o)]
    assert not set(options) & set(REMOVED_IN_2_8)
    io_keys = [argv[i + 1].split("=", 1)[0] for i, a in enumerate(argv) if a == "-io"]
    assert all(caps.takes_vddk(k) for k in io_keys), io_keys
    assert ("--smp" in argv) == ("--memsize" in argv) == (release == "2.10")


def test_tuned_vddk_argv_on_2_10_exactly():
    paths = v2v.RunPaths(machine_readable_log="/m", vmware_password_file="/s/vmware_password",
                         vddk_config_file="/s/vddk_config")
    argv = v2v.build_command(config(throttling={"cpu": "150%"}), probed("2.10"), paths, tuning=TUNED)
    assert argv == HEAD + [
        "-i", "libvirt", "-ic", "esx://root@10.2.0.20?no_verify=1", "-it", "vddk",
        "-io", "vddk-libdir=/srv/vddk", "-io", "vddk-thumbprint=" + FP,
        "-io", "vddk-transports=nbdssl:nbd", "-io", "vddk-config=/s/vddk_config",
        "-io", "vddk-compression=zlib", "-ip", "/s/vmware_password",
        "-o", "disk", "-os", "/out", "-of", "raw", "--smp", "2", "--memsize", "4096", "vm1"]


def test_on_2_2_no_appliance_options_even_with_a_cpu_limit():
    argv = v2v.build_command(config(throttling={"cpu": "400%"}), probed("2.2"), PATHS,
                             tuning=v2v.Tuning(host_cpus=8))
    assert argv == HEAD + VDDK_ARGS + ["-ip", "/s/vmware_password", "-o", "local", "-os", "/out",
                                       "-of", "raw", "vm1"]


def test_without_a_cpu_limit_virt_v2v_sizes_the_appliance():
    argv = v2v.build_command(config(), probed("2.10"), PATHS, tuning=v2v.Tuning(host_cpus=8))
    assert "--smp" not in argv and "--memsize" not in argv


@pytest.mark.parametrize("cpu, host, smp", [
    ("50%", 8, 1), ("100%", 8, 1), ("101%", 8, 2), ("250%", 8, 3), ("800%", 8, 8),
    ("5000%", 8, 8), ("0.5", 2, 1), (None, 8, None), ("300%", 0, 1)])
def test_appliance_smp_follows_the_cpu_limit(cpu, host, smp):
    assert v2v.appliance_smp(cpu, host) == smp


# -- refusals -------------------------------------------------------------------------------
def test_a_build_without_the_ovirt_outputs_refuses_ovirt_jobs_in_one_line():
    caps = probed("2.10", without_ovirt())
    settings = Settings()
    for target, key in ((RHV, "rhv_url"), (cfg.ExportDomainTarget("/exp"), "export_domain")):
        e = v2vinfo.job_refusal(config(target=target), caps, settings)
        assert isinstance(e, JobError) and e.key == key
        assert "virt-v2v 2.10.0 was built without the oVirt outputs" in str(e) and "\n" not in str(e)
    assert v2vinfo.job_refusal(config(), caps, settings) is None
    assert caps.output_name("local") == "disk"
    assert "outputs disk" in v2vinfo.describe(caps) and "ovirt" not in v2vinfo.describe(caps)


@pytest.mark.parametrize("release", RELEASES)
def test_full_builds_accept_every_target(release):
    caps = probed(release)
    for target in (RHV, cfg.ExportDomainTarget("/exp"), cfg.LocalTarget("/o")):
        assert v2vinfo.job_refusal(config(target=target), caps, Settings()) is None


def test_a_list_that_names_no_output_refuses_nothing():
    caps = v2vinfo.parse_capabilities("virt-v2v\nvddk\n")
    assert v2vinfo.job_refusal(config(target=RHV), caps, Settings()) is None


@pytest.mark.parametrize("release", ("2.2", "2.6"))
def test_vddk_compression_before_2_10_is_refused_not_a_failed_conversion(release):
    settings = Settings(vddk_compression="zlib")
    e = v2vinfo.job_refusal(config(), probed(release), settings)
    assert e.key == "--vddk-compression" and "does not take -io vddk-compression" in str(e)
    assert v2vinfo.job_refusal(config(SSH), probed(release), settings) is None   # ssh: unused
    assert v2vinfo.job_refusal(config(), probed("2.10"), settings) is None


def test_vddk_compression_is_refused_when_the_io_answer_is_unknown():
    caps = v2vinfo.probe("virt-v2v", RecordingRunner({("virt-v2v", "--machine-readable"):
                                                      (0, "virt-v2v\n", ""),
                                                      ("virt-v2v", "-i"): (1, "", "error")}), vddk=True)
    assert caps.vddk_keys is None
    assert v2vinfo.job_refusal(config(), caps, Settings(vddk_compression="zlib")).key == "--vddk-compression"


@pytest.mark.parametrize("release", ("2.2", "2.6"))
def test_appliance_memsize_before_2_10_is_refused(release):
    e = v2vinfo.job_refusal(config(SSH), probed(release), Settings(appliance_memsize="2048"))
    assert e.key == "--appliance-memsize" and "does not take --memsize" in str(e)
    assert v2vinfo.job_refusal(config(SSH), probed("2.10"), Settings(appliance_memsize="2048")) is None


@pytest.mark.parametrize("release, words", [
    ("2.2", "virt-v2v 2.2.0: bandwidth-file, mac, outputs local,rhv,rhv-upload"),
    ("2.6", "virt-v2v 2.6.0: bandwidth-file, mac, outputs local,rhv,rhv-upload"),
    ("2.10", "virt-v2v 2.10.0: bandwidth-file, mac, parallel, smp, memsize, vddk-compression, "
             "outputs disk,ovirt,ovirt-upload")])
def test_describe_says_the_version_and_what_it_enables(release, words):
    assert v2vinfo.describe(probed(release)) == words
