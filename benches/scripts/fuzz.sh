#!/usr/bin/env bash
# The long run of the generative tests of the network parsers (docs/benchmarks.md, "Hostile
# input"): opentwins-core/tests/generative.rs in release with CASES cases per parser (default
# 1,000,000; the engine property runs CASES/8 command sequences), timed per property.
#   benches/scripts/fuzz.sh [CASES]
set -euo pipefail
cd "$(dirname "$0")/../.."
cases="${1:-1000000}"
cargo test --release -j2 -p opentwins-core --test generative --no-run
for property in pointers field_selectors ditto_envelopes merge_patches policies link_headers engine_commands; do
  start=$(date +%s.%N)
  PROPTEST_CASES="$cases" cargo test --release -q -p opentwins-core --test generative -- \
    --exact "$property" --test-threads 1 >/dev/null
  end=$(date +%s.%N)
  printf '%-16s %9s cases  %8.1f s\n' "$property" "$cases" "$(echo "$end - $start" | bc)"
done
