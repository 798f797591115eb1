"""The wrapper's own log: one line per record, whatever the text.

Values from the job (a VM name with a newline, a lone surrogate) must not
forge log lines or break logging ("--- Logging error ---" and a dropped
line): the formatter escapes control characters in the message, and the
streams encode with ``backslashreplace``.  A handler whose stream fails (a
full disk, a closed terminal) stops writing instead of printing errors to a
stderr that may be the very thing that broke.
"""
import logging
import os

from wrapper.security.text import oneline

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STDERR_FORMAT = "%(asctime)s %(levelname)s: %(message)s"


class OneLineFormatter(logging.Formatter):
    def formatMessage(self, record):
        record.message = oneline(record.message, limit=20000)
        return super().formatMessage(record)


class QuietStreamHandler(logging.StreamHandler):
    """Gives up on its stream at the first write error."""

    def __init__(self, stream):
        super().__init__(stream)
        self.broken = False

    def emit(self, record):
        if not self.broken:
            super().emit(record)

    def handleError(self, record):
        self.broken = True


def open_stream(fd):
    return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace", buffering=1,
                     closefd=True)


def setup(fd, name="wrapper"):
    """Log everything (DEBUG up) of ``name`` to the file descriptor ``fd``."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    handler = QuietStreamHandler(open_stream(fd))
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    logger.addHandler(handler)
    return logger


def to_stderr(stderr, name="wrapper"):
    """Foreground mode, once the job is accepted: administrators watch the log
    on the terminal (a refused job still gets its single line only)."""
    handler = QuietStreamHandler(stderr)
    handler.setFormatter(OneLineFormatter(STDERR_FORMAT))
    handler.setLevel(logging.INFO)
    logging.getLogger(name).addHandler(handler)
    return handler
