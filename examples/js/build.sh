#!/usr/bin/env bash
# Builds the JavaScript example into target/order-totals.wasm with ComponentizeJS, which it
# installs first (the versions package-lock.json pins, into node_modules/) when missing.
set -euo pipefail

# componentize-js mangles an absolute path to the source (it drops its first characters),
# so everything below is relative to this directory.
cd "$(dirname "${BASH_SOURCE[0]}")"

# npm rewrites node_modules/.package-lock.json on every install: an older one means the lock
# changed since (a version bump), so install again. Not `npm ci`: it refuses this lock
# because jco names optional platform packages at versions that were never published.
# package.json names preview2-shim itself: componentize-js 0.23 imports it without
# depending on it.
if [[ ! -x node_modules/.bin/componentize-js ||
      package-lock.json -nt node_modules/.package-lock.json ]]; then
    npm install --no-save --no-audit --no-fund --loglevel=error
fi

mkdir -p target
# Disabled features: `http` and `fetch-event` would import wasi:http; `stdio` brings in
# wasi:filesystem, which the engine refuses (and it discards stdout anyway). Clocks and
# random stay: the engine allows them.
node_modules/.bin/componentize-js app.js --wit ../../wit --world-name consumer \
    -d stdio -d http -d fetch-event -o target/order-totals.wasm
