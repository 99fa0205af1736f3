#!/usr/bin/env bash
# Fault-injection campaign (on demand; CI runs a short version through scripts/test.sh):
# fresh clusters, 16 clients over 64 keys recording histories under kill -9, SIGSTOP/SIGCONT,
# iptables partitions on the nodes' UDP ports, overlapping faults, power cuts (single shard, on
# a FUSE test file system), slot moves and reshards (unified), optionally clock-rate faults,
# then the linearizability checker.
#   scripts/nemesis.sh --runs 50 --seconds 120 [--topology shard,unified]
#     [--faults kill,pause,partition,move,reshard,overlap,powercut] [--clock-rate 1.4 |
#     --alternate-clock-rate 1.4] [--no-lease-reads]
# Needs root (iptables, FUSE) and faketime; installs what it needs. Histories: target/nemesis/*.jsonl (recheck one
# with `$CARGO_TARGET_DIR/release/unikv-check FILE`). Exits 1 on any anomaly or lost write.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo build --release -p unikv-node -p unikv-router -p unikv-tests -p unikv-checker --bins
# The nemesis finds scripts/run_unified.sh through this (its binary may come from another
# checkout sharing the target dir).
export CARGO_MANIFEST_DIR="$PWD/tests"
exec "$UNIKV_BIN/nemesis" --out "${NEMESIS_OUT:-target/nemesis}" "$@"
