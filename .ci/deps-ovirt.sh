#!/bin/bash
# Install the official oVirt Python SDK (ovirt-engine-sdk-python, module ovirtsdk4) and what it
# needs to build, for the `rhv_url` (oVirt API upload) code and its tests; the nbdkit python
# plugin virt-v2v's -o rhv-upload writes the disk with; and the real ovirt-imageio daemon the
# stand-in engine's image transfers point at (tests/ovirt_standin/imageio.py).
#
# Usage: .ci/deps-ovirt.sh [PYTHON]     (default: python3; CI passes its venv's python)
#        .ci/deps-ovirt.sh --packages-only   (the Debian packages: before a venv is made)
# Idempotent; run as root on Debian 12 (bookworm). Waits for the dpkg lock if another apt runs.
#
# Why each package:
#   gcc, python3-dev    ovirtsdk4 ships a C extension (ovirtsdk4/xml.*.so) built at install time;
#                       python3-dev gives the headers for Debian's python3 (pyenv/venv pythons
#                       carry their own headers, but gcc is still needed)
#   libxml2-dev         that extension parses the engine's XML with libxml2
#   libcurl4-openssl-dev, libssl-dev
#                       pycurl (the SDK's HTTP client); pip usually finds a manylinux wheel, but
#                       it builds from source when none matches the python, and then needs these
#   openssl             the tests generate their own CA and server certificates with the CLI
#   nbdkit-plugin-python
#                       `nbdkit python`: virt-v2v -o rhv-upload runs its upload plugin in it
#                       (Debian pulls in python3-boto3 with it)
#
# pip, into PYTHON: ovirt-engine-sdk-python (ovirtsdk4) and ovirt-imageio (the daemon; a small
# C extension, built here with gcc and the python's headers).
#   ca-certificates     pip over https
#   python3-venv        venvs of Debian's python3 (tests/ovirt_standin/v2vpython.py)
set -euo pipefail

PY=${1:-python3}

. "$(dirname "$0")/lib.sh"
require_root deps-ovirt.sh

PKGS=(
    gcc
    python3-dev
    libxml2-dev
    libcurl4-openssl-dev
    libssl-dev
    openssl
    ca-certificates
    nbdkit-plugin-python
    python3-venv
)

APT_INSTALL_OPTS=()
apt_install_missing deps-ovirt.sh "${PKGS[@]}"
[ "$PY" = --packages-only ] && exit 0

if ! "$PY" -c 'import ovirtsdk4, ovirtsdk4.types, pycurl' 2>/dev/null; then
    echo "deps-ovirt.sh: pip installing ovirt-engine-sdk-python into $("$PY" -c 'import sys; print(sys.prefix)')"
    "$PY" -m pip install --quiet ovirt-engine-sdk-python
fi

if ! "$PY" -c 'import ovirt_imageio._internal.server, ovirt_imageio._internal.ioutil' 2>/dev/null; then
    echo "deps-ovirt.sh: pip installing ovirt-imageio into $("$PY" -c 'import sys; print(sys.prefix)')"
    "$PY" -m pip install --quiet ovirt-imageio
fi

# Sanity check: the C extensions and pycurl must load, not just be present.
"$PY" - <<'EOF'
import ovirtsdk4, ovirtsdk4.types, ovirtsdk4.xml, pycurl
import ovirt_imageio._internal.server, ovirt_imageio._internal.ioutil
from ovirtsdk4.version import VERSION
from ovirt_imageio._internal.version import string as IMAGEIO_VERSION
print("deps-ovirt.sh: OK (ovirtsdk4 %s, ovirt-imageio %s, %s)"
      % (VERSION, IMAGEIO_VERSION, pycurl.version.split()[0]))
EOF
# The plugin must load in nbdkit and its interpreter import what virt-v2v's upload plugin
# imports (ssl, http.client).  With a clean PATH: see tests/ovirt_standin/v2vpython.py for why a
# venv of another Python build first on PATH breaks the embedded interpreter's `import ssl`.
plugin=$(mktemp --suffix=.py)
trap 'rm -f "$plugin"' EXIT
printf 'import http.client, json, ssl, threading\nAPI_VERSION = 2\ndef open(readonly): return 1\ndef get_size(h): return 0\ndef pread(h, buf, offset, flags): pass\n' >"$plugin"
if ! out=$(env PATH=/usr/sbin:/usr/bin:/sbin:/bin nbdkit python "$plugin" --dump-plugin 2>&1); then
    echo "deps-ovirt.sh: nbdkit python does not work: $out" >&2
    exit 1
fi
command -v openssl >/dev/null || { echo "deps-ovirt.sh: missing openssl" >&2; exit 1; }
