#!/bin/bash
# Install and configure what the container integration tests (tests/integration/test_container.py)
# and the image build (container/build-image.sh) need: rootful podman with runc.
#
# Usage: .ci/deps-container.sh        Idempotent; root on Debian 12 (bookworm). Waits for the dpkg lock.
#
# Why each package:
#   podman         builds the image (podman build) and runs it (podman run, podman kube play)
#   runc           the OCI runtime: Debian's default crun refuses this host's hybrid cgroup layout
#   containernetworking-plugins  podman's network setup (the tests use --network host, but
#                  podman kube play sets up a pod network)
#   conmon         podman's container monitor (a dependency; named for clarity)
#   debootstrap    the base image is a Debian tree built from the host's own apt sources
#   uidmap         newuidmap/newgidmap (podman warns without them even when rootful)
#   catatonit      podman kube play builds its pod infra (pause) image locally from it
set -euo pipefail

. "$(dirname "$0")/lib.sh"
require_root deps-container.sh

PKGS=(podman runc containernetworking-plugins conmon catatonit debootstrap uidmap)
APT_INSTALL_OPTS=(--no-install-recommends)
apt_install_missing deps-container.sh "${PKGS[@]}"

# podman's defaults that fail here: crun (hybrid cgroups) and default ulimits above the
# sandbox's hard limits.  A drop-in keeps /etc/containers/containers.conf the package's own.
conf=/etc/containers/containers.conf.d/50-virt-v2v-wrapper-tests.conf
mkdir -p "$(dirname "$conf")"
cat > "$conf.tmp" <<'CONF'
# written by virt-v2v-wrapper's .ci/deps-container.sh
[containers]
default_ulimits = []

[engine]
runtime = "runc"
CONF
mv "$conf.tmp" "$conf"

podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}' >/dev/null
echo "deps-container.sh: OK ($(podman --version), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}'), storage $(podman info --format '{{.Store.GraphDriverName}}'))"
