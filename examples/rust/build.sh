#!/usr/bin/env bash
# Builds the Rust example into target/order-totals.wasm (Rust's wasm32-wasip2 target builds
# components directly), installing the target first when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

rustup target add wasm32-wasip2 >/dev/null
cargo build --release --locked --target wasm32-wasip2
mkdir -p target
cp target/wasm32-wasip2/release/order_totals.wasm target/order-totals.wasm
