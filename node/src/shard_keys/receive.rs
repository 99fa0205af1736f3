//! The target side of a shard key's move, and the source's answers to the target:
//! - `UNIT_IN` (target leader): commit `In`: the data is stored, not yet served;
//! - `UNIT_STATUS` (source leader, after a read barrier): Done / Pending / Aborted;
//! - `UNIT_ACTIVATE` (target leader): the source's nudge after `Done`: commit `Activate`;
//! - the arrival check (target leader): ask the source how a received unit's hand-off ended
//!   and commit `Activate` or `Drop`.

use std::time::Duration;

use unikv_storage::{Command, UnitCommand};
use unikv_types::{rpc_kind, Epoch, Keyspace, KvError, ShardId, ShardState};

use super::messages::{UnitActivate, UnitIn, UnitStatusRequest};
use crate::peer::{call_shard, HandoffStatus};
use crate::service::Node;

/// The task-set tag of an arrival check.
const CHECKING: u8 = 4;

impl Node {
    /// `UNIT_IN`: store a shard key's data sent by its source, not served yet.
    pub async fn unit_in(&self, m: UnitIn) -> Result<(), KvError> {
        let state = self.store.descriptor().state;
        if state != ShardState::Active {
            return Err(KvError::BadRequest {
                code: "move_refused".into(),
                message: format!("shard {} is {state} and takes no shard keys", self.shard()),
            });
        }
        self.propose(Command::Unit(UnitCommand::In {
            keyspace: m.keyspace,
            from: m.from,
            epoch: m.epoch,
            kv: m.kv,
            dedup: m.dedup,
            dedup_horizon_ms: m.dedup_horizon_ms,
        }))
        .await
        .map(|_| ())
    }

    /// `UNIT_ACTIVATE`: the source let go; serve the unit.
    pub async fn unit_activate(&self, a: UnitActivate) -> Result<(), KvError> {
        self.propose(Command::Unit(UnitCommand::Activate {
            keyspace: a.keyspace,
            epoch: a.epoch,
        }))
        .await
        .map(|_| ())
    }

    /// `UNIT_STATUS`, answered by the source leader from state that includes every committed
    /// step. Only a source that holds the unit again says `Aborted`.
    pub async fn unit_status(&self, q: UnitStatusRequest) -> Result<HandoffStatus, KvError> {
        self.lead_barrier().await?;
        let d = self.store.descriptor();
        let m = &d.unit_moves;
        let held = d.units.contains_key(&q.keyspace) && !m.incoming.contains_key(&q.keyspace);
        if let Some(f) = m.forwards.get(&q.keyspace).filter(|_| !held) {
            if f.target == q.target && f.epoch == q.epoch {
                return Ok(HandoffStatus::Done);
            }
            // Handed off later, or at that epoch elsewhere: the attempt asked about was
            // aborted (the part could not have come back here while the target holds it).
            if f.epoch > q.epoch || f.target != q.target {
                return Ok(HandoffStatus::Aborted);
            }
        }
        let moving = m.outgoing.get(&q.keyspace);
        Ok(match moving {
            Some(h) if h.target == q.target && h.epoch == q.epoch => HandoffStatus::Pending,
            None if d.units.contains_key(&q.keyspace) && m.epoch(q.keyspace) >= q.epoch => {
                HandoffStatus::Aborted
            }
            _ => HandoffStatus::Pending,
        })
    }

    /// On the target's leader: asks the source how the hand-off of a received unit ended.
    pub(super) async fn check_unit_arrival(&self, ks: Keyspace, source: ShardId, epoch: Epoch) {
        if !self.claim_task(CHECKING, u64::from(ks.0)) {
            return;
        }
        let q = UnitStatusRequest {
            keyspace: ks,
            epoch,
            target: self.shard(),
        };
        let status = call_shard::<_, HandoffStatus>(
            self,
            source,
            rpc_kind::UNIT_STATUS,
            &q,
            Duration::from_secs(3),
        )
        .await;
        let step = match status {
            Ok(HandoffStatus::Done) => Some(UnitCommand::Activate {
                keyspace: ks,
                epoch,
            }),
            Ok(HandoffStatus::Aborted) => Some(UnitCommand::Drop {
                keyspace: ks,
                epoch,
            }),
            Ok(HandoffStatus::Pending) | Err(_) => None,
        };
        if let Some(step) = step {
            if let Err(e) = self.propose(Command::Unit(step)).await {
                tracing::debug!(keyspace = %ks, error = %e, "shard key arrival step not committed");
            }
        }
        self.release_task(CHECKING, u64::from(ks.0));
    }
}
