#!/usr/bin/env bash
# Builds the collector's container image with buildah, without a Docker engine and without
# pulling a base image: the browser SDK into www/sdk/, a static (musl) ebb-collector, then
# the Containerfile, FROM scratch. Tags ebb-collector:<version> and ebb-collector:latest and
# prints the image's size. Installs what it needs first (scripts/setup.sh --container).
#
# buildah and podman read their settings from two files this script writes into
# $EBB_CONTAINERS_DIR (default: .containers/ in the repository, which git ignores): storage
# with the vfs driver in that folder, the runc runtime with cgroupfs, events in a file, and
# open-file and process limits that every kernel here accepts. Run the image with the same
# files:
#
#   export CONTAINERS_CONF=$PWD/.containers/containers.conf
#   export CONTAINERS_STORAGE_CONF=$PWD/.containers/storage.conf
#   podman run --rm --network host -v ebb-data:/data ebb-collector
#
# The first build compiles the collector for musl (three to ten minutes on two cores); later
# ones take seconds. EBB_IMAGE_TARGET_DIR names another cargo target folder to build it in.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

target=x86_64-unknown-linux-musl
binary="target/$target/release/ebb-collector"

step() { printf '==> %s\n' "$*"; }

die() {
  echo "build-image: $*" >&2
  exit 1
}

step "checking the tools"
bash scripts/setup.sh --container

# --- settings for buildah and podman ----------------------------------------------------

containers="${EBB_CONTAINERS_DIR:-$root/.containers}"
mkdir -p "$containers"
containers="$(cd "$containers" && pwd)"
cat >"$containers/containers.conf" <<EOF
# Written by scripts/build-image.sh.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$containers/tmp"
EOF
cat >"$containers/storage.conf" <<EOF
# Written by scripts/build-image.sh.
[storage]
driver = "vfs"
graphroot = "$containers/storage"
runroot = "$containers/run"
EOF
export CONTAINERS_CONF="$containers/containers.conf"
export CONTAINERS_STORAGE_CONF="$containers/storage.conf"

# --- what the image holds ---------------------------------------------------------------

step "building the SDK into www/sdk/"
bash scripts/build-sdk.sh

step "building a static ebb-collector ($target)"
# Symbols are stripped here rather than in the release profile, which other builds share.
# EBB_IMAGE_TARGET_DIR builds in another target folder (a cache kept across clean clones)
# and copies the binary to where the Containerfile takes it.
build_dir="${EBB_IMAGE_TARGET_DIR:-$root/target}"
CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_TARGET_DIR="$build_dir" \
  cargo build --release --quiet --target "$target" -p ebb-collector
if [[ ! "$build_dir/$target/release/ebb-collector" -ef "$binary" ]]; then
  mkdir -p "$(dirname "$binary")"
  cp "$build_dir/$target/release/ebb-collector" "$binary"
fi
if readelf --program-headers "$binary" | grep -q INTERP; then
  die "$binary is linked dynamically; a FROM scratch image needs a static binary"
fi

# --- the image --------------------------------------------------------------------------

metadata="$(cargo metadata --no-deps --format-version 1)"
field() {
  python3 -c 'import json, sys
package = next(p for p in json.load(sys.stdin)["packages"] if p["name"] == "ebb-collector")
print(package[sys.argv[1]])' "$1" <<<"$metadata"
}
version="$(field version)"
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
image="ebb-collector:$version"

step "building the image $image (buildah, FROM scratch)"
buildah build --quiet --isolation chroot --file Containerfile \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  --tag "$image" --tag ebb-collector:latest . >/dev/null
# The image this replaces lost its tags; its copy in vfs storage would only take space.
podman image prune --force >/dev/null

size="$(podman image inspect --format '{{.Size}}' "$image")"
compressed="$(podman save --quiet --format oci-archive "$image" | gzip -6 | wc -c)"
mb() { awk -v bytes="$1" 'BEGIN { printf "%.1f MB", bytes / 1000000 }'; }
echo "build-image: $image: $(mb "$size") ($(mb "$compressed") compressed)"
echo "build-image: to run it: export CONTAINERS_CONF=$CONTAINERS_CONF" \
  "CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
