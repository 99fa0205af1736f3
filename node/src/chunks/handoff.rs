//! The source side of a chunk move, run by the source shard's leader: `Out` (freeze) → send
//! the chunk's data and dedup table to the target leader, which commits `In` → `Done` (delete
//! here, forwarding note) → nudge the target to `Activate`. If the target refuses, or has not
//! taken the chunk within `--handoff_timeout_ms`, `Abort` unfreezes it here instead.

use std::time::{Duration, Instant};

use unikv_storage::{ChunkCommand, ChunkState, Command};
use unikv_types::{rpc_kind, wall_clock_ms, ChunkId, Epoch, KvError, ShardId, ShardState};

use super::messages::{ChunkActivate, ChunkIn};
use crate::peer::{call_shard, deliver, Delivery};
use crate::service::Node;

/// The task-set tag of a hand-off (activation checks use another).
pub(super) const MOVING: u8 = 1;

impl Node {
    /// Moves chunk `id` to shard `to` and waits until it is done or refused; at most one
    /// move per chunk at a time.
    pub(crate) async fn move_chunk(&self, id: ChunkId, to: ShardId) -> Result<Epoch, KvError> {
        if to == self.shard() {
            return Err(KvError::BadRequest {
                code: "same_shard".into(),
                message: format!("chunk {id} is on shard {to} already"),
            });
        }
        let target_active = self
            .gossip
            .view()
            .shards
            .get(&to)
            .is_some_and(|s| s.state == ShardState::Active);
        if !target_active {
            return Err(KvError::BadRequest {
                code: "bad_target".into(),
                message: format!("shard {to} is not an active shard of the cluster"),
            });
        }
        if !self.claim_task(MOVING, id.0) {
            return Err(KvError::Refused {
                status: 409,
                code: "chunk_moving".into(),
                message: format!("chunk {id} is already moving"),
            });
        }
        let res = self.hand_off(id, to).await;
        self.release_task(MOVING, id.0);
        res
    }

    /// Whether this node took the task `(kind, id)` (false: it runs already).
    /// Whether this node took the task `(kind, id)` (false: it runs already). Kinds: chunk
    /// moves and checks here, shard key moves and checks in `shard_keys`.
    pub(crate) fn claim_task(&self, kind: u8, id: u64) -> bool {
        self.chunk_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((kind, id))
    }

    pub(crate) fn release_task(&self, kind: u8, id: u64) {
        self.chunk_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(kind, id));
    }

    /// How many tasks of `kind` run on this node.
    pub(crate) fn tasks_of(&self, kind: u8) -> usize {
        self.chunk_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| *k == kind)
            .count()
    }

    /// Whether a chunk hand-off runs on this node.
    pub(super) fn moving_chunks(&self) -> usize {
        self.tasks_of(MOVING)
    }

    /// Runs (or resumes) the hand-off of chunk `id` to `to`.
    pub(super) async fn hand_off(&self, id: ChunkId, to: ShardId) -> Result<Epoch, KvError> {
        let d = self.store.descriptor();
        let Some(c) = d.chunks.owned.get(&id) else {
            return Err(KvError::BadRequest {
                code: "not_owner".into(),
                message: format!("chunk {id} is not held by shard {}", self.shard()),
            });
        };
        let (to, epoch) = match c.state {
            ChunkState::Serving => {
                let epoch = Epoch(c.epoch.0 + 1);
                self.propose(Command::Chunk(ChunkCommand::Out {
                    id,
                    to,
                    epoch,
                    now_ms: wall_clock_ms(),
                }))
                .await?;
                (to, epoch)
            }
            // Resume the hand-off already committed, wherever it goes.
            ChunkState::Outgoing { target, epoch } => (target, epoch),
            ChunkState::Incoming { .. } => {
                return Err(KvError::Refused {
                    status: 409,
                    code: "chunk_moving".into(),
                    message: format!("chunk {id} is still arriving here"),
                })
            }
        };
        let frozen_at = Instant::now();
        let Some((held, export)) = self
            .store
            .export_chunk(id)
            .map_err(|e| KvError::Internal(e.to_string()))?
        else {
            return Err(self.unavailable(format!("chunk {id} left this shard meanwhile")));
        };
        let bytes: u64 = export
            .kv
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        let msg = ChunkIn {
            id,
            keyspace: held.keyspace,
            lo: held.lo,
            hi: held.hi,
            from: self.shard(),
            epoch,
            kv: export.kv,
            dedup: export.dedup,
            dedup_horizon_ms: export.dedup_horizon_ms,
            version: held.version,
        };
        let give_up_at = Instant::now() + self.config.handoff_timeout();
        match deliver(self, to, rpc_kind::CHUNK_IN, &msg, give_up_at).await? {
            Delivery::Taken(()) => {}
            Delivery::Refused { message, .. } => {
                tracing::warn!(shard = %self.shard(), chunk = %id, to = %to, %message, "target refused the chunk; aborting");
                self.propose(Command::Chunk(ChunkCommand::Abort { id, epoch }))
                    .await?;
                return Err(KvError::BadRequest {
                    code: "move_refused".into(),
                    message,
                });
            }
            Delivery::TimedOut(e) => {
                self.propose(Command::Chunk(ChunkCommand::Abort { id, epoch }))
                    .await?;
                return Err(KvError::Unavailable {
                    shard: to,
                    reason: format!(
                        "chunk {id}: shard {to} did not take it within {} ms ({e}); the move was aborted",
                        self.config.handoff_timeout_ms
                    ),
                });
            }
        }
        self.propose(Command::Chunk(ChunkCommand::Done { id, epoch }))
            .await?;
        // Best effort: the target also asks on its own if this nudge is lost.
        let nudge = ChunkActivate { id, epoch };
        let activated = call_shard::<_, ()>(
            self,
            to,
            rpc_kind::CHUNK_ACTIVATE,
            &nudge,
            Duration::from_secs(2),
        )
        .await;
        tracing::info!(shard = %self.shard(), chunk = %id, to = %to, %epoch, bytes,
            frozen_ms = frozen_at.elapsed().as_millis() as u64, activated = activated.is_ok(), "chunk handed off");
        Ok(epoch)
    }
}
