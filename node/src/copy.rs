//! The copy phase of a hand-off, on the source leader, for a slot (`rebalance`) and a chunk
//! of a range collection (`chunks`) alike: the unit's pairs go to the target's leader in
//! pieces of about `--move_piece_kb` (`MOVE_STAGE` / `CHUNK_STAGE`; one `Stage` entry each
//! there) while the unit keeps serving, then the keys written meanwhile, in rounds, until
//! what is left is small; the hand-off then freezes the unit and sends only that rest. A
//! hand-off resumed by a new leader (its unit frozen already) copies the same way, with
//! nothing written meanwhile.
//!
//! Each copy has its own random id, so the target can tell its pieces from those of an
//! earlier copy; while it runs, this leader answers the target's status question for it with
//! "Pending" (`Node::copies`), and once it is gone the target drops what it staged.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use unikv_storage::moves::ALREADY_RECEIVED;
use unikv_storage::{CopyUnit, CopyWrites, Piece, Staged};
use unikv_types::{rpc_kind, ChunkId, Epoch, Keyspace, KvError, ShardId, Slot};

use crate::copies::CopyOf;
use crate::peer::{deliver, Delivery};
use crate::service::Node;

/// One piece of a slot's copy (`MOVE_STAGE`), from the source leader to the target leader,
/// which commits it as a `Stage` entry (see `MoveCommand::Stage`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveStage {
    pub slot: Slot,
    pub from: ShardId,
    pub epoch: Epoch,
    pub copy: u64,
    pub part: u32,
    pub overwrite: bool,
    pub kv: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections_kv: Vec<(Keyspace, String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<(Keyspace, String)>,
}

/// One piece of a chunk's copy (`CHUNK_STAGE`), committed by the target leader as a
/// `ChunkCommand::Stage` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkStage {
    pub id: ChunkId,
    pub keyspace: Keyspace,
    pub lo: String,
    pub hi: Option<String>,
    pub from: ShardId,
    pub epoch: Epoch,
    pub copy: u64,
    pub part: u32,
    pub overwrite: bool,
    pub kv: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
}

/// Rounds of sending the keys written during the copy before the slot is frozen anyway.
const CATCH_UP_ROUNDS: usize = 4;
/// Written keys few enough to send while frozen.
const SMALL_TAIL_KEYS: usize = 512;
const SMALL_TAIL_BYTES: usize = 64 * 1024;

/// How a copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    /// Staged at the target; the `In` that completes it names this.
    Staged(Staged),
    /// The target had already committed this hand-off's `In` (a resumed hand-off).
    AlreadyIn,
}

/// One copy of a slot or chunk to a target, piece by piece.
pub struct CopyRun<'a> {
    node: &'a Node,
    unit: CopyUnit,
    to: ShardId,
    epoch: Epoch,
    copy: u64,
    /// Pieces the target has taken.
    parts: u32,
    /// Bytes (keys and values) sent.
    pub bytes: u64,
    /// Set while the slot is frozen: no piece may be sent after it.
    deadline: Option<Instant>,
}

impl<'a> CopyRun<'a> {
    pub fn new(node: &'a Node, unit: CopyUnit, to: ShardId, epoch: Epoch) -> Self {
        let copy = rand::random::<u64>();
        node.copies.started(copy_of(&unit), copy);
        CopyRun {
            node,
            unit,
            to,
            epoch,
            copy,
            parts: 0,
            bytes: 0,
            deadline: None,
        }
    }

    /// From now on the slot is frozen: every piece (and the `In`) must be taken before
    /// `deadline`.
    pub fn freeze(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// The deadline of a frozen copy (`None` while the slot serves).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// What the completing `In` names.
    pub fn staged(&self) -> Staged {
        Staged {
            copy: self.copy,
            parts: self.parts,
        }
    }

    /// Sends every pair of the unit (paced by `--move_rate_mb` unless frozen).
    pub async fn scan(&mut self) -> Result<Copied, KvError> {
        let store = self.node.store.clone();
        let max = self.node.config.move_piece_bytes();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let from = cursor.take();
            let (store, unit) = (store.clone(), self.unit.clone());
            let (piece, next) =
                blocking(move || store.copy_piece(&unit, from.as_deref(), max)).await?;
            if self.send(piece, false).await? {
                return Ok(Copied::AlreadyIn);
            }
            match next {
                Some(c) => cursor = Some(c),
                None => return Ok(Copied::Staged(self.staged())),
            }
        }
    }

    /// Sends the current values of the keys written since the scan started, in rounds, until
    /// few are left (or after `CATCH_UP_ROUNDS`); an error if the record of writes is lost
    /// (before any freeze).
    pub async fn catch_up(&mut self, writes: &CopyWrites) -> Result<(), KvError> {
        for _ in 0..CATCH_UP_ROUNDS {
            let (keys, bytes) = writes.pending().map_err(internal)?;
            if keys <= SMALL_TAIL_KEYS && bytes <= SMALL_TAIL_BYTES {
                break;
            }
            let keys = writes.take().map_err(internal)?;
            let last = self.send_keys(keys).await?;
            self.send(last, true).await?;
        }
        writes.pending().map_err(internal)?;
        Ok(())
    }

    /// Sends the current values (or absence) of raw keys of the unit as pieces, read one at
    /// a time, all but the last; returns the last (it may go in the `In`).
    pub async fn send_keys(&mut self, keys: Vec<Vec<u8>>) -> Result<Piece, KvError> {
        let store = self.node.store.clone();
        let max = self.node.config.move_piece_bytes();
        let keys = std::sync::Arc::new(keys);
        let mut at = 0;
        loop {
            let (store, keys2, unit) = (store.clone(), keys.clone(), self.unit.clone());
            let (piece, used) =
                blocking(move || store.read_piece(&unit, &keys2[at..], max)).await?;
            at += used;
            if at >= keys.len() {
                return Ok(piece);
            }
            self.send(piece, true).await?;
        }
    }

    /// Sends one piece; true if the target answered that it holds the hand-off already.
    pub async fn send(&mut self, piece: Piece, overwrite: bool) -> Result<bool, KvError> {
        let node = self.node;
        if self.deadline.is_none() {
            let waited = node.throttle.pace(piece.bytes).await;
            if !waited.is_zero() {
                tracing::debug!(shard = %node.shard(), unit = %self.unit, waited_ms = waited.as_millis() as u64, "copy paced by --move_rate_mb");
            }
        }
        let bytes = piece.bytes;
        let per_piece = Instant::now() + node.config.handoff_timeout();
        let give_up_at = self.deadline.map_or(per_piece, |d| d.min(per_piece));
        let (from, epoch, copy, part, to) =
            (node.shard(), self.epoch, self.copy, self.parts, self.to);
        let delivery = match &self.unit {
            CopyUnit::Slot(slot) => {
                let msg = MoveStage {
                    slot: *slot,
                    from,
                    epoch,
                    copy,
                    part,
                    overwrite,
                    kv: piece.kv,
                    collections_kv: piece.collections_kv,
                    deleted: piece.deleted,
                };
                deliver(node, to, rpc_kind::MOVE_STAGE, &msg, give_up_at).await?
            }
            CopyUnit::Chunk {
                id,
                keyspace,
                lo,
                hi,
            } => {
                let (kv, deleted) = piece.into_chunk_parts();
                let msg = ChunkStage {
                    id: *id,
                    keyspace: *keyspace,
                    lo: lo.clone(),
                    hi: hi.clone(),
                    from,
                    epoch,
                    copy,
                    part,
                    overwrite,
                    kv,
                    deleted,
                };
                deliver(node, to, rpc_kind::CHUNK_STAGE, &msg, give_up_at).await?
            }
        };
        match delivery {
            Delivery::Taken(()) => {
                self.parts += 1;
                self.bytes += bytes;
                Ok(false)
            }
            Delivery::Refused { code, .. } if code == ALREADY_RECEIVED => Ok(true),
            Delivery::Refused { message, .. } => Err(KvError::BadRequest {
                code: "move_refused".into(),
                message,
            }),
            Delivery::TimedOut(e) => Err(KvError::Unavailable {
                shard: self.to,
                reason: format!(
                    "{}: shard {} took no piece of the copy within {} ms ({e})",
                    self.unit, self.to, node.config.handoff_timeout_ms
                ),
            }),
        }
    }
}

impl Drop for CopyRun<'_> {
    fn drop(&mut self) {
        self.node.copies.ended(copy_of(&self.unit), self.copy);
    }
}

fn copy_of(unit: &CopyUnit) -> CopyOf {
    match unit {
        CopyUnit::Slot(s) => CopyOf::Slot(*s),
        CopyUnit::Chunk { id, .. } => CopyOf::Chunk(*id),
    }
}

pub fn internal(e: unikv_storage::Error) -> KvError {
    KvError::Internal(e.to_string())
}

/// Runs a RocksDB read off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> unikv_storage::Result<T> + Send + 'static,
) -> Result<T, KvError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KvError::Internal(format!("copy task failed: {e}")))?
        .map_err(internal)
}
