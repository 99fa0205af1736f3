//! The target side of a slot move, and the source's answers to the target:
//! - `MOVE_STAGE` (target leader): commit `Stage`: a piece of a copy, stored, not served;
//! - `MOVE_IN` (target leader): commit `In`: the data is complete and served from then on
//!   (`MOVE_IN_MANY`: several small slots, one `In` each, proposed together);
//! - `MOVE_REFUSE` (target leader): commit `Refuse`, so the source may give a hand-off up
//!   (or answer `already_received`: it must finish it);
//! - `MOVE_STATUS` (source leader, after a read barrier): whether a staged copy is wanted;
//! - the staging check (target leader): for a copy no piece arrived for in a while, ask the
//!   source and commit `Unstage` if it gave the copy up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use unikv_storage::{Command, MoveCommand, Outgoing, Staging};
use unikv_types::{rpc_kind, KvError, KvReply, Slot};

use super::messages::{MoveIn, MoveStatusRequest, RefuseRequest};
use super::rebalancer::{lock, Rebalancer};
use crate::copies::CopyOf;
use crate::copy::MoveStage;
use crate::peer::call_shard;
use crate::peer::HandoffStatus;
use crate::service::Node;

fn done(r: Result<KvReply, KvError>) -> Result<(), KvError> {
    r.map(|_| ())
}

/// How long a target waits without a piece before asking the source whether a copy it
/// staged is still wanted.
const STAGING_QUIET: Duration = Duration::from_secs(5);

/// Refuses slots while this shard is not active.
fn takes_slots(node: &Node) -> Result<(), KvError> {
    let state = node.store.descriptor().state;
    if state != unikv_types::ShardState::Active {
        return Err(KvError::BadRequest {
            code: "move_refused".into(),
            message: format!("shard {} is {state} and takes no slots", node.shard()),
        });
    }
    Ok(())
}

pub async fn handle_move_in(rb: &Rebalancer, m: MoveIn) -> Result<(), KvError> {
    takes_slots(&rb.node)?;
    commit_in(rb, m).await
}

/// `MOVE_IN_MANY`: each slot's `In` proposed at once, so they commit and apply together.
pub async fn handle_move_in_many(
    rb: &Rebalancer,
    ms: Vec<MoveIn>,
) -> Result<Vec<Result<(), KvError>>, KvError> {
    takes_slots(&rb.node)?;
    batch_bound(ms.len())?;
    Ok(futures::future::join_all(ms.into_iter().map(|m| commit_in(rb, m))).await)
}

/// Refuses a batch larger than any sender makes.
fn batch_bound(len: usize) -> Result<(), KvError> {
    if len > crate::config::MAX_MOVE_BATCH {
        return Err(KvError::BadRequest {
            code: "batch_too_large".into(),
            message: format!(
                "{len} slots in one hand-off (at most {})",
                crate::config::MAX_MOVE_BATCH
            ),
        });
    }
    Ok(())
}

async fn commit_in(rb: &Rebalancer, m: MoveIn) -> Result<(), KvError> {
    lock(&rb.staged_seen).remove(&m.slot);
    done(
        rb.node
            .propose(Command::Move(MoveCommand::In {
                slot: m.slot,
                from: m.from,
                epoch: m.epoch,
                kv: m.kv,
                dedup: m.dedup,
                dedup_horizon_ms: m.dedup_horizon_ms,
                collections_kv: m.collections_kv,
                staged: m.staged,
                deleted: m.deleted,
            }))
            .await,
    )
}

/// `MOVE_STAGE`: commit one piece of a copy.
pub async fn handle_stage(rb: &Rebalancer, m: MoveStage) -> Result<(), KvError> {
    let node = &rb.node;
    takes_slots(node)?;
    lock(&rb.staged_seen).insert(m.slot, Instant::now());
    done(
        node.propose(Command::Move(MoveCommand::Stage {
            slot: m.slot,
            from: m.from,
            epoch: m.epoch,
            copy: m.copy,
            part: m.part,
            overwrite: m.overwrite,
            kv: m.kv,
            collections_kv: m.collections_kv,
            deleted: m.deleted,
        }))
        .await,
    )
}

/// `MOVE_REFUSE`: commit `Refuse` (taken on any shard, active or not: a source waits on it
/// to unfreeze a slot).
pub async fn handle_refuse(node: &Node, r: RefuseRequest) -> Result<(), KvError> {
    done(
        node.propose(Command::Move(MoveCommand::Refuse {
            slot: r.slot,
            from: r.from,
            epoch: r.epoch,
        }))
        .await,
    )
}

/// Answered by the source leader from state that includes every committed step: Pending
/// while this leader runs copy `copy` or the slot is frozen towards the asking target (a
/// hand-off that completes or replaces the copy), else Aborted.
pub async fn handle_status(
    rb: &Rebalancer,
    q: MoveStatusRequest,
) -> Result<HandoffStatus, KvError> {
    let node = &rb.node;
    node.lead_barrier().await?;
    let d = node.store.descriptor();
    let (target, epoch) = (q.target, q.epoch);
    let running = node.copies.is_running(CopyOf::Slot(q.slot), q.copy);
    let frozen = d.outgoing.get(&q.slot) == Some(&Outgoing { target, epoch });
    Ok(if running || frozen {
        HandoffStatus::Pending
    } else {
        HandoffStatus::Aborted
    })
}

/// Asks the source whether a copy staged here and quiet for `STAGING_QUIET` is still wanted,
/// and drops it if not (its source lost leadership or gave up before freezing).
pub fn spawn_staging_check(rb: Arc<Rebalancer>, slot: Slot, s: Staging) {
    {
        let mut seen = lock(&rb.staged_seen);
        let last = seen.entry(slot).or_insert_with(Instant::now);
        if last.elapsed() < STAGING_QUIET {
            return;
        }
    }
    if !lock(&rb.checking).insert(slot) {
        return;
    }
    tokio::spawn(async move {
        let node = &rb.node;
        let q = MoveStatusRequest {
            slot,
            epoch: s.epoch,
            target: node.shard(),
            copy: s.copy,
        };
        let status = call_shard::<_, HandoffStatus>(
            node,
            s.source,
            rpc_kind::MOVE_STATUS,
            &q,
            Duration::from_secs(3),
        )
        .await;
        if matches!(status, Ok(HandoffStatus::Aborted)) {
            tracing::info!(shard = %node.shard(), slot, from = %s.source, copy = format!("{:x}", s.copy), "dropping a copy its source gave up");
            let step = MoveCommand::Unstage { slot, copy: s.copy };
            if let Err(e) = node.propose(Command::Move(step)).await {
                tracing::debug!(slot, error = %e, "unstage not committed");
            }
        }
        // Asked again only after another quiet stretch.
        lock(&rb.staged_seen).insert(slot, Instant::now());
        lock(&rb.checking).remove(&slot);
    });
}
