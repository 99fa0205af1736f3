//! A hand-off that cannot finish is bounded: the target shard is alive in gossip (one member
//! still runs) but has lost its quorum, so it can never commit the slot. The source gives up
//! after `--handoff_timeout_ms` (a piece of the copy not taken in time; a frozen tail is bounded
//! the same way and then aborted), answers `/moveslot` with the reason, and serves the slot's
//! writes — before, it retried for as long as gossip called the target reachable, with the
//! slot frozen the whole time.

use std::time::{Duration, Instant};

use unikv_tests::{node_ref, Body, Method, Proc, Unified, ROUTER};
use unikv_types::key_slot;

const HANDOFF_TIMEOUT_MS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_off_that_cannot_finish_is_aborted_in_bounded_time() {
    let timeout = HANDOFF_TIMEOUT_MS.to_string();
    let u = Unified::start_shards(2, &["--handoff_timeout_ms", &timeout], &[]).await;
    let api = u.api();
    let map = u.agreed_slot_map().await;
    let key = (0..)
        .map(|i| format!("frozen-{i}"))
        .find(|k| map.key_owner(k) == Some(1))
        .unwrap();
    let r = api.put(ROUTER, &key, "before").await.expect("put");
    assert!(r.is_ok(), "put before: {r}");

    // Shard 2 keeps one live member (so gossip does not call it unreachable) but no quorum.
    u.kill9(Proc::Node(2, 2)).await;
    u.kill9(Proc::Node(2, 3)).await;

    let slot = key_slot(key.as_bytes()).to_string();
    let started = Instant::now();
    let r = api
        .request(
            node_ref(1, 1),
            Method::GET,
            "/moveslot",
            &[("slot", &slot), ("to", "2")],
            Body::Empty,
            Duration::from_secs(40),
        )
        .await
        .expect("/moveslot answers");
    let took = started.elapsed();
    println!("[figure] /moveslot to a shard without quorum answered in {took:?}: {r}");
    assert!(!r.is_ok(), "the move cannot succeed: {r}");
    assert_eq!(r.code(), Some("unavailable"), "{r}");
    assert!(
        took >= Duration::from_millis(HANDOFF_TIMEOUT_MS) && took < Duration::from_secs(15),
        "aborted after the hand-off timeout, took {took:?}"
    );

    // The slot is no longer frozen: its writes are served by shard 1 again.
    let r = api.put(ROUTER, &key, "after").await.expect("put");
    assert!(r.is_ok(), "put after the abort: {r}");
    assert_eq!(
        api.get_value(ROUTER, &key).await.unwrap().as_deref(),
        Some("after")
    );
    let cfg = u.config(node_ref(1, 1)).await.expect("/config");
    assert_eq!(
        cfg.slot_map().key_owner(&key),
        Some(1),
        "shard 1 kept the slot"
    );
}
