#!/usr/bin/env python3
"""TCP throughput through the inbound policer (wrapper.throttling.inbound), as a share of the limit.

The policer drops what exceeds the limit; how close TCP then gets to the limit depends on the
token bucket's burst, the sender's congestion control and the path.  This sweeps them:
a receiver (tests/integration/scripts/netmeter.py recv) in a cgroup v2 of its own in one
network namespace, a bulk sender in another (veth pair, tests/integration/netns.py), the
rule exactly as the wrapper builds it (:func:`wrapper.throttling.inbound.ruleset`) with the
burst under test, and the rate measured at the receiver over ``--seconds`` after 2.5 s.

    sudo bench/inbound_policer.py [--rates 0.5,2,8,32] [--bursts default,65536,1048576]
                                  [--cc cubic,bbr,reno] [--seconds 6] [--json]

Needs root, ip, nsenter, nft and a cgroup v2 hierarchy; touches only namespaces and a cgroup
it makes and removes.  No thresholds: the aim (docs/contract.md §6) is 80-105 % at the source.

Measured (kernel 6.18, nftables 1.0.6, 2 cores shared with other work; % of the limit;
"default" is the wrapper's :func:`wrapper.throttling.inbound.burst`):

    cc     MiB/s   default   64 KiB   4 MiB      cc     MiB/s   default   64 KiB   4 MiB
    cubic  1        99.1      98.9     99.1      bbr    1        99.8      98.4    101.8
    cubic  4       102.1     100.8     98.1      bbr    4        97.4      99.2    103.1
    cubic  16      102.0      99.0    101.1      bbr    16      100.8      98.9     99.5
    reno   1       100.4     101.7    100.2      reno   4        97.8     100.6     99.3
    reno   16       99.6      99.4     99.2

and at 1 MiB/s with cubic: burst 1000 bytes 99.5 %, burst 0 96.7 %.  The burst barely
matters on this kernel: its byte bucket holds one second at the rate plus the burst.  The
default keeps a margin for a kernel whose bucket holds the burst alone.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.integration import netns as N            # noqa: E402
from wrapper.throttling import host, inbound, tcnft  # noqa: E402

MiB = 1 << 20
TABLE = "v2vw_bench_inbound"
SENDER = r"""
import socket, sys, time
host, port, seconds, cc = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
end = time.monotonic() + 5
while True:
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    try:
        s.settimeout(2); s.connect((host, port)); break
    except OSError:
        s.close()
        if time.monotonic() > end: raise
        time.sleep(0.05)
s.settimeout(None)
chunk = b"\0" * 65536
end = time.monotonic() + seconds
while time.monotonic() < end:
    s.send(chunk)
"""


def one(pair, rx, match, rate, burst, cc, seconds):
    run = pair.runner()
    run(["nft", "delete", "table", "inet", TABLE], check=False)
    run(["nft", "add", "table", "inet", TABLE])
    run(["nft", "-f", "-"], input=inbound.ruleset(TABLE, match, rate, burst))
    snd = subprocess.Popen(N.prefix(pair.b) + [sys.executable, "-c", SENDER, N.SENDER_IP,
                                               str(rx.port), str(seconds + 3), cc])
    t0 = time.monotonic()
    try:
        rx.wait_until(t0 + 2.5 + seconds)
        return rx.rate(t0 + 2.5, t0 + 2.5 + seconds)
    finally:
        snd.wait(30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="0.5,2,8,32", help="MiB/s, comma-separated")
    ap.add_argument("--bursts", default="default,65536,1048576",
                    help="bytes, or 'default' for the wrapper's own, comma-separated")
    ap.add_argument("--cc", default="cubic,bbr", help="sender congestion controls")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    v2 = host.find_cgroup2("/sys/fs/cgroup")
    if os.geteuid() != 0 or v2 is None:
        sys.exit("needs root and a cgroup v2 hierarchy")
    pair = N.NetnsPair().up()
    cgroup = os.path.join(v2, "v2vw-bench-" + uuid.uuid4().hex[:8])
    os.mkdir(cgroup)
    path = "/" + os.path.basename(cgroup)
    match = tcnft.match_cgroupv2(host.nft_path("/sys/fs/cgroup", v2, path), tcnft.cgroup_level(path))
    rows, rx = [], None
    try:
        rx = N.Receiver(pair.a, 5391, cgroup=cgroup).start()
        for cc in a.cc.split(","):
            for mib in (float(x) for x in a.rates.split(",")):
                rate = int(mib * MiB)
                for b in a.bursts.split(","):
                    burst = inbound.burst(rate) if b == "default" else int(b)
                    got = one(pair, rx, match, rate, burst, cc, a.seconds)
                    rows.append({"cc": cc, "limit": rate, "burst": burst, "rate": round(got),
                                 "percent": round(100.0 * got / rate, 1)})
                    if not a.json:
                        print("%-6s %6.1f MiB/s  burst %9d  measured %8.3f MiB/s = %5.1f %%"
                              % (cc, mib, burst, got / MiB, 100.0 * got / rate), flush=True)
    finally:
        if rx:
            rx.stop()
        pair.down()
        threading.Event().wait(0.3)
        os.rmdir(cgroup)
    if a.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
