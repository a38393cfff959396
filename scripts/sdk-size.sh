#!/usr/bin/env bash
# Reports the bytes a site ships for Ebb's browser SDK, raw, gzip and brotli: the inline
# snippet, the JavaScript (loader, entry and wasm-bindgen glue, bundled and minified) and
# the wasm module after wasm-opt. Compression levels are the ones CDNs serve (gzip -9,
# brotli 11), computed with Node's zlib. Run scripts/build-sdk.sh first.
#
#   bash scripts/sdk-size.sh          a table
#   bash scripts/sdk-size.sh --json   the same figures as JSON
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

for file in www/sdk/snippet.min.js www/sdk/ebb.min.js www/sdk/ebb_sdk_bg.wasm; do
  [[ -f "$file" ]] || { echo "sdk-size: $file is missing: run scripts/build-sdk.sh" >&2; exit 1; }
done

node --input-type=module - "${1:-}" <<'JS'
import { readFileSync } from 'node:fs';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

const parts = [
  ['snippet (inline)', 'www/sdk/snippet.min.js'],
  ['JS: loader + entry + glue', 'www/sdk/ebb.min.js'],
  ['wasm (after wasm-opt)', 'www/sdk/ebb_sdk_bg.wasm'],
];
const measure = (bytes) => ({
  raw: bytes.length,
  gzip: gzipSync(bytes, { level: 9 }).length,
  brotli: brotliCompressSync(bytes, {
    params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length },
  }).length,
});

const rows = parts.map(([name, path]) => ({ name, path, ...measure(readFileSync(path)) }));
const total = { name: 'total', path: '', raw: 0, gzip: 0, brotli: 0 };
for (const row of rows) for (const key of ['raw', 'gzip', 'brotli']) total[key] += row[key];
rows.push(total);

if (process.argv[2] === '--json') {
  console.log(JSON.stringify(rows, null, 2));
} else {
  // KiB (1,024 bytes), and the exact bytes of the total.
  const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
  console.log('part                          raw         gzip        brotli');
  for (const row of rows) {
    console.log(`${row.name.padEnd(28)}  ${kb(row.raw).padStart(10)}  ${kb(row.gzip).padStart(10)}  ${kb(row.brotli).padStart(10)}`);
  }
  console.log(`total bytes: ${total.raw} raw, ${total.gzip} gzip, ${total.brotli} brotli`);
}
JS
