#!/usr/bin/env bash
# Runs every test of Ebb: formatting and lints, the compose file, the Rust unit and
# integration tests (protocol, SDK core, collector over HTTP on fresh SQLite databases, then
# on PostgreSQL), the fuzz targets over their seed corpora, the SDK's storage and fetch
# bindings in Chromium, the container image under podman, and the browser tests (the real SDK in headless Chromium against a real
# collector, the npm package's types, Vite build and SSR import). Installs what it needs
# first. Exits non-zero on the first failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$SECONDS

step() { printf '\n==> %s (%ds)\n' "$*" "$((SECONDS - start))"; }

step "setting up"
bash scripts/setup.sh --browser --container

# Under CI every run starts from a clean clone, so the two builds that share nothing with
# the tests' own (the fuzz targets' workspace, the image's static musl collector) keep
# their dependencies in a cache folder that outlives the clone; cargo still rebuilds
# whatever changed. Elsewhere they build in the checkout as usual.
if [[ "${CI:-}" == true ]]; then
  cache="${EBB_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ebb}"
  export EBB_IMAGE_TARGET_DIR="${EBB_IMAGE_TARGET_DIR:-$cache/image-target}"
  fuzz_target_dir="$cache/fuzz-target"
  echo "build cache for the fuzz targets and the image's collector: $cache"
else
  fuzz_target_dir="$root/fuzz/target"
fi

# The collector's tests run once more against PostgreSQL, each in a database of its own
# that it creates and drops; they fail when the server cannot be reached.
postgres_server="${EBB_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

step "building the SDK"
bash scripts/build-sdk.sh

step "checking formatting and lints"
cargo fmt --all -- --check
# The shared query files are compiled through include!, which cargo fmt does not follow.
rustfmt --edition 2021 --check collector/src/store/backend.rs collector/src/store/lifecycle.rs \
  collector/src/store/segments.rs
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy -p ebb-sdk --target wasm32-unknown-unknown --all-targets --quiet -- -D warnings

step "compose file: the settings it names and how its services fit together"
python3 scripts/check-compose.py
python3 tests/container/check_compose_test.py

step "Rust tests (collector on SQLite)"
cargo test --workspace

step "fuzz targets: built and run over their seed corpora"
# The targets are their own workspace (fuzzing needs nightly flags; scripts/fuzz.sh). Built
# plainly, each runs the inputs it is given once, with the invariants it checks while
# fuzzing, so an API change that breaks a target or one of its seeds fails here.
cargo build --manifest-path fuzz/Cargo.toml --target-dir "$fuzz_target_dir" --bins --quiet
for target in decode_batch segment_filter segment_sqlite request_body; do
  seeds="fuzz/corpus/$target"
  [[ "$target" == segment_sqlite ]] && seeds=fuzz/corpus/segment_filter
  if ! output="$("$fuzz_target_dir/debug/$target" "$seeds"/* 2>&1)"; then
    printf '%s\n' "$output" | tail -40
    echo "fuzz target $target failed on one of its seeds" >&2
    exit 1
  fi
  echo "$target: $(grep -c '^Executed ' <<<"$output") seeds, every invariant held"
done

step "collector tests on PostgreSQL ($postgres_server)"
# Tests of several collectors on one database need PostgreSQL; they are ignored in the
# SQLite pass and included here. `--workspace`, as above, so that cargo resolves the same
# features and reuses the build instead of compiling the collector a second time.
EBB_TEST_BACKEND=postgres EBB_TEST_POSTGRES_URL="$postgres_server" \
  cargo test --workspace --tests -- --include-ignored

step "SDK browser bindings: storage and fetch (wasm-bindgen-test in Chromium)"
CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}" \
  cargo test -p ebb-sdk --target wasm32-unknown-unknown --lib

step "SDK size (bytes a site ships)"
bash scripts/sdk-size.sh

step "container image: built with buildah, run with podman"
bash scripts/build-image.sh
bash tests/container/image.test.sh

step "the HTTP API against its OpenAPI description (Schemathesis)"
bash scripts/schemathesis.sh

step "browser tests"
cargo build -p ebb-collector --quiet
export EBB_TEST_ARTIFACTS="$root/test-artifacts"
echo "screenshots of every page go to $EBB_TEST_ARTIFACTS"
# The test runners' summaries close the output; nothing is printed after them.
node --test --test-concurrency=1 tests/e2e/
