# Python: componentize-py embeds CPython and the app; it generates the `wit_world` module
# from the WIT at build time. Installed into a venv of its own.
version=0.25.1
venv="$cache/componentize-py-$version"
if [[ ! -x "$venv/bin/componentize-py" ]]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    install_step "componentize-py $version (PyPI) into $venv" "10-40 seconds" \
        "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
fi
if [[ ! -f app.py ]]; then
    echo "no app.py: the Python build componentizes the module \`app\`" >&2
    exit 1
fi
# --stub-wasi replaces every WASI import with a trap: the Python runtime imports files and
# sockets, which the engine refuses, and a consumer needs no WASI at run time.
# The SDK (sluice_sdk, written under target/ by `sluice plugin build`) goes in beside the app.
"$venv/bin/componentize-py" -d "$wit" -w consumer componentize --stub-wasi \
    -p . -p target/sluice-sdk-python app -o "$out"
