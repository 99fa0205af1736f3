-- wrk script for a unikv node or router, shaped like ../shared/anchors/etcd_kv.lua so the two
-- are comparable: 8-byte keys, 256-byte values, POST with a JSON body.
-- env: MODE=put|get|load, KEYS=number of distinct keys, THREADS (load: wrk's -t),
-- VAL_BYTES (default 256), COLLECTION (default: none, i.e. `default`)
-- MODE=load writes each key exactly once (thread t writes keys t, t+T, t+2T, ...) and then
-- sends cheap GET /health requests until wrk's duration ends. wrk discards the first request
-- its first thread builds, so key 0 (k0000000) is never written: KEYS-1 keys are loaded.
local mode = os.getenv("MODE") or "put"
local nkeys = tonumber(os.getenv("KEYS") or "10000")
local val = string.rep("v", tonumber(os.getenv("VAL_BYTES") or "256"))
local coll = os.getenv("COLLECTION")
local extra = coll and (',"collection":"' .. coll .. '"') or ""
local keys = {}
for i = 0, nkeys - 1 do keys[i] = string.format("k%07d", i) end
local ctr = 0
local hdr = { ["Content-Type"] = "application/json" }
-- `tid` is a global that setup() sets in each thread's own Lua state (a `local` here would
-- shadow it and every thread would see 0).
local next_tid = 0
function setup(thread) thread:set("tid", next_tid); next_tid = next_tid + 1 end
function init(args) ctr = (tid or 0) * 7919 end
local nthreads = tonumber(os.getenv("THREADS") or "1")
local loaded = 0
function request()
  if mode == "load" then
    local i = (tid or 0) + loaded * nthreads
    loaded = loaded + 1
    if i >= nkeys then return wrk.format("GET", "/health") end
    return wrk.format("POST", "/put", hdr, '{"key":"' .. keys[i] .. '","val":"' .. val .. '"' .. extra .. '}')
  end
  ctr = ctr + 1
  local k = keys[ctr % nkeys]
  if mode == "put" then
    return wrk.format("POST", "/put", hdr, '{"key":"' .. k .. '","val":"' .. val .. '"' .. extra .. '}')
  end
  return wrk.format("POST", "/get", hdr, '{"key":"' .. k .. '"' .. extra .. '}')
end
function done(summary, latency, requests)
  local s = summary.duration / 1e6
  io.write(string.format("RESULT mode=%s reqs=%d rps=%.0f p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms non2xx=%d errs=%d\n",
    mode, summary.requests, summary.requests / s, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
