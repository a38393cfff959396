#!/usr/bin/env bash
# Installs what building and testing Ebb needs on a fresh machine, and nothing that is
# already there: the wasm32 Rust target and the rust-src component, the wasm-bindgen CLI
# of the version in Cargo.lock, the npm packages (binaryen's wasm-opt, playwright-core),
# with --browser Debian's
# Chromium and ChromeDriver, and with --container what building and testing the image
# needs (buildah, podman, runc, musl-tools, the x86_64-unknown-linux-musl Rust target,
# PyYAML). Safe to run again; a second run takes a second or two.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

browser=false
container=false
for arg in "$@"; do
  case "$arg" in
    --browser) browser=true ;;
    --container) container=true ;;
    *) echo "setup: unknown option $arg (known: --browser, --container)" >&2; exit 2 ;;
  esac
done

step() { printf '==> %s\n' "$*"; }

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  step "adding the wasm32-unknown-unknown Rust target"
  rustup target add wasm32-unknown-unknown
fi

# The SDK's wasm build rebuilds `core` and `alloc` from source (see scripts/build-sdk.sh).
if ! rustup component list --installed | grep -q '^rust-src'; then
  step "adding the rust-src component"
  rustup component add rust-src
fi

bindgen_version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)"
if [[ "$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }')" != "$bindgen_version" ]]; then
  # Without --locked: the registry lacks one version that the CLI's own lock file pins.
  step "installing wasm-bindgen-cli $bindgen_version (a few minutes, once)"
  cargo install wasm-bindgen-cli --version "=$bindgen_version"
fi

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  step "installing npm packages"
  npm ci --no-audit --no-fund
fi

if $browser && [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
  step "installing Chromium and ChromeDriver from Debian"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if $container; then
  # Debian's packages by the command each provides; runc because crun fails on some
  # kernels' cgroups (scripts/build-image.sh configures podman for runc).
  packages=()
  for pair in buildah:buildah podman:podman runc:runc musl-gcc:musl-tools; do
    command -v "${pair%%:*}" >/dev/null || packages+=("${pair#*:}")
  done
  if ((${#packages[@]})); then
    step "installing ${packages[*]} from Debian"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${packages[@]}" >/dev/null
  fi
  if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    step "adding the x86_64-unknown-linux-musl Rust target"
    rustup target add x86_64-unknown-linux-musl
  fi
  # scripts/check-compose.py reads compose.yaml with PyYAML.
  if ! python3 -c 'import yaml' 2>/dev/null; then
    step "installing PyYAML"
    if [[ "$(python3 -c 'import sys; print(sys.prefix)')" == /usr ]]; then
      as_root apt-get update -qq
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-yaml >/dev/null
    else
      python3 -m pip install --quiet --disable-pip-version-check pyyaml
    fi
  fi
fi
