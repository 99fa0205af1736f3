//! The target side of a chunk move, and the source's answers to the target:
//! - `CHUNK_IN` (target leader): commit `In`: the data is stored, not yet served;
//! - `CHUNK_STATUS` (source leader, after a read barrier): Done / Pending / Aborted;
//! - `CHUNK_ACTIVATE` (target leader): the source's nudge after `Done`: commit `Activate`;
//! - the activation check (target leader): ask the source about a received chunk and commit
//!   `Activate` or `Drop` accordingly.

use std::time::Duration;

use unikv_storage::{ChunkCommand, ChunkState, Command};
use unikv_types::{rpc_kind, wall_clock_ms, ChunkId, Epoch, KvError, ShardId, ShardState};

use super::messages::{ChunkActivate, ChunkIn, ChunkStatusRequest};
use crate::peer::call_shard;
use crate::peer::HandoffStatus;
use crate::service::Node;

/// The task-set tag of an activation check.
const CHECKING: u8 = 2;

impl Node {
    /// `CHUNK_IN`: store a chunk sent by its source, not served yet.
    pub async fn chunk_in(&self, m: ChunkIn) -> Result<(), KvError> {
        let state = self.store.descriptor().state;
        if state != ShardState::Active {
            return Err(KvError::BadRequest {
                code: "move_refused".into(),
                message: format!("shard {} is {state} and takes no chunks", self.shard()),
            });
        }
        self.propose(Command::Chunk(ChunkCommand::In {
            id: m.id,
            keyspace: m.keyspace,
            lo: m.lo,
            hi: m.hi,
            from: m.from,
            epoch: m.epoch,
            kv: m.kv,
            dedup: m.dedup,
            dedup_horizon_ms: m.dedup_horizon_ms,
            version: m.version,
            now_ms: wall_clock_ms(),
        }))
        .await
        .map(|_| ())
    }

    /// `CHUNK_ACTIVATE`: the source let go; serve the chunk.
    pub async fn chunk_activate(&self, a: ChunkActivate) -> Result<(), KvError> {
        self.propose(Command::Chunk(ChunkCommand::Activate {
            id: a.id,
            epoch: a.epoch,
        }))
        .await
        .map(|_| ())
    }

    /// `CHUNK_STATUS`, answered by the source leader from state that includes every
    /// committed step. A source that no longer knows the chunk says `Pending`: only a source
    /// that holds it again may make the target drop its copy.
    pub async fn chunk_status(&self, q: ChunkStatusRequest) -> Result<HandoffStatus, KvError> {
        self.lead_barrier().await?;
        let d = self.store.descriptor();
        if let Some(f) = d.chunks.forwards.get(&q.id) {
            if f.target == q.target && f.epoch == q.epoch {
                return Ok(HandoffStatus::Done);
            }
            // Handed off later, or at that epoch elsewhere, and not held again here: the
            // attempt asked about was aborted (the chunk cannot have come back here while
            // the asking target holds it unactivated).
            if !d.chunks.owned.contains_key(&q.id) && (f.epoch > q.epoch || f.target != q.target) {
                return Ok(HandoffStatus::Aborted);
            }
        }
        Ok(match d.chunks.owned.get(&q.id) {
            Some(c)
                if c.state
                    == (ChunkState::Outgoing {
                        target: q.target,
                        epoch: q.epoch,
                    }) =>
            {
                HandoffStatus::Pending
            }
            Some(c) if c.state == ChunkState::Serving && c.epoch >= q.epoch => {
                HandoffStatus::Aborted
            }
            _ => HandoffStatus::Pending,
        })
    }

    /// On the target's leader: asks the source how the hand-off of a received chunk ended
    /// and activates or drops it; one check per chunk at a time.
    pub(super) async fn check_arrival(&self, id: ChunkId, source: ShardId, epoch: Epoch) {
        if !self.claim_task(CHECKING, id.0) {
            return;
        }
        let q = ChunkStatusRequest {
            id,
            epoch,
            target: self.shard(),
        };
        let status = call_shard::<_, HandoffStatus>(
            self,
            source,
            rpc_kind::CHUNK_STATUS,
            &q,
            Duration::from_secs(3),
        )
        .await;
        let step = match status {
            Ok(HandoffStatus::Done) => Some(ChunkCommand::Activate { id, epoch }),
            Ok(HandoffStatus::Aborted) => Some(ChunkCommand::Drop { id, epoch }),
            Ok(HandoffStatus::Pending) | Err(_) => None,
        };
        if let Some(step) = step {
            if let Err(e) = self.propose(Command::Chunk(step)).await {
                tracing::debug!(chunk = %id, error = %e, "chunk activation step not committed");
            }
        }
        self.release_task(CHECKING, id.0);
    }
}
