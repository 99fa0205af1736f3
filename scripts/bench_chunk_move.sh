#!/usr/bin/env bash
# Benchmark (not a test): one chunk of a range collection moved to another shard.
# Starts a 3x3 cluster + router on side ports, creates the range collection `events`, loads
# KEYS keys of VAL_BYTES bytes into it through the router (one chunk: `--chunk_max_bytes` is
# raised so it does not split), then moves that chunk to the next shard through the router and
# reports how long the move took, its MB/s, and how long the chunk was frozen (the source
# leader's `chunk handed off` log line: from its `Out` to the target's `In`).
#   scripts/bench_chunk_move.sh [KEYS]      (default 50000; VAL_BYTES default 1000: ~50 MB)
# FG_CONN=N runs a put load of N connections on the chunk's keys through the router before
# the move (FG_SECS, default 10) and during it, and prints both latency lines.
# UNIKV_NODE_ARGS="--move_rate_mb 20 ..." passes flags to every node (as run_unified.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
keys=${1:-50000}
vb=${VAL_BYTES:-1000}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
[ -n "${UNIKV_NO_BUILD:-}" ] || cargo build --release -p unikv-node -p unikv-router
work=$(mktemp -d /tmp/unikv-chunkmove.XXXXXX)
export UNIKV_DATA="$work/data" UNIKV_LOGS="$work/logs" UNIKV_NO_BUILD=1 UNIKV_HOST=127.0.0.1
export UNIKV_HTTP_BASE=${BENCH_HTTP_BASE:-28000} UNIKV_RAFT_BASE=${BENCH_RAFT_BASE:-29000} UNIKV_ROUTER_PORT=${BENCH_ROUTER_PORT:-28999}
export UNIKV_NODE_ARGS="--chunk_max_bytes 4294967296 ${UNIKV_NODE_ARGS:-}"
cleanup() {
  scripts/run_unified.sh stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
router="http://127.0.0.1:$UNIKV_ROUTER_PORT"
scripts/run_unified.sh start
curl -sf -X PUT "$router/collections/events" -d '{"sharding":"range"}' >/dev/null
echo "loading $keys keys of $vb bytes into the range collection through the router..."
t0=$(date +%s.%N)
secs=${LOAD_SECS:-$(( keys / 1000 + 20 ))}
THREADS=2 MODE=load KEYS=$keys VAL_BYTES=$vb COLLECTION=events wrk -t2 -c32 -d${secs}s --timeout 10s \
  -s tools/bench/unikv_kv.lua "$router" | grep RESULT
echo "loaded in $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
read -r id from size count < <(curl -s "$router/collections/events/chunks" | python3 -c '
import json, sys
c = json.load(sys.stdin)["chunks"]
assert len(c) == 1, c
print(c[0]["id"], c[0]["shard"], c[0]["size"], c[0]["count"])')
to=$(( from % 3 + 1 ))
echo "chunk $id: $count keys, $size bytes on shard $from; moving it to shard $to"
fg() {  # fg LABEL: the foreground put load on the chunk's keys, one latency line
  MODE=put KEYS=$keys VAL_BYTES=$vb COLLECTION=events wrk -t2 -c"$FG_CONN" -d"${FG_SECS:-10}"s --timeout 10s \
    -s tools/bench/unikv_kv.lua "$router" | grep RESULT | sed "s/^RESULT/foreground $1:/"
}
if [ -n "${FG_CONN:-}" ]; then fg before; fg during > "$work/fg_during.txt" & fg_pid=$!; fi
start=$(date +%s.%N)
curl -sf -X POST "$router/collections/events/chunks/$id/move?to=$to" >/dev/null
total=$(python3 -c "print($(date +%s.%N) - $start)")
if [ -n "${FG_CONN:-}" ]; then wait "$fg_pid" || true; cat "$work/fg_during.txt"; fi
frozen=$(grep -h "chunk handed off" "$work"/logs/*.log | grep -o 'frozen_ms=Some([0-9]*)' | tr -dc '0-9\n' | tail -1)
python3 -c "print('chunk move: %.2f s for %.1f MB = %.1f MB/s; frozen %s ms' % ($total, $size / 1e6, $size / 1e6 / $total, '${frozen:-?}'))"
