//! The target side of a chunk move, and the source's answers to the target:
//! - `CHUNK_STAGE` (target leader): commit `Stage`: a piece of a copy, stored, not served;
//! - `CHUNK_IN` (target leader): commit `In`: the chunk is complete and served from then on;
//! - `CHUNK_REFUSE` (target leader): commit `Refuse`, so the source may give a hand-off up
//!   (or answer `already_received`: it must finish it);
//! - `CHUNK_STATUS` (source leader, after a read barrier): whether a staged copy is wanted;
//! - the staging check (target leader, from `balance`): for a copy no piece arrived for in a
//!   while, ask the source and commit `Unstage` if it gave the copy up.

use std::time::Duration;

use unikv_storage::{ChunkCommand, ChunkState, Command};
use unikv_types::{rpc_kind, wall_clock_ms, ChunkId, KvError, ShardId, ShardState};

use super::messages::{ChunkIn, ChunkRefuse, ChunkStatusRequest};
use crate::copies::CopyOf;
use crate::copy::ChunkStage;
use crate::peer::call_shard;
use crate::peer::HandoffStatus;
use crate::service::Node;

/// The task-set tag of a staging check.
const CHECKING: u8 = 2;

impl Node {
    /// Refuses chunks while this shard is not active.
    fn takes_chunks(&self) -> Result<(), KvError> {
        let state = self.store.descriptor().state;
        if state != ShardState::Active {
            return Err(KvError::BadRequest {
                code: "move_refused".into(),
                message: format!("shard {} is {state} and takes no chunks", self.shard()),
            });
        }
        Ok(())
    }

    /// `CHUNK_STAGE`: store a piece of a chunk's copy, not served.
    pub async fn chunk_stage(&self, m: ChunkStage) -> Result<(), KvError> {
        self.takes_chunks()?;
        self.propose(Command::Chunk(ChunkCommand::Stage {
            id: m.id,
            keyspace: m.keyspace,
            lo: m.lo,
            hi: m.hi,
            from: m.from,
            epoch: m.epoch,
            copy: m.copy,
            part: m.part,
            overwrite: m.overwrite,
            kv: m.kv,
            deleted: m.deleted,
        }))
        .await
        .map(|_| ())
    }

    /// `CHUNK_IN`: install a chunk sent by its source (whole, or completing a staged copy)
    /// and serve it.
    pub async fn chunk_in(&self, m: ChunkIn) -> Result<(), KvError> {
        self.takes_chunks()?;
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
            staged: m.staged,
            deleted: m.deleted,
        }))
        .await
        .map(|_| ())
    }

    /// `CHUNK_REFUSE`: never take that hand-off (taken on any shard, active or not: a source
    /// waits on it to unfreeze a chunk).
    pub async fn chunk_refuse(&self, r: ChunkRefuse) -> Result<(), KvError> {
        self.propose(Command::Chunk(ChunkCommand::Refuse {
            id: r.id,
            from: r.from,
            epoch: r.epoch,
        }))
        .await
        .map(|_| ())
    }

    /// `CHUNK_STATUS`, answered by the source leader from state that includes every
    /// committed step: Pending while this leader sends copy `copy` or the chunk is frozen
    /// towards the asking target (a hand-off that completes or replaces the copy), else
    /// Aborted.
    pub async fn chunk_status(&self, q: ChunkStatusRequest) -> Result<HandoffStatus, KvError> {
        self.lead_barrier().await?;
        let d = self.store.descriptor();
        let running = self.copies.is_running(CopyOf::Chunk(q.id), q.copy);
        let frozen = d.chunks.owned.get(&q.id).is_some_and(|c| {
            c.state
                == ChunkState::Outgoing {
                    target: q.target,
                    epoch: q.epoch,
                }
        });
        Ok(if running || frozen {
            HandoffStatus::Pending
        } else {
            HandoffStatus::Aborted
        })
    }

    /// On the target's leader: asks the source whether copy `copy` of chunk `id`, staged
    /// here and quiet for a while, is still wanted, and drops it if not (its source lost
    /// leadership or gave up before freezing); one check per chunk at a time.
    pub(super) async fn check_staging(
        &self,
        id: ChunkId,
        source: ShardId,
        epoch: unikv_types::Epoch,
        copy: u64,
    ) {
        if !self.claim_task(CHECKING, id.0) {
            return;
        }
        let q = ChunkStatusRequest {
            id,
            epoch,
            target: self.shard(),
            copy,
        };
        let status = call_shard::<_, HandoffStatus>(
            self,
            source,
            rpc_kind::CHUNK_STATUS,
            &q,
            Duration::from_secs(3),
        )
        .await;
        if matches!(status, Ok(HandoffStatus::Aborted)) {
            tracing::info!(shard = %self.shard(), chunk = %id, from = %source, copy = format!("{copy:x}"), "dropping a chunk copy its source gave up");
            let step = Command::Chunk(ChunkCommand::Unstage { id, copy });
            if let Err(e) = self.propose(step).await {
                tracing::debug!(chunk = %id, error = %e, "unstage not committed");
            }
        }
        self.release_task(CHECKING, id.0);
    }
}
