//! Where a unified test cluster lives: its port block (reserved per test so clusters run in
//! parallel), how many may run at once, the script and binaries it runs, and small process
//! helpers shared by the harness and the nemesis.

use std::collections::HashSet;
use std::fs;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rand::Rng;
use tokio::sync::Semaphore;

use crate::ports::port_is_free;

/// Shards a test cluster may have, counting those added later: ports are reserved for all.
pub const MAX_SHARDS: u64 = 4;
/// Nodes per shard (the script always starts nodes 1, 2 and 3).
pub const NODES_PER_SHARD: u64 = 3;

/// Lowest HTTP base handed out; bases step by 100.
const HTTP_BASE_MIN: u16 = 20_000;
/// Number of distinct HTTP bases (20000, 20100, ..., 25900).
const HTTP_BASES: u16 = 60;
/// QUIC base = HTTP base + this (26000..31999: below the Linux ephemeral range).
const RAFT_OFFSET: u16 = 6_000;
/// Router port = HTTP base + this (nodes use base + 11 ..= base + 33).
const ROUTER_OFFSET: u16 = 50;

/// The ports of one cluster, all derived from one HTTP base as the script derives them.
#[derive(Debug, Clone, Copy)]
pub struct UnifiedPorts {
    pub http_base: u16,
    pub raft_base: u16,
    pub router: u16,
}

impl UnifiedPorts {
    /// HTTP (and gossip UDP) port of a node.
    pub fn http(&self, shard: u64, node: u64) -> u16 {
        self.http_base + (10 * shard + node) as u16
    }

    /// QUIC port of a node.
    pub fn raft(&self, shard: u64, node: u64) -> u16 {
        self.raft_base + (10 * shard + node) as u16
    }

    /// Every port the cluster binds, up to [`MAX_SHARDS`] shards.
    pub fn all(&self) -> Vec<u16> {
        let mut v = vec![self.router];
        for s in 1..=MAX_SHARDS {
            for n in 1..=NODES_PER_SHARD {
                v.push(self.http(s, n));
                v.push(self.raft(s, n));
            }
        }
        v
    }
}

fn bases_taken() -> &'static Mutex<HashSet<u16>> {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    TAKEN.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Picks a random HTTP base (step 100) never handed out before in this process whose every
/// port ([`MAX_SHARDS`] x 3 HTTP/gossip and QUIC, the router's) is free for TCP and UDP right
/// now.
pub fn alloc_unified_ports() -> UnifiedPorts {
    let mut rng = rand::rng();
    let mut taken = bases_taken().lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..2_000 {
        let http_base = HTTP_BASE_MIN + 100 * rng.random_range(0..HTTP_BASES);
        if taken.contains(&http_base) {
            continue;
        }
        let ports = UnifiedPorts {
            http_base,
            raft_base: http_base + RAFT_OFFSET,
            router: http_base + ROUTER_OFFSET,
        };
        if ports.all().into_iter().all(port_is_free) {
            taken.insert(http_base);
            return ports;
        }
    }
    panic!("alloc_unified_ports: no free HTTP base found");
}

/// Limits how many unified clusters (ten processes each) run at once in this test process.
/// `$UNIKV_TEST_CLUSTERS` overrides the default (a third of the CPUs, at least 1).
pub(crate) fn cluster_slots() -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| Arc::new(Semaphore::new(crate::machine::concurrent_clusters(3, 1))))
        .clone()
}

/// `scripts/run_unified.sh` of the checkout under test. `cargo test` sets CARGO_MANIFEST_DIR
/// when it runs a test, and that is preferred over the directory this binary was compiled
/// in: with a target dir shared between checkouts (CI's clones and a working copy), cargo may
/// reuse a test binary compiled in another checkout, whose path may be gone or stale.
/// (A binary run outside cargo, like the nemesis, gets it from `scripts/nemesis.sh`.)
pub fn script_path() -> PathBuf {
    try_script_path().unwrap_or_else(|e| panic!("{e}"))
}

/// [`script_path`] without the panic (for `Drop`).
pub fn try_script_path() -> anyhow::Result<PathBuf> {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let script = manifest_dir.join("../scripts/run_unified.sh");
    script.canonicalize().map_err(|e| {
        anyhow::anyhow!(
            "{} exists: {e} (set CARGO_MANIFEST_DIR to the checkout's tests/ dir)",
            script.display()
        )
    })
}

/// Runs `op` on every item with `workers` concurrent tasks; results in item order.
pub async fn run_concurrent<T, R, F, Fut>(items: Vec<T>, workers: usize, op: F) -> Vec<R>
where
    T: Clone + Send + Sync + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (items, next, op) = (items.clone(), next.clone(), op.clone());
        set.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                done.push((i, op(item.clone()).await));
            }
            done
        });
    }
    let mut all = Vec::with_capacity(items.len());
    while let Some(res) = set.join_next().await {
        all.extend(res.expect("worker task panicked"));
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// True if `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}
