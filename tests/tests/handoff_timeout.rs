//! A hand-off to a shard that cannot commit is bounded or settled, never served twice: the
//! target shard is alive in gossip (one member still runs) but has lost its quorum.
//! - A slot that is copied first (more than `--move_copy_min_kb`): its pieces are not taken
//!   within `--handoff_timeout_ms`, so no `In` is ever sent; the source aborts alone, answers
//!   `/moveslot` with the reason and serves the slot's writes again in bounded time.
//! - A small slot sent whole: its `In` went out, so the target may hold it; the source cannot
//!   abort alone (the target serves a slot from its `In`), the slot stays frozen while the
//!   target cannot answer, and once the target's quorum is back the hand-off settles —
//!   finished (`already_received`) or aborted after the target's `Refuse` — with one owner
//!   that has every acknowledged write.

use std::time::{Duration, Instant};

use unikv_tests::slot_writers::filler;
use unikv_tests::{
    assert_no_failures, node_ref, put_all, wait_until_ok, Body, Method, Proc, Unified, ROUTER,
};
use unikv_types::key_slot;

const HANDOFF_TIMEOUT_MS: u64 = 3_000;

fn move_slot(
    u: &Unified,
    slot: u16,
    to: u64,
) -> tokio::task::JoinHandle<anyhow::Result<unikv_tests::Resp>> {
    let api = u.api();
    tokio::spawn(async move {
        let (slot, to) = (slot.to_string(), to.to_string());
        api.request(
            node_ref(1, 1),
            Method::GET,
            "/moveslot",
            &[("slot", &slot), ("to", &to)],
            Body::Empty,
            Duration::from_secs(60),
        )
        .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_off_that_cannot_finish_is_aborted_or_settled() {
    let timeout = HANDOFF_TIMEOUT_MS.to_string();
    let u = Unified::start_shards(2, &["--handoff_timeout_ms", &timeout], &[]).await;
    let api = u.api();
    let map = u.agreed_slot_map().await;
    // A slot of shard 1 holding ~96 KB (copied first), and a small one (sent whole).
    let tag = (0..)
        .map(|i| format!("copied-{i}"))
        .find(|t| map.key_owner(&filler(t, 1, 1)[0].0) == Some(1))
        .unwrap();
    let big = filler(&tag, 12, 8000);
    assert_no_failures("puts", &put_all(&api, &[ROUTER], &big, 4).await);
    let big_slot = key_slot(big[0].0.as_bytes());
    let key = (0..)
        .map(|i| format!("frozen-{i}"))
        .find(|k| map.key_owner(k) == Some(1) && key_slot(k.as_bytes()) != big_slot)
        .unwrap();
    let r = api.put(ROUTER, &key, "before").await.expect("put");
    assert!(r.is_ok(), "put before: {r}");

    // Shard 2 keeps one live member (so gossip does not call it unreachable) but no quorum.
    u.kill9(Proc::Node(2, 2)).await;
    u.kill9(Proc::Node(2, 3)).await;

    // The copied slot: aborted alone once a piece is not taken in time.
    let started = Instant::now();
    let r = move_slot(&u, big_slot, 2)
        .await
        .unwrap()
        .expect("/moveslot answers");
    let took = started.elapsed();
    println!(
        "[figure] /moveslot of a copied slot to a shard without quorum answered in {took:?}: {r}"
    );
    assert!(!r.is_ok(), "the move cannot succeed: {r}");
    assert_eq!(r.code(), Some("unavailable"), "{r}");
    assert!(
        took >= Duration::from_millis(HANDOFF_TIMEOUT_MS) && took < Duration::from_secs(15),
        "aborted after the hand-off timeout, took {took:?}"
    );
    let r = api.put(ROUTER, &big[0].0, "after").await.expect("put");
    assert!(r.is_ok(), "put after the abort: {r}");

    // The small slot: its `In` is sent, so it stays frozen while the target cannot answer.
    let slot = key_slot(key.as_bytes());
    let call = move_slot(&u, slot, 2);
    tokio::time::sleep(Duration::from_millis(2 * HANDOFF_TIMEOUT_MS)).await;
    assert!(!call.is_finished(), "the hand-off ended without the target");
    let r = api.put(ROUTER, &key, "during").await.expect("put");
    println!("[figure] put to the slot in doubt: {r}");
    assert!(
        !r.is_ok(),
        "a slot whose In may be at the target took a write: {r}"
    );

    // The target's quorum returns: the hand-off settles, with one owner.
    u.restart_node(2, 2).await;
    u.restart_node(2, 3).await;
    let r = call.await.unwrap().expect("/moveslot answers");
    println!("[figure] /moveslot once the target's quorum is back: {r}");
    let owner = if r.is_ok() { 2 } else { 1 };
    let r = api.put(ROUTER, &key, "after").await.expect("put");
    assert!(r.is_ok(), "put after the hand-off settled: {r}");
    assert_eq!(
        api.get_value(ROUTER, &key).await.unwrap().as_deref(),
        Some("after")
    );
    let what = format!("every node's map to give the slot to shard {owner} ({r})");
    wait_until_ok(Duration::from_secs(20), &what, || async {
        for node in [node_ref(1, 1), node_ref(1, 2), node_ref(2, 1)] {
            let cfg = u.config(node).await.map_err(|e| format!("{e:#}"))?;
            let seen = cfg.slot_map().key_owner(&key);
            if seen != Some(owner) {
                return Err(format!("node {node} says {seen:?}"));
            }
        }
        Ok(())
    })
    .await;
    for (k, v) in &big[1..] {
        assert_eq!(api.get_value(ROUTER, k).await.unwrap().as_ref(), Some(v));
    }
}
