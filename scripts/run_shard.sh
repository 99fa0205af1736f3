#!/usr/bin/env bash
# Builds unikv and runs ONE shard: 3 nodes of shard 1 on the seed's ports (HTTP 8011-8013,
# QUIC 18011-18013), node 1 bootstraps, 2 and 3 join; waits until all three serve.
#   scripts/run_shard.sh          build, start (or restart with the data kept), wait until ready
#   scripts/run_shard.sh stop     stop exactly the processes this script started (data kept)
#   scripts/run_shard.sh status   show each node's /raft/status
# Data in data/unikv_1_N, logs in logs/unified_1_N.log, PIDs in data/pids/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
root=$(pwd)
pids="$root/data/pids"
shard=1

stop() {
  for f in "$pids"/unikv_${shard}_*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if grep -q unikv-node "/proc/$pid/cmdline" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$f"
  done
}

wait_http() { # url, seconds
  for _ in $(seq $(( $2 * 10 ))); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $1" >&2; return 1
}

case "${1:-start}" in
stop) stop; echo "stopped"; exit 0 ;;
status) for n in 1 2 3; do curl -s "localhost:80${shard}${n}/raft/status"; echo; done; exit 0 ;;
start) ;;
*) sed -n '2,8p' "$0"; exit 2 ;;
esac

scripts/setup.sh
cargo build --release -p unikv-node
stop
mkdir -p "$pids" logs
for n in 1 2 3; do
  "$UNIKV_BIN/unikv-node" --shard_id $shard --node_id $n --port 80${shard}${n} \
    --raft_addr localhost:180${shard}${n} --data_dir "data/unikv_${shard}_${n}" --tls_dir data/tls \
    --log_file "logs/unified_${shard}_${n}.log" &
  echo $! >"$pids/unikv_${shard}_${n}.pid"
done
for n in 1 2 3; do wait_http "localhost:80${shard}${n}/health" 30; done
# Wait for node 1's group to have a leader, then join 2 and 3 (a no-op when already members).
for _ in $(seq 300); do
  curl -sf localhost:80${shard}1/raft/status | grep -q '"leader":{' && break; sleep 0.1
done
for n in 2 3; do
  curl -sf -d "nodeid=$n&addr=localhost:180${shard}${n}" "localhost:80${shard}1/raft/join" >/dev/null \
    || { echo "join of node $n failed" >&2; exit 1; }
done
for _ in $(seq 300); do
  curl -sf localhost:80${shard}1/config | grep -q '"slot_count":16384' && break; sleep 0.1
done
echo "shard $shard ready: nodes on localhost:80${shard}1-80${shard}3"
curl -s localhost:80${shard}1/raft/status; echo
