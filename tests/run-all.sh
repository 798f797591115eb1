#!/bin/bash
# Set up this machine and run the whole test suite: unit tests and the
# integration tests against the real programs (virt-v2v 2.2, a throw-away
# systemd, tc/nftables in network namespaces, sshd on 127.0.0.1, the oVirt
# SDK against a stand-in engine, node_exporter and prometheus, rpmbuild, the container
# image under podman).
#
#   tests/run-all.sh [pytest arguments]      (as root; a non-root user: sudo tests/run-all.sh)
#
# Needs root on Debian 12 (or a close Debian/Ubuntu), the Debian and PyPI
# package registries, and about 2 GB of disk in /var/tmp.  Idempotent: a
# second run skips what is already installed and reuses the cached guest.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ "$(id -u)" != 0 ]; then
    echo "run-all.sh: the integration tests need root (try: sudo $0)" >&2
    exit 1
fi

step() { printf '\n=== %s\n' "$*"; }

step "Debian packages"
. .ci/lib.sh
APT_INSTALL_OPTS=(--no-install-recommends)
apt_install_missing run-all.sh python3 python3-venv python3-dev gcc tmux rpm openssl groff-base \
    passwd bsdutils sudo   # useradd for the attack tests' real users; script for a pty session leader; sudo for the strict-rule tests
bash .ci/deps-virt-v2v.sh
bash .ci/deps-net.sh
bash .ci/deps-container.sh
bash .ci/deps-prometheus.sh   # node_exporter, prometheus, promtool (nothing started)
bash .ci/deps-vddk.sh         # Go + govmomi simulator, gcc: the VDDK test world (tests/integration/vddk)

step "worlds: virt-v2v 2.6 (trixie) and 2.10 (sid) trees, built in the background"
# ~5 min when not cached, ~1 s when cached; tests/integration/test_version_matrix.py
# waits for it (tests/integration/worlds.py takes the build's lock) and runs near the end
WORLDS_DIR=${V2VW_WORLDS_DIR:-/var/tmp/v2vw-worlds}
mkdir -p "$WORLDS_DIR"
bash .ci/worlds.sh > "$WORLDS_DIR/run-all.log" 2>&1 &
echo "worlds.sh running as pid $! (log $WORLDS_DIR/run-all.log)"

step "Python environment (.venv)"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# kubernetes-validate (with PyYAML): the Kubernetes schemas the manifest is checked against;
# prometheus_client: its parser checks the exposition text in the tests (not a runtime need)
# import-linter: checks the import contracts in .importlinter (lint step, tests/test_import_contracts.py)
.venv/bin/python -m pip install -q pytest jsonschema ruff kubernetes-validate prometheus_client \
    import-linter
bash .ci/deps-ovirt.sh "$ROOT/.venv/bin/python"
.venv/bin/python -m pip install -q -e .

step "lint"
.venv/bin/python -m ruff check wrapper tests bench tools
.venv/bin/lint-imports --no-cache .importlinter

step "tests"
# libguestfs on this kind of machine: no libvirtd, and KVM does not work
export LIBGUESTFS_BACKEND=direct
export LIBGUESTFS_BACKEND_SETTINGS=${LIBGUESTFS_BACKEND_SETTINGS:-force_tcg}
export CI=${CI:-true}
# the slowest tests also go to docs/test-durations.txt (tests/conftest.py), kept with the code
DURATIONS=${V2VW_DURATIONS_FILE:-$ROOT/docs/test-durations.txt}
if [ $# -gt 0 ]; then
    V2VW_DURATIONS_FILE=$DURATIONS exec .venv/bin/python -m pytest -ra -v --durations=40 "$@" tests
fi

# The version matrix runs its conversions inside the virt-v2v 2.6 and 2.10 trees (their own
# mount namespaces, run-as user and fake ESXi; outbound limits off): a second pytest runs it
# alongside the rest, so its conversions overlap the others' waits on this 2-core machine.
# Both keep the shared v2vw-* test users until the end (tests/integration/attack.py).
MATRIX=tests/integration/test_version_matrix.py
MATRIX_LOG=$(mktemp /var/tmp/v2vw-matrix-XXXXXX.log)
export V2VW_KEEP_TEST_USERS=1
V2VW_DURATIONS_FILE=${DURATIONS%.txt}-matrix.txt \
    .venv/bin/python -m pytest -ra -v --durations=20 -p no:cacheprovider "$MATRIX" \
    > "$MATRIX_LOG" 2>&1 &
matrix_pid=$!
echo "version matrix: pytest pid $matrix_pid, log $MATRIX_LOG"
main_rc=0
V2VW_DURATIONS_FILE=$DURATIONS .venv/bin/python -m pytest -ra -v --durations=40 \
    --ignore="$MATRIX" tests || main_rc=$?
matrix_rc=0
wait "$matrix_pid" || matrix_rc=$?
step "version matrix ($MATRIX, run alongside)"
cat "$MATRIX_LOG"
rm -f "$MATRIX_LOG"
for name in v2vw-runas v2vw-caller v2vw-other; do     # tests/integration/attack.py ROLES
    userdel -r -f "$name" >/dev/null 2>&1 || true
done
echo "run-all.sh: main suite exit $main_rc, version matrix exit $matrix_rc"
[ "$main_rc" = 0 ] && [ "$matrix_rc" = 0 ]
