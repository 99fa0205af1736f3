//! Range collections with real processes (`scripts/run_unified.sh`, 3 shards × 3 nodes +
//! router, `--chunk_max_bytes 16384`, every move copied while it serves): 20,000 keys loaded in random order split the collection
//! into chunks that the balancer spreads over the shards; scans through the router return
//! every key once, in order, in pages, with exact bounds and in reverse; a scan inside one
//! chunk reaches only that chunk's shard; explicit splits and chunk moves, `/addshard 4` and
//! `/removeshard 4` under a concurrent writer and scanner lose no acknowledged write and never
//! answer a complete scan with a key twice or missing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use unikv_tests::api::{Api, Body, Resp, REQUEST_TIMEOUT};
use unikv_tests::collection_calls::{call, kv};
use unikv_tests::reshard_checks::{add_new_shard, NEW_SHARD};
use unikv_tests::{assert_json_error, node_ref, wait_until_ok, Unified, ROUTER, UNIFIED_WAIT};

const KEYS: usize = 20_000;
const LOADERS: usize = 16;

fn key(i: usize) -> String {
    format!("e{i:05}")
}

/// One scan page through `node`.
async fn page(api: &Api, node: u64, q: &[(&str, &str)]) -> Resp {
    let mut q = q.to_vec();
    q.push(("collection", "events"));
    api.request(node, Method::GET, "/scan", &q, Body::Empty, REQUEST_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("/scan {q:?}: {e:#}"))
}

/// A whole scan, page after page (a 503 page is asked again); the keys in the order returned.
async fn scan_all(api: &Api, bounds: &[(&str, &str)], limit: usize) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    let limit = limit.to_string();
    let started = Instant::now();
    loop {
        let mut q = bounds.to_vec();
        q.push(("limit", &limit));
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let r = page(api, ROUTER, &q).await;
        if r.status == 503 && started.elapsed() < UNIFIED_WAIT {
            println!("scan page {q:?} answered 503, asked again: {r}");
            continue;
        }
        if r.status != 200 {
            return Err(format!("scan page {q:?}: {r}"));
        }
        let items = r
            .field("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if items.len() > limit.parse::<usize>().unwrap() {
            return Err(format!("a page of {} items for limit {limit}", items.len()));
        }
        keys.extend(
            items
                .iter()
                .map(|i| i["key"].as_str().unwrap_or_default().to_string()),
        );
        match r.field("next").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(keys),
        }
    }
}

/// The chunks of `events` as the router lists them.
async fn chunks(api: &Api) -> Vec<Value> {
    chunks_listed(api, "/collections/events/chunks").await
}

async fn chunks_listed(api: &Api, path: &str) -> Vec<Value> {
    let r = call(api, ROUTER, Method::GET, path, Value::Null).await;
    assert_eq!(r.status, 200, "{r}");
    r.field("chunks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Chunks per shard.
fn spread(chunks: &[Value]) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for c in chunks {
        *out.entry(c["shard"].as_u64().unwrap_or(0)).or_default() += 1;
    }
    out
}

/// Scan pages each node of the cluster has served.
async fn scans_served(u: &Unified) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for n in u.all_nodes() {
        let r = u.api().get_path(n, "/raft/status", &[]).await.unwrap();
        out.insert(
            n,
            r.field("scans_served").and_then(Value::as_u64).unwrap_or(0),
        );
    }
    out
}

fn assert_in_order(what: &str, keys: &[String], reverse: bool) {
    for w in keys.windows(2) {
        let ok = if reverse { w[0] > w[1] } else { w[0] < w[1] };
        assert!(
            ok,
            "{what}: {:?} then {:?} (twice or out of order)",
            w[0], w[1]
        );
    }
}

async fn put(api: &Api, k: &str, v: &str) -> Resp {
    kv(
        api,
        ROUTER,
        "put",
        &[("collection", "events"), ("key", k), ("val", v)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn range_collections_split_spread_scan_and_move() {
    // Every chunk and slot is copied while it serves (`--move_copy_min_kb 0`), so the moves
    // under the writer and the scanner below take the copy path.
    let u = Unified::start_with(
        &["--chunk_max_bytes", "16384", "--move_copy_min_kb", "0"],
        &[],
    )
    .await;
    let api = u.api();
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/events",
        json!({"sharding": "range"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.field("collection").unwrap()["sharding"], "range", "{r}");
    assert_eq!(
        chunks(&api).await.len(),
        1,
        "a new range collection is one chunk"
    );

    // Point calls, and the same key elsewhere is another value.
    assert!(put(&api, "same", "in-events").await.is_ok_true());
    assert!(api
        .put(ROUTER, "same", "in-default")
        .await
        .unwrap()
        .is_ok_true());
    let got = kv(
        &api,
        ROUTER,
        "get",
        &[("collection", "events"), ("key", "same")],
    )
    .await;
    assert_eq!(got.str_field("value"), Some("in-events"), "{got}");
    let app = kv(
        &api,
        ROUTER,
        "append",
        &[("collection", "events"), ("key", "same"), ("val", "+")],
    )
    .await;
    assert_eq!(app.field("previous"), Some(&json!("in-events")), "{app}");
    let del = kv(
        &api,
        ROUTER,
        "delete",
        &[("collection", "events"), ("key", "same")],
    )
    .await;
    assert_eq!(del.field("deleted"), Some(&json!(true)), "{del}");
    assert_eq!(
        api.get_value(ROUTER, "same").await.unwrap().as_deref(),
        Some("in-default")
    );
    // Range-only calls elsewhere are refused.
    let r = api.get_path(ROUTER, "/scan", &[]).await.unwrap();
    assert_json_error("a scan of default", &r, 400, "not_range");
    let r = call(
        &api,
        ROUTER,
        Method::GET,
        "/collections/default/chunks",
        Value::Null,
    )
    .await;
    assert_json_error("chunks of default", &r, 400, "not_range");

    // 20,000 keys in a scrambled order, 16 writers.
    let t0 = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut loaders = Vec::new();
    for _ in 0..LOADERS {
        let (api, next) = (api.clone(), next.clone());
        loaders.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= KEYS {
                    return;
                }
                let i = (n * 7919) % KEYS;
                let r = put(&api, &key(i), &format!("v{i}")).await;
                assert!(r.is_ok_true(), "put {}: {r}", key(i));
            }
        }));
    }
    for l in loaders {
        l.await.unwrap();
    }
    println!(
        "[figure] 20,000 range puts through the router, 16 writers: {:?}",
        t0.elapsed()
    );

    // The chunks split (at least 8) and spread over all three shards.
    let t1 = Instant::now();
    let spread_now = wait_until_ok(
        Duration::from_secs(90),
        "chunks split and spread",
        || async {
            let c = chunks(&api).await;
            let s = spread(&c);
            if c.len() >= 8 && s.len() == 3 && s.values().all(|n| *n >= 2) {
                Ok(s)
            } else {
                Err(format!("{} chunks over {s:?}", c.len()))
            }
        },
    )
    .await;
    println!(
        "[figure] split and spread {spread_now:?} within {:?} of the load",
        t1.elapsed()
    );
    // Settled: the same chunks twice in a row, 3 s apart (the balancer has stopped moving).
    let listed = wait_until_ok(
        Duration::from_secs(90),
        "the chunk layout to settle",
        || async {
            let a = chunks(&api).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let b = chunks(&api).await;
            let layout = |c: &[Value]| -> Vec<(Value, Value)> {
                c.iter()
                    .map(|c| (c["id"].clone(), c["shard"].clone()))
                    .collect()
            };
            if layout(&a) == layout(&b) {
                Ok(b)
            } else {
                Err(format!("still moving: {:?}", spread(&b)))
            }
        },
    )
    .await;
    let total: u64 = listed.iter().map(|c| c["count"].as_u64().unwrap()).sum();
    assert_eq!(total, KEYS as u64, "chunk counts add up: {listed:?}");
    // Balanced by bytes: a shard stops giving chunks away once the gap to the lightest is
    // under half `--chunk_max_bytes` or no chunk of its own fits half the gap, so what is
    // left is at most about two chunks (plus the little hash data beside them).
    let mut bytes: BTreeMap<u64, u64> = BTreeMap::new();
    for c in &listed {
        *bytes.entry(c["shard"].as_u64().unwrap()).or_default() += c["size"].as_u64().unwrap();
    }
    let (lo, hi) = (bytes.values().min().unwrap(), bytes.values().max().unwrap());
    println!("[figure] range bytes per shard once settled: {bytes:?}");
    assert!(
        hi - lo <= 2 * 16384 + 8192 + 4096,
        "range bytes per shard not even: {bytes:?}"
    );

    // Full scans: every key once, in order, page after page; bounds and reverse exact.
    let all: Vec<String> = (0..KEYS).map(key).collect();
    let got = scan_all(&api, &[], 1000).await.unwrap();
    assert_in_order("full scan", &got, false);
    assert_eq!(got.len(), KEYS);
    assert_eq!(got, all);
    let got = scan_all(&api, &[("start", "e05000"), ("end", "e12345")], 333)
        .await
        .unwrap();
    assert_eq!(got, all[5000..12345].to_vec());
    let got = scan_all(
        &api,
        &[("start", "e05000"), ("end", "e12345"), ("reverse", "true")],
        777,
    )
    .await
    .unwrap();
    assert_eq!(
        got,
        all[5000..12345].iter().rev().cloned().collect::<Vec<_>>()
    );
    let got = scan_all(&api, &[("reverse", "true")], 1000).await.unwrap();
    assert_eq!(got.len(), KEYS);
    assert_in_order("full reverse scan", &got, true);

    // A scan inside one chunk reaches only that chunk's shard.
    let inner = listed
        .iter()
        .find(|c| c["count"].as_u64().unwrap() >= 10 && !c["max"].is_null())
        .expect("a chunk with keys")
        .clone();
    let owner = inner["shard"].as_u64().unwrap();
    let before = scans_served(&u).await;
    let (lo, hi) = (
        inner["min"].as_str().unwrap(),
        inner["max"].as_str().unwrap(),
    );
    let got = scan_all(&api, &[("start", lo), ("end", hi)], 1000)
        .await
        .unwrap();
    assert_eq!(got.len() as u64, inner["count"].as_u64().unwrap());
    let after = scans_served(&u).await;
    let per_shard = |m: &BTreeMap<u64, u64>| {
        let mut s: BTreeMap<u64, u64> = BTreeMap::new();
        for (n, c) in m {
            *s.entry(unikv_tests::unified::shard_of(*n)).or_default() += c;
        }
        s
    };
    println!("scan pages served per node: {before:?} -> {after:?}");
    let (b, a) = (per_shard(&before), per_shard(&after));
    for shard in u.shard_ids() {
        let served = a[&shard] - b.get(&shard).copied().unwrap_or(0);
        // One page per 1000 keys, all from the owner.
        let pages = inner["count"].as_u64().unwrap().div_ceil(1000);
        let want = if shard == owner { pages } else { 0 };
        assert_eq!(
            served, want,
            "shard {shard} served {served} scan pages for a scan inside shard {owner}'s chunk"
        );
    }
    println!("[figure] scan pages per shard for a scan inside one chunk of shard {owner}: {b:?} -> {a:?}");

    // Under a writer and a scanner: explicit splits and moves, then /addshard 4 and
    // /removeshard 4.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let writer = {
        let (api, stop, acked) = (api.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            let mut failed = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Between the loaded keys, so every chunk gets writes.
                let k = format!("e{:05}w{n}", (n * 104_729) % KEYS);
                let r = put(&api, &k, "w").await;
                if r.is_ok_true() {
                    acked.lock().unwrap().insert(k);
                } else {
                    failed += 1;
                }
                n += 1;
            }
            (n, failed)
        })
    };
    let scanner = {
        let (api, stop, acked) = (api.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut scans = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let must: BTreeSet<String> = acked.lock().unwrap().clone();
                let got = scan_all(&api, &[], 1000)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_in_order("scan under moves", &got, false);
                let seen: BTreeSet<&String> = got.iter().collect();
                for k in all_keys().iter().chain(must.iter()) {
                    assert!(seen.contains(k), "scan {scans} under moves misses {k}");
                }
                scans += 1;
            }
            scans
        })
    };
    fn all_keys() -> Vec<String> {
        (0..KEYS).map(key).collect()
    }

    // Every chunk says its size and version; `?shard=S` lists exactly that shard's; `/config`
    // counts them and `/stats` names their collection.
    let c = chunks(&api).await;
    for ch in &c {
        let n = |f: &str| ch[f].as_u64().unwrap_or_else(|| panic!("{f} of {ch}"));
        assert!(n("count") == 0 || n("size") > n("count"), "{ch}");
        assert!(n("version") >= 1 && n("updated_at") > 0, "{ch}");
    }
    wait_until_ok(Duration::from_secs(30), "per-shard chunk lists", || async {
        let all = chunks(&api).await;
        for shard in 1..=3u64 {
            let one =
                chunks_listed(&api, &format!("/collections/events/chunks?shard={shard}")).await;
            let want: Vec<&Value> = all.iter().filter(|c| c["shard"] == shard).collect();
            if one.iter().collect::<Vec<_>>() != want {
                return Err(format!("shard {shard}: {one:?} against {want:?}"));
            }
        }
        let cfg = api
            .get_path(node_ref(1, 1), "/config", &[])
            .await
            .map_err(|e| format!("{e:#}"))?;
        let counted = cfg.field("catalog").map(|c| c["chunks"].clone());
        if counted != Some(json!(all.len())) {
            return Err(format!("/config counts {counted:?}, {} listed", all.len()));
        }
        Ok(())
    })
    .await;
    let st = api.get_path(node_ref(1, 1), "/stats", &[]).await.unwrap();
    let own = st.field("shards").and_then(Value::as_array).unwrap()[0].clone();
    assert_eq!(own["chunks"][0]["collection"], "events", "{own}");
    let before_split = c
        .iter()
        .find(|ch| {
            ch["min"].as_str() <= Some("e10001x")
                && ch["max"].as_str().is_none_or(|m| m > "e10001x")
        })
        .unwrap_or_else(|| panic!("no chunk holds e10001x: {c:?}"))
        .clone();

    // An explicit split, then a move of the new chunk to another shard.
    let r = call(
        &api,
        ROUTER,
        Method::POST,
        "/collections/events/split?at=e10001x",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{r}");
    let c = chunks(&api).await;
    let new = c
        .iter()
        .find(|c| c["min"] == "e10001x")
        .unwrap_or_else(|| panic!("no chunk at e10001x: {c:?}"))
        .clone();
    let left = c.iter().find(|x| x["id"] == before_split["id"]).unwrap();
    assert!(
        left["version"].as_u64() > before_split["version"].as_u64(),
        "a split is a change of the chunk split: {before_split} -> {left}"
    );
    let from = new["shard"].as_u64().unwrap();
    let to = if from == 1 { 2 } else { 1 };
    let r = call(
        &api,
        ROUTER,
        Method::POST,
        &format!("/collections/events/chunks/{}/move?to={to}", new["id"]),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{r}");
    let c = chunks(&api).await;
    let moved = c.iter().find(|x| x["id"] == new["id"]).unwrap();
    assert_eq!(moved["shard"].as_u64(), Some(to), "{moved}");
    assert!(
        moved["version"].as_u64() > new["version"].as_u64()
            && moved["updated_at"].as_u64() >= new["updated_at"].as_u64(),
        "a move is a change of the chunk: {new} -> {moved}"
    );
    let r = call(
        &api,
        ROUTER,
        Method::POST,
        "/collections/events/chunks/12345/move?to=1",
        Value::Null,
    )
    .await;
    assert_json_error(
        "moving a chunk that does not exist",
        &r,
        404,
        "unknown_chunk",
    );
    let r = call(
        &api,
        ROUTER,
        Method::POST,
        "/collections/events/split?at=",
        Value::Null,
    )
    .await;
    assert_json_error("a split at the first key", &r, 400, "bad_split");

    // A fourth shard gets chunks from the balancer; removing it drains them again.
    add_new_shard(&u).await;
    wait_until_ok(
        Duration::from_secs(90),
        "shard 4 to hold chunks",
        || async {
            let s = spread(&chunks(&api).await);
            if s.get(&NEW_SHARD).copied().unwrap_or(0) > 0 {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    // Not while it holds chunks; `forget=true` drains it and then removes it for good.
    let r = api
        .request(
            node_ref(1, 1),
            Method::DELETE,
            "/shards/4",
            &[],
            Body::Empty,
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_json_error("DELETE /shards/4 holding chunks", &r, 409, "shard_active");
    let answer = u
        .script(&["removeshard", "4", "forget"])
        .await
        .unwrap_or_else(|e| panic!("removeshard 4 forget: {e:#}"));
    assert!(answer.contains(r#""forget":true"#), "{answer}");
    wait_until_ok(
        Duration::from_secs(120),
        "shard 4 drained and removed",
        || async {
            let s = spread(&chunks(&api).await);
            let st = api
                .get_path(node_ref(NEW_SHARD, 1), "/raft/status", &[])
                .await
                .map_err(|e| format!("{e:#}"))?;
            let held = st.field("chunks_held").and_then(Value::as_u64);
            let rb = api
                .get_path(node_ref(NEW_SHARD, 1), "/rebalance/status", &[])
                .await
                .map_err(|e| format!("{e:#}"))?;
            match (s.get(&NEW_SHARD), held, rb.str_field("state")) {
                (None, Some(0), Some("removed")) => Ok(()),
                other => Err(format!("{s:?} {other:?}")),
            }
        },
    )
    .await;

    stop.store(true, Ordering::Relaxed);
    let (written, failed) = writer.await.unwrap();
    let scans = scanner.await.unwrap();
    println!("[figure] under splits, moves, addshard 4 and removeshard 4: {written} writes ({failed} not acknowledged), {scans} complete scans");
    assert!(scans >= 2, "the scanner completed {scans} scans");
    // Every acknowledged write is there, once, in order.
    let got = scan_all(&api, &[], 1000).await.unwrap();
    assert_in_order("final scan", &got, false);
    let seen: BTreeSet<String> = got.into_iter().collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<_> = acked
        .iter()
        .filter(|k| !seen.contains(*k))
        .take(5)
        .collect();
    assert!(lost.is_empty(), "acknowledged writes missing: {lost:?}");
    // Anything else is the loaded keys and writes whose answer was lost (applied or not).
    let loaded: BTreeSet<String> = all_keys().into_iter().collect();
    assert!(
        loaded.iter().all(|k| seen.contains(k)),
        "a loaded key is missing"
    );
    let strange: Vec<_> = seen
        .iter()
        .filter(|k| !loaded.contains(*k) && !acked.contains(*k) && !k.contains('w'))
        .take(5)
        .collect();
    assert!(strange.is_empty(), "keys nobody wrote: {strange:?}");
    assert!(
        seen.len() <= KEYS + acked.len() + failed,
        "{} keys",
        seen.len()
    );
    let listed = chunks(&api).await;
    let total: u64 = listed.iter().map(|c| c["count"].as_u64().unwrap()).sum();
    assert_eq!(
        total,
        seen.len() as u64,
        "chunk counts add up after the moves"
    );
    let r = call(
        &api,
        ROUTER,
        Method::GET,
        "/collections/events",
        Value::Null,
    )
    .await;
    assert_eq!(
        (r.field("chunk_count"), r.field("keys")),
        (Some(&json!(listed.len())), Some(&json!(total))),
        "{r}"
    );
}
