"""Record what each tested virt-v2v release says about itself, as test fixtures (issue 21).

    python3 -m tests.integration.capture_caps [OUT_ROOT]      (root; default tests/data)

For the host (2.2) and each built world (``.ci/worlds.sh``: 2.6, 2.10) it writes
``OUT_ROOT/virt-v2v-VERSION/caps/NAME.txt`` with the stdout of each command of
:data:`COMMANDS` (stderr in ``NAME.stderr.txt`` when not empty), and ``index.txt``: one line
per command with its exit status and argv.  ``LANG=C`` for all.  The wrapper's capability
code (wrapper/v2v.py and what branch i21-caps builds on it) is tested against these files.
"""
import os
import sys
from pathlib import Path

try:
    from . import worlds
except ImportError:  # pragma: no cover - run as a script
    import worlds

ROOT = Path(__file__).resolve().parents[2]

COMMANDS = (
    ("version", ["--version"]),
    ("machine-readable", ["--machine-readable"]),
    ("help", ["--help"]),
    ("io-libvirt-vddk", ["-i", "libvirt", "-it", "vddk", "-io", "?"]),
    ("io-vmx-ssh", ["-i", "vmx", "-it", "ssh", "-io", "?"]),
    ("oo-local", ["-o", "local", "-oo", "?"]),
    ("oo-disk", ["-o", "disk", "-oo", "?"]),
    ("oo-rhv", ["-o", "rhv", "-oo", "?"]),
    ("oo-ovirt", ["-o", "ovirt", "-oo", "?"]),
    ("oo-rhv-upload", ["-o", "rhv-upload", "-oo", "?"]),
    ("oo-ovirt-upload", ["-o", "ovirt-upload", "-oo", "?"]),
)


def capture(world, out_root):
    """Run :data:`COMMANDS` in ``world``; return the directory written."""
    out = Path(out_root) / ("virt-v2v-%s" % world.version) / "caps"
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for name, args in COMMANDS:
        proc = world.run(["virt-v2v"] + args, env={"LANG": "C", "LC_ALL": "C"}, timeout=60)
        (out / (name + ".txt")).write_text(proc.stdout)
        err = out / (name + ".stderr.txt")
        if proc.stderr:
            err.write_text(proc.stderr)
        elif err.exists():
            err.unlink()
        index.append("%-18s rc=%-3d virt-v2v %s" % (name, proc.returncode, " ".join(args)))
    (out / "index.txt").write_text("\n".join(index) + "\n")
    return out


def main(argv):
    out_root = argv[0] if argv else str(ROOT / "tests" / "data")
    if os.geteuid() != 0:
        sys.stderr.write("capture_caps: run as root (the worlds need a mount namespace)\n")
        return 1
    status = 0
    for name in ("host", "trixie", "sid"):
        world = worlds.get(name)
        if world is None:
            sys.stderr.write("capture_caps: %s: not available, skipped\n" % name)
            status = 1
            continue
        print(capture(world, out_root))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
