#!/bin/bash
# Build the VDDK test world once and cache it (default /var/tmp/v2vw-vddk; $V2VW_VDDK_CACHE).
#   build.sh [CACHE]     prints key=value lines (plugin=, plugin_kind=, ...) on success
# Rebuilt when any source here changes (the hash is kept in CACHE/.ready); safe to run
# concurrently (flock). Needs .ci/deps-vddk.sh's packages. Layout:
#   bin/soapsim                   the vSphere SOAP stand-in (soapsim/, Go, built offline)
#   bin/nbdkit                    nbdkit wrapper: the plugin name "vddk" becomes the plugin
#   vix/libvixDiskLib.so.8        the file-backed VDDK library (vixlib/, C)
#   plugin-HASH/…/nbdkit-vddk-plugin.so  Debian 13's real plugin (get-plugin.sh), or, when
#                                 it cannot be had (or V2VW_VDDK_FORCE_STANDIN=1),
#   vix/standin-plugin.so         the stand-in plugin (fallback/, C); standin-bin/nbdkit
#                                 always selects it
#   tls/cert.pem, tls/key.pem, tls/thumbprint   the TLS front's identity and its SHA-1
set -euo pipefail
SRC=$(cd "$(dirname "$0")" && pwd)
CACHE=$(realpath -m "${1:-${V2VW_VDDK_CACHE:-/var/tmp/v2vw-vddk}}")
mkdir -p "$CACHE"
chmod 755 "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

HASH=$( (cd "$SRC" && cat build.sh get-plugin.sh vixlib/*.[ch] soapsim/*.go fallback/*.c
        echo "force-standin=${V2VW_VDDK_FORCE_STANDIN:-}") | sha256sum | cut -c1-32)
if [ "$(cat "$CACHE/.ready" 2>/dev/null)" = "$HASH" ]; then
    cat "$CACHE/world.txt"
    exit 0
fi
rm -f "$CACHE/.ready"
mkdir -p "$CACHE/bin" "$CACHE/vix" "$CACHE/tls" "$CACHE/gocache"

# the VDDK library stand-in
gcc -O2 -g -Wall -Wextra -Wno-unused-parameter -fPIC -fvisibility=hidden -shared \
    -Wl,-soname,libvixDiskLib.so.8 -o "$CACHE/vix/libvixDiskLib.so.8.tmp" "$SRC/vixlib/vixlib.c" -ldl
mv "$CACHE/vix/libvixDiskLib.so.8.tmp" "$CACHE/vix/libvixDiskLib.so.8"

# the SOAP stand-in, offline from Debian's Go packages (the first build takes ~90 s)
(cd "$SRC/soapsim" && GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= \
    GOCACHE="$CACHE/gocache" go build -o "$CACHE/bin/soapsim.tmp" .)
mv "$CACHE/bin/soapsim.tmp" "$CACHE/bin/soapsim"

# the TLS front's certificate (kept across rebuilds: its thumbprint is in tests' logs)
if [ ! -s "$CACHE/tls/thumbprint" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1 -keyout "$CACHE/tls/key.pem" \
        -out "$CACHE/tls/cert.pem" 2>/dev/null
    openssl x509 -in "$CACHE/tls/cert.pem" -noout -fingerprint -sha1 |
        sed 's/^[^=]*=//' > "$CACHE/tls/thumbprint"
fi
chmod 644 "$CACHE/tls/cert.pem" "$CACHE/tls/thumbprint"
chmod 600 "$CACHE/tls/key.pem"

# the fallback stand-in plugin: built always (cheap), used only without the real one
gcc -O2 -g -Wall -Wextra -Wno-unused-parameter -fPIC -shared -o "$CACHE/vix/standin-plugin.so.tmp" \
    "$SRC/fallback/plugin.c" -ldl
mv "$CACHE/vix/standin-plugin.so.tmp" "$CACHE/vix/standin-plugin.so"

# the real nbdkit vddk plugin, unpacked from Debian 13 (private apt state); fetched again
# only when get-plugin.sh changes, into a new directory, so users of the old one keep it
FETCH=$(sha256sum < "$SRC/get-plugin.sh" | cut -c1-16)
if [ "$(cat "$CACHE/plugin-$FETCH/.fetched" 2>/dev/null)" != ok ]; then
    if SO=$(bash "$SRC/get-plugin.sh" "$CACHE/plugin-$FETCH" 2>"$CACHE/plugin.log"); then
        echo "$SO" > "$CACHE/plugin-$FETCH/.path"
        echo ok > "$CACHE/plugin-$FETCH/.fetched"
    fi
fi
PLUGIN=$(cat "$CACHE/plugin-$FETCH/.path" 2>/dev/null || true)
if [ -n "$PLUGIN" ] && [ -z "${V2VW_VDDK_FORCE_STANDIN:-}" ]; then
    KIND="real $(/usr/bin/nbdkit "$PLUGIN" --dump-plugin | sed -n 's/^version=//p')"
else
    echo "build.sh: nbdkit's real vddk plugin cannot be had (see $CACHE/plugin.log):" \
         "the tests use the STAND-IN plugin (fallback/plugin.c)" >&2
    PLUGIN=$CACHE/vix/standin-plugin.so
    KIND="stand-in"
fi
# bin/nbdkit: the chosen plugin; standin-bin/nbdkit: always the stand-in (checked by tests)
write_wrapper() {
    mkdir -p "$(dirname "$1")"
    cat > "$1.tmp" <<WRAP
#!/bin/sh
# nbdkit for the VDDK tests: the real /usr/bin/nbdkit, but the plugin name "vddk" (an
# argument that is exactly that word) becomes $2. First on PATH only in tests.
for a do
    shift
    if [ "\$a" = vddk ]; then set -- "\$@" "$2"; else set -- "\$@" "\$a"; fi
done
exec /usr/bin/nbdkit "\$@"
WRAP
    chmod 755 "$1.tmp"
    mv "$1.tmp" "$1"
}
write_wrapper "$CACHE/bin/nbdkit" "$PLUGIN"
write_wrapper "$CACHE/standin-bin/nbdkit" "$CACHE/vix/standin-plugin.so"
chmod -R a+rX "$CACHE/bin" "$CACHE/standin-bin" "$CACHE/vix" "$CACHE/tls/thumbprint" \
    "$CACHE/tls/cert.pem"
for d in "$CACHE"/plugin-*; do [ -d "$d" ] && chmod -R a+rX "$d"; done
{
    echo "plugin=$PLUGIN"
    echo "plugin_kind=$KIND"
    echo "nbdkit_wrapper_dir=$CACHE/bin"
    echo "standin_wrapper_dir=$CACHE/standin-bin"
    echo "soapsim=$CACHE/bin/soapsim"
    echo "vixlib=$CACHE/vix/libvixDiskLib.so.8"
    echo "cert=$CACHE/tls/cert.pem"
    echo "key=$CACHE/tls/key.pem"
    echo "thumbprint=$(cat "$CACHE/tls/thumbprint")"
} > "$CACHE/world.txt"
echo "$HASH" > "$CACHE/.ready"
cat "$CACHE/world.txt"
