#!/usr/bin/env python3
"""Bulk TCP sender and receiver-side meter for the bandwidth tests (iperf3 stand-in, stdlib only).

  netmeter.py recv PORT [INTERVAL]
      Listen on 0.0.0.0:PORT, accept any number of connections, and every INTERVAL seconds
      (default 0.05) print "<CLOCK_MONOTONIC seconds> <total bytes received>" on stdout.
      Runs until stdin reaches EOF or SIGTERM.  The first line is "ready".
  netmeter.py send HOST PORT SECONDS
      Connect (retrying for 5 s) and send as fast as the socket takes it for SECONDS.

Measuring at the receiver matters: a sender's count includes what sits in its socket buffer
and the qdisc.  CLOCK_MONOTONIC is the same clock in every process of the machine, so the test
can line the samples up with the moment it changed a limit.
"""
import os
import selectors
import signal
import socket
import sys
import threading
import time


def recv(port, interval=0.05):
    total = 0
    lock = threading.Lock()
    done = threading.Event()
    sel = selectors.DefaultSelector()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(16)
    srv.setblocking(False)
    sel.register(srv, selectors.EVENT_READ)
    signal.signal(signal.SIGTERM, lambda *a: done.set())

    def watch_stdin():
        sys.stdin.buffer.read()
        done.set()

    def report():
        while not done.wait(interval):
            with lock:
                n = total
            sys.stdout.write("%.6f %d\n" % (time.monotonic(), n))
            sys.stdout.flush()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print("ready", flush=True)
    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    buf = bytearray(1 << 18)
    while not done.is_set():
        for key, _ in sel.select(0.1):
            if key.fileobj is srv:
                conn, _addr = srv.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                n = key.fileobj.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                n = 0
            if n == 0:
                sel.unregister(key.fileobj)
                key.fileobj.close()
            else:
                with lock:
                    total += n
    done.set()
    reporter.join()


def send(host, port, seconds):
    deadline = time.monotonic() + 5
    while True:
        try:
            s = socket.create_connection((host, port), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    s.settimeout(None)
    chunk = b"\0" * (1 << 16)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s.send(chunk)
    s.close()


def main(argv):
    if argv[1:2] == ["recv"]:
        recv(int(argv[2]), float(argv[3]) if len(argv) > 3 else 0.05)
    elif argv[1:2] == ["send"]:
        send(argv[2], int(argv[3]), float(argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
    sys.stdout.flush()
    os._exit(0)
