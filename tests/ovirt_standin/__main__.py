"""``python -m tests.ovirt_standin serve --dir DIR``: the stand-in engine and a
real ovirt-imageio daemon until SIGTERM (or SIGINT).

Writes DIR/ca.pem (the CA that signed both servers' certificate) and
DIR/password (mode 0600, a random test password for admin@internal), then
prints one JSON line: {"api_url", "cafile", "password_file", "storage",
"cluster"}.  On SIGTERM it stops both servers and prints one more JSON line
with the engine's request counts.
"""
import argparse
import json
import os
import secrets
import signal
import sys
import threading

from tests.ovirt_standin.engine import make_pki
from tests.ovirt_standin.world import start_world


def serve(directory, storage_type, python_path=None):
    os.makedirs(directory, mode=0o755, exist_ok=True)
    pki_dir = os.path.join(directory, "pki")
    os.makedirs(pki_dir, mode=0o700, exist_ok=True)
    pki = make_pki(pki_dir)
    world = start_world(pki, directory, password="standin-" + secrets.token_hex(8),
                        storage_type=storage_type)
    try:
        cafile, password_file = world.write_client_files(directory)
    except BaseException:
        world.stop()
        raise
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        info = {"api_url": world.engine.api_url, "cafile": cafile,
                "password_file": password_file, "storage": world.storage_domain.name,
                "cluster": world.cluster.name}
        if python_path:
            info["python_path"] = python_path
        print(json.dumps(info), flush=True)
        while not stop.wait(1):
            pass
    finally:
        world.stop()
    print(json.dumps({"requests": world.engine.counts(), "imageio": world.imageio.served()}),
          flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.ovirt_standin")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve the stand-in engine and imageio until SIGTERM")
    p.add_argument("--dir", required=True,
                   help="a new or empty directory for certificates, password, disks, logs")
    p.add_argument("--storage-type", default="nfs",
                   help="the storage domain's type (nfs: file, iscsi: block)")
    p.add_argument("--v2v-python", action="store_true",
                   help="also give python_path: a python3 with ovirtsdk4 for virt-v2v's PATH")
    args = parser.parse_args(argv)
    if os.path.exists(args.dir) and os.listdir(args.dir):
        parser.error("--dir %s is not empty" % args.dir)
    python_path = None
    if args.v2v_python:
        from tests.integration.guestimage import default_cache_dir
        from tests.ovirt_standin.v2vpython import ensure_v2v_python
        python_path = str(ensure_v2v_python(default_cache_dir()))
    serve(args.dir, args.storage_type, python_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
