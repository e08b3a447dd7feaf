#!/usr/bin/env bash
# The project's tests: installs/starts what they need, then runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo test --workspace --all-targets -j2 "$@"
