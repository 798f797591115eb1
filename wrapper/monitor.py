"""The monitoring loop: a list of named steps with time as a parameter.

Each step: read what virt-v2v wrote since the last step (never rereading),
fold the events into the state, pick up the throttling file, act on a
recorded signal, poll the process, and write the state file if it changed.
Signal handlers only record the signal (:class:`SignalFlag`); the loop acts.
"""
import logging
import os
import signal
import time

from wrapper import progress
from wrapper.rate import Throughput
from wrapper.state import apply

log = logging.getLogger(__name__)

READ_CHUNK = 4 << 20
MAX_READ_PER_STEP = 64 << 20     # keep steps short even when a log races ahead


class LogTail:
    """Reads a growing file from where the last read stopped, a chunk at a
    time, so memory stays bounded however large the log grows.

    ``source`` is the descriptor the wrapper created the log with (read with
    ``pread`` at our own offset: the file is never reopened by name, so an
    entry swapped in under its name feeds nothing to the parser), or a path
    (benchmarks and tests)."""

    def __init__(self, source):
        self.path = source if isinstance(source, str) else None
        self._fd = None if isinstance(source, str) else source
        self._own = False
        self._offset = 0

    def _open(self):
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                self._own = True
            except FileNotFoundError:
                return False
        return True

    def chunks(self, limit=MAX_READ_PER_STEP):
        """Yield what was appended since the last call, at most ``limit`` bytes."""
        if not self._open():
            return
        total = 0
        while limit is None or total < limit:
            data = os.pread(self._fd, READ_CHUNK if limit is None else min(READ_CHUNK, limit - total),
                            self._offset)
            if not data:
                return
            self._offset += len(data)
            total += len(data)
            yield data

    def read(self, limit=MAX_READ_PER_STEP):
        return b"".join(self.chunks(limit))

    def close(self):
        if self._own and self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._own = False


class SignalFlag:
    """Records SIGTERM/SIGINT/SIGHUP for the loop; the handler does nothing
    else.  A hang-up (the terminal closed) cancels like SIGTERM: virt-v2v runs
    in its own session and would otherwise outlive a wrapper that dies."""

    def __init__(self):
        self.received = None

    def __call__(self, signum, _frame):
        if self.received is None:
            self.received = signal.Signals(signum).name

    def install(self, signals=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)):
        for s in signals:
            signal.signal(s, self)
        return self


class Monitor:
    def __init__(self, process, state, state_file, v2v_log, mr_log, throttler=None,
                 signals=None, clock=time.monotonic, sleep=time.sleep, interval=0.25,
                 grace=30.0, dialect=None, wall=time.time, copying=None):
        """``copying``: called with the number of disks being copied after each read
        (parallel copies share the source-read limit: NetworkLimit.share_source_read)."""
        self.process = process
        self.state = state
        self.state_file = state_file
        self.v2v_tail = LogTail(v2v_log)
        self.mr_tail = LogTail(mr_log)
        self.log_parser = progress.LogParser(dialect)
        self.mr_parser = progress.MachineReadableParser()
        self.throttler = throttler
        self.signals = signals or SignalFlag()
        self.clock = clock
        self.sleep = sleep
        self.interval = interval
        self.grace = grace
        self.stopping_since = None
        self.killed = False
        self.throughput = Throughput(clock, wall)
        self.copying = copying
        self.steps = (self.read_logs, self.share, self.throttle, self.handle_signals, self.measure)

    # -- steps -------------------------------------------------------------
    def read_logs(self, final=False):
        for chunk in self.v2v_tail.chunks(None if final else MAX_READ_PER_STEP):
            self._apply(self.log_parser.feed(chunk))
        if final:
            self._apply(self.log_parser.flush())
        self._apply(self.mr_parser.feed(self.mr_tail.read() + (b"\n" if final else b"")))

    def _apply(self, events):
        for event in events:
            if isinstance(event, progress.V2vMessage) and event.type in ("warning", "error"):
                log.info("virt-v2v %s: %s", event.type, event.text.splitlines()[0] if event.text else "")
            apply(self.state, event)

    def share(self):
        if self.copying is not None:
            self.copying(len(self.state.copying()))

    def measure(self):
        self.throughput.update(self.state)

    def throttle(self):
        if self.throttler is not None:
            self.throttler.step()

    def handle_signals(self):
        if self.signals.received and self.stopping_since is None:
            log.warning("received %s: stopping virt-v2v (pid %s)", self.signals.received,
                        self.process.pid)
            self.stopping_since = self.clock()
            self.process.terminate()
        elif (self.stopping_since is not None and not self.killed
              and self.clock() - self.stopping_since > self.grace):
            log.warning("virt-v2v still running %.0fs after SIGTERM: killing it", self.grace)
            self.killed = True
            self.process.kill()

    # -- the loop ------------------------------------------------------------
    def step(self):
        rc = self.process.poll()
        for run_step in self.steps:
            run_step()
        self.state_file.write(self.state)
        return rc

    def run(self):
        """Loop until virt-v2v has ended; return its exit status."""
        while True:
            rc = self.step()
            if rc is not None:
                break
            self.sleep(self.interval)
        self.read_logs(final=True)
        self.throughput.close(self.state)
        self.v2v_tail.close()
        self.mr_tail.close()
        return rc
