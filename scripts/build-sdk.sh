#!/usr/bin/env bash
# Builds the browser SDK into www/sdk/, which is also the npm package `ebb-sdk`: the wasm
# module, its wasm-bindgen glue, the JavaScript entry with its TypeScript types, the
# snippet's loader, and two minified files for sites without a bundler: snippet.min.js
# (the inline snippet) and ebb.min.js (the loader, entry and glue in one module).
#
#   cargo (wasm profile) -> wasm-bindgen --target web -> wasm-opt -Oz -> copy js/ entry
#   -> esbuild --minify (snippet, bundled loader)
#
# Expects what scripts/setup.sh installs: the wasm32-unknown-unknown target, the
# wasm-bindgen CLI of the version pinned in Cargo.lock, and `npm ci` (binaryen's wasm-opt).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

out="www/sdk"
wasm_in="target/wasm-build-std/wasm32-unknown-unknown/wasm/ebb_sdk.wasm"
wasm_out="$out/ebb_sdk_bg.wasm"
wasm_opt="node_modules/.bin/wasm-opt"
esbuild="node_modules/.bin/esbuild"

# The features rustc emits for wasm32-unknown-unknown (see the module's target_features
# section). They are named one by one: binaryen's `-all` also enables features that
# Chromium rejects at load time.
features=(
  bulk-memory
  bulk-memory-opt
  call-indirect-overlong
  multivalue
  mutable-globals
  nontrapping-float-to-int
  reference-types
  sign-ext
)

die() {
  echo "build-sdk: $*" >&2
  exit 1
}

# --- tools -------------------------------------------------------------------------------

want_bindgen="$(
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock
)"
[[ -n "$want_bindgen" ]] || die "cannot find the wasm-bindgen version in Cargo.lock"
command -v wasm-bindgen >/dev/null ||
  die "wasm-bindgen is missing: cargo install wasm-bindgen-cli --version =$want_bindgen"
have_bindgen="$(wasm-bindgen --version | awk '{ print $2 }')"
[[ "$have_bindgen" == "$want_bindgen" ]] ||
  die "wasm-bindgen $have_bindgen found, $want_bindgen needed (the crate's, in Cargo.lock):" \
    "cargo install wasm-bindgen-cli --version =$want_bindgen"

want_binaryen="$(node -p 'require("./package.json").devDependencies.binaryen.split(".")[0]')"
[[ -x "$wasm_opt" ]] || die "$wasm_opt is missing: run npm ci at the repository root"
have_binaryen="$("$wasm_opt" --version | sed -n 's/^wasm-opt version \([0-9]*\).*/\1/p')"
[[ "$have_binaryen" == "$want_binaryen" ]] ||
  die "wasm-opt version ${have_binaryen:-unknown} found, $want_binaryen needed: run npm ci"

# --- build -------------------------------------------------------------------------------

# Without the `std` feature: the module links no standard library (see sdk-wasm/Cargo.toml).
#
# `core` and `alloc` are rebuilt from the toolchain's rust-src with the `immediate-abort`
# panic strategy, so that no panic site carries a message, a location or the formatting
# code that would print them (about 5 KB of brotli of the module). Both are unstable
# options of cargo and rustc; RUSTC_BOOTSTRAP=1 admits them on the stable toolchain for
# this one build only, in a target folder of its own, so that no other build sees them.
# `location-detail=none` and `fmt-debug=none` drop the rest of what formatting left.
[[ -d "$(rustc --print sysroot)/lib/rustlib/src/rust/library/core" ]] ||
  die "the rust-src component is missing: rustup component add rust-src"
RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/wasm-build-std \
  RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none -Zfmt-debug=none" \
  cargo build -p ebb-sdk --target wasm32-unknown-unknown --profile wasm --no-default-features \
  -Zbuild-std=core,alloc

# A newer rustc may emit features the list above lacks; wasm-opt would then refuse or
# miscompile the module, so say so plainly instead.
emitted="$(node --input-type=module - "$wasm_in" <<'JS'
import { readFileSync } from "node:fs";

// The target_features section: a count, then per feature a prefix byte and a name.
const module = new WebAssembly.Module(readFileSync(process.argv[2]));
const [section] = WebAssembly.Module.customSections(module, "target_features");
const bytes = new Uint8Array(section ?? []);
let at = 0;
const leb = () => {
  let value = 0;
  let shift = 0;
  let byte;
  do {
    byte = bytes[at++];
    value |= (byte & 127) << shift;
    shift += 7;
  } while (byte & 128);
  return value;
};

const names = [];
for (let count = bytes.length ? leb() : 0; count > 0; count--) {
  const prefix = String.fromCharCode(bytes[at++]);
  const length = leb();
  const name = new TextDecoder().decode(bytes.subarray(at, at + length));
  at += length;
  if (prefix !== "+") continue;
  // LLVM and binaryen name one feature differently.
  names.push(name === "nontrapping-fptoint" ? "nontrapping-float-to-int" : name);
}
console.log(names.sort().join(" "));
JS
)"
[[ "$emitted" == "${features[*]}" ]] ||
  die "rustc emitted the wasm features [$emitted] but this script enables" \
    "[${features[*]}]: update the list"

rm -rf "$out"
wasm-bindgen --target web --out-dir "$out" "$wasm_in"

enable=("${features[@]/#/--enable-}")
# `--converge` repeats the passes while they still shrink the module (about 170 bytes).
"$wasm_opt" -Oz --converge "${enable[@]}" --strip-debug --strip-producers --strip-target-features \
  "$wasm_out" -o "$wasm_out"
# Short names for the imports and exports, in the module and in the glue (see
# scripts/rename-glue.mjs).
"$wasm_opt" "${enable[@]}" --minify-imports-and-exports-and-modules "$wasm_out" \
  -o "$wasm_out" >"$out/names.json"
node scripts/rename-glue.mjs "$out/ebb_sdk.js" "$out/names.json" "$wasm_out"
rm "$out/names.json"

cp sdk-wasm/js/index.js sdk-wasm/js/index.d.ts sdk-wasm/js/auto.js sdk-wasm/js/package.json "$out/"

[[ -x "$esbuild" ]] || die "$esbuild is missing: run npm ci at the repository root"
"$esbuild" sdk-wasm/js/snippet.js --minify --log-level=warning --outfile="$out/snippet.min.js"
"$esbuild" "$out/auto.js" --bundle --format=esm --minify --log-level=warning \
  --outfile="$out/ebb.min.js"

raw="$(wc -c <"$wasm_out")"
gz="$(gzip -9 -c "$wasm_out" | wc -c)"
echo "build-sdk: $wasm_out: $raw bytes, $gz bytes gzipped (scripts/sdk-size.sh for the whole)"
