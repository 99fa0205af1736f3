//! The clients: each task has one operation outstanding on a small set of keys, with values
//! that are unique in the whole run, and records every operation in the [`History`]. A
//! client whose operation ended `info` continues under a new process id (its old operation
//! may still take effect at any later time).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::prelude::*;

use super::history::{History, OpKind, Record, Status};
use crate::api::{Api, Body, Method};

/// One operation's answer, classified.
struct Outcome {
    status: Status,
    result: Option<Option<String>>,
    error: Option<String>,
}

/// Sends one operation to endpoint `via` and classifies the answer (see `history.rs`).
pub async fn execute(
    api: &Api,
    via: u64,
    op: OpKind,
    key: &str,
    value: Option<&str>,
    timeout: Duration,
) -> (Status, Option<Option<String>>, Option<String>) {
    let (method, path) = match op {
        OpKind::Get => (Method::GET, "/get"),
        OpKind::Put => (Method::POST, "/put"),
        OpKind::Append => (Method::POST, "/append"),
        OpKind::Delete => (Method::DELETE, "/delete"),
    };
    let (collection, shard_key, key) = super::spaces::split(key);
    let mut query = vec![("key", key)];
    if let Some(c) = collection {
        query.push(("collection", c));
    }
    if let Some(k) = shard_key {
        query.push(("shard_key", k));
    }
    if let Some(v) = value {
        query.push(("val", v));
    }
    let o = match api
        .request(via, method, path, &query, Body::Empty, timeout)
        .await
    {
        Ok(r) if r.status == 200 => Outcome {
            status: Status::Ok,
            result: (op == OpKind::Get).then(|| r.str_field("value").map(str::to_string)),
            error: None,
        },
        Ok(r) if op == OpKind::Get && r.status == 404 && r.code() == Some("not_found") => Outcome {
            status: Status::Ok,
            result: Some(None),
            error: None,
        },
        Ok(r) => Outcome {
            // A read has no effect; a write that got an error may still have been applied.
            status: if op == OpKind::Get {
                Status::Fail
            } else {
                Status::Info
            },
            result: None,
            error: Some(format!("{} {}", r.status, r.code().unwrap_or(""))),
        },
        Err(e) => {
            // Connection refused: the request never left this process.
            let refused = e
                .chain()
                .filter_map(|c| c.downcast_ref::<reqwest::Error>())
                .any(|r| r.is_connect());
            Outcome {
                status: if op == OpKind::Get || refused {
                    Status::Fail
                } else {
                    Status::Info
                },
                result: None,
                error: Some(format!("{e:#}")),
            }
        }
    };
    (o.status, o.result, o.error)
}

pub struct Workload {
    pub api: Api,
    pub endpoints: Vec<u64>,
    pub keys: Vec<String>,
    pub history: Arc<History>,
    pub stop: Arc<AtomicBool>,
    pub next_process: Arc<AtomicU64>,
    pub op_timeout: Duration,
}

impl Workload {
    /// One client loop until `stop`.
    pub async fn client(self: Arc<Self>, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut process = self.next_process.fetch_add(1, Ordering::Relaxed);
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let key = self.keys[rng.random_range(0..self.keys.len())].clone();
            let op = match rng.random_range(0..100) {
                0..50 => OpKind::Get,
                50..85 => OpKind::Append,
                85..95 => OpKind::Put,
                _ => OpKind::Delete,
            };
            n += 1;
            let value =
                matches!(op, OpKind::Put | OpKind::Append).then(|| format!("p{process}.{n};"));
            let via = self.endpoints[rng.random_range(0..self.endpoints.len())];
            let invoke_ns = self.history.now_ns();
            let (status, result, error) =
                execute(&self.api, via, op, &key, value.as_deref(), self.op_timeout).await;
            let complete_ns = self.history.now_ns();
            self.history.push(Record {
                process,
                key,
                op,
                value,
                result,
                status,
                invoke_ns,
                complete_ns: (status != Status::Info).then_some(complete_ns),
                error,
            });
            if status == Status::Info {
                process = self.next_process.fetch_add(1, Ordering::Relaxed);
            } else if status == Status::Fail {
                // Back off a little while the cluster recovers.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
