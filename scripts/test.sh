#!/usr/bin/env bash
# Runs every test: unit tests of each crate and the real-process cluster tests, then prints one
# summary line ("N passed, N failed") over all test binaries.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo build --release --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Real-process tests spawn many nodes; two test threads keep a 2-core machine responsive.
set +e
cargo test --release --workspace --no-fail-fast --lib --bins --tests "$@" -- --test-threads="${UNIKV_TEST_THREADS:-2}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "unikv: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
