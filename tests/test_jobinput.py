"""Reading the job from stdin (bounded, strict UTF-8, strict JSON, bounded
depth) and making any text one safe line."""
import io
import json

import pytest

from wrapper import jobinput
from wrapper.security import text as safetext
from wrapper.errors import JobError


def refusal(data, **kw):
    with pytest.raises(JobError) as e:
        jobinput.read_job(io.BytesIO(data), **kw)
    message = str(e.value)
    assert e.value.key is None
    assert "\n" not in message and len(message) < 400, message
    return message


def test_reads_a_job():
    job = {"vm_name": "vm1", "nested": [{"a": 1.5}], "u": "\u00e9\u2603"}
    assert jobinput.read_job(io.BytesIO(json.dumps(job, ensure_ascii=False).encode())) == job


def test_a_text_stream_is_accepted_too():
    assert jobinput.read_job(io.StringIO('{"a": "\u00e9"}')) == {"a": "\u00e9"}


def test_size_bound():
    assert jobinput.read_job(io.BytesIO(b" " * 10 + b"[1]"), limit=13) == [1]
    assert refusal(b" " * 11 + b"[1]", limit=13) == "the job on stdin is larger than 13 bytes"
    assert refusal(b"[" + b" " * (1 << 20) + b"]") == "the job on stdin is larger than 1 MiB"


def test_size_bound_reads_no_more_than_needed():
    class Endless(io.RawIOBase):
        reads = 0

        def readable(self):
            return True

        def readinto(self, b):
            self.reads += 1
            b[:len(b)] = b" " * len(b)
            return len(b)

    stream = Endless()
    assert "larger than 1 MiB" in str(pytest.raises(JobError, jobinput.read_job, stream).value)
    assert stream.reads < 100


def test_invalid_utf8_names_the_offset():
    assert refusal(b'{"vm_name": "\xff"}') == \
        "the job on stdin is not valid UTF-8 (byte 0xff at offset 13)"
    assert "offset 0" in refusal(b"\xc3")
    assert "offset 4" in refusal(b'["ab\xed\xa0\x80"]')        # an encoded surrogate


@pytest.mark.parametrize("data,words", [
    (b"{not json", "not valid JSON (Expecting property name"),
    (b"", "not valid JSON (Expecting value"),
    (b'{"a": 1', "not valid JSON"),
    (b'{"a": NaN}', "NaN is not allowed"),
    (b'{"a": -Infinity}', "-Infinity is not allowed"),
    (b"[" + b"1" * 5000 + b"]", "a number has too many digits"),
    (b"\xef\xbb\xbf{}", "not valid JSON"),
])
def test_invalid_json(data, words):
    message = refusal(data)
    assert message.startswith("the job on stdin is not valid JSON (") and words in message


@pytest.mark.parametrize("opener", [b"[", b'{"a":', b'[{"a":'])
def test_deep_nesting_is_one_line_not_a_recursion_error(opener):
    assert refusal(opener * 100000) == "the job on stdin is not valid JSON (nested too deeply)"


def test_depth_bound_below_the_recursion_limit():
    ok = b"[" * jobinput.MAX_DEPTH + b"]" * jobinput.MAX_DEPTH
    assert jobinput.read_job(io.BytesIO(ok))
    deep = b"[" * (jobinput.MAX_DEPTH + 1) + b"]" * (jobinput.MAX_DEPTH + 1)
    assert "nested more than 64 levels deep" in refusal(deep)


def test_os_error_while_reading():
    class Broken:
        def read(self, _n):
            raise OSError(5, "Input/output error")

    with pytest.raises(JobError) as e:
        jobinput.read_job(Broken())
    assert str(e.value) == "cannot read the job from stdin (Input/output error)"


def test_text_stream_that_cannot_decode():
    stream = io.TextIOWrapper(io.BytesIO(b'{"a": "\xff"}'), encoding="utf-8")
    assert "not valid UTF-8" in str(pytest.raises(JobError, jobinput.read_job, stream).value)


def test_lone_surrogate_escapes_parse_and_are_left_to_the_config():
    assert jobinput.read_job(io.BytesIO(b'{"a": "\\ud800"}')) == {"a": "\ud800"}


# -- oneline -------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("plain text", "plain text"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("nul\x00 esc\x1b del\x7f c1\x85\x9b", "nul\\x00 esc\\x1b del\\x7f c1\\x85\\x9b"),
    ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
    ("bidi\u202eevil\u2066", "bidi\\u202eevil\\u2066"),
    ("lone\ud800\udfff", "lone\\ud800\\udfff"),
    ("caf\u00e9 \u2603 \\ back", "caf\u00e9 \u2603 \\ back"),
])
def test_oneline_escapes(text, expected):
    assert safetext.oneline(text) == expected


def test_oneline_result_is_one_encodable_line():
    every = "".join(chr(c) for c in range(0x3000)) + "\ud800\udbff\udc00\udfff"
    out = safetext.oneline(every, limit=10 ** 6)
    assert len(out.splitlines()) == 1
    out.encode("utf-8")                  # strict: no surrogate is left


def test_oneline_truncates():
    assert safetext.oneline("x" * 1000, limit=10) == "x" * 9 + "\u2026"
    assert safetext.oneline("x" * 10, limit=10) == "x" * 10
    cut = safetext.oneline("\n" * 1000, limit=11)
    assert len(cut) == 11 and cut.endswith("\u2026")
    assert len(safetext.oneline("y" * (1 << 22))) == 500


def test_oneline_of_anything():
    assert safetext.oneline(OSError(2, "No such file")) == "[Errno 2] No such file"

    class Hostile:
        def __str__(self):
            raise RuntimeError("no")

    assert safetext.oneline(Hostile()) == "<Hostile>"


def test_short_repr():
    assert safetext.short("vmdk") == "'vmdk'"
    assert safetext.short("a\nb") == "'a\\nb'"
    long = safetext.short("z" * (1 << 20))
    assert len(long) == 40 and long.endswith("\u2026")
    assert safetext.short(10 ** 5000) == "<int too large to show>"


# -- the string rules ------------------------------------------------------------------
@pytest.mark.parametrize("kind,value,ok", [
    (jobinput.TEXT, "name with spaces \u00e9", True),
    (jobinput.TEXT, "tab\t", False),
    (jobinput.TEXT, "c1\x85", False),
    (jobinput.TEXT, "x" * 4097, False),
    (jobinput.KEY, "-----BEGIN-----\r\n\tx\n", True),
    (jobinput.KEY, "esc\x1b", False),
    (jobinput.PASSWORD, "p\tw\x1b\x7f\x85", True),
    (jobinput.PASSWORD, "pw\n", False),
    (jobinput.PASSWORD, "pw\r", False),
    (jobinput.OPAQUE, "a\nb\x1b" * 10000, True),
    (jobinput.OPAQUE, "\x00", False),
    (jobinput.OPAQUE, "\udc00", False),
])
def test_string_kinds(kind, value, ok):
    assert (jobinput.string_problem(value, kind) is None) == ok


def test_nul_and_surrogates_have_one_message_everywhere():
    for kind in (jobinput.TEXT, jobinput.KEY, jobinput.PASSWORD, jobinput.OPAQUE):
        assert jobinput.string_problem("a\x00", kind) == jobinput.INVALID_MESSAGE
        assert jobinput.string_problem("a\ud9ff", kind) == jobinput.INVALID_MESSAGE


def test_text_problem_shows_the_character_escaped():
    assert jobinput.string_problem("ab\ncd") == "must not contain control characters (\\n at offset 2)"


def test_first_string_problem_paths():
    value = {"a": [1, "ok", {"b\n": "x\x00"}], "c": "\x1b"}
    assert jobinput.first_string_problem(value, "top") == ("top.a[2].b\\n", jobinput.INVALID_MESSAGE)
    assert jobinput.first_string_problem(["fine", 5, None], "k") is None
    deep = "bad\n"
    for _ in range(100000):
        deep = [deep]
    assert jobinput.first_string_problem(deep, "k")[0] == "k" + "[0]" * 100000


def test_depth_problem_is_iterative():
    deep = []
    for _ in range(100000):
        deep = [deep]
    assert jobinput.depth_problem(deep) == "nested more than 64 levels deep"
    assert jobinput.depth_problem({"a": [[{}]]}) is None
