#!/usr/bin/env bash
# Builds the Golem oplog-processor bridge from src/bridge.js and wit/:
#
#   internal/golembridge/build.sh [OUT_DIR]
#
# OUT_DIR (default internal/golembridge/out) gets golem-oplog-bridge.wasm,
# the component to register with Golem, and js/, the same component
# transpiled by jco to run in Node (the tests'), whose WASI shim it finds
# through OUT_DIR/node_modules, a link to this folder's. The toolchain comes from
# the npm registry, pinned in package-lock.json: componentize-js 0.23 (its
# preview2-shim held at 0.25: 0.26 gives the build no file system) and jco.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/out}" && cd "${1:-$here/out}" && pwd)
cd "$here"
if [ ! -x node_modules/.bin/componentize-js ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
	npm ci --no-audit --no-fund --loglevel=error >&2
fi
node_modules/.bin/componentize-js --wit wit --world-name bridge --out "$out/golem-oplog-bridge.wasm" src/bridge.js >&2
rm -rf "$out/js"
node_modules/.bin/jco transpile "$out/golem-oplog-bridge.wasm" --name bridge -o "$out/js" --quiet >&2
# js/ imports the WASI shim for Node, @bytecodealliance/preview2-shim: Node
# finds it through this link.
[ "$out" = "$here" ] || ln -sfn "$here/node_modules" "$out/node_modules"
echo "$out/golem-oplog-bridge.wasm"
