"""The wrapper's log: one line per record whatever the job's text holds."""
import io
import logging
import os

from wrapper import logsetup


def test_a_newline_in_a_value_cannot_forge_a_log_line(tmp_path):
    fd = os.open(str(tmp_path / "w.log"), os.O_WRONLY | os.O_CREAT, 0o644)
    logger = logsetup.setup(fd, name="test.logsetup")
    vm = "web01\n2026-12-01 00:00:00,000 INFO wrapper: finished: success"
    logger.info("job: vm %s", vm)
    logger.info("surrogate %s and NUL %s", "\udc80", "a\0b")
    for h in logger.handlers:
        h.flush()
    lines = (tmp_path / "w.log").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("job: vm web01\\n2026-12-01 00:00:00,000 INFO wrapper: finished: success")
    assert "\\udc80" in lines[1] and "\\x00" in lines[1]
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()


class Broken(io.StringIO):
    def write(self, text):
        raise OSError(5, "Input/output error")      # a hung-up terminal


def test_a_broken_stream_is_given_up_silently(capsys):
    logger = logging.getLogger("test.logsetup.broken")
    logger.propagate = False
    handler = logsetup.to_stderr(Broken(), name="test.logsetup.broken")
    logger.warning("one")
    logger.warning("two")
    assert handler.broken
    assert capsys.readouterr().err == ""              # no "--- Logging error ---"
    logger.removeHandler(handler)
