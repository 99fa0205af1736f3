//! kill -9 of either side's leader while a slot is copied, while it is frozen for its tail,
//! and right after the target committed `In` (it serves the slot; the source has not
//! committed `Done`) (issue 16's test 2), with real processes and writers hammering the slot
//! throughout. The move completes or aborts, never with both shards serving (every
//! acknowledged append is stored exactly once at the final owner), and nothing acknowledged
//! is lost.
//!
//! The copy is paced (`--move_rate_mb`) so it lasts seconds; the frozen tail and the wait
//! between the target's `In` and the source's `Done` last milliseconds, so the source holds
//! there for [`HOLD_MS`] through its fault-injection points (`FAILPOINTS`,
//! `unikv_node::failpoints`: `move_frozen`, `move_taken`) to be killed inside them.

use std::time::Duration;

use unikv_tests::slot_writers::{filler, SlotWriters};
use unikv_tests::unified::NODES_PER_SHARD;
use unikv_tests::{
    assert_no_failures, node_ref, put_all, unique, wait_until_ok_every, Body, Method, Proc,
    RebalanceStatus, Resp, Unified, ROUTER, UNIFIED_WAIT,
};
use unikv_types::key_slot;

/// 16 KiB pieces at 0.5 MB/s: the ~1.5 MB slot takes ~3 s to copy.
const NODE_ARGS: &[&str] = &["--move_rate_mb", "0.5", "--move_piece_kb", "16"];
/// How long a frozen hand-off, and one its target took, hold at their fault-injection points.
const HOLD_MS: u64 = 2500;
/// Most a move (copy, holds, a leader election) may take.
const MOVE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// A two-shard cluster holding ~1.5 MB in one slot, with writers on that slot running.
struct Setup {
    u: Unified,
    slot: u16,
    /// The shard that owns the slot at the start.
    from: u64,
    filler: Vec<(String, String)>,
    writers: SlotWriters,
}

async fn setup() -> Setup {
    let failpoints = format!("move_frozen=return({HOLD_MS});move_taken=return({HOLD_MS})");
    let u = Unified::start_failpoints(2, NODE_ARGS, &[], &failpoints).await;
    let api = u.api();
    // A slot of shard 1 (the lower half): moved to shard 2 it is that shard's lowest slot,
    // which its balancer, evening the slot counts again, never picks first (it gives back its
    // highest). A slot of shard 2 moved to shard 1 would be shard 1's highest and could be
    // moved back by the balancer before the test reads where the hand-off left it.
    let map = u.agreed_slot_map().await;
    let tag = loop {
        let tag = unique("kills");
        let probe = filler(&tag, 1, 1);
        if map.owner(key_slot(probe[0].0.as_bytes())) == Some(1) {
            break tag;
        }
    };
    let filler = filler(&tag, 1500, 1000);
    let slot = key_slot(filler[0].0.as_bytes());
    assert_no_failures("filler puts", &put_all(&api, &[ROUTER], &filler, 16).await);
    let from = u
        .agreed_slot_map()
        .await
        .key_owner(&filler[0].0)
        .expect("owned");
    let writers = SlotWriters::start(&api, &tag, 2, 2);
    wait_until_ok_every(POLL, UNIFIED_WAIT, "writes to be acknowledged", || async {
        match writers.acked_so_far() {
            0 => Err("none yet"),
            _ => Ok(()),
        }
    })
    .await;
    Setup {
        u,
        slot,
        from,
        filler,
        writers,
    }
}

fn all_nodes() -> Vec<u64> {
    (1..=NODES_PER_SHARD).collect()
}

/// Starts `/moveslot` of `slot` to `to` on node `from`/`leader`; the task answers what the
/// call answered (an error if the node died under it).
fn start_move(
    u: &Unified,
    slot: u16,
    (from, leader): (u64, u64),
    to: u64,
) -> tokio::task::JoinHandle<anyhow::Result<Resp>> {
    let api = u.api();
    tokio::spawn(async move {
        let (slot, to) = (slot.to_string(), to.to_string());
        api.request(
            node_ref(from, leader),
            Method::GET,
            "/moveslot",
            &[("slot", &slot), ("to", &to)],
            Body::Empty,
            MOVE_TIMEOUT,
        )
        .await
    })
}

/// Polls the leaders of `source` and `target` until `when(source's, target's status)` holds;
/// returns both leaders' node numbers.
async fn leaders_when(
    u: &Unified,
    (source, target): (u64, u64),
    what: &str,
    when: impl Fn(&RebalanceStatus, &RebalanceStatus) -> bool,
) -> (u64, u64) {
    let all = all_nodes();
    wait_until_ok_every(POLL, MOVE_TIMEOUT, what, || async {
        let s = u.observe_shard_leader(source, &all).await?;
        let t = u.observe_shard_leader(target, &all).await?;
        let err = |e: anyhow::Error| format!("{e:#}");
        let ts = u.rebalance_status(node_ref(target, t)).await.map_err(err)?;
        let ss = u.rebalance_status(node_ref(source, s)).await.map_err(err)?;
        if ss.leader && ts.leader && when(&ss, &ts) {
            Ok((s, t))
        } else {
            Err(format!("source {ss:?}; target {ts:?}"))
        }
    })
    .await
}

/// kill -9 of node `shard`/`node`, then a restart once `settle` is done (so the rest of the
/// shard handles the move alone meanwhile).
async fn kill_then_restart<F: std::future::Future>(
    u: &Unified,
    (shard, node): (u64, u64),
    settle: F,
) -> F::Output {
    u.kill9(Proc::Node(shard, node)).await;
    let out = settle.await;
    u.restart_node(shard, node).await;
    u.wait_node_caught_up(shard, node).await;
    out
}

/// Waits until no move of the two shards is in flight (asking their leaders only, so it
/// works with a node down).
async fn settled(u: &Unified) {
    let all = all_nodes();
    wait_until_ok_every(
        Duration::from_millis(100),
        MOVE_TIMEOUT,
        "moves to settle",
        || async {
            for shard in [1, 2] {
                let l = u.observe_shard_leader(shard, &all).await?;
                let st = u
                    .rebalance_status(node_ref(shard, l))
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                if st.copying + st.moving + st.staging > 0 {
                    return Err(format!("shard {shard}: {st:?}"));
                }
            }
            Ok(())
        },
    )
    .await;
}

/// Waits until no move is in flight; returns the slot's owner as every node agrees on it.
async fn settled_owner(u: &Unified, slot: u16) -> u64 {
    settled(u).await;
    u.agreed_slot_map()
        .await
        .owner(slot)
        .expect("the slot has an owner")
}

/// Moves `slot` from `from` to `to` and kills -9 the leader of `victim` (one of the two) in
/// the window between the target's `In` and the source's `Done` (the source holds there at
/// `move_taken`); returns what `/moveslot` answered once the moves settled.
async fn kill_after_in(u: &Unified, slot: u16, (from, to): (u64, u64), victim: u64) -> String {
    let leader = u.wait_shard_leader(from, &all_nodes(), UNIFIED_WAIT).await;
    let call = start_move(u, slot, (from, leader), to);
    let frozen = |src: &RebalanceStatus, dst: &RebalanceStatus| src.moving > 0 && dst.staging > 0;
    // Frozen at the source with nothing staged at the target any more: its `In` committed.
    let taken = |src: &RebalanceStatus, dst: &RebalanceStatus| src.moving > 0 && dst.staging == 0;
    leaders_when(u, (from, to), "the slot to freeze", frozen).await;
    let (src, dst) = leaders_when(u, (from, to), "In before Done", taken).await;
    let node = if victim == from { src } else { dst };
    kill_then_restart(u, (victim, node), async {
        let a = answer(call.await);
        settled(u).await;
        a
    })
    .await
}

/// What a move's `/moveslot` answered, for the figures.
fn answer(r: Result<anyhow::Result<Resp>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(r)) => format!("{} {}", r.status, r.raw),
        Ok(Err(e)) => format!("error: {e:#}"),
        Err(e) => format!("task failed: {e}"),
    }
}

/// Stops the writers and checks every write and the filler at the slot's final owner.
async fn check(s: Setup) {
    let owner = settled_owner(&s.u, s.slot).await;
    let written = s.writers.stop().await;
    let api = s.u.api();
    let mut problems = written.problems(&api, ROUTER).await;
    for (k, v) in s.filler.iter().step_by(50) {
        match api.get_value(ROUTER, k).await {
            Ok(Some(got)) if &got == v => {}
            other => problems.push(format!("filler {k}: read {other:?}")),
        }
    }
    println!(
        "[figure] slot {} ends on shard {owner}; {} writes acknowledged, {} unsure",
        s.slot,
        written.acked.len(),
        written.unsure.len()
    );
    assert_no_failures("acknowledged writes after the kills", &problems);
    s.u.assert_running(&s.u.procs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaders_killed_during_the_copy() {
    let s = setup().await;
    let (u, slot, from) = (&s.u, s.slot, s.from);
    let to = 3 - from;

    // The source's leader dies while copying: its copy was in its memory only, so the move
    // cannot complete; the slot stays with the source and the target drops what it staged.
    let leader = u.wait_shard_leader(from, &all_nodes(), UNIFIED_WAIT).await;
    let call = start_move(u, slot, (from, leader), to);
    let copying = |src: &RebalanceStatus, dst: &RebalanceStatus| {
        src.copying > 0 && src.moving == 0 && dst.staging > 0
    };
    let (src, _) = leaders_when(u, (from, to), "the copy to start", copying).await;
    assert_eq!(src, leader, "the source's leader changed before the kill");
    let dropped = kill_then_restart(u, (from, src), async {
        let a = answer(call.await);
        settled(u).await;
        a
    })
    .await;
    println!("[figure] source leader killed during the copy; /moveslot answered {dropped}");
    assert_eq!(
        settled_owner(u, slot).await,
        from,
        "a copy whose source died moved the slot"
    );

    // The target's leader dies while the next copy arrives: its pieces are committed in the
    // target's log, so the copy goes on with the new leader (or the move aborts).
    let leader = u.wait_shard_leader(from, &all_nodes(), UNIFIED_WAIT).await;
    let call = start_move(u, slot, (from, leader), to);
    let (_, dst) = leaders_when(u, (from, to), "the second copy to start", copying).await;
    let outcome = kill_then_restart(u, (to, dst), async { answer(call.await) }).await;
    println!("[figure] target leader killed during the copy; /moveslot answered {outcome}");
    check(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaders_killed_while_frozen_and_after_done() {
    let s = setup().await;
    let (u, slot, from) = (&s.u, s.slot, s.from);
    let to = 3 - from;
    let frozen = |src: &RebalanceStatus, _: &RebalanceStatus| src.moving > 0;

    // The source's leader dies with the slot frozen (`Out` committed): the next leader
    // resumes the hand-off from its descriptor and completes it.
    let leader = u.wait_shard_leader(from, &all_nodes(), UNIFIED_WAIT).await;
    let call = start_move(u, slot, (from, leader), to);
    let (src, _) = leaders_when(u, (from, to), "the slot to freeze", frozen).await;
    let answered = kill_then_restart(u, (from, src), async {
        let a = answer(call.await);
        settled(u).await;
        a
    })
    .await;
    println!("[figure] source leader killed while frozen; /moveslot answered {answered}");
    assert_eq!(
        settled_owner(u, slot).await,
        to,
        "a frozen hand-off was not resumed by the source's next leader"
    );

    // Back the other way; the target's leader dies with the slot frozen towards it.
    let (from, to) = (to, from);
    let leader = u.wait_shard_leader(from, &all_nodes(), UNIFIED_WAIT).await;
    let call = start_move(u, slot, (from, leader), to);
    let (_, dst) = leaders_when(u, (from, to), "the slot to freeze", frozen).await;
    let outcome = kill_then_restart(u, (to, dst), async { answer(call.await) }).await;
    println!("[figure] target leader killed while frozen; /moveslot answered {outcome}");

    // Once more, from wherever it is: the target's leader dies right after its `In`
    // committed (it serves the slot), while the source waits before `Done`. The `In` is on
    // the target's quorum, so its next leader serves all of it and the source finishes.
    let from = settled_owner(u, slot).await;
    let to = 3 - from;
    let answered = kill_after_in(u, slot, (from, to), to).await;
    println!("[figure] target leader killed after its In; /moveslot answered {answered}");
    assert_eq!(
        settled_owner(u, slot).await,
        to,
        "a slot whose target committed In did not end on the target"
    );

    // And back: the source's leader dies in the same window. Its next leader finds the slot
    // frozen, learns from the target that the `In` committed, and commits `Done`.
    let (from, to) = (to, from);
    let answered = kill_after_in(u, slot, (from, to), from).await;
    println!("[figure] source leader killed after the target's In; /moveslot answered {answered}");
    assert_eq!(
        settled_owner(u, slot).await,
        to,
        "a slot whose target committed In did not end on the target after a source kill"
    );
    check(s).await;
}
