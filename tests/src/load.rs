//! Client load for tests that change the cluster under traffic: writers of unique keys,
//! appenders of unique tokens and a mixed read/write hammer. Each runs in a few tasks until
//! [`Load::stop`], records every outcome and reports how many requests were acknowledged so
//! far, so a test can wait for the load to be under way before it acts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::task::JoinSet;

use crate::api::Api;

/// Client-side bound of one request through the router (its deadline in the tests is 2 s).
pub const REPLY_BOUND: Duration = Duration::from_secs(5);

/// Background load: tasks returning an `R` each once stopped.
pub struct Load<R> {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    tasks: JoinSet<R>,
}

impl<R: Send + 'static> Load<R> {
    fn new() -> Load<R> {
        Load {
            stop: Arc::new(AtomicBool::new(false)),
            acked: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
            tasks: JoinSet::new(),
        }
    }

    /// Requests answered 200 so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Requests finished (answered or failed) so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Tells every task to stop after its current request and collects their results.
    pub async fn stop(mut self) -> Vec<R> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        while let Some(r) = self.tasks.join_next().await {
            out.push(r.expect("load task panicked"));
        }
        out
    }
}

/// The handles one load task needs.
#[derive(Clone)]
struct Task {
    api: Api,
    node: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

impl Task {
    fn of<R: Send + 'static>(load: &Load<R>, api: &Api, node: u64) -> Task {
        Task {
            api: api.clone(),
            node,
            stop: load.stop.clone(),
            acked: load.acked.clone(),
            sent: load.sent.clone(),
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn count(&self, ok: bool) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.acked.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Describes a non-200 answer or a transport error.
fn outcome(r: anyhow::Result<crate::api::Resp>) -> Result<(), String> {
    match r {
        Ok(r) if r.is_ok() => Ok(()),
        Ok(r) => Err(r.to_string()),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// What a writer did: puts acknowledged (200) and puts that failed, with why.
#[derive(Debug, Default)]
pub struct WriteLog {
    pub acked: Vec<(String, String)>,
    /// (key, value, answer or error).
    pub failed: Vec<(String, String, String)>,
}

impl WriteLog {
    /// One log of several tasks' logs.
    pub fn merge(logs: Vec<WriteLog>) -> WriteLog {
        let mut all = WriteLog::default();
        for l in logs {
            all.acked.extend(l.acked);
            all.failed.extend(l.failed);
        }
        all
    }
}

/// Starts `tasks` writers putting keys `"{prefix}-{task}-{i}"` (each written once, with a
/// value naming it) through `node`, pausing `pause` after each put.
pub fn start_writer(
    api: &Api,
    node: u64,
    prefix: &str,
    tasks: usize,
    pause: Duration,
) -> Load<WriteLog> {
    let mut load = Load::new();
    for t in 0..tasks {
        let task = Task::of(&load, api, node);
        let prefix = prefix.to_string();
        load.tasks.spawn(async move {
            let mut log = WriteLog::default();
            let mut i = 0u64;
            while !task.stopped() {
                let key = format!("{prefix}-{t}-{i}");
                let value = format!("v{t}.{i}-{:08x}", rand::random::<u32>());
                i += 1;
                let r = task
                    .api
                    .put_timeout(task.node, &key, &value, REPLY_BOUND)
                    .await;
                match outcome(r) {
                    Ok(()) => {
                        task.count(true);
                        log.acked.push((key, value));
                    }
                    Err(why) => {
                        task.count(false);
                        log.failed.push((key, value, why));
                    }
                }
                tokio::time::sleep(pause).await;
            }
            log
        });
    }
    load
}

/// What an appender did: tokens (`t{n}`, appended as `t{n};`) per key, by outcome.
#[derive(Debug, Default)]
pub struct AppendLog {
    /// (key, token) acknowledged with 200.
    pub acked: Vec<(String, String)>,
    /// (key, token, answer or error): not acknowledged, so appended at most once.
    pub failed: Vec<(String, String, String)>,
}

impl AppendLog {
    /// One log of several tasks' logs.
    pub fn merge(logs: Vec<AppendLog>) -> AppendLog {
        let mut all = AppendLog::default();
        for l in logs {
            all.acked.extend(l.acked);
            all.failed.extend(l.failed);
        }
        all
    }

    /// Checks final values of the appended keys (`values`: key → value read, `None` if
    /// absent): every token at most once and only in its own key, every acknowledged token
    /// exactly once, nothing else in the value. Returns the problems and how many tokens not
    /// acknowledged made it in anyway.
    pub fn check(&self, values: &BTreeMap<String, Option<String>>) -> (Vec<String>, usize) {
        let mut sent: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, t) in &self.acked {
            sent.insert(t, k);
        }
        for (k, t, _) in &self.failed {
            sent.insert(t, k);
        }
        let acked: BTreeSet<&str> = self.acked.iter().map(|(_, t)| t.as_str()).collect();
        let mut problems = Vec::new();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (key, value) in values {
            let Some(value) = value else { continue };
            if !value.is_empty() && !value.ends_with(';') {
                problems.push(format!("{key:?}: value does not end with ';': {value:?}"));
            }
            for token in value.split(';').filter(|t| !t.is_empty()) {
                match sent.get(token) {
                    Some(k) if *k == key.as_str() => *seen.entry(token).or_default() += 1,
                    Some(k) => problems.push(format!("{key:?}: holds {token:?}, sent to {k:?}")),
                    None => problems.push(format!("{key:?}: holds {token:?}, never sent")),
                }
            }
        }
        for (token, n) in &seen {
            if *n > 1 {
                problems.push(format!(
                    "token {token:?} of {:?} appears {n} times",
                    sent[token]
                ));
            }
        }
        for (key, token) in &self.acked {
            if !seen.contains_key(token.as_str()) {
                problems.push(format!("acknowledged token {token:?} missing from {key:?}"));
            }
        }
        let unacked_in = seen.keys().filter(|t| !acked.contains(**t)).count();
        (problems, unacked_in)
    }
}

/// Starts `tasks` appenders sending tokens `t{n};` (n unique across tasks) to `keys` in turn
/// through `node`, pausing `pause` after each append. A failed append is not retried: its
/// token is never sent again.
pub fn start_appender(
    api: &Api,
    node: u64,
    keys: &[String],
    tasks: usize,
    pause: Duration,
) -> Load<AppendLog> {
    assert!(!keys.is_empty(), "no keys to append to");
    let mut load = Load::new();
    let next = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(keys.to_vec());
    for _ in 0..tasks {
        let task = Task::of(&load, api, node);
        let (next, keys) = (next.clone(), keys.clone());
        load.tasks.spawn(async move {
            let mut log = AppendLog::default();
            while !task.stopped() {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let key = keys[(n % keys.len() as u64) as usize].clone();
                let token = format!("t{n}");
                let r = task
                    .api
                    .append_timeout(task.node, &key, &format!("{token};"), REPLY_BOUND)
                    .await;
                match outcome(r) {
                    Ok(()) => {
                        task.count(true);
                        log.acked.push((key, token));
                    }
                    Err(why) => {
                        task.count(false);
                        log.failed.push((key, token, why));
                    }
                }
                tokio::time::sleep(pause).await;
            }
            log
        });
    }
    load
}

/// One request of the hammer.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub key: String,
    pub write: bool,
    pub latency: Duration,
    pub result: Result<(), String>,
}

/// Starts `tasks` tasks each sending, until stopped, a read (GET must answer 200 with a
/// value) or a put (half each, at random) of a random key of `keys` through `node`, pausing
/// `pause` after each request. The keys must exist before it starts.
pub fn start_hammer(
    api: &Api,
    node: u64,
    keys: &[String],
    tasks: usize,
    pause: Duration,
) -> Load<Vec<Outcome>> {
    assert!(!keys.is_empty(), "no keys to hammer");
    let mut load = Load::new();
    let keys = Arc::new(keys.to_vec());
    for t in 0..tasks {
        let task = Task::of(&load, api, node);
        let keys = keys.clone();
        load.tasks.spawn(async move {
            let mut log = Vec::new();
            let mut i = 0u64;
            while !task.stopped() {
                let (key, write) = {
                    let mut rng = rand::rng();
                    (
                        keys[rng.random_range(0..keys.len())].clone(),
                        rng.random_bool(0.5),
                    )
                };
                let t0 = Instant::now();
                let result = if write {
                    let value = format!("h{t}.{i}");
                    outcome(
                        task.api
                            .put_timeout(task.node, &key, &value, REPLY_BOUND)
                            .await,
                    )
                } else {
                    match task.api.get(task.node, &key).await {
                        Ok(r) if r.is_ok() && r.str_field("value").is_some() => Ok(()),
                        r => outcome(r).and(Err("200 without a value".to_string())),
                    }
                };
                i += 1;
                task.count(result.is_ok());
                log.push(Outcome {
                    key,
                    write,
                    latency: t0.elapsed(),
                    result,
                });
                tokio::time::sleep(pause).await;
            }
            log
        });
    }
    load
}
