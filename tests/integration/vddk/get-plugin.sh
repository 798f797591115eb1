#!/bin/bash
# Unpack nbdkit's real vddk plugin as Debian 13 packages it (nbdkit-plugin-vddk, contrib)
# into OUTDIR, WITHOUT installing it: apt runs with a private state (sources, lists and
# cache under OUTDIR), so the host's apt configuration and dpkg database are untouched.
# The mirror is the host's own (first "deb" URI of its sources); no other host is used.
#   get-plugin.sh OUTDIR      prints the plugin's path; exit 1 when it cannot be had
# The plugin (1.42) loads into Debian 12's nbdkit 1.32 (same plugin ABI); checked below.
set -euo pipefail
OUT=$(realpath -m "${1:?usage: get-plugin.sh OUTDIR}")
rm -rf "$OUT"
mkdir -p "$OUT/apt/etc/sources.list.d" "$OUT/apt/lists/partial" "$OUT/apt/cache/archives/partial" \
         "$OUT/deb" "$OUT/root"

host_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] && awk 'BEGIN{RS=""} /(^|\n)Types:[^\n]*deb([ \n]|$)/ && !/security/ {
            if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { u=substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", u); print u } }' "$f"
    done
    [ -r /etc/apt/sources.list ] && awk '$1=="deb" && $0 !~ /security/ {
        for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' /etc/apt/sources.list
    return 0
}
MIRROR=$(host_mirror | head -1)
[ -n "$MIRROR" ] || { echo "get-plugin.sh: no deb source on this host" >&2; exit 1; }
cat > "$OUT/apt/etc/sources.list.d/trixie-contrib.sources" <<EOS
Types: deb
URIs: $MIRROR
Suites: trixie
Components: contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
APT=(apt-get -q -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$OUT/apt/etc/sources.list.d"
     -o Dir::State::Lists="$OUT/apt/lists" -o Dir::Cache="$OUT/apt/cache"
     -o Dir::State::status=/var/lib/dpkg/status -o APT::Architectures::=amd64
     -o Debug::NoLocking=true)
"${APT[@]}" update >&2
(cd "$OUT/deb" && "${APT[@]}" download nbdkit-plugin-vddk >&2)
DEB=$(ls "$OUT"/deb/nbdkit-plugin-vddk_*.deb | head -1)
dpkg-deb -x "$DEB" "$OUT/root"
SO=$(find "$OUT/root" -name nbdkit-vddk-plugin.so | head -1)
[ -n "$SO" ] || { echo "get-plugin.sh: no nbdkit-vddk-plugin.so in $DEB" >&2; exit 1; }
NBDKIT=$(readlink -f /usr/bin/nbdkit)
lacking=$(comm -23 <(nm -D --undefined-only "$SO" | awk '{print $2}' | grep '^nbdkit_' | sort -u) \
                   <(nm -D --defined-only "$NBDKIT" | awk '{print $3}' | sort -u))
[ -z "$lacking" ] || { echo "get-plugin.sh: local nbdkit lacks: $lacking" >&2; exit 1; }
/usr/bin/nbdkit "$SO" --dump-plugin >/dev/null
rm -rf "$OUT/apt"    # the private apt state is not needed any more
echo "$SO"
