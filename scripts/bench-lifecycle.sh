#!/usr/bin/env bash
# Lifecycle benchmark: builds the collector and the benchmark in release mode, then on
# SQLite and on PostgreSQL, twice each on fresh databases, measures against plain DELETE
# statements of the same rows on the same schema: deleting one user with 10,000 events
# through the admin API, a retention sweep of 10,000 inactive users holding 1,000,000
# events, and the ingest p99 while that sweep runs against its p99 without one. Prints
# markdown tables. Takes about ten minutes after the build (seeding 3,000,000 events per
# run is most of it) and needs about 5 GB of free disk; it is not a test and no test
# script runs it. Extra arguments go to `ebb-bench lifecycle` (see `--help`), for example
# `--backends sqlite` or `--runs 1`.
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

exec target/release/ebb-bench lifecycle --collector target/release/ebb-collector "$@"
