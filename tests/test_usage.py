"""Usage errors (wrapper/usage.py): every command says a bad command line in one line of its
own, with its own exit status, whatever the arguments hold."""
import io

import pytest

from wrapper import cli
from wrapper.usage import Parser, UsageError

HOSTILE = "--bogus\n\x1b[2Jinjected:second-line\u202e"   # no space: argparse takes "--a b" for a file name


@pytest.mark.parametrize("command,status", [
    ([], 1),                 # a conversion's refusal
    (["inspect"], 1),        # inspect: would be refused
    (["status"], 2),
    (["metrics"], 2),
])
def test_a_bad_argument_is_one_printable_line(command, status, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(command + [HOSTILE], stdin=io.StringIO(""), stdout=out, stderr=err,
                  environ={"VIRT_V2V_WRAPPER_STATE_DIR": str(tmp_path)})
    assert rc == status
    text = err.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n"), text
    assert "unrecognized arguments" in text and "--bogus" in text
    assert not any(c in text for c in "\x1b\u202e"), text
    assert out.getvalue() == ""


def test_the_parser_raises_instead_of_exiting():
    p = Parser(prog="x")
    p.add_argument("--n", type=int)
    with pytest.raises(UsageError) as e:
        p.parse_args(["--n", "one\ntwo"])
    assert "\n" not in str(e.value) and "--n" in str(e.value)
    assert p.parse_args(["--n", "3"]).n == 3
