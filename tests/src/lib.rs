//! Harness for real-process tests of `unikv-node`: start a 3-node shard in a tempdir (or, in
//! [`unified`], a 3-shard cluster with its router through `scripts/run_unified.sh`), talk to it
//! over HTTP, kill -9 and restart processes, add and drain shards, run client [`load`] against
//! it, and check data.

pub mod api;
pub mod clock;
pub mod cluster;
pub mod collection_calls;
pub mod imports;
pub mod lazyfs;
pub mod load;
pub mod log_tails;
pub mod machine;
pub mod nemesis;
pub mod ports;
pub mod reshard_checks;
pub mod slot_writers;
pub mod tmpfs;
pub mod unified;
pub mod unified_env;
pub mod views;
pub mod wait;

use std::sync::Arc;

pub use api::{assert_json_error, Api, Body, LeaderInfo, Method, RaftStatus, Resp};
pub use cluster::{node_bin, Cluster, SHARD_ID, WAIT};
pub use log_tails::print_log_tails;
pub use machine::{profile_dir, target_dir};
pub use ports::{alloc_port, alloc_ports, port_is_free};
pub use unified::{
    node_ref, run_concurrent, ClusterConfig, Proc, RebalanceStatus, RouterStatus, ShardStats,
    SlotMap, Stats, Unified, MAX_SHARDS, ROUTER, ROUTER_DEADLINE, SHARDS, UNIFIED_WAIT,
};
pub use wait::{try_wait_until, wait_until, wait_until_ok, wait_until_ok_every};

/// A key unique to this process and call, e.g. `"{prefix}-<random>"`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Puts every `(key, value)` with `concurrency` parallel workers, each sending its share to
/// the nodes in `nodes` in turn. Returns the pairs whose put did not answer 200, with the
/// answer (or transport error).
pub async fn put_all(
    api: &Api,
    nodes: &[u64],
    kvs: &[(String, String)],
    concurrency: usize,
) -> Vec<String> {
    run_striped(api, nodes, kvs, concurrency, |api, node, k, v| async move {
        match api.put(node, &k, &v).await {
            Ok(r) if r.is_ok() => None,
            Ok(r) => Some(format!("put {k:?} on node {node}: {r}")),
            Err(e) => Some(format!("put {k:?} on node {node}: {e:#}")),
        }
    })
    .await
}

/// [`put_all`] into `collection`.
pub async fn put_all_in(
    api: &Api,
    nodes: &[u64],
    collection: &str,
    kvs: &[(String, String)],
    concurrency: usize,
) -> Vec<String> {
    let collection = collection.to_string();
    run_striped(api, nodes, kvs, concurrency, move |api, node, k, v| {
        let collection = collection.clone();
        async move {
            let q = [
                ("key", k.as_str()),
                ("val", v.as_str()),
                ("collection", collection.as_str()),
            ];
            let r = api
                .request(
                    node,
                    Method::POST,
                    "/put",
                    &q,
                    Body::Empty,
                    api::REQUEST_TIMEOUT,
                )
                .await;
            match r {
                Ok(r) if r.is_ok() => None,
                Ok(r) => Some(format!("put {k:?} in {collection} on node {node}: {r}")),
                Err(e) => Some(format!("put {k:?} in {collection} on node {node}: {e:#}")),
            }
        }
    })
    .await
}

/// Reads every key with `concurrency` parallel workers, spreading reads over `nodes`; returns
/// a description of every key whose value is not the expected one.
pub async fn check_values(
    api: &Api,
    nodes: &[u64],
    kvs: &[(String, String)],
    concurrency: usize,
) -> Vec<String> {
    run_striped(api, nodes, kvs, concurrency, |api, node, k, v| async move {
        match api.get_value(node, &k).await {
            Ok(Some(got)) if got == v => None,
            Ok(got) => Some(format!(
                "key {k:?} on node {node}: expected {v:?}, got {got:?}"
            )),
            Err(e) => Some(format!("key {k:?} on node {node}: {e:#}")),
        }
    })
    .await
}

async fn run_striped<F, Fut>(
    api: &Api,
    nodes: &[u64],
    kvs: &[(String, String)],
    concurrency: usize,
    op: F,
) -> Vec<String>
where
    F: Fn(Api, u64, String, String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<String>> + Send + 'static,
{
    assert!(!nodes.is_empty(), "no nodes given");
    let workers = concurrency.max(1);
    let kvs: Arc<Vec<(String, String)>> = Arc::new(kvs.to_vec());
    let nodes: Arc<Vec<u64>> = Arc::new(nodes.to_vec());
    let op = Arc::new(op);
    let mut set = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (api, kvs, nodes, op) = (api.clone(), kvs.clone(), nodes.clone(), op.clone());
        set.spawn(async move {
            let mut failures = Vec::new();
            let mut i = w;
            while i < kvs.len() {
                let (k, v) = kvs[i].clone();
                let node = nodes[i % nodes.len()];
                if let Some(f) = op(api.clone(), node, k, v).await {
                    failures.push(f);
                }
                i += workers;
            }
            failures
        });
    }
    let mut failures = Vec::new();
    while let Some(res) = set.join_next().await {
        failures.extend(res.expect("worker task panicked"));
    }
    failures
}

/// `n` key/value pairs with a common random prefix.
pub fn make_kvs(prefix: &str, n: usize) -> Vec<(String, String)> {
    let p = unique(prefix);
    (0..n)
        .map(|i| (format!("{p}-{i:04}"), format!("value-{i}-of-{p}")))
        .collect()
}

/// Fails with the first 20 failures listed when there are any.
pub fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{what}: {} failures, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
