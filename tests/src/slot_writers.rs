//! Writers that hammer one slot (one hash tag) — or, in a range collection, the keys of one
//! chunk (one key prefix) — through the router while it moves, and the check afterwards: every acknowledged put is readable, every acknowledged appended token
//! is stored exactly once, a token whose append got no clear answer at most once, and no
//! token nobody sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use reqwest::Method;

use crate::api::{Body, Resp, REQUEST_TIMEOUT};
use crate::{Api, ROUTER};

/// `POST /{op}?key=K&val=V[&collection=C]`.
async fn write(
    api: &Api,
    op: &str,
    collection: Option<&str>,
    key: &str,
    val: &str,
) -> anyhow::Result<Resp> {
    let mut q = vec![("key", key), ("val", val)];
    q.extend(collection.map(|c| ("collection", c)));
    api.request(
        ROUTER,
        Method::POST,
        &format!("/{op}"),
        &q,
        Body::Empty,
        REQUEST_TIMEOUT,
    )
    .await
}

/// `GET /get?key=K[&collection=C]` on `node` as a value (`None`: not found).
async fn read(
    api: &Api,
    node: u64,
    collection: Option<&str>,
    key: &str,
) -> anyhow::Result<Option<String>> {
    let Some(c) = collection else {
        return api.get_value(node, key).await;
    };
    let q = [("key", key), ("collection", c)];
    let r = api.get_path(node, "/get", &q).await?;
    match r.status {
        200 => Ok(r.str_field("value").map(str::to_string)),
        404 if r.code() == Some("not_found") => Ok(None),
        _ => anyhow::bail!("GET /get {q:?} on node {node}: {r}"),
    }
}

/// What one writer sent: acknowledged (with when) or without a clear answer.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub acked: Vec<(Instant, String, String)>,
    pub unsure: Vec<(String, String)>,
    /// The collection written to (`None`: `default`).
    pub collection: Option<String>,
}

/// Appending writers (each to its own key under the tag) and putting writers (a fresh key
/// each time), running until [`SlotWriters::stop`].
pub struct SlotWriters {
    stop: Arc<AtomicBool>,
    written: Arc<Mutex<Written>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SlotWriters {
    pub fn start(api: &Api, tag: &str, appenders: usize, putters: usize) -> SlotWriters {
        SlotWriters::start_in(api, None, tag, appenders, putters)
    }

    /// [`SlotWriters::start`] in `collection` (keys `{tag}…`: in a range collection, one
    /// run of adjacent keys).
    pub fn start_in(
        api: &Api,
        collection: Option<&str>,
        tag: &str,
        appenders: usize,
        putters: usize,
    ) -> SlotWriters {
        let stop = Arc::new(AtomicBool::new(false));
        let written: Arc<Mutex<Written>> = Arc::new(Mutex::new(Written {
            collection: collection.map(str::to_string),
            ..Default::default()
        }));
        let mut tasks = Vec::new();
        for w in 0..appenders + putters {
            let (api, stop, written) = (api.clone(), stop.clone(), written.clone());
            let tag = tag.to_string();
            let collection = collection.map(str::to_string);
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    n += 1;
                    let append = w < appenders;
                    let (key, token) = if append {
                        (format!("{{{tag}}}append{w}"), format!("w{w}n{n};"))
                    } else {
                        (format!("{{{tag}}}put{w}-{n}"), format!("v{w}-{n}"))
                    };
                    let op = if append { "append" } else { "put" };
                    let r = write(&api, op, collection.as_deref(), &key, &token).await;
                    let mut out = written.lock().unwrap_or_else(|e| e.into_inner());
                    match r {
                        Ok(r) if r.is_ok() => out.acked.push((Instant::now(), key, token)),
                        _ => out.unsure.push((key, token)),
                    }
                }
            }));
        }
        SlotWriters {
            stop,
            written,
            tasks,
        }
    }

    /// Writes acknowledged so far.
    pub fn acked_so_far(&self) -> usize {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acked
            .len()
    }

    /// Stops the writers and returns what they sent.
    pub async fn stop(self) -> Written {
        self.stop.store(true, Relaxed);
        for t in self.tasks {
            t.await.expect("writer task");
        }
        let w = self.written.lock().unwrap_or_else(|e| e.into_inner());
        w.clone()
    }
}

impl Written {
    /// Reads every written key from `node` and returns what is wrong (empty: nothing).
    pub async fn problems(&self, api: &Api, node: u64) -> Vec<String> {
        let mut problems = Vec::new();
        // Appended tokens per key: acknowledged, and sent without a clear answer.
        let mut appended: BTreeMap<&str, (Vec<&str>, BTreeSet<&str>)> = BTreeMap::new();
        for (_, k, t) in &self.acked {
            if k.contains("}append") {
                appended
                    .entry(k)
                    .or_default()
                    .0
                    .push(t.trim_end_matches(';'));
            } else {
                match read(api, node, self.collection.as_deref(), k).await {
                    Ok(Some(v)) if &v == t => {}
                    other => problems.push(format!("{k}: acknowledged {t:?}, read {other:?}")),
                }
            }
        }
        for (k, t) in &self.unsure {
            if k.contains("}append") {
                appended
                    .entry(k)
                    .or_default()
                    .1
                    .insert(t.trim_end_matches(';'));
            }
        }
        for (k, (acked, unsure)) in &appended {
            let value = match read(api, node, self.collection.as_deref(), k).await {
                Ok(v) => v.unwrap_or_default(),
                Err(e) => {
                    problems.push(format!("{k}: read failed: {e:#}"));
                    continue;
                }
            };
            let mut stored: BTreeMap<&str, usize> = BTreeMap::new();
            for s in value.split_terminator(';') {
                *stored.entry(s).or_default() += 1;
            }
            for t in acked {
                let times = stored.get(t).copied().unwrap_or(0);
                if times != 1 {
                    problems.push(format!("{k}: acknowledged token {t} stored {times} times"));
                }
            }
            for (s, times) in &stored {
                let sent = acked.contains(s) || unsure.contains(s);
                if !sent {
                    problems.push(format!("{k}: token {s} stored but never sent"));
                } else if *times > 1 {
                    problems.push(format!("{k}: token {s} stored {times} times"));
                }
            }
        }
        problems
    }
}

/// `count` pairs of about `value_bytes` under hash tag `tag` (so in one slot), each value
/// starting with its index.
pub fn filler(tag: &str, count: usize, value_bytes: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let head = format!("{i:05}");
            let pad = "x".repeat(value_bytes.saturating_sub(head.len()));
            (format!("{{{tag}}}f{i:05}"), head + &pad)
        })
        .collect()
}
