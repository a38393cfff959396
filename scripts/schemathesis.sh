#!/usr/bin/env bash
# Runs Schemathesis against a real collector: every operation of /openapi.json with
# generated valid and invalid requests, checked for server errors and for answers that
# contradict the description (status, content type, headers, body schema, auth, 405s).
# Installs Schemathesis from PyPI into target/schemathesis, starts the collector on a free
# port with a fresh SQLite database in a temporary folder, and removes both at the end.
# Exits non-zero on any failure.
#
# SCHEMATHESIS_MAX_EXAMPLES (default 25) sets the cases per operation and phase;
# SCHEMATHESIS_SEED (default 1) the seed, so a run can be repeated.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

version=4.32.5
venv="$root/target/schemathesis/venv"
if [[ "$("$venv/bin/st" --version 2>/dev/null | awk '{ print $3 }')" != "$version" ]]; then
  echo "==> installing schemathesis $version from PyPI into target/schemathesis"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

cargo build -p ebb-collector --quiet

work="$(mktemp -d)"
mkdir -p "$work/www"
pid=""
cleanup() {
  if [[ -n "$pid" ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

export EBB_ST_WRITE_KEY="wk_schemathesis_$RANDOM$RANDOM"
export EBB_ST_ADMIN_TOKEN="ebb_admin_schemathesis_$RANDOM$RANDOM"
EBB_LISTEN=127.0.0.1:0 EBB_DATA_DIR="$work/data" EBB_WWW_DIR="$work/www" \
  EBB_WRITE_KEY="$EBB_ST_WRITE_KEY" EBB_ADMIN_TOKEN="$EBB_ST_ADMIN_TOKEN" \
  EBB_DEMO_USER_HASH=true EBB_LOG=warn \
  target/debug/ebb-collector >"$work/banner" 2>"$work/collector.log" </dev/null &
pid=$!

base=""
for _ in $(seq 100); do
  base="$(awk '/listening on/ { print $NF; exit }' "$work/banner" 2>/dev/null || true)"
  [[ -n "$base" ]] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$base" ]]; then
  echo "schemathesis: the collector did not start:" >&2
  cat "$work/collector.log" >&2
  exit 1
fi
echo "==> schemathesis $version against $base/openapi.json"

status=0
"$venv/bin/st" --config-file scripts/schemathesis.toml run "$base/openapi.json" \
  --checks all \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-25}" \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --workers 1 \
  --no-color \
  --wait-for-schema 10 || status=$?

# A collector that died during the run fails it even when every answer conformed.
if ! kill -0 "$pid" 2>/dev/null; then
  echo "schemathesis: the collector exited during the run:" >&2
  tail -n 40 "$work/collector.log" >&2
  status=1
fi
# Its own errors, that is: actix also logs a client's malformed request line at ERROR.
if grep -q 'ERROR ebb_collector' "$work/collector.log"; then
  echo "schemathesis: the collector logged errors:" >&2
  grep 'ERROR ebb_collector' "$work/collector.log" | head -n 20 >&2
  status=1
fi
exit "$status"
