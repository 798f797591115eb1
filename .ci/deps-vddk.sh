#!/bin/bash
# Install the Debian packages the VDDK test world needs (tests/integration/vddk/).
# Idempotent; run as root on Debian 12. The host's own apt sources only.
#
# Why each package (tests/integration/vddk/README.md describes the world):
#   golang-go                          builds the vSphere SOAP stand-in offline (Go 1.19)
#   golang-github-vmware-govmomi-dev   govmomi's simulator library (Debian ships no vcsim command)
#   gcc, libc6-dev                     the file-backed libvixDiskLib.so.8 stand-in (C)
#   nbdkit-plugin-dev                  nbdkit-plugin.h for the fallback stand-in vddk plugin
#   binutils                           nm: checks the unpacked real plugin against local nbdkit
#   openssl                            the SOAP stand-in's certificate and its SHA-1 thumbprint
#   qemu-utils                         qemu-img: the monolithicFlat VMDK descriptors
# The real nbdkit vddk plugin is NOT installed: tests/integration/vddk/get-plugin.sh unpacks
# Debian 13's nbdkit-plugin-vddk with a private apt state (no change to the host's apt/dpkg).
set -euo pipefail

. "$(dirname "$0")/lib.sh"
require_root deps-vddk.sh

APT_INSTALL_OPTS=(--no-install-recommends)
apt_install_missing deps-vddk.sh golang-go golang-github-vmware-govmomi-dev gcc libc6-dev \
    nbdkit-plugin-dev binutils openssl qemu-utils

for bin in go gcc nm openssl qemu-img dpkg-deb apt-get; do
    command -v "$bin" >/dev/null || { echo "deps-vddk.sh: missing $bin" >&2; exit 1; }
done
[ -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ] ||
    { echo "deps-vddk.sh: govmomi simulator sources missing" >&2; exit 1; }
echo "deps-vddk.sh: OK ($(go version))"
