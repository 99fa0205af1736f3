//! Power loss, the way it happens: a shard's three real `unikv-node` processes keep their data
//! (RocksDB, snapshots, TLS) on a test file system (`unikv_tests::lazyfs`) that holds every
//! byte not yet fsynced in memory. Under a writer, all three are killed at once and the
//! unsynced bytes are thrown away (a power cut of the whole shard); after a restart every
//! acknowledged write must be there.
//!
//! The negative control proves the test can fail: the same run with the nodes' test-only
//! `--unsafe_skip_fsync_for_tests` (acknowledge without fsync) must lose acknowledged writes.
//!
//! A third test reads from the old leader as soon as it is back: its own log may miss the tail
//! its followers had already made durable and committed (its fsync finishes after theirs), so
//! it must not resume leadership without an election (it did: the nemesis found the stale read).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use unikv_tests::lazyfs::LazyFs;
use unikv_tests::{unique, Cluster, WAIT};

/// Acknowledged writes the writer should collect before the cut.
const ACKED_BEFORE_CUT: usize = 300;

/// Puts `<prefix>-<i>` = `v<i>` to `leader` one at a time until `stop`, recording each
/// acknowledged (200: committed on a quorum) pair in `acked`.
fn spawn_writer(
    api: unikv_tests::Api,
    leader: u64,
    prefix: String,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let (k, v) = (format!("{prefix}-{i}"), format!("v{i}"));
            let r = api
                .put_timeout(leader, &k, &v, Duration::from_secs(2))
                .await;
            if r.is_ok_and(|r| r.status == 200) {
                acked.lock().unwrap().push((k, v));
            }
        }
    })
}

struct Outcome {
    acked: usize,
    lost: Vec<String>,
    dropped_bytes: u64,
}

/// Starts a shard on a fresh LazyFS, writes under it, cuts power, restarts, and reads back
/// every acknowledged write. With `skip_fsync`, the nodes are restarted (after forming, whose
/// state is durable) with fsync off before the writes.
async fn power_cut_run(skip_fsync: bool) -> Outcome {
    let base = tempfile::Builder::new()
        .prefix("unikv-powercut-")
        .tempdir()
        .expect("tempdir");
    let (backing, mnt) = (base.path().join("backing"), base.path().join("mnt"));
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    assert!(
        Path::new("/dev/fuse").exists(),
        "this test needs /dev/fuse (the fuse kernel module) and root"
    );
    let fs = LazyFs::mount(&backing, &mnt).expect("mount the test file system");
    // Declared after `fs`, so dropped (processes killed) before it unmounts.
    let mut c = Cluster::start_on(&[], Some(&mnt)).await;
    if skip_fsync {
        c.set_flag("--unsafe_skip_fsync_for_tests", "true");
        for id in c.node_ids() {
            c.kill9(id);
        }
        for id in c.node_ids() {
            c.restart(id).await;
        }
    }
    let leader = c.wait_for_leader(WAIT).await;

    // One writer per node address would also do; one sequential writer to the leader keeps
    // every acknowledgement unambiguous: a 200 means committed on a quorum.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(c.api(), leader, unique("pc"), acked.clone(), stop.clone());
    let started = Instant::now();
    while acked.lock().unwrap().len() < ACKED_BEFORE_CUT {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writer got only {} acknowledgements in 60 s",
            acked.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The cut: every node dies at once (the writer is still writing), then the bytes no
    // fsync covered vanish.
    for id in c.node_ids() {
        c.kill9(id);
    }
    stop.store(true, Ordering::SeqCst);
    let report = fs.power_cut();
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "[power-cut] skip_fsync={skip_fsync}: {} writes acknowledged; the cut dropped {} unsynced bytes in {} files",
        acked.len(),
        report.bytes,
        report.files
    );

    for id in c.node_ids() {
        c.restart(id).await;
    }
    let leader = c.wait_for_leader(WAIT).await;
    let api = c.api();
    let mut lost = Vec::new();
    for (k, v) in &acked {
        let got = unikv_tests::wait_until_ok(WAIT, "a read after the restart", || async {
            api.get_value(leader, k).await.map_err(|e| format!("{e:#}"))
        })
        .await;
        if got.as_deref() != Some(v.as_str()) {
            lost.push(format!("{k}: expected {v:?}, got {got:?}"));
        }
    }
    drop(c);
    drop(fs);
    Outcome {
        acked: acked.len(),
        lost,
        dropped_bytes: report.bytes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_a_power_cut() {
    let out = power_cut_run(false).await;
    assert!(out.acked >= ACKED_BEFORE_CUT);
    assert!(
        out.lost.is_empty(),
        "{} of {} acknowledged writes lost after the power cut: {:?}",
        out.lost.len(),
        out.acked,
        &out.lost[..out.lost.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_fsync_the_same_cut_loses_acknowledged_writes() {
    let out = power_cut_run(true).await;
    eprintln!(
        "[power-cut] negative control: {} of {} acknowledged writes lost ({} bytes dropped)",
        out.lost.len(),
        out.acked,
        out.dropped_bytes
    );
    assert!(
        !out.lost.is_empty(),
        "with fsync off the cut lost nothing: the test could not tell fsync from no fsync"
    );
}

/// Power cuts in a row under a writer; after each, every acknowledged write is read back from
/// the old leader first, as soon as it answers. Returns the reads that missed a write.
async fn cut_and_read_from_old_leader(cycles: usize) -> Vec<String> {
    let base = tempfile::Builder::new()
        .prefix("unikv-powercut-")
        .tempdir()
        .expect("tempdir");
    // One file system per node, so the leader's disk can be the slow one: its fsync then
    // finishes after the followers', and a write can be committed (and acknowledged) before
    // the leader's own copy is durable.
    let root = base.path().join("root");
    let fs: Vec<LazyFs> = (1..=3)
        .map(|id| {
            let backing = base.path().join(format!("backing-{id}"));
            let mnt = root.join(format!("node-{id}"));
            std::fs::create_dir_all(&backing).unwrap();
            std::fs::create_dir_all(&mnt).unwrap();
            LazyFs::mount(&backing, &mnt).expect("mount a node's file system")
        })
        .collect();
    let c = Cluster::start_on(&[], Some(&root)).await;
    let mut missed = Vec::new();
    let mut all_acked: Vec<(String, String)> = Vec::new();
    for cycle in 0..cycles {
        let leader = c.wait_for_leader(WAIT).await;
        for (i, f) in fs.iter().enumerate() {
            let slow = i as u64 + 1 == leader;
            f.set_fsync_delay(Duration::from_millis(if slow { 30 } else { 0 }));
        }
        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let prefix = unique(&format!("pc{cycle}w{w}"));
                spawn_writer(c.api(), leader, prefix, acked.clone(), stop.clone())
            })
            .collect();
        let started = Instant::now();
        while acked.lock().unwrap().len() < 200 && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for id in c.node_ids() {
            c.kill9(id);
        }
        stop.store(true, Ordering::SeqCst);
        for f in &fs {
            f.power_cut();
        }
        for w in writers {
            w.await.unwrap();
        }
        // The old leader and one follower back (a quorum), then read this cycle's writes,
        // newest first, from the old leader as soon as it answers; the third node after.
        let followers = c.followers(leader);
        c.restart(leader).await;
        c.restart(followers[0]).await;
        let api = c.api();
        let this_cycle: Vec<_> = acked.lock().unwrap().iter().rev().cloned().collect();
        for (k, v) in this_cycle.iter().chain(all_acked.iter()) {
            let got = unikv_tests::wait_until_ok(WAIT, "a read on the old leader", || async {
                api.get_value(leader, k).await.map_err(|e| format!("{e:#}"))
            })
            .await;
            if got.as_deref() != Some(v.as_str()) {
                missed.push(format!("cycle {cycle}: {k}: expected {v:?}, got {got:?}"));
            }
        }
        c.restart(followers[1]).await;
        all_acked.extend(acked.lock().unwrap().iter().cloned());
        eprintln!(
            "[power-cut] cycle {cycle}: {} writes acknowledged so far, {} reads on the old leader {leader} missed one",
            all_acked.len(),
            missed.len()
        );
    }
    drop(c);
    drop(fs);
    missed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_leader_serves_no_read_without_the_writes_it_lost() {
    let missed = cut_and_read_from_old_leader(5).await;
    assert!(
        missed.is_empty(),
        "{} reads on the old leader missed acknowledged writes: {:?}",
        missed.len(),
        &missed[..missed.len().min(10)]
    );
}
