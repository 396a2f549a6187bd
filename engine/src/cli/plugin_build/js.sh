# JavaScript: ComponentizeJS embeds SpiderMonkey and the app. Installed with npm into
# node_modules/, at the versions package.json (and package-lock.json, when there is one) pin.
if ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
if [[ ! -f package.json ]]; then
    echo "no package.json: it must name @bytecodealliance/componentize-js in devDependencies" >&2
    exit 1
fi
# npm rewrites node_modules/.package-lock.json on every install: an older one means the lock
# changed since (a version bump), so install again. Not `npm ci`: it refuses a lock in which
# jco names optional platform packages at versions that were never published.
if [[ ! -x node_modules/.bin/componentize-js ||
      ( -f package-lock.json && package-lock.json -nt node_modules/.package-lock.json ) ]]; then
    install_step "the packages of package.json (npm)" "10-60 seconds" \
        npm install --no-save --no-audit --no-fund --loglevel=error
fi
if [[ ! -x node_modules/.bin/componentize-js ]]; then
    echo "npm installed no componentize-js: add @bytecodealliance/componentize-js to devDependencies" >&2
    exit 1
fi
entry=app.js
if [[ ! -f $entry ]]; then
    echo "no app.js: the JavaScript build componentizes app.js" >&2
    exit 1
fi
# An app that imports the SDK ("sluice-sdk", written under target/sluice-sdk-js by `sluice
# plugin build`) is bundled with it into one module first: ComponentizeJS takes one.
if grep -q '"sluice-sdk"' "$entry"; then
    if [[ ! -x node_modules/.bin/esbuild ]]; then
        echo "app.js imports sluice-sdk, which is bundled with esbuild: add \"esbuild\" to devDependencies in package.json" >&2
        exit 1
    fi
    node_modules/.bin/esbuild "$entry" --bundle --format=esm --platform=neutral \
        --log-level=warning --external:'sluice:*' \
        --alias:sluice-sdk=./target/sluice-sdk-js/component.js --outfile=target/sluice-app.js
    entry=target/sluice-app.js
fi
# The source path stays relative: componentize-js mangles absolute ones. Disabled features:
# `http` and `fetch-event` would import wasi:http; `stdio` brings in wasi:filesystem, which
# the engine refuses. Clocks and random stay: the engine allows them.
node_modules/.bin/componentize-js "$entry" --wit "$wit" --world-name consumer \
    -d stdio -d http -d fetch-event -o "$out"
