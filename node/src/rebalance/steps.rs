//! The steps of a slot hand-off on the source that both ways of running one use — one slot
//! (`handoff`) or a batch of small slots (`batch`): the next epoch, `Out`, the `In` of a slot
//! sent whole, `Done`, and giving a hand-off up — alone before any `In` was sent, through
//! the target's `Refuse` after (`settle`), since the target serves the slot from its `In`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use unikv_storage::{Command, MoveCommand, Outgoing};
use unikv_types::{rpc_kind, Epoch, KvError, ShardId, Slot};

use super::messages::{MoveIn, RefuseRequest};
use super::rebalancer::{lock, Rebalancer};
use crate::peer::{refuse_until_answered, RefuseAnswer};
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

/// A frozen hand-off this leader started failed before any `In` of it was sent: unfreeze the
/// slot (if this node still leads; otherwise the next leader resumes it) and return `e`.
pub async fn abort_unsent(rb: &Rebalancer, slot: Slot, h: Outgoing, e: KvError) -> KvError {
    if rb.node.is_leader() {
        tracing::warn!(shard = %rb.node.shard(), slot, to = %h.target, error = %e, "frozen copy failed; aborting");
        if let Err(a) = abort(rb, slot, h.epoch).await {
            return a;
        }
    }
    e
}

/// How a hand-off whose `In` may have been sent ended at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The target committed the `In` (it serves the slot): finish with `Done`.
    Received,
    /// The target refuses that `In` for good; the hand-off was aborted here.
    Aborted,
}

/// Settles a frozen hand-off whose `In` may have reached the target (sent, refused, timed
/// out, or sent by an earlier leader): the target commits `Refuse` — then this shard aborts
/// — or answers that it holds the slot already. Asked again until it answers: the slot stays
/// frozen meanwhile (unavailable, never served by both). `Err` if this node stops leading.
pub async fn settle(rb: &Rebalancer, slot: Slot, h: Outgoing) -> Result<Settled, KvError> {
    let node = &rb.node;
    let req = RefuseRequest {
        slot,
        from: node.shard(),
        epoch: h.epoch,
    };
    let unit = format!("slot {slot}");
    match refuse_until_answered(node, h.target, rpc_kind::MOVE_REFUSE, &req, &unit).await? {
        RefuseAnswer::Refused => {
            abort(rb, slot, h.epoch).await?;
            Ok(Settled::Aborted)
        }
        RefuseAnswer::AlreadyReceived => Ok(Settled::Received),
    }
}

/// Commits `Done` for a hand-off the target took: the data here goes, a forwarding note
/// stays. Counts the slot as moved (`bytes`).
pub async fn done(rb: &Rebalancer, slot: Slot, h: Outgoing, bytes: u64) -> Result<(), KvError> {
    rb.node
        .propose(Command::Move(MoveCommand::Done {
            slot,
            epoch: h.epoch,
        }))
        .await?;
    rb.record(bytes);
    lock(&rb.settling).push((slot, h.target, Instant::now()));
    Ok(())
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
    // Requests waiting on the frozen slot are served here again.
    rb.node.handed.ended(slot);
    Ok(())
}
