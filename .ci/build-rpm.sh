#!/bin/bash
# Build the noarch RPM (virt-v2v-wrapper.spec) from an sdist with rpmbuild, on Debian 12,
# and check that it installs the console scripts, the man page, the docs and every module
# of the package.  Exits non-zero when anything is missing.
#
# Usage: .ci/build-rpm.sh [--no-deps] [--keep] [--outdir DIR] [SRC_DIR]
#   SRC_DIR      the source tree (default: this checkout); copied, never written to
#   --no-deps    do not install packages (they must be there already)
#   --outdir DIR copy the built .rpm/.src.rpm and the listing (rpm-qlp.txt) there
#   --keep       keep the temporary build tree (printed at the end)
#
# Packages (apt, installed when missing; needs root):
#   rpm                 rpmbuild, rpmspec, rpm -qlp (Debian's rpm 4.18)
#   python3, python3-setuptools  `setup.py sdist/build/install` with the system python
#                       (the spec's %{__python3} is /usr/bin/python3)
#   python3-pytest, python3-jsonschema  the unit tests run in %check
#   groff-base          the man page test renders docs/virt-v2v-wrapper.1
#   cpio                unpacking the RPM payload for the smoke test below
# rpmbuild runs with --nodeps: Debian's rpm database is empty, so BuildRequires (Fedora
# names) cannot be resolved by rpm; the packages above provide them.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(dirname "$HERE")"
PY="${PYTHON:-/usr/bin/python3}"
INSTALL_DEPS=1
KEEP=0
OUTDIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-deps) INSTALL_DEPS=0 ;;
        --keep) KEEP=1 ;;
        --outdir) OUTDIR="$(mkdir -p "$2" && cd "$2" && pwd)"; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        -*) echo "build-rpm.sh: unknown option $1" >&2; exit 2 ;;
        *) SRC="$(cd "$1" && pwd)" ;;
    esac
    shift
done
say() { echo "build-rpm.sh: $*"; }
die() { echo "build-rpm.sh: error: $*" >&2; exit 1; }

PKGS=(rpm python3 python3-setuptools python3-pytest python3-jsonschema groff-base cpio)
if [ "$INSTALL_DEPS" = 1 ]; then
    [ "$(id -u)" = 0 ] || die "must run as root to install packages (or use --no-deps)"
    . "$HERE/lib.sh"
    APT_INSTALL_OPTS=(--no-install-recommends)
    apt_install_missing build-rpm.sh "${PKGS[@]}"
fi
for t in rpmbuild rpmspec rpm rpm2cpio cpio "$PY"; do
    command -v "$t" >/dev/null || die "missing $t"
done

SPEC_SRC="$SRC/virt-v2v-wrapper.spec"
[ -f "$SPEC_SRC" ] || die "no $SPEC_SRC"
NAME="$(rpmspec -q --srpm --qf '%{name}' "$SPEC_SRC")"
VERSION="$(rpmspec -q --srpm --qf '%{version}' "$SPEC_SRC")"
PKG_VERSION="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SRC/wrapper/__init__.py")"
[ "$VERSION" = "$PKG_VERSION" ] || die "spec Version $VERSION != wrapper.__version__ $PKG_VERSION"

WORK="$(mktemp -d /var/tmp/v2vw-rpm.XXXXXX)"
cleanup() { if [ "$KEEP" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

# 1. sdist from a clean copy, so the checkout gets no build/, dist/ or *.egg-info.
mkdir -p "$WORK/src" "$WORK/dist"
tar -C "$SRC" --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude=.tox -cf - . | tar -C "$WORK/src" -xf -
(cd "$WORK/src" && "$PY" setup.py -q sdist -d "$WORK/dist") >"$WORK/sdist.log" 2>&1 \
    || { cat "$WORK/sdist.log" >&2; die "sdist failed"; }
SDIST="$(ls "$WORK"/dist/*.tar.gz)"
say "sdist: $(basename "$SDIST")"
# The spec's %check and %doc need these from the sdist (MANIFEST.in must include them).
tar -tzf "$SDIST" >"$WORK/sdist.txt"
for f in tests/conftest.py tests/fakes.py pytest.ini README.md LICENSE docs/virt-v2v-wrapper.1 \
         docs/status.md docs/status-watch.txt wrapper/schemas/job.schema.json; do
    grep -q "^[^/]*/$f\$" "$WORK/sdist.txt" || die "the sdist lacks $f (add it to MANIFEST.in)"
done

# 2. rpmbuild -ba in a private topdir.
TOP="$WORK/rpmbuild"
mkdir -p "$TOP"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS}
cp "$SDIST" "$TOP/SOURCES/$NAME-$VERSION.tar.gz"
cp "$SPEC_SRC" "$TOP/SPECS/"
say "rpmbuild -ba (runs the unit tests in %check)"
start=$(date +%s)
# %check skips optional parts (the oVirt SDK is not in the build root); the CI
# variable would make those tests insist on them.
if ! env -u CI rpmbuild -ba --nodeps --define "_topdir $TOP" "$TOP/SPECS/$(basename "$SPEC_SRC")" \
        >"$WORK/rpmbuild.log" 2>&1; then
    tail -n 60 "$WORK/rpmbuild.log" >&2
    die "rpmbuild failed (log above)"
fi
say "rpmbuild took $(( $(date +%s) - start )) s; $(grep -E '^[0-9]+ passed' "$WORK/rpmbuild.log" || grep -E ' passed' "$WORK/rpmbuild.log" | tail -1)"
RPM="$(ls "$TOP"/RPMS/noarch/"$NAME-$VERSION"-*.noarch.rpm)"
SRPM="$(ls "$TOP"/SRPMS/"$NAME-$VERSION"-*.src.rpm)"

# 3. Check the file list.
rpm -qlp "$RPM" >"$WORK/rpm-qlp.txt"
[ "$(rpm -qp --qf '%{arch}' "$RPM")" = noarch ] || die "not a noarch package"
SITELIB="$(grep -E '/wrapper/__init__\.py$' "$WORK/rpm-qlp.txt" | sed 's#/wrapper/__init__\.py$##')"
[ -n "$SITELIB" ] || die "the package modules are not in the RPM"
want=(/usr/bin/virt-v2v-wrapper /usr/bin/virt-v2v-wrapper.py
      "/usr/share/doc/$NAME/README.md" "/usr/share/doc/$NAME/status.md"
      "/usr/share/doc/$NAME/status-watch.txt" "/usr/share/licenses/$NAME/LICENSE"
      "$SITELIB/wrapper/schemas/job.schema.json" "$SITELIB/wrapper/schemas/state.schema.json")
for f in $(cd "$SRC" && find wrapper -name '*.py' -not -path '*/__pycache__/*' | sort); do
    want+=("$SITELIB/$f")
done
bad=0
for f in "${want[@]}"; do
    grep -qxF "$f" "$WORK/rpm-qlp.txt" || { echo "build-rpm.sh: missing from the RPM: $f" >&2; bad=1; }
done
grep -qE '^/usr/share/man/man1/virt-v2v-wrapper\.1(\.gz)?$' "$WORK/rpm-qlp.txt" \
    || { echo "build-rpm.sh: missing from the RPM: the man page" >&2; bad=1; }
[ "$bad" = 0 ] || { cat "$WORK/rpm-qlp.txt" >&2; die "the RPM file list is incomplete"; }

# 4. Smoke test of the payload: the installed console script runs from it.
mkdir -p "$WORK/root"
(cd "$WORK/root" && rpm2cpio "$RPM" | cpio -idm --quiet)
got="$(PYTHONPATH="$WORK/root$SITELIB" "$PY" "$WORK/root/usr/bin/virt-v2v-wrapper" --version)"
# the first line names the wrapper; a second says what the installed virt-v2v enables
[ "$(printf '%s\n' "$got" | head -n 1)" = "virt-v2v-wrapper $VERSION" ] \
    || die "installed script printed '$got'"
head -1 "$WORK/root/usr/bin/virt-v2v-wrapper.py" | grep -q python3 || die "bad shebang"

if [ -n "$OUTDIR" ]; then
    cp "$RPM" "$SRPM" "$WORK/rpm-qlp.txt" "$OUTDIR/"
    say "copied to $OUTDIR"
fi
say "OK: $(basename "$RPM") ($(wc -l <"$WORK/rpm-qlp.txt") files)"
cat "$WORK/rpm-qlp.txt"
