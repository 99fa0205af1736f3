//! Several small slots handed to one target together (source leader): each slot keeps its
//! own steps, epochs and records — `Out`, `In`, `Done`, `Activate`, exactly as `handoff` runs
//! them for one slot — but the steps of the batch are proposed at once (so they commit in the
//! same Raft appends and apply in the same group) and travel in one message each way
//! (`MOVE_IN_MANY`, `MOVE_ACTIVATE_MANY`). What a hand-off costs is then paid once per batch
//! instead of once per slot: the round trips, the applies, the descriptor rewrites.
//!
//! Nothing about safety changes: a slot is frozen from its own `Out`, the target serves it only
//! after its own `Done`, any slot of the batch may abort alone before its `Done`, and a new
//! leader resumes each frozen slot on its own (`handoff`).

use std::time::{Duration, Instant};

use futures::future::join_all;
use unikv_storage::{Command, MoveCommand, Outgoing};
use unikv_types::{rpc_kind, KvError, ShardId, Slot};

use super::messages::{ActivateRequest, MoveIn};
use super::rebalancer::{lock, Rebalancer};
use super::steps::{abort, abort_after, next_epoch, slot_bytes, start, whole_in};
use crate::peer::{call_shard, deliver, Delivery};

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
    rb.throttle.pace(bytes).await;
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
                abort_after(rb, slot, h, KvError::Internal(e.to_string())).await;
            }
        }
    }
    if sent.is_empty() {
        return Ok(());
    }
    // Frozen from here: bounded by the hand-off timeout whatever gossip says of the target.
    let give_up_at = frozen_at + node.config.handoff_timeout();
    let answers: Vec<Result<(), KvError>> = match deliver(
        node,
        to,
        rpc_kind::MOVE_IN_MANY,
        &msgs,
        give_up_at,
    )
    .await?
    {
        Delivery::Taken(answers) => answers,
        Delivery::Refused { code, message } => {
            tracing::warn!(shard = %node.shard(), to = %to, %message, slots = sent.len(), "target refused the slots; aborting");
            abort_all(rb, &sent).await?;
            return Err(KvError::BadRequest { code, message });
        }
        Delivery::TimedOut(e) => {
            tracing::warn!(shard = %node.shard(), to = %to, error = %e, slots = sent.len(),
                    timeout_ms = node.config.handoff_timeout_ms, "hand-off not confirmed in time; aborting");
            abort_all(rb, &sent).await?;
            return Err(KvError::Unavailable {
                shard: to,
                reason: format!(
                    "shard {to} did not take {} slots within {} ms ({e}); the moves were aborted",
                    sent.len(),
                    node.config.handoff_timeout_ms
                ),
            });
        }
    };
    drop(msgs);
    let taken_at = Instant::now();
    if answers.len() != sent.len() {
        abort_all(rb, &sent).await?;
        return Err(KvError::Internal(format!(
            "shard {to} answered {} of {} slots",
            answers.len(),
            sent.len()
        )));
    }
    // A slot the target did not take (refused, or its commit is in doubt) is aborted alone:
    // the target serves nothing before this shard's `Done`, and drops what it kept once it
    // learns of the abort.
    let mut taken = Vec::with_capacity(sent.len());
    for ((slot, h, bytes), answer) in sent.into_iter().zip(answers) {
        match answer {
            Ok(()) => taken.push((slot, h, bytes)),
            Err(e) => {
                tracing::warn!(shard = %node.shard(), slot, to = %to, error = %e, "target did not take the slot; aborting it");
                abort(rb, slot, h.epoch).await?;
            }
        }
    }
    let res = finish_all(rb, to, taken, frozen_at).await;
    tracing::debug!(shard = %node.shard(), to = %to, slots = slots.len(), bytes,
        out_ms = (frozen_at - t0).as_millis() as u64,
        in_ms = (taken_at - frozen_at).as_millis() as u64,
        done_activate_ms = taken_at.elapsed().as_millis() as u64, "batch hand-off");
    res
}

/// The target holds these slots: commit each `Done` here (together), then nudge the target
/// to serve them.
async fn finish_all(
    rb: &Rebalancer,
    to: ShardId,
    taken: Vec<(Slot, Outgoing, u64)>,
    frozen_at: Instant,
) -> Result<(), KvError> {
    let node = &rb.node;
    let dones = join_all(taken.iter().map(|&(slot, h, _)| {
        node.propose(Command::Move(MoveCommand::Done {
            slot,
            epoch: h.epoch,
        }))
    }))
    .await;
    let mut nudges = Vec::with_capacity(taken.len());
    let mut lost = None;
    for ((slot, h, bytes), done) in taken.into_iter().zip(dones) {
        match done {
            Ok(_) => {
                rb.record(bytes);
                lock(&rb.settling).push((slot, h.target, Instant::now()));
                nudges.push(ActivateRequest {
                    slot,
                    epoch: h.epoch,
                });
            }
            // This node stopped leading: the next leader resumes the slot (still frozen).
            Err(e) => {
                lost.get_or_insert(e);
            }
        }
    }
    tracing::debug!(shard = %node.shard(), to = %to, slots = nudges.len(), "slots handed off");
    if !nudges.is_empty() {
        // Best effort: the target also asks on its own about each slot if this is lost.
        let activated = call_shard::<_, Vec<Result<(), KvError>>>(
            node,
            to,
            rpc_kind::MOVE_ACTIVATE_MANY,
            &nudges,
            Duration::from_secs(2),
        )
        .await;
        if let Ok(answers) = activated {
            let pause = frozen_at.elapsed();
            for _ in answers.iter().filter(|a| a.is_ok()) {
                rb.record_pause(pause);
            }
        }
    }
    lost.map_or(Ok(()), Err)
}

/// Unfreezes every slot of a batch the target did not take.
async fn abort_all(rb: &Rebalancer, sent: &[(Slot, Outgoing, u64)]) -> Result<(), KvError> {
    let aborts = join_all(sent.iter().map(|&(slot, h, _)| abort(rb, slot, h.epoch))).await;
    aborts.into_iter().collect()
}
