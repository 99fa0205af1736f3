//! Malformed-input fuzzing of the HTTP APIs of a node and of the router (a seeded property
//! test): thousands of random requests — known and garbage paths, every method, random query
//! parameters with hostile values (empty, huge, invalid UTF-8 escapes, overflowing numbers),
//! random bodies (broken and valid JSON of the wrong types, forms, binary) and content types.
//! Every answer must be a success or a 4xx/5xx with a JSON `{"error", "code"}` body, and no
//! process may crash. `UNIKV_FUZZ_REQUESTS` sets the count per target, `UNIKV_FUZZ_SEED` the seed.

use std::time::Duration;

use rand::prelude::*;
use unikv_tests::unified::{node_ref, Proc, Unified, ROUTER};

const PATHS: &[&str] = &[
    "/get",
    "/put",
    "/append",
    "/delete",
    "/raft/join",
    "/raft/leave",
    "/raft/status",
    "/config",
    "/health",
    "/addshard",
    "/removeshard",
    "/moveslot",
    "/shard/tags",
    "/stats",
    "/rebalance/status",
    "/status",
    "/",
    "/get/",
    "//get",
    "/put/../get",
    "/%FF",
    "/get%00",
    "/raft",
    "/raft/",
    "/metrics",
    "/\u{e9}t\u{e9}",
];
const PARAMS: &[&str] = &[
    "key",
    "val",
    "value",
    "client_id",
    "seq",
    "nodeid",
    "addr",
    "shardID",
    "shardAddress",
    "shard",
    "slot",
    "to",
    "from",
    "tags",
    "per_slot",
    "id",
    "",
    "key[]",
];
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

fn hostile_value(rng: &mut StdRng) -> String {
    match rng.random_range(0..14) {
        0 => String::new(),
        1 => "x".repeat(rng.random_range(1..200_000)),
        2 => "%FF%FE%00".into(),
        3 => "99999999999999999999999".into(),
        4 => "-1".into(),
        5 => "NaN".into(),
        6 => "\u{1F600}\u{0}\u{202E}".into(),
        7 => "1".into(),
        8 => "localhost:0".into(),
        9 => "{hash}tag".into(),
        10 => "%".into(),
        11 => "a&b=c".into(),
        12 => rng.random_range(0..20_000u32).to_string(),
        _ => (0..rng.random_range(1..40))
            .map(|_| char::from(rng.random_range(0x21u8..0x7f)))
            .collect(),
    }
}

fn json_value(rng: &mut StdRng, depth: u32) -> serde_json::Value {
    use serde_json::Value;
    match rng.random_range(0..8) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => Value::from(rng.random::<i64>()),
        3 => Value::from(rng.random::<f64>() * 1e300),
        4 => Value::String(hostile_value(rng)),
        5 if depth < 40 => Value::Array(
            (0..rng.random_range(0..3))
                .map(|_| json_value(rng, depth + 1))
                .collect(),
        ),
        6 if depth < 40 => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.random_range(0..4) {
                m.insert(
                    PARAMS[rng.random_range(0..PARAMS.len())].to_string(),
                    json_value(rng, depth + 1),
                );
            }
            Value::Object(m)
        }
        _ => Value::String("k".into()),
    }
}

fn body(rng: &mut StdRng) -> (Option<&'static str>, Vec<u8>) {
    match rng.random_range(0..7) {
        0 => (None, Vec::new()),
        1 => (
            Some("application/json"),
            serde_json::to_vec(&json_value(rng, 0)).unwrap_or_default(),
        ),
        2 => (
            Some("application/json"),
            b"{\"key\": \"k\", \"val\": ".to_vec(),
        ),
        3 => (
            Some("application/json"),
            "[".repeat(rng.random_range(1..5000)).into_bytes(),
        ),
        4 => {
            let pairs: Vec<String> = (0..rng.random_range(0..5))
                .map(|_| {
                    format!(
                        "{}={}",
                        PARAMS[rng.random_range(0..PARAMS.len())],
                        hostile_value(rng)
                    )
                })
                .collect();
            (
                Some("application/x-www-form-urlencoded"),
                pairs.join("&").into_bytes(),
            )
        }
        5 => (
            Some("text/plain; charset=utf-8"),
            (0..rng.random_range(0..3000))
                .map(|_| rng.random())
                .collect(),
        ),
        _ => (
            Some("application/octet-stream"),
            (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
        ),
    }
}

/// Sends `n` random requests to `addr`; returns the failures (answers that break the rules).
async fn fuzz(addr: &str, n: usize, seed: u64) -> (usize, Vec<String>) {
    // A fresh connection per request: a server that answers before reading a malformed body
    // must close that connection (it cannot find the next request), and a pooled client would
    // race that close with its next request and report a transport error that is not ours.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut failures = Vec::new();
    let mut errors_seen = 0;
    for i in 0..n {
        let method = METHODS[rng.random_range(0..METHODS.len())];
        let path = PATHS[rng.random_range(0..PATHS.len())];
        let query: Vec<String> = (0..rng.random_range(0..4))
            .map(|_| {
                let k = PARAMS[rng.random_range(0..PARAMS.len())];
                let v = hostile_value(&mut rng);
                // Half the time properly escaped, half the time raw.
                if rng.random_bool(0.5) {
                    format!("{k}={}", urlencode(&v))
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        let url = if query.is_empty() {
            format!("http://{addr}{path}")
        } else {
            format!("http://{addr}{path}?{}", query.join("&"))
        };
        let (content_type, bytes) = body(&mut rng);
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = client.request(m, &url).body(bytes);
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        let what = format!("#{i} {method} {}", truncate(&url, 160));
        let resp = match req.send().await {
            Ok(r) => r,
            // The URL itself may be unparsable for the client: nothing was sent.
            Err(e) if e.is_builder() => continue,
            Err(e) => {
                failures.push(format!("{what}: transport error {e}"));
                continue;
            }
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if status >= 400 {
            errors_seen += 1;
            let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
            let well_formed = json.as_ref().is_some_and(|j| {
                j.get("error").is_some_and(|e| e.is_string())
                    && j.get("code").is_some_and(|c| c.is_string())
            });
            if !well_formed {
                failures.push(format!(
                    "{what}: {status} without a JSON error body: {}",
                    truncate(&text, 200)
                ));
            }
        } else if !(200..300).contains(&status) {
            failures.push(format!("{what}: unexpected status {status}"));
        }
    }
    (errors_seen, failures)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn truncate(s: &str, n: usize) -> String {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_gets_json_errors_and_crashes_nothing() {
    let n: usize = std::env::var("UNIKV_FUZZ_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("UNIKV_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(42);
    let u = Unified::start().await;
    let api = u.api();
    let mut all_failures = Vec::new();
    for (target, id) in [
        ("router", ROUTER),
        ("node 1/1", node_ref(1, 1)),
        ("node 2/2", node_ref(2, 2)),
    ] {
        let (errors, failures) = fuzz(api.http_addr(id), n, seed ^ id).await;
        eprintln!(
            "[fuzz] {target}: {n} requests, {errors} error answers, {} rule violations",
            failures.len()
        );
        assert!(
            errors > n / 4,
            "{target}: only {errors} of {n} random requests were refused"
        );
        all_failures.extend(failures.into_iter().map(|f| format!("{target} {f}")));
    }
    let procs: Vec<Proc> = u.procs();
    u.assert_running(&procs);
    assert!(
        all_failures.is_empty(),
        "{} answers broke the rules, first 20:\n{}",
        all_failures.len(),
        all_failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
