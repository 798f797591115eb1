#!/bin/bash
# Build (or reuse from cache) the disk images of the test guest that real virt-v2v 2.2
# conversions use. Adapted from /work/shared/lab/virt-v2v/build-guest.sh (variant "D":
# no initrd, trimmed docs, 512 MiB), which virt-v2v converts in ~45 s under TCG.
#
# Usage: build-guest.sh [os|data|all]        (default: all)
# Prints, on stdout, one line per image:  os_disk=/path   data_disk=/path
#
# Images (raw, sparse, read-only use: the fake ESXi only symlinks to them):
#   guest-os.img    MBR + one bootable ext4 partition (label "root") holding a debootstrapped
#                   Debian 12 minbase with a kernel, grub2-common, systemd-sysv and NO initrd,
#                   so virt-v2v inspects it, converts it and skips the (slow, TCG) initrd rebuild.
#   guest-data.img  MBR + one ext4 partition (label "data") holding hello.txt; no OS. Second
#                   disk of the two-disk test VM.
#
# Env:
#   V2VW_CACHE_DIR  cache dir (default /var/tmp/v2vw-cache): debootstrap tree + images
#   MIRROR          Debian mirror (default: the one this host's apt uses, from
#                   tools/host_apt.py, so a corporate mirror or proxy is honoured)
#   OS_SIZE_MB      OS disk virtual size (default 512)
#   DATA_SIZE_MB    data disk virtual size (default 64)
#
# Caching: each image has a <img>.stamp holding a hash of this script and the parameters;
# a matching stamp means "up to date" (a second run takes well under a second). The
# debootstrap tree (the ~60 s, ~100 MB download step) is cached separately, keyed by suite,
# package list and mirror. Concurrent callers serialise on flock(<cache>/.lock); images are
# built under a temporary name and renamed into place, so readers never see half an image.
#
# Needs (as root): debootstrap, e2fsprogs >= 1.43 (mkfs.ext4 -d), fdisk (sfdisk), flock.
# No libguestfs appliance, loop devices or mounts.
set -euo pipefail

WHAT=${1:-all}
case "$WHAT" in os|data|all) ;; *) echo "usage: $0 [os|data|all]" >&2; exit 2 ;; esac

CACHE=${V2VW_CACHE_DIR:-/var/tmp/v2vw-cache}
SUITE=bookworm
HOST_APT=$(cd "$(dirname "$0")/../../../tools" && pwd)/host_apt.py
MIRROR=${MIRROR:-$(python3 "$HOST_APT" mirror "$SUITE")}
OS_SIZE_MB=${OS_SIZE_MB:-512}
DATA_SIZE_MB=${DATA_SIZE_MB:-64}
INCLUDE=linux-image-cloud-amd64,grub2-common,initramfs-tools,systemd-sysv

if [ "$(id -u)" != 0 ]; then
    echo "build-guest.sh: must run as root (debootstrap)" >&2
    exit 1
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
# A cold build takes ~1-2 min; a waiter should outlast it but not hang forever.
flock -w 1800 9 || { echo "build-guest.sh: timeout waiting for $CACHE/.lock" >&2; exit 1; }

SELF_HASH=$(sha256sum "$0" | cut -c1-16)
BASE=$CACHE/rootfs.debootstrap
BASE_KEY="$SUITE $INCLUDE $MIRROR"

stamp_ok() {  # $1 = image, $2 = expected stamp text
    [ -f "$1" ] && [ -f "$1.stamp" ] && [ "$(cat "$1.stamp")" = "$2" ]
}

ensure_debootstrap() {
    if [ -f "$BASE.done" ] && [ "$(cat "$BASE.done")" = "$BASE_KEY" ] && [ -d "$BASE" ]; then
        return
    fi
    echo "build-guest.sh: debootstrap $SUITE (about 60 s, ~100 MB download)" >&2
    # debootstrap fetches with wget: hand it the proxy this host's apt uses, if any
    if [ -z "${http_proxy:-}" ]; then
        eval "$(apt-config shell http_proxy Acquire::http::Proxy)"
        if [ -n "${http_proxy:-}" ]; then export http_proxy; fi
    fi
    rm -rf "$BASE" "$BASE.done" "$BASE.tmp"
    DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase --include="$INCLUDE" \
        "$SUITE" "$BASE.tmp" "$MIRROR" >&2
    rm -f "$BASE.tmp"/var/cache/apt/archives/*.deb
    rm -rf "$BASE.tmp"/var/lib/apt/lists/*
    mv "$BASE.tmp" "$BASE"
    printf '%s' "$BASE_KEY" > "$BASE.done"
}

# MBR with one type-83 partition at 1 MiB, ext4 filled from a directory (mke2fs -d).
make_disk() {  # $1 = out, $2 = size MiB, $3 = label, $4 = source dir, $5 = bootable flag
    local out=$1 size=$2 label=$3 src=$4 boot=${5:-}
    rm -f "$out"
    truncate -s "${size}M" "$out"
    printf 'label: dos\nstart=2048, type=83%s\n' "${boot:+, bootable}" | sfdisk --quiet "$out"
    mkfs.ext4 -q -F -L "$label" -d "$src" -E offset=1048576 "$out" "$(( (size - 1) * 1024 ))k"
}

build_os() {
    local img=$CACHE/guest-os.img
    local key="$SELF_HASH os $OS_SIZE_MB $BASE_KEY"
    if stamp_ok "$img" "$key"; then return; fi
    ensure_debootstrap
    echo "build-guest.sh: building $img" >&2
    local tree=$CACHE/rootfs.os.tmp
    rm -rf "$tree"
    cp -a "$BASE" "$tree"
    local kver
    kver=$(ls "$tree/lib/modules" | head -n1)

    echo testvm > "$tree/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\ttestvm\n' > "$tree/etc/hosts"
    # LABEL= (not /dev/sdX): no device names for virt-v2v to rewrite, so it never has
    # to run grub-mkconfig inside the (slow, TCG) appliance.
    printf 'LABEL=root\t/\text4\terrors=remount-ro\t0\t1\n' > "$tree/etc/fstab"
    # virt-v2v detects grub2 by /boot/grub/grub.cfg and requires grub-mkconfig
    # (grub2-common) to exist; kernels are found via /boot/vmlinuz-* + dpkg.
    mkdir -p "$tree/boot/grub"
    cat > "$tree/boot/grub/grub.cfg" <<EOF
set default=0
set timeout=1
menuentry 'Debian GNU/Linux' {
	search --no-floppy --label --set=root root
	linux /boot/vmlinuz-$kver root=LABEL=root ro console=ttyS0
	initrd /boot/initrd.img-$kver
}
EOF
    # No initrd: virt-v2v warns and skips the initrd rebuild (~1-3 min under TCG).
    rm -f "$tree"/boot/initrd.img-*
    # Docs/man/locales are dead weight for the test (~58 MB less to copy).
    rm -rf "$tree"/usr/share/doc/* "$tree"/usr/share/man/* "$tree"/usr/share/locale/* \
           "$tree"/usr/share/info/*

    make_disk "$img.tmp" "$OS_SIZE_MB" root "$tree" boot
    rm -rf "$tree"
    mv -f "$img.tmp" "$img"
    printf '%s' "$key" > "$img.stamp"
}

build_data() {
    local img=$CACHE/guest-data.img
    local key="$SELF_HASH data $DATA_SIZE_MB"
    if stamp_ok "$img" "$key"; then return; fi
    echo "build-guest.sh: building $img" >&2
    local tree=$CACHE/rootfs.data.tmp
    rm -rf "$tree"
    mkdir -p "$tree"
    echo "hello from the v2vw test data disk" > "$tree/hello.txt"
    # Some non-zero data so the copy of disk 2 is not entirely sparse.
    head -c 4M /dev/urandom > "$tree/random.bin"
    make_disk "$img.tmp" "$DATA_SIZE_MB" data "$tree"
    rm -rf "$tree"
    mv -f "$img.tmp" "$img"
    printf '%s' "$key" > "$img.stamp"
}

case "$WHAT" in
    os) build_os ;;
    data) build_data ;;
    all) build_os; build_data ;;
esac
case "$WHAT" in os|all) echo "os_disk=$CACHE/guest-os.img" ;; esac
case "$WHAT" in data|all) echo "data_disk=$CACHE/guest-data.img" ;; esac
