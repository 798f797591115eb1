# Shared by the .ci/deps-*.sh scripts (source it).

# apt_install_missing NAME PACKAGE...: install the packages that are not
# fully installed ("install ok installed"; half-configured ones count as
# missing), waiting for the dpkg lock if another apt runs.  Idempotent.
apt_install_missing() {
    local name=$1; shift
    local missing=() p
    for p in "$@"; do
        if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
            missing+=("$p")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "$name: all packages already installed"
        return 0
    fi
    echo "$name: installing: ${missing[*]}"
    local apt=(apt-get -o DPkg::Lock::Timeout=900 -o Dpkg::Options::=--force-confdef
               -o Dpkg::Options::=--force-confold -y -q)
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${APT_INSTALL_OPTS[@]}" "${missing[@]}"
}

require_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "$1: must run as root" >&2
        exit 1
    fi
}
