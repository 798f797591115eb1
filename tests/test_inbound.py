"""wrapper.throttling.inbound: the nft text of the inbound policer (exact), its burst, and
when it refuses.  Pure and fake-runner tests; the kernel's side is
tests/integration/test_inbound_real.py."""
from types import SimpleNamespace

import pytest

from wrapper.errors import CommandError, ThrottleError
from wrapper.throttling import inbound
from wrapper.throttling.inbound import InboundPolicer
from wrapper.throttling.limits import NetworkRate

MATCH = 'socket cgroupv2 level 2 "unified/system.slice/v2v-import-x.service"'
MiB = 1 << 20


def test_ruleset_exact_text():
    assert inbound.ruleset("v2vw_3_job", MATCH, MiB) == (
        "add chain inet v2vw_3_job in { type filter hook input priority 0; policy accept; }\n"
        "flush chain inet v2vw_3_job in\n"
        'add rule inet v2vw_3_job in socket cgroupv2 level 2 '
        '"unified/system.slice/v2v-import-x.service" limit rate over 1048576 bytes/second '
        "burst 262144 bytes counter drop\n")


def test_removal_exact_text():
    assert inbound.removal("v2vw_3_job") == (
        "add chain inet v2vw_3_job in { type filter hook input priority 0; policy accept; }\n"
        "flush chain inet v2vw_3_job in\n"
        "delete chain inet v2vw_3_job in\n")


@pytest.mark.parametrize("rate, burst", [
    (1, inbound.MIN_BURST),                        # never less than four 64 KiB GRO packets
    (MiB, inbound.MIN_BURST),
    (2 * MiB, inbound.MIN_BURST),
    (100 * MiB, 100 * MiB // 8),                   # an eighth of a second
    (10 ** 12, inbound.MAX_BURST),
])
def test_burst(rate, burst):
    assert inbound.burst(rate) == burst


def test_rates_beyond_what_the_kernel_takes_are_policed_at_the_maximum():
    """The kernel refuses a byte limit whose (rate + burst) * 10^9 overflows 64 bits."""
    text = inbound.ruleset("t", MATCH, 10 ** 15)
    assert "limit rate over %d bytes/second burst %d bytes" % (inbound.MAX_RATE, inbound.MAX_BURST) \
        in text
    assert (inbound.MAX_RATE + inbound.MAX_BURST) * 10 ** 9 < 2 ** 64
    assert inbound.policed_rate(inbound.MAX_RATE - 1) == inbound.MAX_RATE - 1


class Runner:
    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail

    def __call__(self, argv, input=None, check=True):
        self.calls.append((argv, input))
        if self.fail:
            raise self.fail
        return SimpleNamespace(rc=0, out="", err="")


def limiter(name="cgroup2", available=True, started=True, minor=1, match=MATCH):
    return SimpleNamespace(started=started, minor=minor, table="v2vw_1_job", match=match,
                           mechanism=SimpleNamespace(name=name, available=available,
                                                     reason="tc is not installed"))


def test_set_change_and_lift():
    run = Runner()
    p = InboundPolicer(limiter(), run)
    p.set(NetworkRate(MiB))
    p.set(NetworkRate(8 * MiB))
    p.set(None)
    assert [argv for argv, _ in run.calls] == [["nft", "-f", "-"]] * 3
    assert [text for _, text in run.calls] == [
        inbound.ruleset("v2vw_1_job", MATCH, MiB), inbound.ruleset("v2vw_1_job", MATCH, 8 * MiB),
        inbound.removal("v2vw_1_job")]
    assert p.rate is None


@pytest.mark.parametrize("lim, why", [
    (limiter(started=False), "not classified yet"),
    (limiter(available=False), "unavailable on this host: tc is not installed"),
    (limiter(minor=None, match=None), "closed"),
    (limiter(name="net_cls"), "cgroup v2 only (this host classifies by net_cls)"),
])
def test_refusals_name_the_reason_and_run_nothing(lim, why):
    run = Runner()
    p = InboundPolicer(lim, run)
    with pytest.raises(ThrottleError, match=why.replace("(", r"\(").replace(")", r"\)")):
        p.set(NetworkRate(MiB))
    p.set(None)                 # lifting what was never there is not an error
    assert run.calls == [] and p.rate is None


def test_nft_failure_is_one_sentence():
    run = Runner(CommandError(["nft", "-f", "-"], 1, "", "Error: Could not process rule: "
                                                          "No such file or directory"))
    p = InboundPolicer(limiter(), run)
    with pytest.raises(ThrottleError) as e:
        p.set(NetworkRate(MiB))
    assert str(e.value).startswith("could not apply the inbound limit: ")
    assert "No such file or directory" in str(e.value) and "\n" not in str(e.value)
    assert p.rate is None
