//! The source side of a chunk move, run by the source shard's leader: the slot hand-off's
//! steps (`rebalance::handoff`) over a chunk. Copy the chunk to the target while it serves
//! (`crate::copy`) → `Out` (freeze) → send what was written since and the dedup table; the
//! target commits `In` and serves the chunk from then on → `Done` (delete here, forwarding
//! note). A chunk of at most `--move_copy_min_kb` is frozen and sent whole in its `In`.
//! If the target refuses, or has not taken the chunk within `--handoff_timeout_ms`, the
//! hand-off is settled with the target: it refuses the `In` for good (`CHUNK_REFUSE`) and
//! `Abort` unfreezes the chunk here, or it holds the chunk already and `Done` follows. A split
//! or merge that changed the chunk's bounds during the copy makes the hand-off abort (before
//! any `In`) and start over later.

use std::time::Instant;

use unikv_storage::{ChunkCommand, ChunkState, Command, CopyUnit, OwnedChunk};
use unikv_types::{rpc_kind, wall_clock_ms, ChunkId, Epoch, KvError, ShardId, ShardState};

use super::messages::{ChunkIn, ChunkRefuse};
use crate::copy::{internal, Copied, CopyRun};
use crate::peer::{deliver, refuse_until_answered, Delivery, RefuseAnswer};
use crate::service::{Node, LEADER_POLL};

/// How long a chunk move call may wait for its move (or one it joins) to end.
pub(super) const MOVE_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The task-set tag of a hand-off (staging checks use another).
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
        let deadline = Instant::now() + MOVE_CALL_TIMEOUT;
        // A move of this chunk runs already (this very call retried by a router whose attempt
        // timed out, say): wait for it, then answer for where the chunk went.
        while !self.claim_task(MOVING, id.0) {
            if Instant::now() + LEADER_POLL >= deadline {
                return Err(self.unavailable(format!(
                    "chunk {id} is still moving; ask again to learn where it went"
                )));
            }
            tokio::time::sleep(LEADER_POLL).await;
            if let Some(done) = self.moved_already(id, to) {
                return done;
            }
        }
        let res = match self.moved_already(id, to) {
            Some(done) => done,
            None => self.hand_off(id, to).await,
        };
        self.release_task(MOVING, id.0);
        res
    }

    /// The answer for a chunk that is no longer held here: moved to `to` (a retried call of
    /// a move that finished), or elsewhere.
    fn moved_already(&self, id: ChunkId, to: ShardId) -> Option<Result<Epoch, KvError>> {
        let d = self.store.descriptor();
        if d.chunks.owned.contains_key(&id) {
            return None;
        }
        Some(match d.chunks.forwards.get(&id) {
            Some(f) if f.target == to => Ok(f.epoch),
            _ => Err(KvError::Refused {
                status: 409,
                code: "chunk_moving".into(),
                message: format!("chunk {id} is no longer on shard {}", self.shard()),
            }),
        })
    }

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

    /// Whether the task `(kind, id)` runs on this node.
    pub(crate) fn has_task(&self, kind: u8, id: u64) -> bool {
        self.chunk_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(kind, id))
    }

    /// Whether a chunk hand-off runs on this node.
    pub(super) fn moving_chunks(&self) -> usize {
        self.tasks_of(MOVING)
    }

    /// Runs (or resumes) the hand-off of chunk `id` to `to`.
    pub(super) async fn hand_off(&self, id: ChunkId, to: ShardId) -> Result<Epoch, KvError> {
        let d = self.store.descriptor();
        let Some(c) = d.chunks.owned.get(&id).cloned() else {
            return Err(KvError::BadRequest {
                code: "not_owner".into(),
                message: format!("chunk {id} is not held by shard {}", self.shard()),
            });
        };
        let unit = CopyUnit::Chunk {
            id,
            keyspace: c.keyspace,
            lo: c.lo.clone(),
            hi: c.hi.clone(),
        };
        match c.state {
            // Resume the hand-off already committed, wherever it goes.
            ChunkState::Outgoing { target, epoch } => {
                self.resume_chunk(id, &c, unit, target, epoch).await
            }
            ChunkState::Staging { .. } => Err(KvError::Refused {
                status: 409,
                code: "chunk_moving".into(),
                message: format!("chunk {id} is still arriving here"),
            }),
            ChunkState::Serving => {
                let epoch = Epoch(c.epoch.0 + 1);
                let bytes = self.store.slot_stat(c.unit).map_or(0, |s| s.bytes);
                let small =
                    self.config.move_copy_min_kb > 0 && bytes <= self.config.move_copy_min_bytes();
                if small {
                    self.hand_whole(id, to, epoch, bytes).await
                } else {
                    self.copy_and_hand(id, &c, unit, to, epoch).await
                }
            }
        }
    }

    /// A small chunk: frozen, then sent whole in its `In`.
    async fn hand_whole(
        &self,
        id: ChunkId,
        to: ShardId,
        epoch: Epoch,
        bytes: u64,
    ) -> Result<Epoch, KvError> {
        // Paced before the freeze, never during it.
        self.throttle.pace(bytes).await;
        self.freeze_chunk(id, to, epoch).await?;
        let frozen_at = Instant::now();
        let (held, export) = match self.store.export_chunk(id) {
            Ok(Some(x)) => x,
            Ok(None) => {
                return Err(self.unavailable(format!("chunk {id} left this shard meanwhile")))
            }
            Err(e) => return Err(self.abort_chunk_unsent(id, epoch, internal(e)).await),
        };
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
            staged: None,
            deleted: Vec::new(),
        };
        self.send_chunk_in(to, Some(frozen_at), msg, bytes).await
    }

    /// Copies chunk `c` while it serves, then freezes it and sends the rest in its `In`.
    async fn copy_and_hand(
        &self,
        id: ChunkId,
        c: &OwnedChunk,
        unit: CopyUnit,
        to: ShardId,
        epoch: Epoch,
    ) -> Result<Epoch, KvError> {
        let Some(writes) = self.store.start_copy(&unit) else {
            return Err(KvError::Refused {
                status: 409,
                code: "chunk_moving".into(),
                message: format!("chunk {id} is already being copied"),
            });
        };
        let mut copy = CopyRun::new(self, unit, to, epoch);
        if copy.scan().await? == Copied::AlreadyIn {
            return Err(KvError::Internal(format!(
                "chunk {id}: shard {to} holds a hand-off at epoch {epoch} that was never started"
            )));
        }
        copy.catch_up(&writes).await?;
        self.freeze_chunk(id, to, epoch).await?;
        let frozen_at = Instant::now();
        copy.freeze(frozen_at + self.config.handoff_timeout());
        crate::failpoints::hold("chunk_frozen").await;
        if let Err(e) = self.same_bounds(id, c) {
            return Err(self.abort_chunk_unsent(id, epoch, e).await);
        }
        // A tail larger than a piece goes as pieces first; the `In` carries the last.
        let tail = match writes.take() {
            Ok(keys) => copy.send_keys(keys).await,
            Err(e) => Err(internal(e)),
        };
        drop(writes);
        let tail = match tail {
            Ok(t) => t,
            Err(e) => return Err(self.abort_chunk_unsent(id, epoch, e).await),
        };
        let (dedup, dedup_horizon_ms) = match self.store.export_dedup(c.unit) {
            Ok(x) => x,
            Err(e) => return Err(self.abort_chunk_unsent(id, epoch, internal(e)).await),
        };
        let bytes = copy.bytes + tail.bytes;
        let staged = copy.staged();
        drop(copy);
        let (kv, deleted) = tail.into_chunk_parts();
        let msg = ChunkIn {
            id,
            keyspace: c.keyspace,
            lo: c.lo.clone(),
            hi: c.hi.clone(),
            from: self.shard(),
            epoch,
            kv,
            dedup,
            dedup_horizon_ms,
            version: c.version,
            staged: Some(staged),
            deleted,
        };
        self.send_chunk_in(to, Some(frozen_at), msg, bytes).await
    }

    /// A hand-off a predecessor committed (`Out`): the chunk is frozen, so a copy is final as
    /// read; an earlier leader may have sent the `In` already, so a failure is settled with
    /// the target.
    async fn resume_chunk(
        &self,
        id: ChunkId,
        c: &OwnedChunk,
        unit: CopyUnit,
        to: ShardId,
        epoch: Epoch,
    ) -> Result<Epoch, KvError> {
        let mut copy = CopyRun::new(self, unit, to, epoch);
        let deadline = Instant::now() + self.config.handoff_timeout();
        copy.freeze(deadline);
        let staged = match copy.scan().await {
            Ok(Copied::AlreadyIn) => {
                return self.finish_chunk(id, to, epoch, None, copy.bytes).await
            }
            Ok(Copied::Staged(s)) => s,
            Err(e) => return self.settle_chunk_or(id, to, epoch, copy.bytes, e).await,
        };
        let bytes = copy.bytes;
        drop(copy);
        let (dedup, dedup_horizon_ms) = match self.store.export_dedup(c.unit) {
            Ok(x) => x,
            Err(e) => {
                return self
                    .settle_chunk_or(id, to, epoch, bytes, internal(e))
                    .await
            }
        };
        let msg = ChunkIn {
            id,
            keyspace: c.keyspace,
            lo: c.lo.clone(),
            hi: c.hi.clone(),
            from: self.shard(),
            epoch,
            kv: Vec::new(),
            dedup,
            dedup_horizon_ms,
            version: c.version,
            staged: Some(staged),
            deleted: Vec::new(),
        };
        self.send_chunk_in(to, None, msg, bytes).await
    }

    /// Commits `Out`: the chunk is frozen towards `to` at `epoch`.
    async fn freeze_chunk(&self, id: ChunkId, to: ShardId, epoch: Epoch) -> Result<(), KvError> {
        self.propose(Command::Chunk(ChunkCommand::Out {
            id,
            to,
            epoch,
            now_ms: wall_clock_ms(),
        }))
        .await
        .map(|_| ())
    }

    /// Whether chunk `c` still has the bounds its copy was made for (a split or merge
    /// committed before its `Out` changes them).
    fn same_bounds(&self, id: ChunkId, c: &OwnedChunk) -> Result<(), KvError> {
        let d = self.store.descriptor();
        match d.chunks.owned.get(&id) {
            Some(n) if n.keyspace == c.keyspace && n.lo == c.lo && n.hi == c.hi => Ok(()),
            _ => Err(KvError::Refused {
                status: 409,
                code: "chunk_changed".into(),
                message: "the chunk was split or merged while it was copied; the move starts over"
                    .into(),
            }),
        }
    }

    /// Sends the `In` of a frozen hand-off, then finishes it; if the target refuses it or
    /// does not take it in time, settles it with the target.
    async fn send_chunk_in(
        &self,
        to: ShardId,
        frozen_at: Option<Instant>,
        msg: ChunkIn,
        bytes: u64,
    ) -> Result<Epoch, KvError> {
        let (id, epoch) = (msg.id, msg.epoch);
        // Frozen until the target's `In`: bounded from the freeze on, whatever gossip says.
        let give_up_at = frozen_at.unwrap_or_else(Instant::now) + self.config.handoff_timeout();
        let e = match deliver(self, to, rpc_kind::CHUNK_IN, &msg, give_up_at).await? {
            Delivery::Taken(()) => return self.finish_chunk(id, to, epoch, frozen_at, bytes).await,
            Delivery::Refused { message, .. } => {
                tracing::warn!(shard = %self.shard(), chunk = %id, to = %to, %message, "target refused the chunk; settling");
                KvError::BadRequest {
                    code: "move_refused".into(),
                    message,
                }
            }
            Delivery::TimedOut(e) => KvError::Unavailable {
                shard: to,
                reason: format!(
                    "chunk {id}: shard {to} did not take it within {} ms ({e}); the move was aborted",
                    self.config.handoff_timeout_ms
                ),
            },
        };
        self.settle_chunk_or(id, to, epoch, bytes, e).await
    }

    /// Settles a hand-off whose `In` may have reached the target: the target refuses it for
    /// good and `Abort` unfreezes the chunk here (`Err(e)`), or it holds the chunk already and
    /// the hand-off finishes.
    async fn settle_chunk_or(
        &self,
        id: ChunkId,
        to: ShardId,
        epoch: Epoch,
        bytes: u64,
        e: KvError,
    ) -> Result<Epoch, KvError> {
        let req = ChunkRefuse {
            id,
            from: self.shard(),
            epoch,
        };
        let unit = format!("chunk {id}");
        match refuse_until_answered(self, to, rpc_kind::CHUNK_REFUSE, &req, &unit).await? {
            RefuseAnswer::AlreadyReceived => self.finish_chunk(id, to, epoch, None, bytes).await,
            RefuseAnswer::Refused => {
                self.propose(Command::Chunk(ChunkCommand::Abort { id, epoch }))
                    .await?;
                self.chunk_moves.aborted();
                Err(e)
            }
        }
    }

    /// A frozen hand-off failed before any `In` of it was sent: unfreeze the chunk (if this
    /// node still leads; otherwise the next leader resumes it) and return `e`.
    async fn abort_chunk_unsent(&self, id: ChunkId, epoch: Epoch, e: KvError) -> KvError {
        if self.is_leader() {
            tracing::warn!(shard = %self.shard(), chunk = %id, error = %e, "frozen chunk copy failed; aborting");
            if let Err(a) = self
                .propose(Command::Chunk(ChunkCommand::Abort { id, epoch }))
                .await
            {
                return a;
            }
            self.chunk_moves.aborted();
        }
        e
    }

    /// The target serves the chunk: commit `Done` (the data here goes, a note stays).
    async fn finish_chunk(
        &self,
        id: ChunkId,
        to: ShardId,
        epoch: Epoch,
        frozen_at: Option<Instant>,
        bytes: u64,
    ) -> Result<Epoch, KvError> {
        let pause = frozen_at.map(|t| t.elapsed());
        let frozen_ms = pause.map(|p| p.as_millis() as u64);
        crate::failpoints::hold("chunk_taken").await;
        self.propose(Command::Chunk(ChunkCommand::Done { id, epoch }))
            .await?;
        self.chunk_moves.done(bytes, pause);
        tracing::info!(shard = %self.shard(), chunk = %id, to = %to, %epoch, bytes, ?frozen_ms, "chunk handed off");
        Ok(epoch)
    }
}
