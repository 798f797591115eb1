#!/bin/bash
# Install the official oVirt Python SDK (ovirt-engine-sdk-python, module ovirtsdk4) and what it
# needs to build, for the `rhv_url` (oVirt API upload) code and its tests.
#
# Usage: .ci/deps-ovirt.sh [PYTHON]     (default: python3; CI passes its venv's python)
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
#   ca-certificates     pip over https
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
)

APT_INSTALL_OPTS=()
apt_install_missing deps-ovirt.sh "${PKGS[@]}"

if ! "$PY" -c 'import ovirtsdk4, ovirtsdk4.types, pycurl' 2>/dev/null; then
    echo "deps-ovirt.sh: pip installing ovirt-engine-sdk-python into $("$PY" -c 'import sys; print(sys.prefix)')"
    "$PY" -m pip install --quiet ovirt-engine-sdk-python
fi

# Sanity check: the C extension and pycurl must load, not just be present.
"$PY" - <<'EOF'
import ovirtsdk4, ovirtsdk4.types, ovirtsdk4.xml, pycurl
from ovirtsdk4.version import VERSION
print("deps-ovirt.sh: OK (ovirtsdk4 %s, %s)" % (VERSION, pycurl.version))
EOF
command -v openssl >/dev/null || { echo "deps-ovirt.sh: missing openssl" >&2; exit 1; }
