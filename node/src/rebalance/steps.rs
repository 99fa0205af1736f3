//! The steps of a slot hand-off on the source that both ways of running one use — one slot
//! (`handoff`) or a batch of small slots (`batch`): the next epoch, `Out`, `Abort`, and the
//! `In` of a slot sent whole.

use std::sync::atomic::Ordering::Relaxed;

use unikv_storage::{Command, MoveCommand, Outgoing};
use unikv_types::{Epoch, KvError, ShardId, Slot};

use super::messages::MoveIn;
use super::rebalancer::Rebalancer;
use crate::service::Node;

/// The `In` of a slot sent whole (every pair and the dedup table), and the bytes it carries.
pub fn whole_in(
    node: &Node,
    slot: Slot,
    h: Outgoing,
    export: unikv_storage::SlotExport,
) -> (MoveIn, u64) {
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
        staged: None,
        deleted: Vec::new(),
    };
    (msg, bytes)
}

/// A frozen hand-off failed before its `In` was sent or taken: unfreeze the slot (if this
/// node still leads; otherwise the next leader resumes it) and return `e`.
pub async fn abort_after(rb: &Rebalancer, slot: Slot, h: Outgoing, e: KvError) -> KvError {
    if rb.node.is_leader() {
        tracing::warn!(shard = %rb.node.shard(), slot, to = %h.target, error = %e, "frozen copy failed; aborting");
        if let Err(a) = abort(rb, slot, h.epoch).await {
            return a;
        }
    }
    e
}

/// The bytes `slot` holds here, as its statistics count them (0 if unknown).
pub fn slot_bytes(node: &Node, slot: Slot) -> u64 {
    node.store.slot_stat(slot).map_or(0, |s| s.bytes)
}

/// The epoch `slot` will have at its next owner (it must be owned here, and moves not fenced:
/// `Out` would refuse after the whole copy).
pub fn next_epoch(node: &Node, slot: Slot) -> Result<Epoch, KvError> {
    let d = node.store.descriptor();
    let now = unikv_types::wall_clock_ms();
    if let Some(f) = d.fence.filter(|f| f.until_ms > now) {
        return Err(f.refusal(now));
    }
    match d.owns(slot) {
        Some(current) => Ok(Epoch(current.0 + 1)),
        None => Err(KvError::BadRequest {
            code: "not_owner".into(),
            message: format!("slot {slot} is not owned by shard {}", node.shard()),
        }),
    }
}

/// Commits `Out` for `slot` (freezing it) towards `to` at `epoch`.
pub async fn start(
    node: &Node,
    slot: Slot,
    to: ShardId,
    epoch: Epoch,
) -> Result<Outgoing, KvError> {
    let h = Outgoing { target: to, epoch };
    node.propose(Command::Move(MoveCommand::Out {
        now_ms: Some(unikv_types::wall_clock_ms()),
        slot,
        to,
        epoch: h.epoch,
    }))
    .await?;
    Ok(h)
}

pub async fn abort(rb: &Rebalancer, slot: Slot, epoch: Epoch) -> Result<(), KvError> {
    rb.node
        .propose(Command::Move(MoveCommand::Abort { slot, epoch }))
        .await?;
    rb.aborted.fetch_add(1, Relaxed);
    Ok(())
}
