#!/usr/bin/env bash
# Runs every test: unit tests of each crate and the real-process cluster tests.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo build --release --workspace --bins
# Real-process tests spawn many nodes; two test threads keep a 2-core machine responsive.
cargo test --release --workspace "$@" -- --test-threads="${UNIKV_TEST_THREADS:-2}"
