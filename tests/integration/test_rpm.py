"""The RPM: virt-v2v-wrapper.spec builds with rpmbuild from an sdist (.ci/build-rpm.sh)
and installs the console scripts, the man page, the docs and every package module."""
import os
import re
import shutil
import subprocess

import pytest

import wrapper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, ".ci", "build-rpm.sh")
SPEC = os.path.join(ROOT, "virt-v2v-wrapper.spec")


def spec_field(name):
    with open(SPEC) as f:
        m = re.search(r"^%s:\s*(\S+)" % name, f.read(), re.M)
    return m.group(1)


def test_spec_matches_the_package():
    """Cheap checks that need no rpmbuild (run with the unit tests)."""
    assert spec_field("Version") == wrapper.__version__
    assert spec_field("BuildArch") == "noarch"
    with open(os.path.join(ROOT, "setup.py")) as f:
        setup_py = f.read()
    with open(SPEC) as f:
        spec = f.read()
    for script in ("virt-v2v-wrapper", "virt-v2v-wrapper.py"):
        assert '"%s = wrapper.cli:console_main"' % script in setup_py
        assert "%%{_bindir}/%s\n" % script in spec
    assert '"docs/virt-v2v-wrapper.1"' in setup_py and "%{_mandir}/man1/virt-v2v-wrapper.1*" in spec
    for doc in re.search(r"^%doc (.*)$", spec, re.M).group(1).split():
        assert os.path.isfile(os.path.join(ROOT, doc)), doc
    assert '-m "not integration and not fuzz"' in spec


@pytest.mark.integration
def test_rpm_builds_and_lists_everything(tmp_path):
    if os.geteuid() != 0 and not shutil.which("rpmbuild"):
        pytest.skip("rpmbuild is not installed and installing it needs root")
    args = [SCRIPT, "--outdir", str(tmp_path)] + ([] if os.geteuid() == 0 else ["--no-deps"])
    p = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(tmp_path / "rpm-qlp.txt") as f:
        listing = f.read().splitlines()
    rpms = sorted(n for n in os.listdir(tmp_path) if n.endswith(".rpm"))
    assert rpms == ["virt-v2v-wrapper-%s-1.noarch.rpm" % wrapper.__version__,
                    "virt-v2v-wrapper-%s-1.src.rpm" % wrapper.__version__]
    # the same listing, read back from the package with rpm itself
    qlp = subprocess.run(["rpm", "-qlp", str(tmp_path / rpms[0])], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert qlp == listing
    for path in ("/usr/bin/virt-v2v-wrapper", "/usr/bin/virt-v2v-wrapper.py",
                 "/usr/share/doc/virt-v2v-wrapper/README.md",
                 "/usr/share/licenses/virt-v2v-wrapper/LICENSE"):
        assert path in listing
    assert any(re.fullmatch(r"/usr/share/man/man1/virt-v2v-wrapper\.1(\.gz)?", p) for p in listing)
    sitelib = next(p[:-len("/wrapper/__init__.py")] for p in listing if p.endswith("/wrapper/__init__.py"))
    modules = sorted(os.path.relpath(os.path.join(d, n), ROOT)
                     for d, _s, files in os.walk(os.path.join(ROOT, "wrapper"))
                     for n in files if n.endswith((".py", ".json")) and "__pycache__" not in d)
    missing = [m for m in modules if "%s/%s" % (sitelib, m) not in listing]
    assert missing == []
    # nothing from the tests or the CI scripts is installed
    assert not [p for p in listing if "/tests/" in p or "/.ci/" in p]
    assert re.search(r"took \d+ s; \d+ passed", p.stdout), "%check did not run the unit tests"
