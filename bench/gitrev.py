"""A module of the wrapper as it is in a git revision, for the benchmarks' ``--compare``."""
import importlib.util
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def module_at(path, rev):
    """``path`` (e.g. ``wrapper/progress.py``) of git revision ``rev``, as a module."""
    text = subprocess.run(["git", "-C", ROOT, "show", "%s:%s" % (rev, path)],
                          check=True, capture_output=True).stdout
    name = "%s_at_%s" % (os.path.basename(path)[:-3], rev.replace("/", "_"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    exec(compile(text, "%s@%s" % (path, rev), "exec"), module.__dict__)
    return module
