//! The source side of a slot move, run by the source shard's leader:
//! `Out` (freeze) → send the slot's data and dedup table to the target leader, which commits
//! `In` → `Done` (delete here, forwarding note) → nudge the target to `Activate`.
//! If the target refuses, or has not taken the slot within `--handoff_timeout_ms` (whether
//! gossip calls it reachable or not), `Abort` unfreezes the slot here instead.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use unikv_storage::{Command, MoveCommand, Outgoing};
use unikv_types::{rpc_kind, Epoch, KvError, ShardId, Slot};

use super::messages::{ActivateRequest, MoveIn};
use super::rebalancer::{lock, Rebalancer};
use crate::peer::{call_shard, deliver, Delivery};
use crate::service::Node;

/// Starts a hand-off task for `slot` unless one runs already. `handoff` is the hand-off
/// already committed (resume) or `None` to start one towards `to`.
pub fn spawn(rb: Arc<Rebalancer>, slot: Slot, handoff: Option<Outgoing>, to: ShardId) {
    if !lock(&rb.running).insert(slot) {
        return;
    }
    tokio::spawn(async move {
        let node = &rb.node;
        let (mut slot, mut handoff, mut to) = (slot, handoff, to);
        loop {
            let res = run(&rb, slot, handoff, to).await;
            if let Err(e) = &res {
                tracing::warn!(shard = %node.shard(), slot, to = %to, error = %e, "slot hand-off stopped");
            }
            lock(&rb.running).remove(&slot);
            // Keep this worker busy with the next planned move instead of waiting for a tick.
            if res.is_err() || !node.is_leader() {
                return;
            }
            let next = lock(&rb.queue).pop_front();
            let Some((s, t)) = next else { return };
            if !lock(&rb.running).insert(s) {
                return;
            }
            (slot, handoff, to) = (s, None, t);
        }
    });
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
    let (h, frozen_at) = match handoff {
        Some(h) => (h, None),
        None => {
            // Paced before the freeze, never during it.
            let waited = rb.throttle.pace(slot_bytes(node, slot)).await;
            if !waited.is_zero() {
                tracing::debug!(shard = %node.shard(), slot, waited_ms = waited.as_millis() as u64, "move paced by --move_rate_mb");
            }
            (start(node, slot, to).await?, Some(Instant::now()))
        }
    };
    let export = node
        .store
        .export_slot(slot)
        .map_err(|e| KvError::Internal(e.to_string()))?;
    let bytes: u64 = export
        .kv
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .chain(
            export
                .collections_kv
                .iter()
                .map(|(_, k, v)| (k.len() + v.len()) as u64),
        )
        .sum();
    let msg = MoveIn {
        slot,
        from: node.shard(),
        epoch: h.epoch,
        kv: export.kv,
        dedup: export.dedup,
        dedup_horizon_ms: export.dedup_horizon_ms,
        collections_kv: export.collections_kv,
    };
    // The slot is frozen from here until `Done`: bounded, whatever gossip says of the target.
    let give_up_at = Instant::now() + node.config.handoff_timeout();
    match deliver(node, h.target, rpc_kind::MOVE_IN, &msg, give_up_at).await? {
        Delivery::Taken => {}
        Delivery::Refused(message) => {
            tracing::warn!(shard = %node.shard(), slot, to = %h.target, %message, "target refused the slot; aborting");
            abort(rb, slot, h.epoch).await?;
            return Err(KvError::BadRequest {
                code: "move_refused".into(),
                message,
            });
        }
        Delivery::TimedOut(e) => {
            // A copy the target did store is dropped once it learns of this abort.
            tracing::warn!(shard = %node.shard(), slot, to = %h.target, error = %e,
                timeout_ms = node.config.handoff_timeout_ms, "hand-off not confirmed in time; aborting");
            abort(rb, slot, h.epoch).await?;
            return Err(KvError::Unavailable {
                shard: h.target,
                reason: format!(
                    "slot {slot}: shard {} did not take the slot within {} ms ({e}); the move was aborted",
                    h.target, node.config.handoff_timeout_ms
                ),
            });
        }
    }
    node.propose(Command::Move(MoveCommand::Done {
        slot,
        epoch: h.epoch,
    }))
    .await?;
    rb.record(bytes);
    lock(&rb.settling).push((slot, h.target, Instant::now()));
    tracing::debug!(shard = %node.shard(), slot, to = %h.target, epoch = %h.epoch, bytes, "slot handed off");
    // Best effort: the target also asks on its own if this nudge is lost.
    let nudge = ActivateRequest {
        slot,
        epoch: h.epoch,
    };
    let activated = call_shard::<_, ()>(
        node,
        h.target,
        rpc_kind::MOVE_ACTIVATE,
        &nudge,
        Duration::from_secs(2),
    )
    .await;
    if let (Some(t), Ok(())) = (frozen_at, activated) {
        rb.record_pause(t.elapsed());
    }
    Ok(h.epoch)
}

/// The bytes `slot` holds here, as its statistics count them (0 if unknown).
fn slot_bytes(node: &Node, slot: Slot) -> u64 {
    node.store.slot_stat(slot).map_or(0, |s| s.bytes)
}

/// Commits `Out` for `slot` (freezing it) at the next epoch.
async fn start(node: &Node, slot: Slot, to: ShardId) -> Result<Outgoing, KvError> {
    let d = node.store.descriptor();
    let Some(current) = d.owns(slot) else {
        return Err(KvError::BadRequest {
            code: "not_owner".into(),
            message: format!("slot {slot} is not owned by shard {}", node.shard()),
        });
    };
    let h = Outgoing {
        target: to,
        epoch: Epoch(current.0 + 1),
    };
    node.propose(Command::Move(MoveCommand::Out {
        now_ms: Some(unikv_types::wall_clock_ms()),
        slot,
        to,
        epoch: h.epoch,
    }))
    .await?;
    Ok(h)
}

async fn abort(rb: &Rebalancer, slot: Slot, epoch: Epoch) -> Result<(), KvError> {
    rb.node
        .propose(Command::Move(MoveCommand::Abort { slot, epoch }))
        .await?;
    rb.aborted.fetch_add(1, Relaxed);
    Ok(())
}
