#!/usr/bin/env bash
# Ingest benchmark: builds the collector and the benchmark in release mode, then measures on
# SQLite and on PostgreSQL (a) the store's bulk write without HTTP, the ceiling, and (b) the
# collector over HTTP with 64 connections posting 20-message batches, at peak and at half of
# peak. Prints a markdown table. Takes about two minutes after the build; it is not a test
# and no test script runs it. Extra arguments go to `ebb-bench ingest` (see `--help`), for
# example `--backends sqlite`, `--seconds 30`, or `--backends postgres --collectors 1,2`
# for one and then two collector processes sharing one PostgreSQL database.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

cargo build --release --quiet -p ebb-collector -p ebb-bench

# PostgreSQL runs on this kind of machine; start the local cluster when it is down.
if [[ " $* " != *" --backends sqlite "* ]] && command -v pg_isready >/dev/null \
  && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "==> starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

exec target/release/ebb-bench ingest --collector target/release/ebb-collector "$@"
