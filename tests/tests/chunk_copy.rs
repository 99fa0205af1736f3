//! Chunk moves copy while the chunk serves, in bounded pieces (issue 16's test 1 and the
//! bounded entries of its test 3, for range collections), with real processes started through
//! `scripts/run_unified.sh`: a chunk of a range collection moved while writers append to and
//! put keys in it, with the copy paced (`--move_rate_mb`) so it lasts seconds. Writes are
//! acknowledged during the copy; afterwards every acknowledged write is on the target, every
//! appended token exactly once, and the target's largest Raft entry is about a piece
//! (`--move_piece_kb`), not the chunk.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use unikv_tests::collection_calls::call;
use unikv_tests::slot_writers::{filler, SlotWriters};
use unikv_tests::{
    assert_no_failures, node_ref, put_all_in, unique, wait_until, Method, Unified, ROUTER,
};

const APPENDERS: usize = 4;
const PUTTERS: usize = 4;

async fn chunks(u: &Unified) -> Vec<Value> {
    let r = call(
        &u.api(),
        ROUTER,
        Method::GET,
        "/collections/events/chunks",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{r}");
    r.field("chunks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| panic!("no chunks in {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_copied_while_written_keeps_every_write() {
    // 16 KiB pieces at 0.5 MB/s: the ~1 MB chunk takes ~2 s to copy.
    let u =
        Unified::start_shards(2, &["--move_rate_mb", "0.5", "--move_piece_kb", "16"], &[]).await;
    let api = u.api();
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/events",
        json!({"sharding": "range"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r}");
    let tag = unique("chunk");
    let filler = filler(&tag, 1000, 1000);
    assert_no_failures(
        "filler puts",
        &put_all_in(&api, &[ROUTER], "events", &filler, 16).await,
    );
    let listed = chunks(&u).await;
    assert_eq!(listed.len(), 1, "one chunk: {listed:?}");
    let (id, from) = (
        listed[0]["id"].clone(),
        listed[0]["shard"].as_u64().expect("shard"),
    );
    let to = 3 - from;

    let writers = SlotWriters::start_in(&api, Some("events"), &tag, APPENDERS, PUTTERS);
    wait_until(Duration::from_secs(20), "writers under way", || async {
        (writers.acked_so_far() >= 20).then_some(())
    })
    .await;
    let started = Instant::now();
    let r = call(
        &api,
        ROUTER,
        Method::POST,
        &format!("/collections/events/chunks/{id}/move?to={to}"),
        Value::Null,
    )
    .await;
    let ended = Instant::now();
    assert_eq!(r.status, 200, "the move: {r}");
    let after_move = writers.acked_so_far();
    wait_until(Duration::from_secs(20), "writes after the move", || async {
        (writers.acked_so_far() >= after_move + 20).then_some(())
    })
    .await;
    let written = writers.stop().await;
    let took = ended - started;
    let during = written
        .acked
        .iter()
        .filter(|(t, _, _)| *t >= started && *t <= ended)
        .count();
    println!(
        "[figure] chunk (~1 MB) moved in {took:?}; {during} writes acknowledged during the move, \
         {} in all, {} unsure",
        written.acked.len(),
        written.unsure.len()
    );
    assert!(
        took >= Duration::from_millis(1500),
        "the paced copy should take seconds, took {took:?}"
    );
    // A move frozen for its whole copy would acknowledge next to nothing while it runs.
    assert!(
        during >= 50,
        "only {during} writes were acknowledged during a {took:?} move: the chunk did not serve while copied"
    );
    let now = chunks(&u).await;
    let moved = now.iter().find(|c| c["id"] == id).expect("the chunk");
    assert_eq!(
        moved["shard"].as_u64(),
        Some(to),
        "the chunk moved: {moved}"
    );

    // Every acknowledged write is there (read from the new owner), appended tokens once each.
    let mut problems = written.problems(&api, node_ref(to, 1)).await;
    for (k, v) in filler.iter().step_by(50) {
        let q = [("key", k.as_str()), ("collection", "events")];
        match api.get_path(node_ref(to, 1), "/get", &q).await {
            Ok(r) if r.str_field("value") == Some(v.as_str()) => {}
            other => problems.push(format!("filler {k}: read {other:?}")),
        }
    }
    assert_no_failures("acknowledged writes after the move", &problems);

    // Bounded entries: the target took the chunk in pieces, never as one entry.
    for n in u.shard_nodes(to) {
        let r = api.get_path(n, "/raft/status", &[]).await.expect("status");
        let largest = r
            .field("largest_log_entry_bytes")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no largest_log_entry_bytes in {r}"));
        assert!(
            largest < 256 << 10,
            "node {n} of the target wrote a {largest}-byte entry for a ~1 MB chunk"
        );
    }
    u.assert_running(&u.procs());
}
