//! A flipped byte in a RocksDB file, on three real `unikv-node` processes: a follower's data
//! is written to SST files, the follower is stopped, bytes inside stored values of its SSTs are
//! flipped, and it is started again. Reading through it must hit RocksDB's block checksums:
//! the node answers 503 naming the corruption (never a wrong value), `/raft/status` says
//! `corruption`, and the shard keeps taking writes without it. Then the documented rebuild
//! (README, "Rebuilding a replica") — leave, wipe, start empty, join — brings it back with every
//! value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use unikv_tests::{wait_until, wait_until_ok, Cluster, WAIT};

const KEYS: usize = 3000;

fn value(i: usize) -> String {
    // Distinct, incompressible-looking values, so they sit in the SSTs byte for byte.
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut s = format!("val-{i:05}-");
    while s.len() < 600 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{x:016x}"));
    }
    s
}

fn sst_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            sst_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "sst") {
            out.push(p);
        }
    }
}

/// Flips one byte inside every stored value found in the node's SST files (at most `max`);
/// returns how many were flipped.
fn corrupt_values(node_dir: &Path, max: usize) -> usize {
    let mut files = Vec::new();
    sst_files(node_dir, &mut files);
    let mut flipped = 0;
    for f in files {
        let mut bytes = std::fs::read(&f).unwrap();
        let mut at = 0;
        let mut changed = false;
        while let Some(pos) = find(&bytes[at..], b"val-") {
            let p = at + pos + 20;
            if p < bytes.len() {
                bytes[p] ^= 0x55;
                changed = true;
                flipped += 1;
            }
            // Every 50th value or so: one damaged block is enough for a read to notice.
            at = at + pos + 30_000;
            if flipped >= max || at >= bytes.len() {
                break;
            }
        }
        if changed {
            std::fs::write(&f, &bytes).unwrap();
        }
        if flipped >= max {
            break;
        }
    }
    flipped
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flipped_byte_is_detected_reported_and_rebuilt_from_peers() {
    // Small memtables, so the values reach SST files.
    let mut c = Cluster::start_with(&[("--memtable_mb", "4")]).await;
    let api = c.api();
    let leader = c.leader().await;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("corrupt-{i:05}")).collect();
    for chunk in keys.chunks(100).enumerate() {
        let (n, chunk) = chunk;
        let puts = chunk.iter().enumerate().map(|(j, k)| {
            let api = api.clone();
            let v = value(n * 100 + j);
            async move { api.put(leader, k, &v).await }
        });
        for r in futures::future::join_all(puts).await {
            assert_eq!(r.expect("put").status, 200);
        }
    }
    let victim = c.followers(leader)[0];
    let dir = c.root().join(format!("node-{victim}"));
    // Applied everywhere; then a restart replays the WAL into SST files (RocksDB flushes
    // recovered memtables at open), so every value is in an SST.
    c.assert_value_everywhere(&keys[KEYS - 1], Some(&value(KEYS - 1)))
        .await;
    c.kill9(victim);
    c.restart(victim).await;
    c.assert_value_everywhere(&keys[0], Some(&value(0))).await;
    c.kill9(victim);
    let flipped = corrupt_values(&dir, 40);
    assert!(
        flipped > 0,
        "no stored value found in {}'s SST files",
        dir.display()
    );
    eprintln!("[corruption] flipped {flipped} bytes in node {victim}'s SST files");
    c.restart(victim).await;

    // Reads through the damaged node: a 503 naming the corruption, never a wrong value.
    let mut refused = 0;
    for (i, k) in keys.iter().enumerate() {
        let r = api.get(victim, k).await.expect("get");
        match r.status {
            200 => assert_eq!(
                r.str_field("value"),
                Some(value(i).as_str()),
                "node {victim} answered a wrong value for {k}"
            ),
            503 => {
                assert!(r.raw.contains("corrupt"), "503 without the reason: {r}");
                refused += 1;
                if refused > 5 {
                    break;
                }
            }
            _ => panic!("unexpected answer from the damaged node: {r}"),
        }
    }
    assert!(refused > 0, "no read noticed the {flipped} flipped bytes");
    let status = c.status(victim).await.expect("status of the damaged node");
    let corruption = status.corruption.clone();
    assert!(
        corruption.is_some(),
        "/raft/status of node {victim} does not say corruption: {}",
        status.summary()
    );
    eprintln!("[corruption] node {victim} reports {corruption:?}");
    // The others carry on.
    wait_until_ok(WAIT, "a write without the damaged node", || async {
        let r = api
            .put(leader, "corrupt-after", "x")
            .await
            .map_err(|e| e.to_string())?;
        (r.status == 200).then_some(()).ok_or(r.to_string())
    })
    .await;

    // Rebuild: leave, wipe, start empty (never bootstrapping), join.
    let leader = c.leader().await;
    let victim_s = victim.to_string();
    let r = api
        .request(
            leader,
            unikv_tests::Method::POST,
            "/raft/leave",
            &[("nodeid", &victim_s)],
            unikv_tests::Body::Empty,
            Duration::from_secs(10),
        )
        .await
        .expect("leave");
    assert_eq!(r.status, 200, "{r}");
    c.kill9(victim);
    std::fs::remove_dir_all(&dir).expect("wipe the damaged data dir");
    c.set_flag("--bootstrap", "false");
    c.restart(victim).await;
    let addr = c.raft_addr(victim);
    wait_until_ok(WAIT, "the rebuilt node to join", || async {
        let r = api
            .join(leader, &victim_s, &addr)
            .await
            .map_err(|e| e.to_string())?;
        (r.status == 200).then_some(()).ok_or(r.to_string())
    })
    .await;
    c.wait_converged(WAIT).await;
    for (i, k) in keys.iter().enumerate().step_by(7) {
        let v = wait_until(WAIT, "a read on the rebuilt node", || async {
            api.get_value(victim, k).await.ok()
        })
        .await;
        assert_eq!(
            v.as_deref(),
            Some(value(i).as_str()),
            "{k} on the rebuilt node"
        );
    }
    let status = c.status(victim).await.expect("status");
    assert_eq!(
        status.corruption, None,
        "the rebuilt node still reports corruption"
    );
}
