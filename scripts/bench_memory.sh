#!/usr/bin/env bash
# Benchmark (not a test): resident memory of every node after loading KEYS keys (default
# 1,000,000) of 256-byte values into the 3x3 cluster through the router, with RocksDB's memory
# bounded by the node flags in UNIKV_NODE_ARGS (default: --memtable_mb 64 --block_cache_mb 64).
#   scripts/bench_memory.sh [KEYS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
keys=${1:-1000000}
cargo build --release -p unikv-node -p unikv-router -p unikv-bench
work=$(mktemp -d /tmp/unikv-mem.XXXXXX)
export UNIKV_DATA="$work/data" UNIKV_LOGS="$work/logs" UNIKV_NO_BUILD=1 UNIKV_HOST=127.0.0.1
export UNIKV_HTTP_BASE=${BENCH_HTTP_BASE:-26000} UNIKV_RAFT_BASE=${BENCH_RAFT_BASE:-27000} UNIKV_ROUTER_PORT=${BENCH_ROUTER_PORT:-26999}
export UNIKV_NODE_ARGS=${UNIKV_NODE_ARGS:---memtable_mb 64 --block_cache_mb 64}
cleanup() { scripts/run_unified.sh stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
scripts/run_unified.sh start >/dev/null
rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$(cat "$UNIKV_DATA/pids/$1.pid")/status"; }
before=""; for s in 1 2 3; do for n in 1 2 3; do before="$before $(rss unikv_${s}_$n)"; done; done
echo "# $(date -u '+%F %H:%M') UTC, $(nproc) cores; loading $keys keys x 256 B through the router (64 conns); node flags: $UNIKV_NODE_ARGS" >&2
"$UNIKV_BIN/bench" --target "router=127.0.0.1:$UNIKV_ROUTER_PORT" -w load --keys "$keys" -c 64 --warmup 0
sleep 5  # let flushes and compactions triggered by the load settle before reading RSS
echo "| node | RSS before (MiB) | RSS after $keys keys (MiB) | data dir (MiB) |"
echo "|---|---|---|---|"
i=0; set -- $before
for s in 1 2 3; do for n in 1 2 3; do
  i=$((i + 1))
  echo "| $s/$n | ${!i} | $(rss unikv_${s}_$n) | $(du -sm "$UNIKV_DATA/unikv_${s}_$n" | cut -f1) |"
done; done
echo "| router | - | $(rss router) | - |"
