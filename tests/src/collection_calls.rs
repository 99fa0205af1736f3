//! Calls the collection tests make through the router or a node (`tests/tests/collections.rs`,
//! `tests/tests/custom_collections.rs`): HTTP with a JSON body, KV calls with query
//! parameters, and what they read back (catalog versions, names, per-shard statistics of a
//! shard key); also SIGSTOP/SIGCONT of a process the cluster started.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::{Api, Body, Resp, REQUEST_TIMEOUT};
use crate::{node_ref, Proc, Unified};

pub async fn call(api: &Api, node: u64, method: Method, path: &str, body: Value) -> Resp {
    let body = if body.is_null() {
        Body::Empty
    } else {
        Body::Json(body)
    };
    api.request(node, method.clone(), path, &[], body, REQUEST_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on {node}: {e:#}"))
}

pub async fn kv(api: &Api, node: u64, op: &str, q: &[(&str, &str)]) -> Resp {
    let method = if op == "delete" {
        Method::DELETE
    } else {
        Method::POST
    };
    api.request(
        node,
        method,
        &format!("/{op}"),
        q,
        Body::Empty,
        REQUEST_TIMEOUT,
    )
    .await
    .unwrap_or_else(|e| panic!("/{op} {q:?} on {node}: {e:#}"))
}

pub async fn value(api: &Api, node: u64, key: &str, collection: Option<&str>) -> Resp {
    let mut q = vec![("key", key)];
    if let Some(c) = collection {
        q.push(("collection", c));
    }
    kv(api, node, "get", &q).await
}

/// [`value`], asked again while the answer is `503 unavailable` (a shard electing a leader
/// after a fault: the router gives up on a request after its deadline and the client
/// retries), for at most `timeout`; any other answer is returned as it is.
pub async fn value_once_served(
    api: &Api,
    node: u64,
    key: &str,
    collection: Option<&str>,
    timeout: std::time::Duration,
) -> Resp {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let r = value(api, node, key, collection).await;
        if r.status != 503 || std::time::Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(crate::wait::POLL_INTERVAL).await;
    }
}

pub fn catalog_version(r: &Resp) -> u64 {
    r.field("version")
        .or_else(|| r.field("catalog_version"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no catalog version in {r}"))
}

pub fn names(r: &Resp) -> BTreeSet<String> {
    r.field("collections")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no collections in {r}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

pub fn signal(u: &Unified, p: Proc, sig: &str) {
    let pid = u.pid(p).unwrap_or_else(|e| panic!("pid of {p}: {e:#}"));
    assert!(
        u.is_ours(pid),
        "{p} (pid {pid}) is not a process this test started"
    );
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Keys of keyspace `ks` that each shard reports storing (`/stats` of its node 1).
pub async fn shard_key_stats(u: &Unified, ks: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for shard in u.shard_ids() {
        let r = u
            .api()
            .get_path(node_ref(shard, 1), "/stats", &[])
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let own = r
            .field("shards")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|s| s["id"] == json!(shard)).cloned())
            .unwrap_or_else(|| panic!("shard {shard} in its own /stats: {r}"));
        let keys = own["shard_keys"]
            .as_array()
            .unwrap_or_else(|| panic!("no shard_keys in {own}"))
            .iter()
            .find(|k| k["keyspace"] == json!(ks))
            .map_or(0, |k| k["keys"].as_u64().unwrap_or(0));
        out.push((shard, keys));
    }
    out
}
