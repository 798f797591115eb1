"""Administrator settings that tune the conversion (docs/contract.md §2):
resolved from options and VIRT_V2V_WRAPPER_* variables, each checked with
one line, and the VDDK configuration file's rules (wrapper.vddkconf)."""
import io
import os

import pytest

from wrapper import v2v, validate, vddkconf
from wrapper.errors import JobError
from wrapper.settings import DEFAULT_VDDK_LIBDIR, Settings, resolve, tuning_problem


def test_defaults_and_precedence():
    s = resolve({}, {})
    assert s.vddk_libdir == DEFAULT_VDDK_LIBDIR and tuning_problem(s) is None
    assert (s.vddk_transports, s.vddk_config, s.vddk_compression, s.appliance_memsize) == (None,) * 4
    s = resolve({"vddk_libdir": "rel/dir"}, {"VIRT_V2V_WRAPPER_VDDK_LIBDIR": "/env",
                                             "VIRT_V2V_WRAPPER_VDDK_COMPRESSION": "fastlz"})
    assert s.vddk_libdir == os.path.abspath("rel/dir") and s.vddk_compression == "fastlz"


def test_tuning_of_settings():
    s = resolve({"appliance_memsize": "4096", "vddk_transports": "hotadd:nbd"}, {})
    assert v2v.Tuning.of(s, host_cpus=6) == v2v.Tuning(
        vddk_libdir=DEFAULT_VDDK_LIBDIR, vddk_transports="hotadd:nbd", appliance_memsize=4096,
        host_cpus=6)


@pytest.mark.parametrize("attr, value, words", [
    ("vddk_transports", "nbd:", "--vddk-transports (VIRT_V2V_WRAPPER_VDDK_TRANSPORTS) must be modes"),
    ("vddk_transports", "NBD", "not 'NBD'"),
    ("vddk_compression", "", "--vddk-compression (VIRT_V2V_WRAPPER_VDDK_COMPRESSION) must be one of"),
    ("appliance_memsize", "255", "from 256 to 1048576, not '255'"),
    ("appliance_memsize", "1048577", "from 256"),
    ("appliance_memsize", "٤٠٩٦", "must be a whole number"),      # digits, but not ASCII ones
    ("vddk_config", "/etc/x\tz", "--vddk-config (VIRT_V2V_WRAPPER_VDDK_CONFIG) must be a path"),
])
def test_each_bad_value_is_one_line(attr, value, words):
    why = tuning_problem(Settings(**{attr: value}))
    assert why and words in why and "\n" not in why


@pytest.mark.parametrize("attr, value", [
    ("vddk_transports", "file:san:hotadd:nbdssl:nbd"), ("vddk_compression", "skipz"),
    ("appliance_memsize", "256"), ("appliance_memsize", "1048576")])
def test_good_values_pass(attr, value):
    assert tuning_problem(Settings(**{attr: value})) is None


def test_validate_lists_a_bad_setting_with_the_jobs_problems(tmp_path):
    settings = Settings(state_dir=str(tmp_path), log_dir=str(tmp_path), vddk_compression="lz4",
                        virt_v2v="/bin/true")
    out = io.StringIO()
    assert validate.report({"vm_name": "x"}, settings, out, resolve_user=lambda s, t: None) == 1
    assert "--vddk-compression (VIRT_V2V_WRAPPER_VDDK_COMPRESSION) must be one of" in out.getvalue()


def test_vddk_config_parse_and_render():
    values = vddkconf.parse("  # tuned\n\nVixDiskLib.nfcAio.Session.BufCount = 4 \n"
                            "VixDiskLib.nfcAio.Session.BufSizeIn64KB=16\n")
    assert values == {"VixDiskLib.nfcAio.Session.BufCount": 4, "VixDiskLib.nfcAio.Session.BufSizeIn64KB": 16}
    assert vddkconf.render(values) == ("VixDiskLib.nfcAio.Session.BufCount=4\n"
                                       "VixDiskLib.nfcAio.Session.BufSizeIn64KB=16\n")


@pytest.mark.parametrize("text, words", [
    # the line's text is never repeated: the file may hold what only root should read
    ("VixDiskLib.nfcAio.Session.BufCount\n", "line 1 is not one of"),
    ("VixDiskLib.nfcAio.Session.BufCount=0\n", "line 1: VixDiskLib.nfcAio.Session.BufCount must be a "
     "whole number from 1 to 64"),
    ("VixDiskLib.nfcAio.Session.BufCount=65\n", "from 1 to 64"),
    ("VixDiskLib.nfcAio.Session.BufCount=4x\n", "from 1 to 64"),
    ("\n\nvixdisklib.nfcaio.session.bufcount=4\n", "line 3 is not one of"),
    ("", "sets none of"),
])
def test_vddk_config_refusals_name_the_line(text, words):
    with pytest.raises(JobError) as e:
        vddkconf.parse(text, "/etc/v.conf")
    assert e.value.key == "--vddk-config" and words in str(e.value) and "\n" not in str(e.value)


def test_vddk_config_read_refuses_what_is_not_a_regular_file(tmp_path):
    with pytest.raises(JobError, match="is not a regular file"):
        vddkconf.read(str(tmp_path), owners=(os.geteuid(),))
    with pytest.raises(JobError, match="cannot be opened"):
        vddkconf.read(str(tmp_path / "missing"))
    f = tmp_path / "v.conf"
    f.write_bytes(b"VixDiskLib.nfcAio.Session.BufCount=4\xff\n")
    f.chmod(0o600)
    with pytest.raises(JobError, match="is not ASCII text"):
        vddkconf.read(str(f), owners=(os.geteuid(),))
    f.write_text("VixDiskLib.nfcAio.Session.BufCount=4\n" * 4000)
    with pytest.raises(JobError, match="larger than 65536 bytes"):
        vddkconf.read(str(f), owners=(os.geteuid(),))


def test_a_refusal_never_repeats_the_files_text():
    with pytest.raises(JobError) as e:
        vddkconf.parse("root:$6$secret-hash:19000:0:99999:7:::\n", "/etc/shadow")
    assert "secret-hash" not in str(e.value) and "line 1" in str(e.value)
