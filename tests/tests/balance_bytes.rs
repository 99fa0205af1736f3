//! Skewed sizes (issue 16's test 4), with real processes: a few hash tags of shard 1 hold
//! nearly all the data while slot counts are even. The balancers' one objective (bytes per
//! active shard within the bound `/rebalance/status` reports: `--balance_tolerance_pct` of
//! the mean, at least `--balance_min_kb`; slot counts as the tie-break) moves heavy slots out
//! and light ones back until every shard is within it — here that means exactly a third of
//! the heavy slots each — and every pair written is still read back through the router.

use std::collections::BTreeMap;
use std::time::Duration;

use unikv_tests::slot_writers::filler;
use unikv_tests::unified::NODES_PER_SHARD;
use unikv_tests::{
    assert_no_failures, node_ref, put_all, unique, wait_until_ok_every, Unified, ROUTER,
};
use unikv_types::key_slot;

/// A bound of 256 KiB (the mean is ~1.3 MB, whose 10 % is smaller).
const NODE_ARGS: &[&str] = &["--balance_min_kb", "256"];
/// Heavy slots (one hash tag each, all first owned by shard 1) and what each holds:
/// 40 × ~8 KB = ~320 KB, more than the bound.
const TAGS: usize = 12;
const KEYS_PER_TAG: usize = 40;
const VALUE_BYTES: usize = 8000;
const SHARDS: u64 = 3;
const BALANCE_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skewed_bytes_end_within_the_bound() {
    let u = Unified::start_with(NODE_ARGS, &[]).await;
    let api = u.api();
    let map = u.agreed_slot_map().await;
    let mut heavy: Vec<(String, u16)> = Vec::new();
    while heavy.len() < TAGS {
        let tag = unique("skew");
        let slot = key_slot(filler(&tag, 1, 1)[0].0.as_bytes());
        if map.owner(slot) == Some(1) && heavy.iter().all(|(_, s)| *s != slot) {
            heavy.push((tag, slot));
        }
    }
    let mut pairs = Vec::new();
    for (tag, _) in &heavy {
        pairs.extend(filler(tag, KEYS_PER_TAG, VALUE_BYTES));
    }
    assert_no_failures("skewed puts", &put_all(&api, &[ROUTER], &pairs, 16).await);
    let heavy_bytes = (TAGS * KEYS_PER_TAG * VALUE_BYTES) as u64;

    // Every shard's leader sees the cluster balanced: every active shard within the bound
    // (with the heavy data counted), nothing moving or planned here.
    let all: Vec<u64> = (1..=NODES_PER_SHARD).collect();
    let seen = wait_until_ok_every(
        Duration::from_millis(500),
        BALANCE_TIMEOUT,
        "bytes to be balanced",
        || async {
            let mut last = None;
            for shard in 1..=SHARDS {
                let l = u.observe_shard_leader(shard, &all).await?;
                let st = u
                    .rebalance_status(node_ref(shard, l))
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                let c = &st.cluster;
                let total: u64 = c.bytes.values().sum();
                let within = c.bytes.values().all(|b| {
                    (c.bound.mean_bytes.saturating_sub(c.bound.tolerance_bytes)
                        ..=c.bound.mean_bytes + c.bound.tolerance_bytes)
                        .contains(b)
                });
                if total < heavy_bytes
                    || !within
                    || c.phase != "balanced"
                    || st.copying + st.moving + st.staging + st.queued > 0
                {
                    return Err(format!(
                        "shard {shard}: phase {} ({}), bytes {:?}, bound {:?}, moving {} queued {}",
                        c.phase, c.reason, c.bytes, c.bound, st.moving, st.queued
                    ));
                }
                last = Some(st);
            }
            Ok(last.expect("three shards"))
        },
    )
    .await;
    println!(
        "[figure] balanced: bytes {:?} within {:?}; slot counts {:?}",
        seen.cluster.bytes, seen.cluster.bound, seen.cluster.slot_counts
    );

    // The heavy slots ended a third on each shard; the counts stayed near the even split
    // (heavy slots traded for light ones, not just given away).
    let map = u.agreed_slot_map().await;
    let mut per_shard: BTreeMap<u64, usize> = BTreeMap::new();
    for (_, slot) in &heavy {
        *per_shard
            .entry(map.owner(*slot).expect("owned"))
            .or_default() += 1;
    }
    assert_eq!(
        per_shard,
        (1..=SHARDS).map(|s| (s, TAGS / 3)).collect(),
        "heavy slots per shard"
    );
    for (shard, n) in &seen.cluster.slot_counts {
        assert!(
            n.abs_diff(16384 / 3) <= TAGS,
            "shard {shard} owns {n} slots: {:?}",
            seen.cluster.slot_counts
        );
    }
    let mut problems = Vec::new();
    for (k, v) in &pairs {
        match api.get_value(ROUTER, k).await {
            Ok(Some(got)) if &got == v => {}
            other => problems.push(format!("{k}: read {:?}", other.map(|o| o.map(|s| s.len())))),
        }
    }
    assert_no_failures("pairs read back after balancing", &problems);
    u.assert_running(&u.procs());
}
