"""The contract's citations hold: code cites docs/contract.md, never "SPEC §"
(a document not in the repository), and every "docs/contract.md §N" names a
section that docs/contract.md has."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRACT = os.path.join(ROOT, "docs", "contract.md")
# where citations live: (directory or file, file name suffixes)
CITING = (("wrapper", (".py", ".json")), ("tests", (".py",)), ("bench", (".py",)),
          ("tools", (".py",)), ("docs", (".md", ".1", ".txt")), ("README.md", (".md",)))

_NUMBER = r"\d+(?:\.\d+)*"
_HEADING = re.compile(r"^#{1,6}[ \t]+§(%s)(?![\d.]*\d)" % _NUMBER, re.M)
# "docs/contract.md §4", "§2, §4", "§4-§7", "§5 and §8", "§4 step 1"
_CITATION = re.compile(r"docs/contract\.md((?:[ \t]*(?:,|-|–|and|or)?[ \t]*§%s)+)" % _NUMBER)
_SECTION = re.compile(r"§(%s)" % _NUMBER)
_RANGE = re.compile(r"§(\d+)[ \t]*[-–][ \t]*§(\d+)")
_STALE = "SPEC §"


def _c(text):
    """Test text with "@" for the contract's path (written out, this file's own
    examples would be citations of sections that do not exist)."""
    return text.replace("@", "docs/contract" + ".md")


def headings(text):
    """The section numbers of the headings of a contract text: {'1', '3.1', ...}."""
    return set(_HEADING.findall(text))


def citations(text):
    """[(line number, section number)] of every "docs/contract.md §..." in ``text``;
    a range "§4-§7" cites every section from 4 to 7."""
    found = []
    for m in _CITATION.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        cited = m.group(1)
        sections = _SECTION.findall(cited)
        for low, high in _RANGE.findall(cited):
            sections += [str(n) for n in range(int(low) + 1, int(high))]
        found += [(line, section) for section in sections]
    return found


def stale_lines(text):
    """Line numbers that cite the old "SPEC §" name."""
    return [i for i, line in enumerate(text.splitlines(), 1) if _STALE in line]


def unknown(cited, known):
    """The citations among ``cited`` whose section is not in ``known``."""
    return [(line, section) for line, section in cited if section not in known]


def _files(top, suffixes):
    path = os.path.join(ROOT, top)
    if os.path.isfile(path):
        yield path
        return
    for dirpath, dirnames, names in os.walk(path):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in sorted(names):
            if name.endswith(suffixes):
                yield os.path.join(dirpath, name)


def _read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _contract_sections():
    return headings(_read(CONTRACT))


# ---------------------------------------------------------------- the parsers


def test_headings_are_found_at_any_level_and_only_in_headings():
    text = "# Title\n## §1 Who\n### §3.2 Target\ntext about §7\n## §10 Ten\n#no-space §5\n"
    assert headings(text) == {"1", "3.2", "10"}


@pytest.mark.parametrize("text, expected", [
    ("(@ §4)", ["4"]),
    ("(@ §2, §4).", ["2", "4"]),
    ("@ §3.5.", ["3.5"]),
    ("@ §4 step 1", ["4"]),
    ("@ §5 and §8", ["5", "8"]),
    ("(docs/security.md, @ §4-§7).", ["4", "7", "5", "6"]),
    ("@ describes it", []),
    ("see contract.md §4", []),
])
def test_citations_parse(text, expected):
    assert [section for _line, section in citations(_c(text))] == expected


def test_citations_carry_their_line():
    assert citations(_c("a\nb @ §6\nc @ §7")) == [(2, "6"), (3, "7")]


def test_an_unknown_section_is_reported():
    known = headings("## §1 One\n### §3.1 Source\n")
    assert unknown(citations(_c("@ §3.1 and @ §3.9, §1")), known) == [(1, "3.9")]
    assert unknown(citations(_c("@ §12")), known) == [(1, "12")]


def test_stale_spec_citations_are_found():
    assert stale_lines('"""Throttling (SPEC §6)."""\nok\n# SPEC §3.2: the CA\n') == [1, 3]
    assert stale_lines("SPEC = 'virt-v2v-wrapper.spec'\ndocs/contract.md §6\n") == []


# ---------------------------------------------------------------- the repository


def test_the_contract_has_every_section():
    sections = _contract_sections()
    expected = {str(n) for n in range(1, 10)} | {"3.%d" % n for n in range(1, 6)}
    assert expected <= sections, sorted(expected - sections)


def test_no_module_cites_spec():
    stale = ["%s:%d" % (os.path.relpath(path, ROOT), line)
             for path in _files("wrapper", (".py", ".json"))
             for line in stale_lines(_read(path))]
    assert stale == []


def test_every_citation_names_a_section_of_the_contract():
    known = _contract_sections()
    count, bad = 0, []
    for top, suffixes in CITING:
        for path in _files(top, suffixes):
            cited = citations(_read(path))
            count += len(cited)
            bad += ["%s:%d cites §%s" % (os.path.relpath(path, ROOT), line, section)
                    for line, section in unknown(cited, known)]
    assert bad == []
    assert count >= 30      # the docstrings do cite it: a scan that finds nothing proves nothing


def test_the_contracts_own_references_resolve():
    text = _read(CONTRACT)
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    refs = set(_SECTION.findall(body))
    assert len(refs) >= 10
    assert sorted(refs - headings(text)) == []
