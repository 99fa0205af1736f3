//! Several small slots handed to one target together (source leader): each slot keeps its
//! own steps, epochs and records — `Out`, `In`, `Done`, exactly as `handoff` runs them for
//! one slot — but the steps of the batch are proposed at once (so they commit in the same
//! Raft appends and apply in the same group) and the `In`s travel in one message
//! (`MOVE_IN_MANY`). What a hand-off costs is then paid once per batch instead of once per
//! slot: the round trips, the applies, the descriptor rewrites.
//!
//! Nothing about safety changes: a slot is frozen from its own `Out`, the target serves it
//! from its own `In`, a slot whose `In` is in doubt is settled with the target on its own
//! (`steps::settle`), and a new leader resumes each frozen slot on its own (`handoff`).

use std::time::Instant;

use futures::future::join_all;
use unikv_storage::Outgoing;
use unikv_types::{rpc_kind, KvError, ShardId, Slot};

use super::messages::MoveIn;
use super::rebalancer::Rebalancer;
use super::steps::{abort_unsent, done, next_epoch, settle, slot_bytes, start, whole_in, Settled};
use crate::peer::{deliver, Delivery};

/// Hands `slots` (each small enough to go whole) to `to`. `Err` only when the whole batch
/// stopped (refused, timed out, or this node stopped leading; a new leader resumes the slots
/// left frozen); a slot refused alone is aborted alone.
pub async fn run(rb: &Rebalancer, slots: &[Slot], to: ShardId) -> Result<(), KvError> {
    let node = &rb.node;
    let mut planned = Vec::with_capacity(slots.len());
    for &slot in slots {
        match next_epoch(node, slot) {
            Ok(epoch) => planned.push((slot, epoch)),
            // A fence stops every slot alike.
            Err(e @ KvError::Refused { .. }) => return Err(e),
            Err(e) => tracing::debug!(slot, error = %e, "planned slot not moved"),
        }
    }
    // Paced before the freeze, never during it.
    let bytes: u64 = planned.iter().map(|&(s, _)| slot_bytes(node, s)).sum();
    rb.node.throttle.pace(bytes).await;
    let t0 = Instant::now();
    let outs = join_all(
        planned
            .iter()
            .map(|&(slot, epoch)| start(node, slot, to, epoch)),
    )
    .await;
    let frozen_at = Instant::now();
    let mut frozen = Vec::with_capacity(outs.len());
    let mut first_err = None;
    for ((slot, _), out) in planned.iter().zip(outs) {
        match out {
            Ok(h) => frozen.push((*slot, h)),
            Err(e) => {
                tracing::warn!(shard = %node.shard(), slot, to = %to, error = %e, "slot not frozen for its hand-off");
                first_err.get_or_insert(e);
            }
        }
    }
    if frozen.is_empty() {
        return first_err.map_or(Ok(()), Err);
    }
    let mut msgs: Vec<MoveIn> = Vec::with_capacity(frozen.len());
    let mut sent: Vec<(Slot, Outgoing, u64)> = Vec::with_capacity(frozen.len());
    for (slot, h) in frozen {
        match node.store.export_slot(slot) {
            Ok(export) => {
                let (msg, bytes) = whole_in(node, slot, h, export);
                msgs.push(msg);
                sent.push((slot, h, bytes));
            }
            Err(e) => {
                abort_unsent(rb, slot, h, KvError::Internal(e.to_string())).await;
            }
        }
    }
    if sent.is_empty() {
        return Ok(());
    }
    // Frozen from here: bounded by the hand-off timeout whatever gossip says of the target.
    let give_up_at = frozen_at + node.config.handoff_timeout();
    let delivered: Delivery<Vec<Result<(), KvError>>> =
        deliver(node, to, rpc_kind::MOVE_IN_MANY, &msgs, give_up_at).await?;
    drop(msgs);
    let taken_at = Instant::now();
    let n = sent.len();
    // Per slot: `None` if the target took it, else why its `In` is in doubt.
    let answers: Vec<Option<KvError>> = match delivered {
        Delivery::Taken(answers) if answers.len() == n => {
            answers.into_iter().map(Result::err).collect()
        }
        Delivery::Taken(answers) => {
            let e = KvError::Internal(format!(
                "shard {to} answered {} of {n} slots",
                answers.len()
            ));
            vec![Some(e); n]
        }
        Delivery::Refused { code, message } => {
            tracing::warn!(shard = %node.shard(), to = %to, %message, slots = n, "target refused the slots; settling");
            vec![Some(KvError::BadRequest { code, message }); n]
        }
        Delivery::TimedOut(e) => {
            tracing::warn!(shard = %node.shard(), to = %to, error = %e, slots = n,
                    timeout_ms = node.config.handoff_timeout_ms, "hand-off not confirmed in time; settling");
            let e = KvError::Unavailable {
                shard: to,
                reason: format!(
                    "shard {to} did not take {n} slots within {} ms ({e}); the moves were aborted",
                    node.config.handoff_timeout_ms
                ),
            };
            vec![Some(e); n]
        }
    };
    let (mut taken, mut doubt) = (Vec::with_capacity(n), Vec::new());
    for ((slot, h, bytes), answer) in sent.into_iter().zip(answers) {
        match answer {
            None => taken.push((slot, h, bytes)),
            Some(e) => doubt.push((slot, h, bytes, e)),
        }
    }
    let pause = frozen_at.elapsed();
    for &(slot, h, _) in &taken {
        node.handed.taken(slot, h.target, h.epoch);
        rb.record_pause(pause);
    }
    crate::failpoints::hold("move_taken").await;
    let mut res = finish_all(rb, taken).await;
    tracing::debug!(shard = %node.shard(), to = %to, slots = slots.len(), bytes,
        out_ms = (frozen_at - t0).as_millis() as u64,
        in_ms = (taken_at - frozen_at).as_millis() as u64,
        done_ms = taken_at.elapsed().as_millis() as u64, "batch hand-off");
    // Slots whose `In` is in doubt: each settled with the target (the target may have
    // committed some), then finished or left aborted.
    if !doubt.is_empty() {
        let settled = join_all(doubt.iter().map(|&(slot, h, _, _)| settle(rb, slot, h))).await;
        let mut received = Vec::new();
        for ((slot, h, bytes, e), s) in doubt.into_iter().zip(settled) {
            match s {
                Ok(Settled::Received) => received.push((slot, h, bytes)),
                Ok(Settled::Aborted) => {
                    tracing::warn!(shard = %node.shard(), slot, to = %to, error = %e, "slot not taken; aborted");
                    res = res.and(Err(e));
                }
                Err(lost) => res = res.and(Err(lost)),
            }
        }
        res = res.and(finish_all(rb, received).await);
    }
    res
}

/// The target serves these slots: commit each `Done` here (together). `Err` if this node
/// stopped leading (the next leader resumes the slots not done).
async fn finish_all(rb: &Rebalancer, taken: Vec<(Slot, Outgoing, u64)>) -> Result<(), KvError> {
    let node = &rb.node;
    let dones = join_all(
        taken
            .iter()
            .map(|&(slot, h, bytes)| done(rb, slot, h, bytes)),
    )
    .await;
    let mut res = Ok(());
    for ((slot, _, _), d) in taken.iter().zip(dones) {
        node.handed.ended(*slot);
        res = res.and(d);
    }
    tracing::debug!(shard = %node.shard(), slots = taken.len(), "slots handed off");
    res
}
