#!/usr/bin/env bash
# Builds the SDK and the collector, then runs the collector with embedded SQLite, serving
# the demo site and the admin console. Arguments go to ebb-collector (see --help); the
# defaults listen on 127.0.0.1:8080 and keep data in ./ebb-data.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/setup.sh
bash scripts/build-sdk.sh
cargo build --release -p ebb-collector
# The demo's login form asks the collector for the identity-verification hash; never turn
# this on for a collector that real sites send to.
export EBB_DEMO_USER_HASH="${EBB_DEMO_USER_HASH:-true}"
exec target/release/ebb-collector "$@"
