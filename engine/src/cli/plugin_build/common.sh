# Run before every language's build script, in the project's directory, by
# `sluice plugin build`. It sets: $wit (the directory of plugin.wit, relative), $out (where
# the component goes, absolute), $cache (where installed tools live, a directory per tool
# and version, so a version bump gets a fresh install instead of an upgrade in place).
set -euo pipefail
wit="$SLUICE_WIT"
out="$SLUICE_OUT"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
mkdir -p "$cache" "$(dirname "$out")"

# Runs an install step (`installing WHAT, USUALLY`, then the command), and says how long it
# took: a first build installs its toolchain, and no minute of it should pass unexplained.
install_step() {
    local what="$1" usually="$2" started=$SECONDS
    shift 2
    echo "installing $what (first build only; usually $usually)" >&2
    "$@"
    echo "installed $what in $((SECONDS - started)) s" >&2
}

# Installs Debian packages, with sudo unless root.
apt_install() {
    local sudo
    sudo=$([[ $(id -u) == 0 ]] || echo sudo)
    echo "installing $* (apt)" >&2
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "$@" >/dev/null
}
