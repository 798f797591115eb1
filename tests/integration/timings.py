"""Durations the integration tests measure but must not assert (a busy machine stretches
them): each test checks that a change takes effect, and records how long it took here.

With ``V2VW_TIMINGS_FILE`` set, every :func:`record` appends one JSON line
``{"test", "what", "seconds"}`` to that file; bench/throttle_latency.py runs the tests
with it set and prints the durations and their ratios within that one run.
"""
import json
import os

ENV = "V2VW_TIMINGS_FILE"


def record(test, what, seconds):
    """Print and (with V2VW_TIMINGS_FILE) keep one measured duration; None: never happened."""
    print("timing %s: %s %s" % (test, what, "never" if seconds is None else "%.3f s" % seconds))
    path = os.environ.get(ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, "what": what, "seconds": seconds}) + "\n")
