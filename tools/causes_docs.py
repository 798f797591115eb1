#!/usr/bin/env python3
"""The failure-code catalogue (wrapper/causes.py CATALOGUE) in the docs, kept in step.

    causes_docs.py check    exit 1 (naming the file) when a document is out of step
    causes_docs.py write    rewrite the generated parts

Generated parts: the table between ``<!-- causes-begin -->`` and ``<!-- causes-end -->``
in docs/contract.md, the entries between ``.\\" causes-begin`` and ``.\\" causes-end`` in
the man page, and ``last_message.code``'s ``enum`` and ``description`` in
wrapper/schemas/state.schema.json.
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from wrapper import causes  # noqa: E402

CONTRACT = os.path.join(ROOT, "docs", "contract.md")
MAN = os.path.join(ROOT, "docs", "virt-v2v-wrapper.1")
SCHEMA = os.path.join(ROOT, "wrapper", "schemas", "state.schema.json")
MAN_BEGIN = '.\\" causes-begin (tools/causes_docs.py write)'
SCHEMA_INTRO = "A stable identifier of the cause, for programs (docs/contract.md section 8)."


def _roff(text):
    return text.replace("\\", "\\e").replace("-", "\\-")


def contract_table():
    rows = ["| code | meaning | hint |", "|---|---|---|"]
    rows += ["| `%s` | %s | %s |" % (c, e.description, e.hint) for c, e in causes.CATALOGUE.items()]
    return "\n".join(rows) + "\n"


def man_entries():
    return "".join(".TP\n.B %s\n%s.\nHint: %s.\n" % (c, _roff(e.description[0].upper() + e.description[1:]),
                                                    _roff(e.hint))
                   for c, e in causes.CATALOGUE.items())


def schema_code():
    return {"description": SCHEMA_INTRO + " " + "; ".join(
        "%s: %s" % (c, e.description) for c, e in causes.CATALOGUE.items()),
        "enum": list(causes.CATALOGUE)}


def _between(text, begin, end, body):
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit("markers %r ... %r not found" % (begin, end))
    return pattern.sub(lambda _m: begin + "\n" + body + end, text, count=1)


def rendered():
    """{path: (current text, text with the generated parts in step)}."""
    out = {}
    with open(CONTRACT, encoding="utf-8") as f:
        text = f.read()
    out[CONTRACT] = (text, _between(text, "<!-- causes-begin -->", "<!-- causes-end -->",
                                    contract_table()))
    with open(MAN, encoding="utf-8") as f:
        text = f.read()
    out[MAN] = (text, _between(text, MAN_BEGIN, '.\\" causes-end', man_entries()))
    with open(SCHEMA, encoding="utf-8") as f:
        text = f.read()
    code = json.loads(text)["properties"]["last_message"]["properties"]["code"]
    want = schema_code()
    new = text
    if code != want:        # the file's own layout elsewhere is kept: only this object changes
        start = text.index('"code": {', text.index('"last_message"'))
        depth, i = 0, text.index("{", start)
        for i in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                break
        new = text[:start] + '"code": ' + json.dumps(want, ensure_ascii=False) + text[i + 1:]
    out[SCHEMA] = (text, new)
    return out


def main(argv):
    if argv[1:] not in (["check"], ["write"]):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    stale = [path for path, (old, new) in rendered().items() if old != new]
    if argv[1] == "write":
        for path, (old, new) in rendered().items():
            if old != new:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(new)
        return 0
    for path in stale:
        print("%s: the failure codes are out of step; run tools/causes_docs.py write"
              % os.path.relpath(path, ROOT), file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
