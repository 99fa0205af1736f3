//! Chunk moves copy while the chunk serves, in bounded pieces (issue 16's tests 1 and 2 and
//! the bounded entries of its test 3, for range collections), with real processes started
//! through `scripts/run_unified.sh`:
//! - a chunk of a range collection moved while writers append to and put keys in it, with the
//!   copy paced (`--move_rate_mb`) so it lasts seconds: writes are acknowledged during the
//!   copy; afterwards every acknowledged write is on the target, every appended token exactly
//!   once, and the target's largest Raft entry is about a piece (`--move_piece_kb`), not the
//!   chunk;
//! - kill -9 of the source's leader while the chunk is frozen, and of either side's leader
//!   between the target's `In` and the source's `Done` (the source holds at its
//!   fault-injection points `chunk_frozen` and `chunk_taken`): the move completes on the
//!   target each time, and nothing acknowledged is lost or applied twice.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use unikv_tests::collection_calls::call;
use unikv_tests::slot_writers::{filler, SlotWriters};
use unikv_tests::unified::NODES_PER_SHARD;
use unikv_tests::{
    assert_no_failures, node_ref, put_all_in, unique, wait_until, wait_until_ok_every, Body,
    Method, Proc, Resp, Unified, ROUTER, UNIFIED_WAIT,
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

/// 16 KiB pieces at 0.5 MB/s: a chunk of ~1 MB takes ~2 s to copy.
const NODE_ARGS: &[&str] = &["--move_rate_mb", "0.5", "--move_piece_kb", "16"];

/// Two shards (with `failpoints`, if any) and the range collection `events` holding `keys`
/// pairs of 1000 bytes in its one chunk; the pairs, whose keys start with their tag.
async fn loaded(failpoints: Option<&str>, keys: usize) -> (Unified, Vec<(String, String)>) {
    let u = match failpoints {
        Some(f) => Unified::start_failpoints(2, NODE_ARGS, &[], f).await,
        None => Unified::start_shards(2, NODE_ARGS, &[]).await,
    };
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
    let filler = filler(&unique("chunk"), keys, 1000);
    assert_no_failures(
        "filler puts",
        &put_all_in(&api, &[ROUTER], "events", &filler, 16).await,
    );
    (u, filler)
}

/// The hash tag `filler` put at the start of its keys.
fn tag_of(filler: &[(String, String)]) -> String {
    let k = &filler[0].0;
    k[1..k.find('}').expect("a tagged key")].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_copied_while_written_keeps_every_write() {
    let (u, filler) = loaded(None, 1000).await;
    let (api, tag) = (u.api(), tag_of(&filler));
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
    // The source leader's `/rebalance/status` counts the move and its write pause: frozen for
    // the tail only, a small part of the move.
    let all: Vec<u64> = (1..=NODES_PER_SHARD).collect();
    let leader = u.wait_shard_leader(from, &all, UNIFIED_WAIT).await;
    let st = api
        .get_path(node_ref(from, leader), "/rebalance/status", &[])
        .await
        .expect("/rebalance/status");
    let counted = st.field("chunks").cloned().unwrap_or_default();
    println!("[figure] the source leader's chunk figures: {counted}");
    assert_eq!(counted["moved"], 1, "{st}");
    assert!(counted["moved_bytes"].as_u64() >= Some(1_000_000), "{st}");
    let frozen = counted["write_pause_ms"]["max"]
        .as_f64()
        .unwrap_or_else(|| panic!("no pause in {st}"));
    assert!(
        frozen < took.as_secs_f64() * 500.0,
        "frozen {frozen} ms of a {took:?} move: {st}"
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

/// How long a frozen chunk hand-off, and one its target took, hold at their fault-injection
/// points.
const HOLD_MS: u64 = 2500;
/// Most a move (copy, holds, a leader election) may take.
const MOVE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// Where the chunk `id` is listed: (shard, moving to) for each listing of it (two while the
/// target serves it and the source has not committed `Done`).
async fn placements(u: &Unified, id: &Value) -> Result<Vec<(u64, Option<u64>)>, String> {
    let r = u
        .api()
        .get_path(ROUTER, "/collections/events/chunks", &[])
        .await
        .map_err(|e| format!("{e:#}"))?;
    let listed = r
        .field("chunks")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("no chunks in {r}"))?;
    Ok(listed
        .iter()
        .filter(|c| c["id"] == *id)
        .map(|c| (c["shard"].as_u64().unwrap_or(0), c["moving_to"].as_u64()))
        .collect())
}

/// Waits until chunk `id` is listed once, on one shard, not moving; returns that shard.
async fn settled_on(u: &Unified, id: &Value) -> u64 {
    wait_until_ok_every(POLL, MOVE_TIMEOUT, "the chunk to settle", || async {
        match placements(u, id).await?.as_slice() {
            [(shard, None)] => Ok(*shard),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Starts the move of chunk `id` to `to` through the router; the task answers what the call
/// answered.
fn start_move(u: &Unified, id: &Value, to: u64) -> tokio::task::JoinHandle<anyhow::Result<Resp>> {
    let api = u.api();
    let path = format!("/collections/events/chunks/{id}/move?to={to}");
    tokio::spawn(async move {
        api.request(ROUTER, Method::POST, &path, &[], Body::Empty, MOVE_TIMEOUT)
            .await
    })
}

/// Moves chunk `id` to `to`, kills -9 the leader of shard `victim` (the source or `to`)
/// once `when(placements)` holds, restarts it once the move settled; returns where the chunk
/// ended and what the move call answered.
async fn kill_during_move(
    u: &Unified,
    id: &Value,
    to: u64,
    victim: u64,
    what: &str,
    when: impl Fn(&[(u64, Option<u64>)]) -> bool,
) -> (u64, String) {
    let all: Vec<u64> = (1..=NODES_PER_SHARD).collect();
    let call = start_move(u, id, to);
    wait_until_ok_every(POLL, MOVE_TIMEOUT, what, || async {
        let p = placements(u, id).await?;
        if when(&p) {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
    let leader = u.wait_shard_leader(victim, &all, UNIFIED_WAIT).await;
    u.kill9(Proc::Node(victim, leader)).await;
    let answered = match call.await {
        Ok(Ok(r)) => format!("{} {}", r.status, r.raw),
        Ok(Err(e)) => format!("error: {e:#}"),
        Err(e) => format!("task failed: {e}"),
    };
    let owner = settled_on(u, id).await;
    u.restart_node(victim, leader).await;
    u.wait_node_caught_up(victim, leader).await;
    println!("[figure] {what}: shard {victim}'s leader (node {leader}) killed; the move answered {answered}; the chunk is on shard {owner}");
    assert!(
        answered.starts_with("200 "),
        "{what}: a move that completed answers so, even across its leader's kill: {answered}"
    );
    (owner, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_move_completes_through_leader_kills() {
    let failpoints = format!("chunk_frozen=return({HOLD_MS});chunk_taken=return({HOLD_MS})");
    let (u, filler) = loaded(Some(&failpoints), 500).await;
    let (api, tag) = (u.api(), tag_of(&filler));
    let id = chunks(&u).await[0]["id"].clone();
    let writers = SlotWriters::start_in(&api, Some("events"), &tag, 2, 2);
    wait_until(Duration::from_secs(20), "writers under way", || async {
        (writers.acked_so_far() >= 10).then_some(())
    })
    .await;

    // The source's leader dies with the chunk frozen (`Out` committed): its next leader
    // resumes the hand-off from its descriptor and completes it.
    let from = settled_on(&u, &id).await;
    let to = 3 - from;
    let frozen = |p: &[(u64, Option<u64>)]| p.iter().any(|(_, m)| m.is_some());
    let (owner, _) = kill_during_move(&u, &id, to, from, "source frozen", frozen).await;
    assert_eq!(
        owner, to,
        "a frozen hand-off was not resumed by the source's next leader"
    );

    // The target's leader dies right after its `In` committed (it serves the chunk; the
    // source waits before `Done`): the `In` is on the target's quorum, so its next leader
    // serves all of it and the source finishes.
    let (from, to) = (to, from);
    let taken = |p: &[(u64, Option<u64>)]| p.len() == 2;
    let (owner, _) = kill_during_move(&u, &id, to, to, "target took it", taken).await;
    assert_eq!(
        owner, to,
        "a chunk whose target committed In did not end there"
    );

    // The source's leader dies in the same window: its next leader finds the chunk frozen,
    // learns from the target that the `In` committed, and commits `Done`.
    let (from, to) = (to, from);
    let (owner, _) =
        kill_during_move(&u, &id, to, from, "target took it, source killed", taken).await;
    assert_eq!(
        owner, to,
        "a chunk whose target committed In did not end there"
    );

    let written = writers.stop().await;
    let mut problems = written.problems(&api, ROUTER).await;
    for (k, v) in filler.iter().step_by(25) {
        let q = [("key", k.as_str()), ("collection", "events")];
        match api.get_path(ROUTER, "/get", &q).await {
            Ok(r) if r.str_field("value") == Some(v.as_str()) => {}
            other => problems.push(format!("filler {k}: read {other:?}")),
        }
    }
    println!(
        "[figure] {} writes acknowledged through three killed moves, {} unsure",
        written.acked.len(),
        written.unsure.len()
    );
    assert_no_failures("acknowledged writes after the kills", &problems);
    u.assert_running(&u.procs());
}
