//! A slow disk must not cost leadership: three real `unikv-node` processes with
//! `--worker_threads 1` (everything on one async thread), each node's data dir on its own
//! test file system; the leader's disk stops answering (reads, writes, fsyncs block) for
//! 400 ms — shorter than the election timeout (600-1200 ms) — five times under a writer.
//! Nobody else may be elected, and writes go on after each stall. A stall longer than the
//! election timeout is also measured and reported (it may legitimately change the leader).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use unikv_tests::lazyfs::LazyFs;
use unikv_tests::{unique, Cluster, WAIT};

/// Mounts one test file system per node at `<root>/node-N` (the cluster's data dirs).
fn mount_per_node(base: &std::path::Path, root: &std::path::Path) -> Vec<LazyFs> {
    (1..=3)
        .map(|id| {
            let backing = base.join(format!("backing-{id}"));
            let mnt = root.join(format!("node-{id}"));
            std::fs::create_dir_all(&backing).unwrap();
            std::fs::create_dir_all(&mnt).unwrap();
            LazyFs::mount(&backing, &mnt).expect("mount a node's file system")
        })
        .collect()
}

/// (leader, term) as every node reports it, if they agree.
async fn leader_and_term(c: &Cluster) -> Option<(u64, u64)> {
    let mut seen = None;
    for id in c.node_ids() {
        let s = c.status(id).await.ok()?;
        let here = (s.leader_id()?, s.term);
        if seen.is_some_and(|x| x != here) {
            return None;
        }
        seen = Some(here);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_stall_shorter_than_the_election_timeout_costs_no_leadership() {
    let base = tempfile::Builder::new()
        .prefix("unikv-stall-")
        .tempdir()
        .unwrap();
    let root = base.path().join("root");
    let fs = mount_per_node(base.path(), &root);
    let c = Cluster::start_on(&[("--worker_threads", "1")], Some(&root)).await;
    let (leader, term) =
        unikv_tests::wait_until(WAIT, "an agreed leader", || leader_and_term(&c)).await;

    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (api, acked, stop, prefix) = (c.api(), acked.clone(), stop.clone(), unique("stall"));
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let r = api
                    .put_timeout(
                        leader,
                        &format!("{prefix}-{i}"),
                        "v",
                        Duration::from_secs(3),
                    )
                    .await;
                if r.is_ok_and(|r| r.status == 200) {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let leader_fs = &fs[(leader - 1) as usize];
    for round in 1..=5 {
        let before = acked.load(Ordering::SeqCst);
        let t = Instant::now();
        leader_fs.stall(Duration::from_millis(400));
        // Writes resume after the stall (a poll with a bound, not a fixed sleep).
        unikv_tests::wait_until(Duration::from_secs(10), "writes after the stall", || {
            let acked = acked.clone();
            async move {
                (t.elapsed() > Duration::from_millis(600)
                    && acked.load(Ordering::SeqCst) > before + 20)
                    .then_some(())
            }
        })
        .await;
        let now = leader_and_term(&c).await;
        eprintln!(
            "[stall] round {round}: 400 ms stall of node {leader}'s disk; {} writes acknowledged since; leader/term {now:?}",
            acked.load(Ordering::SeqCst) - before
        );
        assert_eq!(
            now,
            Some((leader, term)),
            "a 400 ms disk stall on the leader cost its leadership"
        );
    }

    // For the record: a stall longer than the election timeout.
    let t = Instant::now();
    leader_fs.stall(Duration::from_millis(2500));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let after = unikv_tests::wait_until(WAIT, "an agreed leader after a long stall", || {
        leader_and_term(&c)
    })
    .await;
    eprintln!(
        "[stall] 2.5 s stall of the leader's disk: leader/term {after:?} (before: {:?}) after {:?}",
        (leader, term),
        t.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    drop(c);
    drop(fs);
}
