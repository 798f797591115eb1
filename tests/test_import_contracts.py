"""The layering written down in .importlinter (issue 19) holds: no wing imports
the command line, observe/ never imports reclaim, the wings sit below the job
and do not import each other, no import circle.  Checked by import-linter
(`lint-imports`), a test dependency (tests/run-all.sh installs it)."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lint_imports():
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    if not os.access(exe, os.X_OK):
        exe = shutil.which("lint-imports")
    if not exe:
        pytest.skip("import-linter is not installed (pip install import-linter)")
    return exe


def run(exe, cwd):
    env = dict(os.environ, PYTHONPATH=cwd)
    return subprocess.run([exe, "--no-cache", os.path.join(cwd, ".importlinter")], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_are_kept():
    p = run(lint_imports(), ROOT)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "0 broken" in p.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("observe/status.py", "from wrapper import reclaim", "observe/ never imports reclaim"),
    ("observe/metrics.py", "from wrapper.observe import status", "summary and metrics are a library"),
    ("throttling/limits.py", "import wrapper.cli", "No wing imports the command line"),
    ("observe/summary.py", "from wrapper.throttling import limits", "do not import each other"),
])
def test_a_broken_contract_is_caught(tmp_path, module, line, contract):
    """The check can fail: the same contracts over a copy with one forbidden import."""
    exe = lint_imports()
    shutil.copytree(os.path.join(ROOT, "wrapper"), tmp_path / "wrapper",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, ".importlinter"), tmp_path / ".importlinter")
    with open(tmp_path / "wrapper" / module, "a") as f:
        f.write("\n%s  # noqa\n" % line)
    p = run(exe, str(tmp_path))
    assert p.returncode != 0 and contract in p.stdout.split("Broken contracts")[-1], p.stdout[-3000:]
