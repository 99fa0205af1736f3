//! The target side of a slot move, and the source's answers to the target:
//! - `MOVE_IN` (target leader): commit `In`: the data is stored, not yet served;
//! - `MOVE_STATUS` (source leader, after a read barrier): Done / Pending / Aborted;
//! - `MOVE_ACTIVATE` (target leader): the source's nudge after `Done`: commit `Activate`;
//! - the activation check (target leader): for each received slot, ask the source and commit
//!   `Activate` or `Drop` accordingly.

use std::sync::Arc;
use std::time::Duration;

use unikv_storage::{Command, Forward, Incoming, MoveCommand, Outgoing};
use unikv_types::{rpc_kind, KvError, KvReply, Slot};

use super::messages::{ActivateRequest, MoveIn, MoveStatusRequest};
use super::rebalancer::{lock, Rebalancer};
use crate::peer::call_shard;
use crate::peer::HandoffStatus;
use crate::service::Node;

fn done(r: Result<KvReply, KvError>) -> Result<(), KvError> {
    r.map(|_| ())
}

pub async fn handle_move_in(node: &Node, m: MoveIn) -> Result<(), KvError> {
    let state = node.store.descriptor().state;
    if state != unikv_types::ShardState::Active {
        return Err(KvError::BadRequest {
            code: "move_refused".into(),
            message: format!("shard {} is {state} and takes no slots", node.shard()),
        });
    }
    done(
        node.propose(Command::Move(MoveCommand::In {
            slot: m.slot,
            from: m.from,
            epoch: m.epoch,
            kv: m.kv,
            dedup: m.dedup,
            dedup_horizon_ms: m.dedup_horizon_ms,
            collections_kv: m.collections_kv,
        }))
        .await,
    )
}

pub async fn handle_activate(node: &Node, a: ActivateRequest) -> Result<(), KvError> {
    done(
        node.propose(Command::Move(MoveCommand::Activate {
            slot: a.slot,
            epoch: a.epoch,
        }))
        .await,
    )
}

/// Answered by the source leader from state that includes every committed step.
pub async fn handle_status(node: &Node, q: MoveStatusRequest) -> Result<HandoffStatus, KvError> {
    node.lead_barrier().await?;
    let d = node.store.descriptor();
    let (target, epoch) = (q.target, q.epoch);
    Ok(
        if d.forwards.get(&q.slot) == Some(&Forward { target, epoch }) {
            HandoffStatus::Done
        } else if d.outgoing.get(&q.slot) == Some(&Outgoing { target, epoch }) {
            HandoffStatus::Pending
        } else {
            HandoffStatus::Aborted
        },
    )
}

/// Asks the source about a received slot and activates or drops it; one check per slot at a
/// time.
pub fn spawn_activation_check(rb: Arc<Rebalancer>, slot: Slot, h: Incoming) {
    if !lock(&rb.activating).insert(slot) {
        return;
    }
    tokio::spawn(async move {
        let node = &rb.node;
        let q = MoveStatusRequest {
            slot,
            epoch: h.epoch,
            target: node.shard(),
        };
        let status = call_shard::<_, HandoffStatus>(
            node,
            h.source,
            rpc_kind::MOVE_STATUS,
            &q,
            Duration::from_secs(3),
        )
        .await;
        let step = match status {
            Ok(HandoffStatus::Done) => Some(MoveCommand::Activate {
                slot,
                epoch: h.epoch,
            }),
            Ok(HandoffStatus::Aborted) => Some(MoveCommand::Drop {
                slot,
                epoch: h.epoch,
            }),
            Ok(HandoffStatus::Pending) | Err(_) => None,
        };
        if let Some(step) = step {
            if let Err(e) = node.propose(Command::Move(step)).await {
                tracing::debug!(slot, error = %e, "activation step not committed");
            }
        } else {
            // Pending (or the source is unreachable): look again a little later.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        lock(&rb.activating).remove(&slot);
    });
}
