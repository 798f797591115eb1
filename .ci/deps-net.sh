#!/bin/bash
# Install what the systemd / network-throttling integration tests need (tests/integration:
# sdmanager.py, netns.py, test_sdmanager.py, test_netlimit_real.py) and the wrapper's network
# limiter uses at run time.
#
# Usage: .ci/deps-net.sh          Idempotent; root on Debian 12 (bookworm). Waits for the dpkg lock.
#
# Why each package:
#   systemd        /lib/systemd/systemd, systemctl, systemd-run: the test starts its own manager
#   util-linux     unshare, nsenter, script (the manager's pty), setsid
#   procps         pgrep (finds the manager under unshare)
#   iproute2       ip (netns, veth, -j link), tc (HTB classes)
#   nftables       nft: steers a conversion's packets into its HTB class by cgroup
#   iperf3         manual measurements (the tests use their own stdlib sender/receiver)
#   kmod           harmless where modules are built in; lets nft/tc autoload sch_htb/nft_socket
set -euo pipefail

. "$(dirname "$0")/lib.sh"
require_root deps-net.sh

PKGS=(systemd util-linux procps iproute2 nftables iperf3 kmod)

APT_INSTALL_OPTS=(--no-install-recommends)
apt_install_missing deps-net.sh "${PKGS[@]}"
# nftables.service would load /etc/nftables.conf on a booted host; it is not started here.
for t in nsenter unshare script setsid pgrep ip tc nft systemctl systemd-run /lib/systemd/systemd; do
    command -v "$t" >/dev/null || { echo "deps-net.sh: missing $t" >&2; exit 1; }
done
echo "deps-net.sh: OK ($(nft --version), $(tc -V | head -1), $(systemctl --version | head -1))"
