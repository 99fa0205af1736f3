//! The source side of a slot move, run by the source shard's leader: copy the slot to the
//! target while it serves (`copy`) → `Out` (freeze) → send what was written since and the
//! dedup table to the target leader, which commits `In` and serves the slot from then on →
//! `Done` (delete here, forwarding note). Between the target's `In` and `Done` here, this
//! leader sends requests for the slot on to the target (`Node::handed`).
//! If the target refuses, or has not taken the slot within `--handoff_timeout_ms` (whether
//! gossip calls it reachable or not), the hand-off is settled with the target (`steps::settle`):
//! it refuses the `In` for good and `Abort` unfreezes the slot here, or it holds the slot
//! already and `Done` follows.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use unikv_storage::{CopyUnit, Outgoing, Piece};
use unikv_types::{rpc_kind, Epoch, KvError, ShardId, Slot};

use super::messages::MoveIn;
use super::rebalancer::{lock, Rebalancer};
use super::steps::{abort_unsent, done, next_epoch, settle, slot_bytes, start, whole_in, Settled};
use crate::copy::{Copied, CopyRun};
use crate::peer::{deliver, Delivery};

/// What one hand-off task does next: one slot (resumed after a leader change, or planned),
/// or several small slots planned for one target (`batch`).
enum Work {
    One {
        slot: Slot,
        handoff: Option<Outgoing>,
        to: ShardId,
    },
    Batch {
        slots: Vec<Slot>,
        to: ShardId,
    },
}

/// Starts a hand-off task for `slot` unless one runs already. `handoff` is the hand-off
/// already committed (resume) or `None` to start one towards `to`.
pub fn spawn(rb: Arc<Rebalancer>, slot: Slot, handoff: Option<Outgoing>, to: ShardId) {
    if !lock(&rb.running).insert(slot) {
        return;
    }
    start_worker(rb, Work::One { slot, handoff, to });
}

/// Starts a hand-off task for the next planned move; false when none is queued.
pub fn spawn_next(rb: &Arc<Rebalancer>) -> bool {
    match take_work(rb) {
        Some(work) => {
            start_worker(rb.clone(), work);
            true
        }
        None => false,
    }
}

fn start_worker(rb: Arc<Rebalancer>, work: Work) {
    rb.workers.fetch_add(1, Relaxed);
    tokio::spawn(async move {
        let mut work = work;
        loop {
            let ok = match work {
                Work::One { slot, handoff, to } => {
                    let res = run(&rb, slot, handoff, to).await;
                    if let Err(e) = &res {
                        tracing::warn!(shard = %rb.node.shard(), slot, to = %to, error = %e, "slot hand-off stopped");
                    }
                    lock(&rb.running).remove(&slot);
                    res.is_ok()
                }
                Work::Batch { slots, to } => {
                    let res = super::batch::run(&rb, &slots, to).await;
                    if let Err(e) = &res {
                        tracing::warn!(shard = %rb.node.shard(), slots = slots.len(), to = %to, error = %e, "slot hand-off stopped");
                    }
                    let mut running = lock(&rb.running);
                    for s in &slots {
                        running.remove(s);
                    }
                    res.is_ok()
                }
            };
            // Keep this worker busy with the next planned move instead of waiting for a tick.
            let next = if ok && rb.node.is_leader() {
                take_work(&rb)
            } else {
                None
            };
            match next {
                Some(w) => work = w,
                None => break,
            }
        }
        rb.workers.fetch_sub(1, Relaxed);
    });
}

/// Takes the next planned move off the queue and marks its slots running: the first queued
/// slot not running yet and, if it is small, further queued small slots for the same target,
/// up to `--move_batch_slots` slots and `--move_piece_kb` of data.
fn take_work(rb: &Rebalancer) -> Option<Work> {
    let node = &rb.node;
    let c = &node.config;
    let mut queue = lock(&rb.queue);
    let mut running = lock(&rb.running);
    let (slot, to) = loop {
        let (slot, to) = queue.pop_front()?;
        if running.insert(slot) {
            break (slot, to);
        }
    };
    let small = |bytes: u64| c.move_copy_min_kb > 0 && bytes <= c.move_copy_min_bytes();
    let mut bytes = slot_bytes(node, slot);
    if c.move_batch_slots <= 1 || !small(bytes) {
        return Some(Work::One {
            slot,
            handoff: None,
            to,
        });
    }
    let mut slots = vec![slot];
    queue.retain(|&(s, t)| {
        if slots.len() >= c.move_batch_slots || t != to || running.contains(&s) {
            return true;
        }
        let b = slot_bytes(node, s);
        if !small(b) || bytes + b > c.move_piece_bytes() {
            return true;
        }
        bytes += b;
        slots.push(s);
        running.insert(s);
        false
    });
    Some(if slots.len() == 1 {
        Work::One {
            slot,
            handoff: None,
            to,
        }
    } else {
        Work::Batch { slots, to }
    })
}

/// Moves `slot` to `to` and waits until the hand-off is done (or refused); used by
/// `/moveslot`, which answers only once the move finished.
pub async fn move_now(rb: &Rebalancer, slot: Slot, to: ShardId) -> Result<Epoch, KvError> {
    if !lock(&rb.running).insert(slot) {
        return Err(KvError::BadRequest {
            code: "slot_moving".into(),
            message: format!("slot {slot} is already moving"),
        });
    }
    let res = run(rb, slot, None, to).await;
    lock(&rb.running).remove(&slot);
    res
}

async fn run(
    rb: &Rebalancer,
    slot: Slot,
    handoff: Option<Outgoing>,
    to: ShardId,
) -> Result<Epoch, KvError> {
    let node = &rb.node;
    let (h, frozen_at, copy, tail) = match handoff {
        Some(h) => {
            // Resumed after a leader change: frozen already, so the copy is final as read.
            let mut copy = CopyRun::new(node, CopyUnit::Slot(slot), h.target, h.epoch);
            copy.freeze(Instant::now() + node.config.handoff_timeout());
            match copy.scan().await {
                Ok(Copied::AlreadyIn) => return finish(rb, slot, h, None, copy.bytes).await,
                Ok(Copied::Staged(_)) => (h, None, copy, Piece::default()),
                // An earlier leader may have sent the `In`: settled with the target.
                Err(e) => return settle_or(rb, slot, h, copy.bytes, e).await,
            }
        }
        None if slot_bytes(node, slot) <= node.config.move_copy_min_bytes()
            && node.config.move_copy_min_kb > 0 =>
        {
            // Small: frozen and sent whole in the `In` (a copy first would cost more commits
            // than the freeze it saves).
            let epoch = next_epoch(node, slot)?;
            // Paced before the freeze, never during it.
            node.throttle.pace(slot_bytes(node, slot)).await;
            let h = start(node, slot, to, epoch).await?;
            let frozen_at = Instant::now();
            return match node.store.export_slot(slot) {
                Ok(export) => hand_whole(rb, slot, h, frozen_at, export).await,
                Err(e) => Err(abort_unsent(rb, slot, h, KvError::Internal(e.to_string())).await),
            };
        }
        None => {
            // Copy while the slot serves, recording what is written meanwhile.
            let epoch = next_epoch(node, slot)?;
            let Some(writes) = node.store.start_copy(&CopyUnit::Slot(slot)) else {
                return Err(KvError::BadRequest {
                    code: "slot_moving".into(),
                    message: format!("slot {slot} is already being copied"),
                });
            };
            let mut copy = CopyRun::new(node, CopyUnit::Slot(slot), to, epoch);
            if copy.scan().await? == Copied::AlreadyIn {
                return Err(KvError::Internal(format!(
                    "slot {slot}: shard {to} holds a hand-off at epoch {epoch} that was never started"
                )));
            }
            copy.catch_up(&writes).await?;
            // Freeze, then send what was written since the last round.
            let h = start(node, slot, to, epoch).await?;
            let frozen_at = Instant::now();
            copy.freeze(frozen_at + node.config.handoff_timeout());
            crate::failpoints::hold("move_frozen").await;
            // A tail larger than a piece goes as pieces first; the `In` carries the last.
            let tail = match writes.take() {
                Ok(keys) => copy.send_keys(keys).await,
                Err(e) => Err(KvError::Internal(e.to_string())),
            };
            drop(writes);
            match tail {
                Ok(last) => (h, Some(frozen_at), copy, last),
                Err(e) => return Err(abort_unsent(rb, slot, h, e).await),
            }
        }
    };
    let (dedup, dedup_horizon_ms) = match node.store.export_dedup(slot) {
        Ok(d) => d,
        Err(e) if frozen_at.is_some() => {
            return Err(abort_unsent(rb, slot, h, KvError::Internal(e.to_string())).await)
        }
        Err(e) => {
            return settle_or(rb, slot, h, copy.bytes, KvError::Internal(e.to_string())).await
        }
    };
    let bytes = copy.bytes + tail.bytes;
    let (staged, deadline) = (copy.staged(), copy.deadline());
    drop(copy);
    let msg = MoveIn {
        slot,
        from: node.shard(),
        epoch: h.epoch,
        kv: tail.kv,
        dedup,
        dedup_horizon_ms,
        collections_kv: tail.collections_kv,
        staged: Some(staged),
        deleted: tail.deleted,
    };
    send_in(rb, h, frozen_at, msg, bytes, deadline).await
}

/// Hands off a small slot whole: its `In` carries every pair and the dedup table.
async fn hand_whole(
    rb: &Rebalancer,
    slot: Slot,
    h: Outgoing,
    frozen_at: Instant,
    export: unikv_storage::SlotExport,
) -> Result<Epoch, KvError> {
    let (msg, bytes) = whole_in(&rb.node, slot, h, export);
    let deadline = frozen_at + rb.node.config.handoff_timeout();
    send_in(rb, h, Some(frozen_at), msg, bytes, Some(deadline)).await
}

/// Sends the `In` of a frozen hand-off, then finishes it; if the target refuses it or does
/// not take it by `deadline`, settles it with the target (aborted, or finished if the target
/// holds it after all).
async fn send_in(
    rb: &Rebalancer,
    h: Outgoing,
    frozen_at: Option<Instant>,
    msg: MoveIn,
    bytes: u64,
    deadline: Option<Instant>,
) -> Result<Epoch, KvError> {
    let node = &rb.node;
    let slot = msg.slot;
    // The slot is frozen until the target's `In`: bounded from the freeze on, whatever
    // gossip says of the target.
    let give_up_at = deadline.unwrap_or_else(|| Instant::now() + node.config.handoff_timeout());
    let e = match deliver(node, h.target, rpc_kind::MOVE_IN, &msg, give_up_at).await? {
        Delivery::Taken(()) => return finish(rb, slot, h, frozen_at, bytes).await,
        Delivery::Refused { message, .. } => {
            tracing::warn!(shard = %node.shard(), slot, to = %h.target, %message, "target refused the slot; settling");
            KvError::BadRequest {
                code: "move_refused".into(),
                message,
            }
        }
        Delivery::TimedOut(e) => {
            tracing::warn!(shard = %node.shard(), slot, to = %h.target, error = %e,
                timeout_ms = node.config.handoff_timeout_ms, "hand-off not confirmed in time; settling");
            KvError::Unavailable {
                shard: h.target,
                reason: format!(
                    "slot {slot}: shard {} did not take the slot within {} ms ({e}); the move was aborted",
                    h.target, node.config.handoff_timeout_ms
                ),
            }
        }
    };
    settle_or(rb, slot, h, bytes, e).await
}

/// Settles a hand-off whose `In` may have reached the target: `Err(e)` once aborted, or
/// finished if the target holds the slot.
async fn settle_or(
    rb: &Rebalancer,
    slot: Slot,
    h: Outgoing,
    bytes: u64,
    e: KvError,
) -> Result<Epoch, KvError> {
    match settle(rb, slot, h).await? {
        Settled::Received => finish(rb, slot, h, None, bytes).await,
        Settled::Aborted => Err(e),
    }
}

/// The target holds the slot and serves it: send its requests there, then commit `Done`.
async fn finish(
    rb: &Rebalancer,
    slot: Slot,
    h: Outgoing,
    frozen_at: Option<Instant>,
    bytes: u64,
) -> Result<Epoch, KvError> {
    let node = &rb.node;
    node.handed.taken(slot, h.target, h.epoch);
    if let Some(t) = frozen_at {
        rb.record_pause(t.elapsed());
    }
    crate::failpoints::hold("move_taken").await;
    let res = done(rb, slot, h, bytes).await;
    node.handed.ended(slot);
    res?;
    tracing::debug!(shard = %node.shard(), slot, to = %h.target, epoch = %h.epoch, bytes, "slot handed off");
    Ok(h.epoch)
}
