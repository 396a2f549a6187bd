#!/usr/bin/env bash
# Regenerates the C SDK's wit-bindgen bindings (sdk/c/bindings/) from wit/plugin.wit, so that
# a C consumer's build needs no wit-bindgen; `--check` says whether the committed ones match.
#
#   sdk/c/bindings.sh           regenerate (installs wit-bindgen-cli with cargo when missing)
#   sdk/c/bindings.sh --check   fail when wit/plugin.wit changed since they were generated;
#                               with wit-bindgen installed, also when they differ byte for byte
set -euo pipefail
cd "$(dirname "$0")/../.."
wit_bindgen_version=0.63.0
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
wit_bindgen="$cache/wit-bindgen-cli-$wit_bindgen_version/bin/wit-bindgen"
bindings=sdk/c/bindings

generate() {
    "$wit_bindgen" c wit --world consumer --no-object-file --out-dir "$1" >/dev/null 2>&1
}

if [[ "${1:-}" == --check ]]; then
    if ! sha256sum --quiet --check "$bindings/plugin.wit.sha256"; then
        echo "wit/plugin.wit changed since the C bindings were generated: run sdk/c/bindings.sh" >&2
        exit 1
    fi
    if [[ -x "$wit_bindgen" ]]; then
        fresh=$(mktemp -d)
        trap 'rm -rf "$fresh"' EXIT
        generate "$fresh"
        for file in consumer.h consumer.c; do
            if ! cmp -s "$fresh/$file" "$bindings/$file"; then
                echo "$bindings/$file is not what wit-bindgen $wit_bindgen_version generates from wit/: run sdk/c/bindings.sh" >&2
                exit 1
            fi
        done
    fi
    echo "the C bindings match wit/plugin.wit"
    exit 0
fi

if [[ ! -x "$wit_bindgen" ]]; then
    echo "installing wit-bindgen-cli $wit_bindgen_version (cargo) into $cache" >&2
    cargo install --locked "wit-bindgen-cli@$wit_bindgen_version" \
        --root "$cache/wit-bindgen-cli-$wit_bindgen_version"
fi
generate "$bindings"
sha256sum wit/plugin.wit >"$bindings/plugin.wit.sha256"
echo "wrote $bindings/consumer.h, consumer.c and plugin.wit.sha256"
