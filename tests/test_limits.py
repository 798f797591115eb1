"""Throttling values are bounded, in the job and in the throttling file alike
(limits.parse_limits is shared), and their messages stay short and one line."""
import pytest

from wrapper.throttling import limits
from wrapper.errors import ThrottleError


def refusal(parse, value):
    with pytest.raises(ThrottleError) as e:
        parse(value)
    message = str(e.value)
    assert "\n" not in message and len(message) < 200, message
    return message


@pytest.mark.parametrize("value,expected", [
    ("100000", "100000%"), (100000, "100000%"), ("0000000000000050", "50%"), (12.5, "12.5%"),
    ("99999.5%", "99999.5%"), (" 7 % ", "7%")])
def test_cpu_within_bounds(value, expected):
    assert limits.parse_cpu(value) == expected


@pytest.mark.parametrize("value,words", [
    ("1" * 401, "too long"),                  # used to become "inf%"
    ("1" * 17, "too long"),
    ("100001", "too large"),
    ("100000.5%", "too large"),
    (100001, "at most 100000%"),
    (10 ** 400, "at most 100000%"),
    pytest.param(10 ** 5000, "at most 100000%", id="5000-digit-int"),    # too many digits to print
    (1e300, "at most 100000%"),
    (float("inf"), "not a percentage"),
    (float("nan"), "not a percentage"),
    (-0.0, "more than 0%"),
    ("\u0665\u0660", "not a percentage"),     # Arabic-Indic digits: float() would take them
    ("5\n0", "not a percentage"),
])
def test_cpu_out_of_bounds(value, words):
    assert words in refusal(limits.parse_cpu, value)


@pytest.mark.parametrize("value,expected", [
    ("1000000000000000", 10 ** 15), (10 ** 15, 10 ** 15), (1e15, 10 ** 15),
    ("0" * 19 + "1", 1), (" 1024 ", 1024), (2048.0, 2048)])
def test_network_within_bounds(value, expected):
    rate = limits.parse_network(value)
    assert rate == limits.NetworkRate(expected)
    assert rate.bytes_per_second == expected and rate.bits_per_second == 8 * expected
    assert str(rate) == str(expected) and limits.state_text(rate) == str(expected)


@pytest.mark.parametrize("value,words", [
    ("1" * 401, "too long"),
    pytest.param("1" * (1 << 20), "too long", id="1MiB-digits"),    # int() of it would raise ValueError
    ("0" * 20 + "1", "too long"),
    ("1000000000000001", "too large"),
    (10 ** 15 + 1, "at most 1000000000000000"),
    pytest.param(10 ** 5000, "at most 1000000000000000", id="5000-digit-int"),
    (1e300, "at most 1000000000000000"),
    (float("inf"), "as digits"),
    (float("nan"), "as digits"),
    (-1, "positive"),
    ("\u0661\u0662", "not a positive number"),
])
def test_network_out_of_bounds(value, words):
    assert words in refusal(limits.parse_network, value)


@pytest.mark.parametrize("value,words", [
    (0, "not a positive"), (-1, "not a positive"), (10 ** 15 + 1, "too large"),
    (1.0, "whole number"), ("100", "whole number"), (True, "whole number"), (None, "whole number")])
def test_network_rate_keeps_its_bounds(value, words):
    """Whoever builds a NetworkRate, not only parse_network, gets the same bounds."""
    assert words in refusal(limits.NetworkRate, value)


def test_network_rate_is_a_value():
    rate = limits.NetworkRate(1048576)
    assert rate == limits.NetworkRate(1048576) and rate != limits.NetworkRate(1048577)
    assert hash(rate) == hash(limits.NetworkRate(1048576))
    with pytest.raises(AttributeError):
        rate.bytes_per_second = 1


def test_state_text():
    assert limits.state_text(limits.NetworkRate(5)) == "5"
    assert limits.state_text("50%") == "50%" and limits.state_text(None) is None


def test_messages_do_not_echo_huge_or_multiline_input():
    message = refusal(limits.parse_cpu, "x" * 100000 + "\n" * 100)
    assert message.count("x") <= 40 and "\u2026" in message
    message = refusal(limits.parse_network, "1\n2\r3\x1b")
    assert "\\n" in message and "\x1b" not in message


def test_throttling_file_document_gets_the_same_bounds():
    changes, problems = limits.parse_limits({"cpu": "1" * 401, "network": "1" * 401, "other": 1})
    assert changes == {}
    assert [key for key, _message in problems] == ["cpu", "network"]
    changes, problems = limits.parse_limits({"cpu": "50", "network": 10 ** 15})
    assert changes == {"cpu": "50%", "network": limits.NetworkRate(10 ** 15)} and problems == []


def test_unlimited_spelling_is_bounded():
    assert limits.parse_cpu(" Unlimited ") is None
    refusal(limits.parse_cpu, " " * 100 + "unlimited")
