#!/usr/bin/env bash
# Builds unikv and runs the unified cluster: 3 shards x 3 nodes + 1 router, no config server.
#   scripts/run_unified.sh [start]      build, start everything (restart keeps data), wait until ready
#   scripts/run_unified.sh stop         stop exactly the processes this script started (data kept)
#   scripts/run_unified.sh status       the router's /status
#   scripts/run_unified.sh node S N     (re)start one node, e.g. after a crash
#   scripts/run_unified.sh router       (re)start the router
#   scripts/run_unified.sh addshard S   start shard S's 3 nodes (ports 80S1-80S3) and /addshard it
#   scripts/run_unified.sh removeshard S [forget]  drain shard S (its slots move to the others;
#                                       with forget, it is then removed from the cluster for good)
# Shard S node N: HTTP (and gossip, UDP) port 80SN, QUIC port 180SN; router on 3000.
# Logs: logs/unified_S_N.log, logs/router.log. Data: data/unikv_S_N. Certificates: each process
# gets its own directory data/certs/<node-S-N|router>, issued on its first start with
# `unikv-node certs` from the cluster CA in data/ca (whose key no process is given).
# Environment (for tests and side-by-side clusters): UNIKV_SHARDS (3), UNIKV_HTTP_BASE (8000),
# UNIKV_RAFT_BASE (18000), UNIKV_ROUTER_PORT (3000), UNIKV_DATA (data), UNIKV_LOGS (logs),
# UNIKV_HOST (localhost), UNIKV_NODE_ARGS / UNIKV_ROUTER_ARGS (extra flags; a flag given again
# overrides the script's, e.g. "--worker_threads 0"), UNIKV_NO_BUILD=1, UNIKV_CLOCK_RATE (run the
# node started by `node S N` with its clocks at that rate, through faketime: fault tests).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
shards=${UNIKV_SHARDS:-3}
http_base=${UNIKV_HTTP_BASE:-8000}
raft_base=${UNIKV_RAFT_BASE:-18000}
router_port=${UNIKV_ROUTER_PORT:-3000}
data=${UNIKV_DATA:-data}
logs=${UNIKV_LOGS:-logs}
host=${UNIKV_HOST:-localhost}
pids="$data/pids"

http_port() { echo $((http_base + 10 * $1 + $2)); }
raft_port() { echo $((raft_base + 10 * $1 + $2)); }

# Whether a pid is still a running (not zombie) process.
running() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st:0:1}" != Z ]; }

# Stops the processes recorded in pid files (only if they are still the ones we started):
# SIGTERM to all at once, then wait up to 10 s, then SIGKILL what is left.
stop_pidfiles() {
  local f pid live=()
  for f in "$@"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if grep -qs "unikv-" "/proc/$pid/cmdline" && running "$pid"; then
      kill "$pid" 2>/dev/null || true
      live+=("$pid")
    fi
    rm -f "$f"
  done
  for _ in $(seq 100); do
    local any=0
    for pid in "${live[@]}"; do running "$pid" && any=1; done
    [ $any = 0 ] && return 0
    sleep 0.1
  done
  for pid in "${live[@]}"; do running "$pid" && kill -9 "$pid" 2>/dev/null; done
  return 0
}

# Issues a process its certificate directory on first use: ensure_certs NAME (node S N | router).
ensure_certs() {
  local name=$1; shift
  [ -f "$data/certs/$name/cert.pem" ] && return 0
  if [ "$1" = node ]; then
    "$UNIKV_BIN/unikv-node" certs --ca_dir "$data/ca" --out "$data/certs/$name" node --shard_id "$2" --node_id "$3" >/dev/null
  else
    "$UNIKV_BIN/unikv-node" certs --ca_dir "$data/ca" --out "$data/certs/$name" router --name router >/dev/null
  fi
}

start_node() { # shard node
  local s=$1 n=$2 peers="" o
  for o in $(seq "$shards"); do
    [ "$o" = "$s" ] && continue
    peers="${peers:+$peers,}$host:$(http_port "$o" 1)"
  done
  stop_pidfiles "$pids/unikv_${s}_${n}.pid"
  mkdir -p "$pids" "$logs"
  ensure_certs "node-$s-$n" node "$s" "$n"
  # UNIKV_CLOCK_RATE (fault tests): run the node's clocks, monotonic included, at that rate.
  local clock=()
  if [ -n "${UNIKV_CLOCK_RATE:-}" ]; then
    local lib
    lib=$(ls /usr/lib/*/faketime/libfaketimeMT.so.1 | head -1)
    clock=(env LD_PRELOAD="$lib" FAKETIME="+0 x$UNIKV_CLOCK_RATE")
  fi
  # shellcheck disable=SC2086
  "${clock[@]}" "$UNIKV_BIN/unikv-node" --shard_id "$s" --node_id "$n" --port "$(http_port "$s" "$n")" \
    --raft_addr "$host:$(raft_port "$s" "$n")" --peer_shards "$peers" --initial_shards "$shards" \
    --data_dir "$data/unikv_${s}_${n}" --tls_dir "$data/certs/node-$s-$n" --log_file "$logs/unified_${s}_${n}.log" \
    --worker_threads 1 ${UNIKV_NODE_ARGS:-} >>"$logs/unified_${s}_${n}.out" 2>&1 &
  echo $! >"$pids/unikv_${s}_${n}.pid"
}

start_router() {
  local ports="" s
  for s in $(seq "$shards"); do ports="${ports:+$ports,}$(http_port "$s" 1)"; done
  stop_pidfiles "$pids/router.pid"
  mkdir -p "$pids" "$logs"
  ensure_certs router router
  # shellcheck disable=SC2086
  "$UNIKV_BIN/unikv-router" --shard_ports "$ports" --port "$router_port" --tls_dir "$data/certs/router" \
    --log_file "$logs/router.log" --worker_threads 1 ${UNIKV_ROUTER_ARGS:-} >>"$logs/router.out" 2>&1 &
  echo $! >"$pids/router.pid"
}

wait_for() { # seconds description command...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "run_unified: timed out after ${secs}s waiting for $what" >&2
  return 1
}

has_leader() { curl -sf "$host:$1/raft/status" | grep -q '"leader":{'; }

join_shard() { # shard: make nodes 2 and 3 voters (a no-op when they already are)
  local s=$1 n
  wait_for 60 "a leader in shard $s" has_leader "$(http_port "$s" 1)"
  for n in 2 3; do
    wait_for 60 "node $s/$n to join" curl -sf -d "nodeid=$n&addr=$host:$(raft_port "$s" "$n")" \
      "$host:$(http_port "$s" 1)/raft/join"
  done
}

router_ready() {
  curl -sf "$host:$router_port/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
ok = s["unowned_slots"] == 0 and s["shards"] and all(x["leader"] and x["state"] == "active" for x in s["shards"])
sys.exit(0 if ok else 1)'
}

case "${1:-start}" in
start)
  scripts/setup.sh
  [ -n "${UNIKV_NO_BUILD:-}" ] || cargo build --release -p unikv-node -p unikv-router
  for s in $(seq "$shards"); do for n in 1 2 3; do start_node "$s" "$n"; done; done
  for s in $(seq "$shards"); do join_shard "$s"; done
  start_router
  wait_for 90 "the router to see every slot owned, every leader and every shard active" router_ready
  echo "unikv ready: router on $host:$router_port, shards 1-$shards on HTTP ports $(http_port 1 1)..$(http_port "$shards" 3)"
  ;;
stop)
  [ -d "$pids" ] && stop_pidfiles "$pids"/*.pid
  echo "stopped (data kept in $data)"
  ;;
status) curl -s "$host:$router_port/status"; echo ;;
node) start_node "${2:?shard}" "${3:?node}" ;;
addshard)
  s=${2:?shard}
  [ -n "${UNIKV_NO_BUILD:-}" ] || cargo build --release -p unikv-node -p unikv-router
  for n in 1 2 3; do start_node "$s" "$n"; done
  join_shard "$s"
  curl -sS "$host:$(http_port 1 1)/addshard?shardID=$s&shardAddress=$host:$(http_port "$s" 1)"; echo
  ;;
removeshard)
  forget=""
  [ "${3:-}" = forget ] && forget="&forget=true"
  curl -sS "$host:$(http_port 1 1)/removeshard?shardID=${2:?shard}$forget"; echo
  ;;
router) start_router ;;
*) sed -n '2,19p' "$0"; exit 2 ;;
esac
