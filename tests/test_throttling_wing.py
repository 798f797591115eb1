"""The throttling wing imports no module above it (issue 19: wings do not import upward):
only the core's leaf modules, the security wing and itself; never wrapper.job or wrapper.cli."""
import ast
import os

import pytest

import wrapper.throttling

WING = os.path.dirname(wrapper.throttling.__file__)
ALLOWED = ("wrapper.errors", "wrapper.jobinput", "wrapper.leases", "wrapper.procinfo",
           "wrapper.security", "wrapper.throttling")


def wrapper_imports(path):
    """Every ``wrapper...`` module a file imports, at any depth (also inside functions)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "%s: relative import" % path
            found.update("%s.%s" % (node.module, a.name) for a in node.names)
    return {name for name in found if name.split(".")[0] == "wrapper"}


def allowed(name):
    return any(name == a or name.startswith(a + ".") for a in ALLOWED)


@pytest.mark.parametrize("module", sorted(m for m in os.listdir(WING) if m.endswith(".py")))
def test_the_wing_imports_nothing_above_it(module):
    imports = wrapper_imports(os.path.join(WING, module))
    assert not [name for name in imports if not allowed(name)]


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from wrapper.job import Job\n    import wrapper.cli\n")
    assert sorted(n for n in wrapper_imports(str(bad)) if not allowed(n)) == \
        ["wrapper.cli", "wrapper.job.Job"]
