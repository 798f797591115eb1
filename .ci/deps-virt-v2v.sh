#!/bin/bash
# Install every Debian package needed for REAL virt-v2v conversions in the integration
# tests and the demo (fake ESXi over SSH, debootstrapped guest image).
# Idempotent; run as root on Debian 12 (bookworm). Safe to run while another apt is running:
# it waits for the dpkg lock instead of failing.
#
# Why each package (see /work/shared/lab/virt-v2v/REPORT.md):
#   virt-v2v            the program under test (2.2.0 on bookworm)
#   nbdkit, libnbd-bin  needed at run time but NOT declared by Debian's virt-v2v package;
#                       without libnbd-bin (nbdcopy/nbdinfo) a run fails at "Copying disk"
#   linux-image-amd64   kernel for the libguestfs appliance (supermin only *Recommends* it,
#                       so it is missing on machines with Install-Recommends off)
#   openssh-server/-client  the fake ESXi host (sshd + sftp-server) and scp/ssh used by virt-v2v
#   debootstrap         builds the test guest's root filesystem
#   qemu-utils          qemu-img (inspecting the VMDK descriptors, disk checks)
#   e2fsprogs (>=1.43)  mkfs.ext4 -d (fills the image without loop devices or mounts)
#   fdisk               sfdisk (partition table of the guest image)
#   util-linux          unshare (private mount namespace for the fake datastore) and flock
#   ca-certificates     debootstrap from an https mirror if MIRROR is overridden
set -euo pipefail

. "$(dirname "$0")/lib.sh"
require_root deps-virt-v2v.sh

# the appliance kernel's package name differs between Debian and Ubuntu
KERNEL_PKG=linux-image-amd64
if [ -r /etc/os-release ] && grep -qi '^ID=ubuntu' /etc/os-release; then
    KERNEL_PKG=linux-image-generic
fi

PKGS=(
    virt-v2v
    nbdkit
    libnbd-bin
    "$KERNEL_PKG"
    openssh-server
    openssh-client
    debootstrap
    qemu-utils
    e2fsprogs
    fdisk
    util-linux
    procps
    ca-certificates
    python3
)

# policy-rc.d: do not start the system sshd (or anything else) on install; the tests
# start their own sshd on a free loopback port. Only created if absent, removed after.
prc=/usr/sbin/policy-rc.d
created_prc=0
if [ ! -e "$prc" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$prc"
    chmod 755 "$prc"
    created_prc=1
fi
trap 'if [ "$created_prc" = 1 ]; then rm -f "$prc"; fi' EXIT
APT_INSTALL_OPTS=()
apt_install_missing deps-virt-v2v.sh "${PKGS[@]}"

# sshd's privilege-separation directory; normally created by the service unit, which may
# not run on CI machines without systemd.
mkdir -p /run/sshd
chmod 755 /run/sshd

# Sanity checks: fail loudly here rather than 5 minutes into a conversion.
for bin in virt-v2v nbdkit nbdcopy nbdinfo qemu-img debootstrap mkfs.ext4 sfdisk \
           /usr/sbin/sshd ssh scp ssh-agent ssh-add ssh-keygen unshare flock; do
    command -v "$bin" >/dev/null || { echo "deps-virt-v2v.sh: missing $bin" >&2; exit 1; }
done
[ -e /usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-ssh-plugin.so ] ||
    [ -n "$(find /usr/lib -name nbdkit-ssh-plugin.so -print -quit 2>/dev/null)" ] ||
    { echo "deps-virt-v2v.sh: nbdkit ssh plugin missing" >&2; exit 1; }
ls /boot/vmlinuz-* >/dev/null 2>&1 ||
    { echo "deps-virt-v2v.sh: no kernel in /boot for the libguestfs appliance" >&2; exit 1; }
echo "deps-virt-v2v.sh: OK ($(virt-v2v --version))"
