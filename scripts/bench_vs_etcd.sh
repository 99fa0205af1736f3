#!/usr/bin/env bash
# Benchmark (not a test): the unified cluster (3 shards x 3 nodes + router) next to a 3-member
# etcd, same machine, same run, same client (our `bench` binary drives both: 8-byte keys,
# 256-byte values, 10,000 keys, uniform; etcd through its JSON gateway on its leader).
#   scripts/bench_vs_etcd.sh [WORKLOADS] [CONNS]   defaults: "put get mixed mixed95" "1 16 64"
# Env: SECS (10 per cell), DIST (uniform|zipfian), OUT (JSON lines of every cell, default
# $TMPDIR/unikv-bench-DATE.jsonl), BENCH_HTTP_BASE / BENCH_RAFT_BASE / BENCH_ROUTER_PORT.
# Prints a progress line per cell, then a table with the ratio unikv/etcd per cell, the WAL
# fsyncs per acknowledged write (from the nodes' /raft/status counters) and the CPU time per
# acknowledged write (or per operation for reads) of each system: user + system time of every
# process of it (the 9 nodes and the router; the 3 etcd members, whose JSON gateway is built in)
# from /proc before and after the cell — the load generator itself not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
workloads=${1:-put get mixed mixed95}
conns=${2:-1 16 64}
secs=${SECS:-10}
dist=${DIST:-uniform}
anchor="$(pwd)/../shared/anchors/etcd.sh"
out=${OUT:-${TMPDIR:-/tmp}/unikv-bench-$(date -u +%Y%m%dT%H%M%S).jsonl}
cargo build --release -p unikv-node -p unikv-router -p unikv-bench
bench="$UNIKV_BIN/bench"
work=$(mktemp -d /tmp/unikv-bench.XXXXXX)
export UNIKV_DATA="$work/data" UNIKV_LOGS="$work/logs" UNIKV_NO_BUILD=1 UNIKV_HOST=127.0.0.1
export UNIKV_HTTP_BASE=${BENCH_HTTP_BASE:-26000} UNIKV_RAFT_BASE=${BENCH_RAFT_BASE:-27000} UNIKV_ROUTER_PORT=${BENCH_ROUTER_PORT:-26999}
# The anchor's stop sends SIGTERM and moves on; make sure its members are gone before we exit.
stop_etcd() {
  local pids p
  pids=$(cat "${ANCHOR_DIR:-${TMPDIR:-/tmp}/etcd-anchor}"/e*.pid 2>/dev/null || true)
  "$anchor" stop >/dev/null 2>&1 || true
  for _ in $(seq 100); do
    local alive=0
    for p in $pids; do [ "$(ps -o stat= -p "$p" 2>/dev/null | cut -c1)" ] && [ "$(ps -o stat= -p "$p" | cut -c1)" != Z ] && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
  for p in $pids; do kill -9 "$p" 2>/dev/null || true; done
}
cleanup() { scripts/run_unified.sh stop >/dev/null 2>&1 || true; stop_etcd; rm -rf "$work"; }
trap cleanup EXIT
scripts/run_unified.sh start >/dev/null
"$anchor" start >/dev/null
etcd_leader=$(ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793 endpoint status -w json \
  | python3 -c 'import json,sys; s=json.load(sys.stdin); print([e["Endpoint"] for e in s if e["Status"]["leader"]==e["Status"]["header"]["member_id"]][0])')
router="127.0.0.1:$UNIKV_ROUTER_PORT"
# User + system CPU ticks (1/CLK_TCK s) of the processes whose pid files are given.
cpu_ticks() {
  local f pid total=0 t
  for f in "$@"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    # Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
    total=$((total + ${t:-0}))
  done
  echo $total
}
unikv_cpu() { cpu_ticks "$UNIKV_DATA"/pids/*.pid; }
etcd_cpu() { cpu_ticks "${ANCHOR_DIR:-${TMPDIR:-/tmp}/etcd-anchor}"/e*.pid; }
# Sum of WAL fsyncs over the 9 nodes.
fsyncs() {
  local s n total=0 v
  for s in 1 2 3; do for n in 1 2 3; do
    v=$(curl -sf "http://127.0.0.1:$((UNIKV_HTTP_BASE + 10 * s + n))/raft/status" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin).get("wal_fsyncs", 0))' 2>/dev/null || echo 0)
    total=$((total + v))
  done; done
  echo $total
}
# Background CPU with no load (heartbeats, gossip, leases), for reading the per-write figures.
i0=$(unikv_cpu); j0=$(etcd_cpu); sleep 5; i1=$(unikv_cpu); j1=$(etcd_cpu)
idle="idle CPU: unikv $(( (i1 - i0) * 1000 / 5 / $(getconf CLK_TCK) )) ms/s, etcd $(( (j1 - j0) * 1000 / 5 / $(getconf CLK_TCK) )) ms/s"
: >"$out"
cells=0; total_cells=$(( $(wc -w <<<"$workloads") * $(wc -w <<<"$conns") ))
for w in $workloads; do
  for c in $conns; do
    cells=$((cells + 1))
    printf '[%d/%d] %-8s %3s conns: unikv...' "$cells" "$total_cells" "$w" "$c" >&2
    f0=$(fsyncs); c0=$(unikv_cpu)
    "$bench" --target "router=$router" --workload "$w" --conns "$c" --duration "$secs" --dist "$dist" --json \
      | tail -1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d))' >>"$out"
    f1=$(fsyncs); c1=$(unikv_cpu)
    echo "{\"fsyncs\": $((f1 - f0)), \"cpu_ticks\": $((c1 - c0))}" >>"$out"
    printf ' etcd...' >&2
    e0=$(etcd_cpu)
    "$bench" --target "etcd=$etcd_leader" --workload "$w" --conns "$c" --duration "$secs" --dist "$dist" --json \
      | tail -1 >>"$out"
    e1=$(etcd_cpu)
    echo "{\"cpu_ticks\": $((e1 - e0))}" >>"$out"
    echo ' done' >&2
  done
done
echo "# $(date -u '+%F %H:%M') UTC, $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; bench $secs s per cell, $dist keys; unikv via router vs etcd leader; $idle; JSON: $out"
python3 - "$out" "$(getconf CLK_TCK)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tick_us = 1e6 / int(sys.argv[2])
print("| workload | conns | unikv ops/s (p50 / p99 ms) | etcd ops/s (p50 / p99 ms) | ops/s ratio | p50 ratio | p99 ratio | fsyncs per write | CPU µs per write (or op) u / e | CPU ratio | errors u/e |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
def cpu_per(d, ticks):
    # Writes acknowledged (warm-up included, like the CPU sampled around the whole run); for
    # read-only cells the operations measured.
    n = d["writes_acked_total"] or d["ops"]
    return ticks * tick_us / n if n else float("nan")
for i in range(0, len(rows), 4):
    u, f, e, ec = rows[i], rows[i + 1], rows[i + 2], rows[i + 3]
    cell = lambda d: "%s (%.2f / %.2f)" % (format(round(d["ops_per_sec"]), ","), d["all"]["p50_ms"], d["all"]["p99_ms"])
    r = lambda a, b: a / b if b else float("nan")
    writes = u["writes_acked_total"]
    fpw = "%.2f" % (f["fsyncs"] / writes) if writes else "-"
    cu, ce = cpu_per(u, f["cpu_ticks"]), cpu_per(e, ec["cpu_ticks"])
    print("| %s | %d | %s | %s | %.2f× | %.2f× | %.2f× | %s | %.0f / %.0f | %.2f× | %d / %d |" % (
        u["workload"], u["conns"], cell(u), cell(e), r(u["ops_per_sec"], e["ops_per_sec"]),
        r(u["all"]["p50_ms"], e["all"]["p50_ms"]), r(u["all"]["p99_ms"], e["all"]["p99_ms"]), fpw,
        cu, ce, r(cu, ce), u["errors"], e["errors"]))
PY
