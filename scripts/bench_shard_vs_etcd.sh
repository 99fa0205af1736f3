#!/usr/bin/env bash
# Benchmark (not a test): one unikv shard (3 nodes) next to a 3-member etcd, same machine, same
# run, same load shape (wrk, 8-byte keys, 256-byte values, 10,000 keys, 10 s per cell).
# Prints writes/s and latency with 1 and 64 connections against each leader, and the ratio.
#   scripts/bench_shard_vs_etcd.sh [put|get ...]   (default: put)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
here=$(pwd)
anchor="$here/../shared/anchors/etcd.sh"
modes=("${@:-put}")
scripts/setup.sh
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -p unikv-node
work=$(mktemp -d /tmp/unikv-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$anchor" stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
base=${BENCH_PORT_BASE:-27100}
for n in 1 2 3; do
  "$UNIKV_BIN/unikv-node" --shard_id 1 --node_id $n --port $((base + n)) --raft_addr 127.0.0.1:$((base + 10 + n)) \
    --data_dir "$work/n$n" --tls_dir "$work/tls" --log_file "$work/n$n.log" &
  pids+=($!)
done
for _ in $(seq 100); do curl -sf "127.0.0.1:$((base + 1))/raft/status" | grep -q '"role":"leader"' && break; sleep 0.1; done
for n in 2 3; do curl -sf -d "nodeid=$n&addr=127.0.0.1:$((base + 10 + n))" "127.0.0.1:$((base + 1))/raft/join" >/dev/null; done
for _ in $(seq 100); do curl -sf "127.0.0.1:$((base + 1))/config" | grep -q '"slot_count":16384' && break; sleep 0.1; done
leader="127.0.0.1:$((base + 1))"
"$anchor" start
fsyncs() { curl -s "$leader/raft/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["wal_fsyncs"], s["synced_appends"])'; }
echo "# $(date -u +%F) $(nproc) cores; wrk 10 s per cell; unikv leader $leader vs etcd leader"
for mode in "${modes[@]}"; do
  emode=$mode; [ "$mode" = get ] && emode=range
  for c in 1 64; do
    t=$([ "$c" -eq 1 ] && echo 1 || echo 2)
    before=$(fsyncs)
    u=$(MODE=$mode KEYS=10000 wrk -t$t -c$c -d10s --timeout 5s -s tools/bench/unikv_kv.lua "http://$leader" | grep RESULT)
    after=$(fsyncs)
    e=$("$anchor" bench "$emode" "$c")
    echo "unikv $c conns: $u  (leader wal fsyncs/appends before: $before after: $after)"
    echo "etcd  $c conns: $e"
    python3 - "$u" "$e" <<'PY'
import re, sys
g = lambda s, k: float(re.search(k + r"=([\d.]+)", s).group(1))
u, e = sys.argv[1], sys.argv[2]
print("ratio unikv/etcd: rps %.2f  p50 %.2f  p99 %.2f" % (g(u, "rps") / g(e, "rps"), g(u, "p50") / g(e, "p50"), g(u, "p99") / g(e, "p99")))
PY
  done
done
