# C: wit-bindgen generates the bindings, clang compiles for WASI preview 1 (wasm32-wasi)
# against wasi-libc, and wasm-tools turns the core module into a component with wasmtime's
# preview 1 reactor adapter. clang, lld and wasi-libc are Debian packages; wit-bindgen and
# wasm-tools are installed with cargo, the adapter comes from its crate.
wit_bindgen_version=0.63.0
wasm_tools_version=1.263.0
# The engine's wasmtime version: the adapter speaks the WASI it provides.
adapter_version=48.0.8
wit_bindgen="$cache/wit-bindgen-cli-$wit_bindgen_version/bin/wit-bindgen"
wasm_tools="$cache/wasm-tools-$wasm_tools_version-component/bin/wasm-tools"
adapter="$cache/wasi-adapter-$adapter_version/wasi_snapshot_preview1.reactor.wasm"

if ! command -v clang-19 >/dev/null || ! command -v wasm-ld-19 >/dev/null ||
   [[ ! -f /usr/lib/wasm32-wasi/libc.a ||
      ! -f /usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a ]]; then
    apt_install clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc
fi
if [[ ! -x "$wit_bindgen" ]]; then
    install_step "wit-bindgen-cli $wit_bindgen_version (cargo, compiled from source) into $cache" \
        "2-6 minutes on 2 cores" \
        cargo install --locked "wit-bindgen-cli@$wit_bindgen_version" \
        --root "$cache/wit-bindgen-cli-$wit_bindgen_version"
fi
# Only `component new` is needed: without its other subcommands wasm-tools builds in a
# fraction of the time.
if [[ ! -x "$wasm_tools" ]]; then
    install_step "wasm-tools $wasm_tools_version (cargo, compiled from source) into $cache" \
        "2-5 minutes on 2 cores" \
        cargo install --locked "wasm-tools@$wasm_tools_version" \
        --no-default-features --features component \
        --root "$cache/wasm-tools-$wasm_tools_version-component"
fi
# The adapter ships inside a crate: a throwaway package that depends on it makes cargo
# download it, and `cargo metadata` says where it went.
if [[ ! -f "$adapter" ]]; then
    echo "fetching the preview 1 adapter $adapter_version (crates.io)" >&2
    dir="$(dirname "$adapter")"
    mkdir -p "$dir/fetch/src"
    cat >"$dir/fetch/Cargo.toml" <<TOML
[package]
name = "fetch-adapter"
version = "0.0.0"
edition = "2021"

[dependencies]
wasi-preview1-component-adapter-provider = "=$adapter_version"
TOML
    touch "$dir/fetch/src/lib.rs"
    crate="wasi-preview1-component-adapter-provider-$adapter_version"
    manifest=$(cargo metadata --quiet --format-version 1 --manifest-path "$dir/fetch/Cargo.toml" |
        grep -o "\"manifest_path\":\"[^\"]*/$crate/Cargo.toml\"" | head -n 1 | cut -d '"' -f 4)
    cp "${manifest%/Cargo.toml}/artefacts/wasi_snapshot_preview1.reactor.wasm" "$adapter.tmp"
    mv "$adapter.tmp" "$adapter"
    rm -rf "$dir/fetch"
fi

shopt -s nullglob
sources=(*.c)
if (( ${#sources[@]} == 0 )); then
    echo "no .c files here: the C build compiles every .c file of the directory" >&2
    exit 1
fi
mkdir -p target/bindings
# consumer.h, consumer.c and consumer_component_type.o (the world, for wasm-tools); it
# reports each file on stderr, so its output is shown only when it fails.
if ! log=$("$wit_bindgen" c "$wit" --world consumer --out-dir target/bindings 2>&1); then
    echo "$log" >&2
    exit 1
fi
# A reactor: no main; the component calls _initialize once, then its exports. CFLAGS may add
# flags (-I, -D, ...).
# shellcheck disable=SC2086
clang-19 --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 -Wall -Wextra -Werror \
    ${CFLAGS:-} -Itarget/bindings -Wl,--strip-all \
    "${sources[@]}" target/bindings/consumer.c target/bindings/consumer_component_type.o \
    -o target/component.core.wasm
"$wasm_tools" component new target/component.core.wasm \
    --adapt wasi_snapshot_preview1="$adapter" -o "$out"
