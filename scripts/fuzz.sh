#!/usr/bin/env bash
# Runs Ebb's fuzz targets (fuzz/fuzz_targets/) one after another, each for a time limit.
#
#   scripts/fuzz.sh                      every target for 60 s
#   scripts/fuzz.sh decode_batch 600     one target for ten minutes
#   scripts/fuzz.sh all 1800             every target for half an hour each
#
# Installs cargo-fuzz when it is missing. cargo-fuzz passes nightly-only flags to rustc
# (sanitizer coverage); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them, so no
# nightly is needed. Each target grows a working corpus in fuzz/target/corpus/<target>,
# seeded from the committed fuzz/corpus/<target>, which stays as committed. A crash or a
# broken invariant stops the run and leaves its input in fuzz/artifacts/<target>/; the
# script then exits non-zero. Replay one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -O <target> fuzz/artifacts/<target>/<file>  (in fuzz/)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

all=(decode_batch segment_filter segment_sqlite request_body)
target="${1:-all}"
seconds="${2:-60}"
if [[ "$target" == all ]]; then
  targets=("${all[@]}")
elif [[ " ${all[*]} " == *" $target "* ]]; then
  targets=("$target")
else
  echo "unknown target '$target'; choose one of: ${all[*]} (or all)" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
echo "==> building ${targets[*]}"
for name in "${targets[@]}"; do
  cargo fuzz build -O "$name"
done

# Inputs longer than this rarely find more and slow every run down.
declare -A max_len=([decode_batch]=16384 [segment_filter]=4096 [segment_sqlite]=4096 \
  [request_body]=16384)
# segment_sqlite runs the filters of segment_filter, so it shares that target's seeds.
declare -A seeds=([segment_sqlite]=segment_filter)

for name in "${targets[@]}"; do
  work="target/corpus/$name"
  mkdir -p "$work" "artifacts/$name"
  seed="${seeds[$name]:-$name}"
  dict=()
  [[ -f "dict/$seed.dict" ]] && dict=("-dict=dict/$seed.dict")
  echo "==> fuzzing $name for ${seconds}s"
  cargo fuzz run -O "$name" "$work" "corpus/$seed" -- \
    -max_total_time="$seconds" -max_len="${max_len[$name]}" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}"
done
