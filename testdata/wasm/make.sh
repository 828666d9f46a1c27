#!/usr/bin/env bash
# Regenerates the WebAssembly test inputs in this folder. Not run by the
# tests or CI: the outputs are committed.
#
#   hello.wasm      a WASI core module compiled by the Go toolchain
#                   (GOOS=wasip1 GOARCH=wasm), about 1.8 MB
#   module.wasm     a small core module, from module.wat
#   component.wasm  a component wrapping a core module, from component.wat
#
# The .wat files are assembled by wasm-tools (the build that ships inside
# the npm package @bytecodealliance/jco-transpile, run by Node.js), which
# also prints each result back as text: a full parse of every binary.
set -euo pipefail
cd "$(dirname "$0")"
tools=${WASM_TOOLS_DIR:-$(mktemp -d)}
if [[ ! -d $tools/node_modules/@bytecodealliance/jco-transpile ]]; then
	(cd "$tools" && npm install --no-audit --no-fund --ignore-scripts @bytecodealliance/jco-transpile@0.15 >/dev/null)
fi
cat >"$tools/wt.mjs" <<'JS'
import { $init, tools } from './node_modules/@bytecodealliance/jco-transpile/vendor/wasm-tools.js';
import { readFileSync, writeFileSync } from 'node:fs';
await $init;
const [cmd, inp, out] = process.argv.slice(2);
if (cmd === 'parse') writeFileSync(out, tools.parse(readFileSync(inp, 'utf8')));
else if (cmd === 'print') tools.print(readFileSync(inp));
JS
for w in module component; do
	node "$tools/wt.mjs" parse "$PWD/$w.wat" "$PWD/$w.wasm"
	node "$tools/wt.mjs" print "$PWD/$w.wasm"
	echo "made $w.wasm ($(stat -c %s $w.wasm) bytes)"
done
(cd hello && GOOS=wasip1 GOARCH=wasm go build -trimpath -o ../hello.wasm .)
node "$tools/wt.mjs" print "$PWD/hello.wasm"
echo "made hello.wasm ($(stat -c %s hello.wasm) bytes, $(go env GOVERSION))"
