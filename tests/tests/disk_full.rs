//! Disk full, for real: three `unikv-node` processes with their data dirs on small tmpfs
//! mounts; under eight writers, a test fills a file system to the last byte, so ENOSPC hits
//! RocksDB's WAL (the Raft log and the applies) while writes are in flight. The node must
//! refuse new writes with 507 `insufficient_storage`, keep serving reads, lose nothing
//! acknowledged, and take writes again once space returns, without a restart (same process).
//!
//! Three cases: only the leader's disk fills (its followers still commit; its ballast lets
//! it catch up and serve reads), only a follower's, both with no free-space reserve (ENOSPC
//! is what stops writes); and one file system under the whole shard (the one-machine case:
//! nothing can commit until space returns), with the default reserve. Without a reserve
//! there, the ballast a follower let go at its ENOSPC was written full by a leader that had
//! met none yet, until no node had the room RocksDB needs to resume, and reads stalled.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use unikv_tests::tmpfs::Tmpfs;
use unikv_tests::{unique, wait_until, Api, Cluster, WAIT};

const WRITERS: usize = 8;
/// Values this big fill a small file system in seconds.
const VALUE_BYTES: usize = 2048;
/// What the filler leaves free: the writers use it up within moments.
const LEAVE: u64 = 256 << 10;

/// Small memtables (2 MiB per column family: RocksDB resumes once that much is free), a
/// ballast of 12 MiB; the default reserve (4 MiB: writes refused below that much free).
const FLAGS: &[(&str, &str)] = &[("--memtable_mb", "4"), ("--ballast_mb", "12")];
/// The same without a reserve, for a node alone on its disk: writes are refused only once
/// ENOSPC was met, which is the path these tests are about.
const FLAGS_NO_RESERVE: &[(&str, &str)] = &[
    ("--memtable_mb", "4"),
    ("--ballast_mb", "12"),
    ("--disk_reserve_mb", "0"),
];

/// Writers putting unique keys to one node, recording every acknowledged write and every 507.
struct Load {
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    refused: Arc<AtomicU64>,
    /// Answers that are neither 200 nor 507 (timeouts while nothing can commit, say).
    other: Arc<Mutex<BTreeMap<u16, u64>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(api: Api, node: u64) -> Load {
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let refused = Arc::new(AtomicU64::new(0));
        let other = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let prefix = unique("full");
        let tasks = (0..WRITERS)
            .map(|w| {
                let (api, acked, refused, other, stop, prefix) = (
                    api.clone(),
                    acked.clone(),
                    refused.clone(),
                    other.clone(),
                    stop.clone(),
                    prefix.clone(),
                );
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let k = format!("{prefix}-{w}-{i}");
                        let v = format!("{i:0>width$}", width = VALUE_BYTES);
                        match api.put_timeout(node, &k, &v, Duration::from_secs(3)).await {
                            Ok(r) if r.status == 200 => {
                                acked.lock().unwrap().insert(k, v);
                            }
                            Ok(r) if r.status == 507 => {
                                assert_eq!(
                                    r.code(),
                                    Some("insufficient_storage"),
                                    "a 507 names the problem: {}",
                                    r.raw
                                );
                                refused.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Ok(r) => {
                                *other.lock().unwrap().entry(r.status).or_default() += 1;
                            }
                            Err(_) => *other.lock().unwrap().entry(0).or_default() += 1,
                        }
                    }
                })
            })
            .collect();
        Load {
            acked,
            refused,
            other,
            stop,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    async fn wait_acked(&self, at_least: usize, what: &str) {
        wait_until(WAIT, what, || async {
            (self.acked() >= at_least).then_some(())
        })
        .await;
    }

    /// Waits until `n` more writes than now are acknowledged.
    async fn wait_more(&self, n: usize, what: &str) {
        let before = self.acked();
        wait_until(Duration::from_secs(40), what, || async {
            (self.acked() > before + n).then_some(())
        })
        .await;
    }

    async fn stop(self) -> (BTreeMap<String, String>, BTreeMap<u16, u64>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("writer task");
        }
        let acked = self.acked.lock().unwrap().clone();
        let other = self.other.lock().unwrap().clone();
        (acked, other)
    }
}

/// Every acknowledged write reads back from `node` (retrying each read up to a deadline, so
/// a node catching up after space returned may take a moment).
async fn assert_all_read_back(api: &Api, node: u64, acked: &BTreeMap<String, String>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (k, v) in acked {
        loop {
            match api.get_value(node, k).await {
                Ok(Some(got)) if &got == v => break,
                got => {
                    assert!(
                        Instant::now() < deadline,
                        "{what}: node {node} lost acknowledged {k}: {:?}",
                        got.map(|g| g.map(|g| g.len()))
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Mounts one tmpfs of `bytes` per node at `<root>/node-N`.
fn mount_per_node(root: &std::path::Path, bytes: u64) -> Vec<Tmpfs> {
    (1..=3)
        .map(|id| Tmpfs::mount(&root.join(format!("node-{id}")), bytes).expect("mount tmpfs"))
        .collect()
}

/// A shard whose nodes each have their own 64 MiB tmpfs. Bind the result as `(_base, disks,
/// c)`: the cluster drops (nodes killed) before the mounts, and they before the temp dir.
async fn shard_on_own_disks(prefix: &str) -> (tempfile::TempDir, Vec<Tmpfs>, Cluster) {
    let base = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let root = base.path().join("root");
    let disks = mount_per_node(&root, 64 << 20);
    let c = Cluster::start_on(FLAGS_NO_RESERVE, Some(&root)).await;
    (base, disks, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_leader_refuses_writes_serves_reads_and_resumes_when_space_returns() {
    let (_base, disks, c) = shard_on_own_disks("unikv-full-").await;
    let leader = c.leader().await;
    let api = c.api();
    let pid = c.pid(leader);
    let st = c.status(leader).await.unwrap();
    assert_eq!(st.disk.ballast_bytes, 12 << 20, "the ballast is reserved");

    let load = Load::start(api.clone(), leader);
    load.wait_acked(200, "writes before the disk fills").await;
    let disk = &disks[(leader - 1) as usize];
    let filled = disk.fill_leaving(LEAVE).expect("fill the leader's disk");
    let acked_at_fill = load.acked();
    eprintln!(
        "[full] node {leader}'s disk filled ({filled} bytes of filler, {} free) with {acked_at_fill} writes acknowledged",
        disk.free_bytes()
    );

    // ENOSPC reaches RocksDB under the writers; new writes then get 507.
    wait_until(
        Duration::from_secs(30),
        "507 insufficient_storage",
        || async { (load.refused() > 0).then_some(()) },
    )
    .await;
    let st = c.status(leader).await.unwrap();
    eprintln!("[full] node {leader} disk: {:?}", st.disk);
    assert!(
        st.disk.full,
        "the leader says its disk is full: {:?}",
        st.disk
    );
    assert!(st.disk.enospc_seen > 0, "RocksDB met ENOSPC: {:?}", st.disk);
    assert_eq!(st.disk.ballast_bytes, 0, "the ballast was let go");
    assert_ne!(st.role, "Shutdown", "Raft keeps running");

    // The released ballast lets RocksDB resume (it polls every 5 s): the entries the
    // followers committed meanwhile get in, and nothing is held any more — still refusing.
    let st = wait_until(Duration::from_secs(30), "held work done", || async {
        let st = c.status(leader).await.ok()?;
        (st.disk.held == 0).then_some(st)
    })
    .await;
    assert!(st.disk.full, "{:?}", st.disk);
    // Reads go on, on the full leader too: everything acknowledged so far is there.
    let snapshot = load.acked.lock().unwrap().clone();
    let refused_before = load.refused();
    assert_all_read_back(&api, leader, &snapshot, "while the disk is full").await;
    // Still refusing while the disk stays full (not a passing hiccup).
    wait_until(Duration::from_secs(10), "more 507s", || async {
        (load.refused() > refused_before + 10).then_some(())
    })
    .await;
    let acked_while_full = load.acked() - snapshot.len();
    eprintln!(
        "[full] {} reads ok on the full leader; {} refused (507) so far; {acked_while_full} acknowledged since",
        snapshot.len(),
        load.refused()
    );

    // Space returns: writes are taken again by the same process.
    let t = Instant::now();
    disk.unfill().unwrap();
    load.wait_more(50, "writes after space returned").await;
    let st = c.status(leader).await.unwrap();
    eprintln!(
        "[full] writes resumed {:?} after the filler went; disk: {:?}",
        t.elapsed(),
        st.disk
    );
    assert_eq!(c.pid(leader), pid, "no restart");
    assert!(!st.disk.full && st.disk.recoveries >= 1, "{:?}", st.disk);
    assert_eq!(st.disk.ballast_bytes, 12 << 20, "the ballast is back");

    let (acked, other) = load.stop().await;
    eprintln!(
        "[full] {} acknowledged in all; other answers {other:?}",
        acked.len()
    );
    for id in c.node_ids() {
        assert_all_read_back(&api, id, &acked, "after space returned").await;
    }
    // And durably: after a crash of the node whose disk filled.
    c.kill9(leader);
    c.restart(leader).await;
    assert_all_read_back(&api, leader, &acked, "after restarting the node").await;
    drop(c);
    drop(disks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_full_disk_under_the_whole_shard_loses_nothing_and_resumes() {
    let base = tempfile::Builder::new()
        .prefix("unikv-full1-")
        .tempdir()
        .unwrap();
    let disk = Tmpfs::mount(&base.path().join("root"), 160 << 20).expect("mount tmpfs");
    let c = Cluster::start_on(FLAGS, Some(disk.path())).await;
    let leader = c.leader().await;
    let api = c.api();
    let pids: Vec<_> = c.node_ids().iter().map(|id| c.pid(*id)).collect();

    let load = Load::start(api.clone(), leader);
    load.wait_acked(200, "writes before the disk fills").await;
    disk.fill_leaving(LEAVE).expect("fill the shard's disk");
    wait_until(
        Duration::from_secs(40),
        "507 insufficient_storage",
        || async { (load.refused() > 0).then_some(()) },
    )
    .await;
    let snapshot = load.acked.lock().unwrap().clone();
    for id in c.node_ids() {
        let st = c.status(id).await.unwrap();
        eprintln!("[full1] node {id} ({}): disk {:?}", st.role, st.disk);
        assert_ne!(st.role, "Shutdown", "Raft keeps running on node {id}");
        if id == leader {
            // One file system under all three: the ballast the leader lets go at its ENOSPC
            // gives room back at once, so "full right now" races with that; what the 507
            // must come from is a full disk the leader met.
            assert!(
                st.disk.full || st.disk.enospc_seen > 0 || st.disk.recoveries > 0,
                "the refusing leader met the full disk: {:?}",
                st.disk
            );
        }
    }
    assert_all_read_back(&api, leader, &snapshot, "while the disk is full").await;
    eprintln!(
        "[full1] {} acknowledged reads ok on the leader while full; {} refused",
        snapshot.len(),
        load.refused()
    );

    let t = Instant::now();
    disk.unfill().unwrap();
    load.wait_more(50, "writes after space returned").await;
    eprintln!(
        "[full1] writes resumed {:?} after the filler went",
        t.elapsed()
    );
    let now: Vec<_> = c.node_ids().iter().map(|id| c.pid(*id)).collect();
    assert_eq!(now, pids, "no restart");
    let (acked, other) = load.stop().await;
    eprintln!(
        "[full1] {} acknowledged in all; other answers {other:?}",
        acked.len()
    );
    for id in c.node_ids() {
        assert_all_read_back(&api, id, &acked, "after space returned").await;
    }
    // A power-off-free crash of the whole shard: everything acknowledged survives.
    for id in c.node_ids() {
        c.kill9(id);
    }
    for id in c.node_ids() {
        c.restart(id).await;
    }
    c.wait_for_leader(WAIT).await;
    assert_all_read_back(&api, leader, &acked, "after restarting the shard").await;
    drop(c);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_follower_forwards_writes_and_reads_and_catches_up() {
    let (_base, disks, c) = shard_on_own_disks("unikv-fullf-").await;
    let leader = c.leader().await;
    let follower = c.followers(leader)[0];
    let api = c.api();
    let pid = c.pid(follower);

    // The writers go through the follower (it forwards writes to the leader).
    let load = Load::start(api.clone(), follower);
    load.wait_acked(200, "writes before the disk fills").await;
    let disk = &disks[(follower - 1) as usize];
    disk.fill_leaving(LEAVE).expect("fill the follower's disk");
    wait_until(
        Duration::from_secs(30),
        "the follower's disk full",
        || async {
            let st = c.status(follower).await.ok()?;
            st.disk.full.then_some(st)
        },
    )
    .await;
    // The shard goes on: writes through the full follower are still acknowledged.
    load.wait_more(100, "writes while the follower is full")
        .await;
    assert_eq!(load.refused(), 0, "a full follower does not refuse writes");
    // Its reads are served (by the leader, while its own applies may wait for space).
    let snapshot = load.acked.lock().unwrap().clone();
    assert_all_read_back(&api, follower, &snapshot, "while the follower is full").await;
    eprintln!(
        "[fullf] follower {follower} full: {} writes acknowledged through it, all read back from it",
        snapshot.len()
    );

    disk.unfill().unwrap();
    wait_until(
        Duration::from_secs(40),
        "the follower's disk has room again",
        || async {
            let st = c.status(follower).await.ok()?;
            (!st.disk.full).then_some(())
        },
    )
    .await;
    let (acked, _) = load.stop().await;
    assert_eq!(c.pid(follower), pid, "no restart");
    // It caught up: with the leader gone, it still has every acknowledged write.
    c.kill9(leader);
    c.wait_for_leader(WAIT).await;
    assert_all_read_back(&api, follower, &acked, "after the leader was killed").await;
    drop(c);
    drop(disks);
}
