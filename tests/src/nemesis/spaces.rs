//! The collections the nemesis runs on the unified cluster besides `default`: a range
//! collection and a custom one with a shard key on shards 1 and 2. A workload key names its
//! collection by a prefix (`r/…` range, `c/…` custom, none: `default`), so the checker, which
//! sees key strings, checks each collection's keys apart.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use super::topology::Topology;
use crate::api::{Body, Method};
use crate::unified::ROUTER;

pub const RANGE: &str = "nem_range";
pub const CUSTOM: &str = "nem_custom";
pub const SHARD_KEY: &str = "sk";
const RANGE_PREFIX: &str = "r/";
const CUSTOM_PREFIX: &str = "c/";

/// A workload key's collection, shard key and key within it.
pub fn split(key: &str) -> (Option<&'static str>, Option<&'static str>, &str) {
    if let Some(k) = key.strip_prefix(RANGE_PREFIX) {
        (Some(RANGE), None, k)
    } else if let Some(k) = key.strip_prefix(CUSTOM_PREFIX) {
        (Some(CUSTOM), Some(SHARD_KEY), k)
    } else {
        (None, None, key)
    }
}

/// Whether a workload key is in the range collection; its key there.
pub fn range_key(key: &str) -> Option<&str> {
    key.strip_prefix(RANGE_PREFIX)
}

/// `n` workload keys; on the unified cluster a third each in `default`, the range and the
/// custom collection.
pub fn keys(tag: u32, n: usize, collections: bool) -> Vec<String> {
    (0..n)
        .map(|i| {
            let prefix = match i % 3 {
                1 if collections => RANGE_PREFIX,
                2 if collections => CUSTOM_PREFIX,
                _ => "",
            };
            format!("{prefix}nem-{tag:08x}-{i}")
        })
        .collect()
}

/// Creates the two collections and the shard key through the router.
pub async fn create(topo: &Topology) -> anyhow::Result<()> {
    let api = topo.api();
    let calls = [
        (
            format!("/collections/{RANGE}"),
            json!({"sharding": "range"}),
        ),
        (
            format!("/collections/{CUSTOM}"),
            json!({"sharding": "custom"}),
        ),
        (
            format!("/collections/{CUSTOM}/shard_keys/{SHARD_KEY}"),
            json!({"shards": [1, 2]}),
        ),
    ];
    for (path, body) in calls {
        let r = api
            .request(
                ROUTER,
                Method::PUT,
                &path,
                &[],
                Body::Json(body),
                Duration::from_secs(10),
            )
            .await
            .with_context(|| format!("PUT {path}"))?;
        if !(200..300).contains(&r.status) {
            bail!("PUT {path}: {r}");
        }
    }
    Ok(())
}
