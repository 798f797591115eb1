#!/bin/bash
# Install what the metrics integration tests need (tests/integration/test_metrics_real.py):
#   prometheus-node-exporter  node_exporter with --collector.textfile.directory (scrapes the
#                             wrapper's .prom files)
#   prometheus                the server (scrapes `virt-v2v-wrapper metrics --listen`, answers
#                             PromQL over its HTTP API) and promtool (checks the exposition text)
#
# Usage: .ci/deps-prometheus.sh       Idempotent; root on Debian 12 (bookworm).
#
# Both packages' maintainer scripts start their service.  The tests start their own instances
# on 127.0.0.1 with free ports and end them by PID, so nothing is started at install time: a
# policy-rc.d that refuses every start is put in place for the installation only (an existing
# one is left as it is).
set -euo pipefail

. "$(dirname "$0")/lib.sh"
require_root deps-prometheus.sh

PKGS=(prometheus-node-exporter prometheus)
POLICY=/usr/sbin/policy-rc.d
placed=
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# deps-prometheus.sh: start no service while installing\nexit 101\n' >"$POLICY"
    chmod 0755 "$POLICY"
    placed=1
fi
cleanup() { if [ -n "$placed" ]; then rm -f "$POLICY"; fi; }
trap cleanup EXIT

APT_INSTALL_OPTS=(--no-install-recommends)
apt_install_missing deps-prometheus.sh "${PKGS[@]}"
for t in prometheus-node-exporter prometheus promtool; do
    command -v "$t" >/dev/null || { echo "deps-prometheus.sh: missing $t" >&2; exit 1; }
done
echo "deps-prometheus.sh: OK ($(prometheus --version 2>&1 | head -1); \
$(prometheus-node-exporter --version 2>&1 | head -1))"
