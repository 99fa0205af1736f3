#!/usr/bin/env bash
# Benchmark (not a test): online rebalancing 3 -> 4 shards with a loaded cluster.
# Starts a 3x3 cluster + router on side ports, loads KEYS keys of 256 bytes through the router,
# starts shard 4 and /addshard's it, and measures the total rebalance time, the data moved (MB/s)
# and the write pause per moved slot (p50/p99 from each source leader's /rebalance/status).
#   scripts/bench_rebalance.sh [KEYS]      (default 1000000)
# PERF_SECS=N profiles every process for N seconds from the /addshard on (perf; PERF_CALLS=1
# adds call graphs; the report goes to PERF_OUT, default /tmp/unikv-rebalance-perf.txt).
# FG_CONN=N (e.g. 16) runs a foreground put load of N connections through the router for
# FG_SECS seconds (default 15) before the /addshard and again from the /addshard on, and prints
# both latency lines (the second covers the first FG_SECS seconds of the rebalance).
# UNIKV_NODE_ARGS="--move_rate_mb 20 ..." passes flags to every node (as run_unified.sh does).
# BENCH_LOGS=DIR keeps the processes' logs there (the cluster's directory is removed at exit).
# It also prints the CPU time (user + system, from /proc) every node and the router spent
# during the rebalance and during the foreground load before it: per moved slot, per MB moved,
# per foreground write, and as a share of the machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
keys=${1:-1000000}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
[ -n "${UNIKV_NO_BUILD:-}" ] || cargo build --release -p unikv-node -p unikv-router
work=$(mktemp -d /tmp/unikv-rebalance.XXXXXX)
export UNIKV_DATA="$work/data" UNIKV_LOGS="$work/logs" UNIKV_NO_BUILD=1 UNIKV_HOST=127.0.0.1
export UNIKV_HTTP_BASE=${BENCH_HTTP_BASE:-28000} UNIKV_RAFT_BASE=${BENCH_RAFT_BASE:-29000} UNIKV_ROUTER_PORT=${BENCH_ROUTER_PORT:-28999}
cleanup() {
  scripts/run_unified.sh stop >/dev/null 2>&1 || true
  if [ -n "${BENCH_LOGS:-}" ]; then mkdir -p "$BENCH_LOGS" && cp -r "$work/logs/." "$BENCH_LOGS/"; fi
  rm -rf "$work"
}
trap cleanup EXIT
node() { echo "127.0.0.1:$((UNIKV_HTTP_BASE + 10 * $1 + 1))"; }
# CPU seconds (user + system) of every process of this cluster so far.
cpu() {
  for p in $(pgrep -f -- "$UNIKV_DATA"); do cat "/proc/$p/stat" 2>/dev/null || true; done |
    python3 -c 'import os,sys; print(sum(int(l.split(")")[1].split()[11]) + int(l.split(")")[1].split()[12]) for l in sys.stdin) / os.sysconf("SC_CLK_TCK"))'
}
scripts/run_unified.sh start
echo "loading $keys keys of 256 bytes through the router..."
t0=$(date +%s.%N)
secs=${LOAD_SECS:-$(( keys / 4000 + 20 ))}
THREADS=2 MODE=load KEYS=$keys wrk -t2 -c64 -d${secs}s --timeout 10s -s tools/bench/unikv_kv.lua "http://127.0.0.1:$UNIKV_ROUTER_PORT" | grep RESULT
echo "loaded in $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
curl -s "$(node 1)/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("before:", [(x["id"], x["slot_count"], x["keys"], x["bytes"]) for x in s["shards"]])'
fg() {  # fg LABEL: the foreground put load, one latency line
  MODE=put KEYS=$keys wrk -t2 -c"$FG_CONN" -d"${FG_SECS:-15}"s --timeout 10s -s tools/bench/unikv_kv.lua \
    "http://127.0.0.1:$UNIKV_ROUTER_PORT" | grep RESULT | sed "s/^RESULT/foreground $1:/"
}
if [ -n "${FG_CONN:-}" ]; then
  c0=$(cpu); fg before | tee "$work/fg_before.txt"; c1=$(cpu)
  python3 -c "
import re
reqs = int(re.search(r'reqs=(\d+)', open('$work/fg_before.txt').read()).group(1))
print('foreground before: %.0f CPU-us per write (all processes)' % (($c1 - $c0) * 1e6 / max(reqs, 1)))"
fi
cpu_start=$(cpu)
start=$(date +%s.%N)
if [ -n "${FG_CONN:-}" ]; then fg during > "$work/fg_during.txt" & fg_pid=$!; fi
if [ -n "${PERF_SECS:-}" ]; then
  # A CPU profile of every node and the router while the move runs (PERF_SECS seconds).
  perf record -F 499 ${PERF_CALLS:+--call-graph dwarf} -o "$work/perf.data" \
    -p "$(pgrep -d, -f -- "$UNIKV_DATA")" -- sleep "$PERF_SECS" >/dev/null 2>&1 &
  perf_pid=$!
fi
scripts/run_unified.sh addshard 4
while :; do
  done=$(curl -s "$(node 1)/rebalance/status" | python3 -c 'import json,sys; c=json.load(sys.stdin)["cluster"]; print(int(c["pending_slots"] == 0 and c["targets"].get("4", 0) > 0))')
  [ "$done" = 1 ] && break
  sleep 0.2
done
total=$(python3 -c "print($(date +%s.%N) - $start)")
cpu_end=$(cpu)
if [ -n "${FG_CONN:-}" ]; then wait "$fg_pid" || true; cat "$work/fg_during.txt"; fi
sleep 2
curl -s "$(node 1)/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("after: ", [(x["id"], x["slot_count"], x["keys"], x["bytes"]) for x in s["shards"]])'
for s in 1 2 3; do for n in 1 2 3; do curl -s "127.0.0.1:$((UNIKV_HTTP_BASE + 10 * s + n))/rebalance/status"; echo; done; done | python3 -c '
import json, os, sys
total = float(sys.argv[1])
rows = [r for r in (json.loads(l) for l in sys.stdin if l.strip()) if r["moved_slots"] > 0]
moved = sum(r["moved_bytes"] for r in rows)
slots = sum(r["moved_slots"] for r in rows)
print("rebalance 3->4: %.1f s total, %d slots, %.1f MB moved, %.2f MB/s" % (total, slots, moved / 1e6, moved / 1e6 / total))
cpu = float(sys.argv[3]) - float(sys.argv[2])
print("  CPU (all processes, foreground load included if any): %.1f s = %.2f of %d cores; %.1f CPU-ms per moved slot, %.2f CPU-s per MB" % (cpu, cpu / total, os.cpu_count(), cpu * 1e3 / max(slots, 1), cpu / max(moved / 1e6, 1e-9)))
for r in rows:
    print("  shard %d moved %d slots; write pause per slot ms: %s" % (r["shard"], r["moved_slots"], r["write_pause_ms"]))
' "$total" "$cpu_start" "$cpu_end"
if [ -n "${PERF_SECS:-}" ]; then
  wait "$perf_pid" || true
  out=${PERF_OUT:-/tmp/unikv-rebalance-perf.txt}
  # With call graphs, the callers of each symbol (up to 4000 lines); without, the top 80.
  lines=80; [ -n "${PERF_CALLS:-}" ] && lines=4000
  perf report -i "$work/perf.data" --stdio --no-children --sort comm,dso,sym \
    ${PERF_CALLS:+-G --percent-limit 0.5} 2>&1 \
    | grep -v -e '^#' -e '^$' | sed -n "1,${lines}p" > "$out" || true
  echo "profile (self time, top $lines lines) in $out"
fi
