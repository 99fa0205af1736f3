#!/usr/bin/env bash
# Benchmark (not a test): the unified cluster (3x3 + router) next to a 3-member etcd, same
# machine, same run, same load shape (wrk, 8-byte keys, 256-byte values, 10,000 keys, 10 s per
# cell). Prints one row per cell with the ratio unikv/etcd.
#   scripts/bench_vs_etcd.sh [MODES] [CONNS]    e.g. "put get" "1 16 64" (the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
modes=${1:-put get}
conns=${2:-1 16 64}
anchor="$(pwd)/../shared/anchors/etcd.sh"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -p unikv-node -p unikv-router
work=$(mktemp -d /tmp/unikv-bench.XXXXXX)
export UNIKV_DATA="$work/data" UNIKV_LOGS="$work/logs" UNIKV_NO_BUILD=1 UNIKV_HOST=127.0.0.1
export UNIKV_HTTP_BASE=${BENCH_HTTP_BASE:-26000} UNIKV_RAFT_BASE=${BENCH_RAFT_BASE:-27000} UNIKV_ROUTER_PORT=${BENCH_ROUTER_PORT:-26999}
cleanup() { scripts/run_unified.sh stop >/dev/null 2>&1 || true; "$anchor" stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
scripts/run_unified.sh start
"$anchor" start
router="http://127.0.0.1:$UNIKV_ROUTER_PORT"
echo "# $(date -u '+%F %H:%M') UTC, $(nproc) cores; wrk 10 s per cell; unikv through its router vs etcd's leader"
printf '%-5s %5s | %-44s | %-44s | %s\n' mode conns "unikv (rps p50 p99)" "etcd (rps p50 p99)" "ratio rps / p50 / p99"
for mode in $modes; do
  emode=$mode; [ "$mode" = get ] && emode=range
  for c in $conns; do
    t=$([ "$c" -eq 1 ] && echo 1 || echo 2)
    u=$(MODE=$mode KEYS=10000 wrk -t"$t" -c"$c" -d10s --timeout 5s -s bench/unikv_kv.lua "$router" | grep RESULT)
    e=$("$anchor" bench "$emode" "$c")
    python3 - "$mode" "$c" "$u" "$e" <<'PY'
import re, sys
mode, c, u, e = sys.argv[1:]
g = lambda s, k: float(re.search(k + r"=([\d.]+)", s).group(1))
cell = lambda s: "%8.0f/s %7.2fms %7.2fms err=%d" % (g(s, "rps"), g(s, "p50"), g(s, "p99"), g(s, "non2xx") + g(s, "errs"))
print("%-5s %5s | %-44s | %-44s | %.2f / %.2f / %.2f" % (mode, c, cell(u), cell(e),
      g(u, "rps") / g(e, "rps"), g(u, "p50") / g(e, "p50"), g(u, "p99") / g(e, "p99")))
PY
  done
done
