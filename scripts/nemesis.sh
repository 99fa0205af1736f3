#!/usr/bin/env bash
# Fault-injection campaign (on demand; CI runs a short version through scripts/test.sh):
# fresh clusters, clients recording histories under kill -9, SIGSTOP/SIGCONT, iptables
# partitions on the nodes' UDP ports and slot moves, then the linearizability checker.
#   scripts/nemesis.sh --runs 50 --seconds 120 [--topology shard,unified] [--faults kill,pause,partition,move]
# Needs root (iptables); installs what it needs. Histories: target/nemesis/*.jsonl (recheck one
# with `$CARGO_TARGET_DIR/release/unikv-check FILE`). Exits 1 on any anomaly or lost write.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo build --release -p unikv-node -p unikv-router -p unikv-tests -p unikv-checker --bins
exec "$UNIKV_BIN/nemesis" --out "${NEMESIS_OUT:-target/nemesis}" "$@"
