#!/bin/bash
# Build (or reuse) the "worlds" of the version matrix: Debian trees in which a newer
# virt-v2v runs, for tests/integration/test_version_matrix.py (issue 21).
#
#   .ci/worlds.sh [SUITE...]        default: trixie sid      (root; Debian 12 host)
#
#   trixie -> virt-v2v 2.6, nbdkit 1.42        sid -> virt-v2v 2.10, nbdkit 1.48
#
# Each tree lives in $V2VW_WORLDS_DIR/SUITE (default /var/tmp/v2vw-worlds) and is
# usable when SUITE/.ready exists: that file holds the recipe hash (sha256 of the
# script's "recipe" part: packages, tree settings, build steps), the build time and the package versions.  A rerun with the same recipe does
# nothing; a changed recipe rebuilds the tree (the .debs stay cached in debs/SUITE, so
# a rebuild downloads nothing that did not change).  All suites are built concurrently.
#
# Where packages come from: the Debian mirror THIS HOST's apt uses (tools/host_apt.py
# reads /etc/apt/sources.list{,.d/*}); it is reused with the world's suite.  It is
# written into the tree's sources.list only while apt runs and blanked afterwards, the
# apt lists are removed, and the build log masks it: nothing kept names the mirror.
#
# What makes it fast (the lab's recipe took 374 s and 612 s one after the other):
#   * both trees are built at the same time (downloads overlap with dpkg work);
#   * dpkg runs with --force-unsafe-io and apt under eatmydata (no fsync: a throw-away tree);
#   * update-initramfs is diverted to a no-op: supermin builds its own appliance from the
#     kernel and its modules and never reads /boot/initrd.img (saves ~30-60 s a tree);
#   * debootstrap's and apt's .debs are kept in $V2VW_WORLDS_DIR/debs/SUITE (bind-mounted
#     on the tree's /var/cache/apt/archives), so a rebuild only fetches what changed.
#
# Commands run in the tree in a private mount namespace (unshare), so /proc, /dev and
# the cache bind exist only there: nothing is mounted on the host, nothing to unmount.
# Inside each tree: the user vdsm (uid 36) in group kvm, whom the wrapper picks by
# default to run virt-v2v (docs/security.md: virt-v2v never runs as root).
#
# Env: V2VW_WORLDS_DIR (where), MIRROR (override the host's mirror URI).
# Lock: $V2VW_WORLDS_DIR/.build.lock is held (flock) for the whole run.
# Log: $V2VW_WORLDS_DIR/SUITE.build.log (mirror host masked); times in SUITE/.ready.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BASE=${V2VW_WORLDS_DIR:-/var/tmp/v2vw-worlds}
# the recipe: what lies between the two "recipe" marker lines; its hash goes into .ready
RECIPE=$(sed -n '/^# >>> recipe/,/^# <<< recipe/p' "$0" | sha256sum | cut -c1-16)
# >>> recipe (a change here rebuilds the trees)
PACKAGES="virt-v2v nbdkit nbdkit-plugin-python libnbd-bin qemu-utils qemu-system-x86
          openssh-client python3 linux-image-amd64 supermin libguestfs-tools procps"

if [ "$(id -u)" != 0 ]; then
    echo "worlds.sh: must run as root" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "worlds.sh: debootstrap is missing (.ci/deps-container.sh installs it)" >&2; exit 1; }

host_codename() { . /etc/os-release && echo "${VERSION_CODENAME:-bookworm}"; }
MIRROR=${MIRROR:-$(python3 "$ROOT/tools/host_apt.py" mirror "$(host_codename)")}
MHOST=$(printf '%s' "$MIRROR" | sed -E 's#^[a-z]+://([^/@]*@)?([^/:]*).*#\2#')

ready() {   # ready DIR: the tree was built by this recipe
    [ -f "$1/.ready" ] && grep -qx "recipe $RECIPE" "$1/.ready"
}

# in_tree DIR CMD...: CMD as root in DIR, in a private mount namespace with /proc, /sys,
# /dev and the suite's .deb cache mounted (they vanish with the namespace)
in_tree() {
    local dir=$1; shift
    unshare --mount --propagation private /bin/sh -ec '
        R=$1; C=$2; shift 2
        mount -t proc proc "$R/proc"
        mount --rbind /sys "$R/sys"
        mount --rbind /dev "$R/dev"
        mount --bind "$C" "$R/var/cache/apt/archives"
        exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"
    ' in_tree "$dir" "$CACHE" "$@"
}

configure_tree() {   # the tree's apt/dpkg settings before the package run
    local dir=$1 suite=$2
    python3 "$ROOT/tools/host_apt.py" apt-conf > "$dir/etc/apt/apt.conf.d/90host"
    cat > "$dir/etc/apt/apt.conf.d/91v2vw-world" <<'EOF'
APT::Install-Recommends "0";
APT::Install-Suggests "0";
Acquire::Languages "none";
Acquire::PDiffs "false";
Dpkg::Options { "--force-unsafe-io"; "--force-confdef"; "--force-confold"; };
EOF
    printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"
    chmod 755 "$dir/usr/sbin/policy-rc.d"
    cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
    echo "deb $MIRROR $suite main" > "$dir/etc/apt/sources.list"
    rm -f "$dir"/etc/apt/sources.list.d/*.sources
    # supermin makes its own initrd: the kernel package's initramfs is wasted time
    in_tree "$dir" dpkg-divert --local --rename --add /usr/sbin/update-initramfs
    printf '#!/bin/sh\n# diverted by .ci/worlds.sh: supermin needs no initramfs\nexit 0\n' \
        > "$dir/usr/sbin/update-initramfs"
    chmod 755 "$dir/usr/sbin/update-initramfs"
}

finish_tree() {   # blank the sources, drop the lists, add the run-as user
    local dir=$1
    echo "# blanked by .ci/worlds.sh after the build" > "$dir/etc/apt/sources.list"
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin
    : > "$dir/etc/resolv.conf"
    in_tree "$dir" /bin/sh -ec '
        getent group kvm >/dev/null || groupadd -g 36 kvm
        getent passwd vdsm >/dev/null || useradd -u 36 -g kvm -d /var/lib/vdsm -m -s /bin/sh vdsm
        chmod 0755 /var/lib/vdsm'
}

build() {   # build SUITE: the whole recipe for one tree, logged to SUITE.build.log
    local suite=$1 dir=$BASE/$1 work=$BASE/.build-$1 t0 t1 t2
    CACHE=$BASE/debs/$suite
    mkdir -p "$CACHE/partial"
    if ready "$dir"; then
        echo "worlds.sh: $suite is ready ($dir)"
        return 0
    fi
    t0=$(date +%s)
    refuse_mounted "$work" "$dir"
    rm -rf "$work"
    echo "== debootstrap --variant=minbase $suite (the host's mirror)"
    debootstrap --variant=minbase --include=eatmydata --cache-dir="$CACHE" \
        "$suite" "$work" "$MIRROR"
    t1=$(date +%s)
    configure_tree "$work" "$suite"
    in_tree "$work" eatmydata apt-get -q update
    # shellcheck disable=SC2086
    in_tree "$work" eatmydata apt-get -q -y install $PACKAGES
    t2=$(date +%s)
    finish_tree "$work"
    in_tree "$work" /bin/sh -ec 'virt-v2v --version; nbdkit --version; python3 --version; ls /boot/vmlinuz-*' \
        > "$work/.check" 2>&1 || { cat "$work/.check"; echo "worlds.sh: $suite: the tree is not usable" >&2; return 1; }
    refuse_mounted "$dir"
    rm -rf "$dir"
    mv "$work" "$dir"
    {
        echo "recipe $RECIPE"
        echo "built $(date -u +%FT%TZ) in $(( $(date +%s) - t0 )) s (debootstrap $(( t1 - t0 )) s, packages $(( t2 - t1 )) s)"
        in_tree "$dir" dpkg-query -W -f '${Package} ${Version}\n' virt-v2v nbdkit libnbd-bin \
            qemu-system-x86 supermin linux-image-amd64 openssh-client python3
    } > "$dir/.ready.tmp"
    mv "$dir/.ready.tmp" "$dir/.ready"
    echo "worlds.sh: $suite ready: $(sed -n 2p "$dir/.ready")"
}

# <<< recipe

refuse_mounted() {   # never delete a tree something is mounted in
    local d
    for d in "$@"; do
        if awk -v d="$d" '$2 == d || index($2, d "/") == 1 {found=1} END {exit !found}' /proc/mounts; then
            echo "worlds.sh: something is mounted under $d on the host; refusing to remove it" >&2
            exit 1
        fi
    done
}

mkdir -p "$BASE"
# one build at a time; tests/integration/worlds.py waits on this lock (shared) while a
# build started in the background by tests/run-all.sh runs
exec 9>>"$BASE/.build.lock"
flock 9
SUITES=("$@")
[ ${#SUITES[@]} -gt 0 ] || SUITES=(trixie sid)
T0=$(date +%s)
pids=()
for s in "${SUITES[@]}"; do
    case $s in *[!a-z0-9-]*|"") echo "worlds.sh: bad suite name: $s" >&2; exit 2;; esac
    ( build "$s" 2>&1 | sed -u "s#$MHOST#<mirror>#g" > "$BASE/$s.build.log"; exit "${PIPESTATUS[0]}" ) &
    pids+=($!)
done
rc=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
        echo "worlds.sh: ${SUITES[$i]} FAILED; tail of $BASE/${SUITES[$i]}.build.log:" >&2
        tail -25 "$BASE/${SUITES[$i]}.build.log" >&2
        rc=1
    else
        tail -1 "$BASE/${SUITES[$i]}.build.log"
    fi
done
echo "worlds.sh: done in $(( $(date +%s) - T0 )) s"
exit $rc
