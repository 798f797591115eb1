#!/bin/bash
# Build the virt-v2v-wrapper container image from Debian and PyPI packages only.
#
#   container/build-image.sh [IMAGE]      (as root; default IMAGE localhost/virt-v2v-wrapper:<version>)
#
# 1. debootstrap a Debian 12 minbase tree from this host's own apt mirror and settings
#    (tools/host_apt.py: a corporate mirror or proxy is honoured; MIRROR overrides), and
#    import it into podman as localhost/v2vw-debian:bookworm (cached: rebuilt only when the
#    mirror or this script changes);
# 2. build the wheels of the wrapper and of the oVirt SDK (ovirt-engine-sdk-python) with
#    this host's pip and its configuration (PYTHON, default python3: it must be a 3.11, the
#    Python of Debian 12, because the SDK has a C extension);
# 3. podman build container/Containerfile (--network host: apt inside reaches the mirror as
#    the host does).
# Needs: podman (runc), debootstrap, python3 with pip; .ci/deps-container.sh installs them.
# Prints the image name on the last line of stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SUITE=bookworm
PY=${PYTHON:-python3}
VERSION=$("$PY" -c 'import re; print(re.search(r"__version__ = \"([^\"]+)\"", open("wrapper/__init__.py").read()).group(1))')
IMAGE=${1:-localhost/virt-v2v-wrapper:$VERSION}
BASE_IMAGE=localhost/v2vw-debian:$SUITE
CACHE=${V2VW_IMAGE_CACHE:-/var/tmp/v2vw-image}
MIRROR=${MIRROR:-$("$PY" tools/host_apt.py mirror "$SUITE")}

if [ "$(id -u)" != 0 ]; then
    echo "build-image.sh: must run as root (debootstrap, rootful podman)" >&2
    exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "build-image.sh: $PY is not Python 3.11 (Debian 12's); set PYTHON to one" >&2
    exit 1
fi
step() { printf '=== build-image.sh: %s\n' "$*" >&2; }
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -w 1800 9 || { echo "build-image.sh: timeout waiting for $CACHE/.lock" >&2; exit 1; }

# -- 1. the base image -------------------------------------------------------------------
BASE_KEY="$SUITE $MIRROR $(sha256sum "$0" tools/host_apt.py | sha256sum | cut -c1-16)"
if [ "$(podman image inspect --format '{{index .Labels "v2vw.base-key"}}' "$BASE_IMAGE" 2>/dev/null)" != "$BASE_KEY" ]; then
    step "debootstrap $SUITE from the host's mirror (about 1-2 min)"
    if [ -z "${http_proxy:-}" ]; then
        eval "$(apt-config shell http_proxy Acquire::http::Proxy)"
        if [ -n "${http_proxy:-}" ]; then export http_proxy; fi
    fi
    tree=$CACHE/rootfs.tmp
    rm -rf "$tree"
    DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase "$SUITE" "$tree" "$MIRROR" >&2
    # the tree fetches from the same mirror, with the host's proxy and date settings
    printf 'deb %s %s main\ndeb %s %s-updates main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" \
        > "$tree/etc/apt/sources.list"
    security=$("$PY" tools/host_apt.py mirror "$SUITE-security" 2>/dev/null || true)
    if [ -n "$security" ]; then
        printf 'deb %s %s-security main\n' "$security" "$SUITE" >> "$tree/etc/apt/sources.list"
    fi
    "$PY" tools/host_apt.py apt-conf > "$tree/etc/apt/apt.conf.d/50build-host"
    rm -rf "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/*
    step "import the tree as $BASE_IMAGE"
    tar -C "$tree" --numeric-owner -c . \
        | podman import --change "LABEL v2vw.base-key=$BASE_KEY" --change 'CMD ["/bin/bash"]' \
              - "$BASE_IMAGE" >&2
    rm -rf "$tree"
fi

# -- 2. wheels -----------------------------------------------------------------------------
ctx=$CACHE/context
rm -rf "$ctx"
mkdir -p "$ctx/wheels"
step "wheels of the wrapper and the oVirt SDK"
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$ctx/wheels" "$ROOT" ovirt-engine-sdk-python >&2
cp container/Containerfile "$ctx/Containerfile"

# -- 3. the image --------------------------------------------------------------------------
step "podman build $IMAGE"
old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
podman build --network host --build-arg "BASE=$BASE_IMAGE" --label "v2vw.version=$VERSION" \
    -t "$IMAGE" -f "$ctx/Containerfile" "$ctx" >&2
new=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$old" ] && [ "$old" != "$new" ]; then
    podman rmi "$old" >/dev/null 2>&1 || true     # the image this build replaced (unless in use)
fi
echo "$IMAGE"
