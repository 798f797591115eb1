"""The ``python3`` virt-v2v's rhv-upload helper scripts run: a venv of the
system Python (the one nbdkit's python plugin embeds) with ovirtsdk4, in a
directory every user can read.

Why not the test venv's ``bin/``: virt-v2v runs ``nbdkit python`` with the
same PATH, and the embedded interpreter takes its standard library from the
first ``python3`` on PATH when that one sits in a venv (pyvenv.cfg ``home``):
a venv of another Python build (pyenv here) makes ``import ssl`` in the
plugin fail ("undefined symbol"), and virt-v2v stops with "nbdkit python
plugin is not installed or not working".  A venv of /usr/bin/python3 is the
same build, so both the SDK scripts and the plugin work; and it must be
readable by the run-as user (a venv under /root is not).

Built once into the cache directory (like the guest images), under a lock.
"""
import fcntl
import os
import subprocess
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
NAME = "v2v-python"
CHECK = "import ovirtsdk4, ovirtsdk4.types, ovirtsdk4.xml, pycurl"


def ensure_v2v_python(cache_dir, *, timeout=900):
    """The ``bin`` directory of ``cache_dir``/v2v-python (made if missing or
    broken), to put first on virt-v2v's PATH."""
    cache = Path(cache_dir)
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    venv = cache / NAME
    python = venv / "bin" / "python3"
    with open(cache / (NAME + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and subprocess.run([str(python), "-c", CHECK],
                                              capture_output=True).returncode == 0:
            return venv / "bin"
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True, timeout=timeout)
        r = subprocess.run([str(python), "-m", "pip", "install", "-q",
                            "ovirt-engine-sdk-python"], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("pip install ovirt-engine-sdk-python into %s failed: %s"
                               % (venv, r.stderr[-2000:]))
        subprocess.run([str(python), "-c", CHECK], check=True, capture_output=True)
        for root, dirs, files in os.walk(venv):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
    return venv / "bin"
