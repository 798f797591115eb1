#!/usr/bin/env python3
"""The Debian mirror (and apt settings) this host's own apt uses, for debootstrap.

The image builder (container/build-image.sh) and the test guest builder
(tests/integration/scripts/build-guest.sh) debootstrap Debian trees.  They
must fetch from wherever this host's apt fetches -- a corporate mirror or
proxy is the common case -- so nothing in the repository names a mirror.

    host_apt.py mirror [SUITE]     print the URI serving SUITE's "main" component
    host_apt.py apt-conf           print the host's apt settings a tree needs
                                   too (proxies, date checks), as apt.conf lines

Reads /etc/apt/sources.list, /etc/apt/sources.list.d/*.list (one-line format)
and *.sources (deb822); the root is overridable (APT_ROOT) for tests.  Exit 1
with one line on stderr when no source serves the suite.
"""
import glob
import os
import re
import subprocess
import sys

# settings worth carrying into a tree that fetches from the same mirror
CARRIED = ("Acquire::http::Proxy", "Acquire::https::Proxy", "Acquire::ftp::Proxy",
           "Acquire::Check-Valid-Until", "Acquire::Check-Date")


def _one_line_sources(text):
    """(types, uris, suites, components) of each one-line ``deb`` entry."""
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)         # [arch=amd64 signed-by=...]
        words = line.split()
        if len(words) >= 3:
            yield [words[0]], [words[1]], [words[2]], words[3:]


def _deb822_sources(text):
    for stanza in re.split(r"\n\s*\n", text):
        fields, last = {}, None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and last:         # continuation line
                fields[last] += " " + line.strip()
                continue
            name, sep, value = line.partition(":")
            if sep:
                last = name.strip().lower()
                fields[last] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "uris" in fields and "suites" in fields:
            yield (fields.get("types", "deb").split(), fields["uris"].split(),
                   fields["suites"].split(), fields.get("components", "").split())


def sources(root="/"):
    """Every enabled source of the host: (types, uris, suites, components)."""
    etc = os.path.join(root, "etc/apt")
    found = []
    for path in [os.path.join(etc, "sources.list")] + sorted(glob.glob(os.path.join(etc, "sources.list.d/*.list"))):
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                found.extend(_one_line_sources(f.read()))
    for path in sorted(glob.glob(os.path.join(etc, "sources.list.d/*.sources"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            found.extend(_deb822_sources(f.read()))
    return found


def mirror_for(entries, suite, component="main"):
    """The first URI whose entry serves ``suite`` with ``component`` as binary packages."""
    for types, uris, suites, components in entries:
        if "deb" in types and suite in suites and component in components and uris:
            return uris[0].rstrip("/")
    return None


def carried_settings(dump):
    """apt.conf lines for the CARRIED settings found in ``apt-config dump`` output."""
    lines = []
    for line in dump.splitlines():
        name, _, value = line.partition(" ")
        if name in CARRIED and value.strip().rstrip(";").strip('"'):
            lines.append("%s %s" % (name, value.strip()))
    return lines


def main(argv):
    root = os.environ.get("APT_ROOT", "/")
    if argv[:1] == ["mirror"]:
        suite = argv[1] if len(argv) > 1 else "bookworm"
        uri = mirror_for(sources(root), suite)
        if not uri:
            sys.stderr.write("host_apt.py: no apt source of this host serves %s main "
                             "(set MIRROR to a Debian mirror)\n" % suite)
            return 1
        print(uri)
        return 0
    if argv[:1] == ["apt-conf"]:
        try:
            dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True,
                                  check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            dump = ""
        for line in carried_settings(dump):
            print(line)
        return 0
    sys.stderr.write(__doc__.split("\n\n")[2] + "\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
