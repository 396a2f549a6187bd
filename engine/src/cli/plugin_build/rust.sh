# Rust: the wasm32-wasip2 target builds components directly; sluice-sdk brings the bindings.
if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust with rustup (https://rustup.rs), then build again" >&2
    exit 1
fi
rustup target add wasm32-wasip2 >/dev/null
locked=()
[[ -f Cargo.lock ]] && locked=(--locked)
# The JSON messages name the files each build step wrote: the last .wasm is the component,
# wherever the target directory is (a workspace's, or CARGO_TARGET_DIR).
component=$(cargo build --release --target wasm32-wasip2 "${locked[@]}" \
        --message-format=json-render-diagnostics |
    grep -o '"filenames":\["[^"]*\.wasm"' | tail -n 1 | cut -d '"' -f 4)
if [[ -z "$component" ]]; then
    echo "cargo built no .wasm: Cargo.toml needs [lib] crate-type = [\"cdylib\"]" >&2
    exit 1
fi
cp "$component" "$out"
