//! Requests for a range collection on this node: point operations in the chunk holding the
//! key, a scan page through the chunks held here (after a linearizable barrier, read from one
//! RocksDB view), the listing of chunks held here, a split at a key, and an explicit chunk
//! move. A position no chunk here holds is answered `wrong_shard`, naming the shard it went to
//! when a forwarding note says.

use std::time::Instant;

use unikv_storage::apply::range_wrong_shard;
use unikv_storage::{ChunkCommand, ChunkState, Command};
use unikv_types::chunk::{MAX_SCAN_LIMIT, SCAN_PAGE_BYTES};
use unikv_types::{wall_clock_ms, Keyspace, KvError, KvOp, KvReply, KvRequest, ScanRange};

use crate::service::{Home, Node, LEADER_POLL};

impl Node {
    /// Serves a request for range keyspace `ks`.
    pub(crate) async fn kv_range(&self, req: KvRequest, ks: Keyspace) -> Result<KvReply, KvError> {
        let deadline = Instant::now() + self.config.request_timeout();
        match &req.op {
            KvOp::Scan(r) => {
                let r = bounded(r)?;
                loop {
                    self.linearize(deadline).await?;
                    let page = self
                        .store
                        .scan_range(ks, &r)
                        .map_err(|e| KvError::Internal(e.to_string()))?;
                    if let Some(p) = page {
                        self.scans_served
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Ok(KvReply::Scan(p));
                    }
                    // The first chunk frozen for its hand-off: read once the hand-off ends
                    // (here again, or a forwarding note to its new shard).
                    let d = self.store.descriptor();
                    let first = if r.reverse {
                        d.chunks.find_before(ks, r.end.as_deref())
                    } else {
                        d.chunks.find(ks, &r.start)
                    };
                    let frozen = first.is_some_and(|(_, c)| c.state != ChunkState::Serving);
                    if !frozen || Instant::now() + LEADER_POLL >= deadline {
                        let at = r.first_position().unwrap_or_default();
                        return Err(range_wrong_shard(&d, ks, at));
                    }
                    tokio::time::sleep(LEADER_POLL).await;
                }
            }
            KvOp::Chunks => {
                self.linearize(deadline).await?;
                self.store
                    .chunks(Some(ks))
                    .map(KvReply::Chunks)
                    .map_err(|e| KvError::Internal(e.to_string()))
            }
            KvOp::Split | KvOp::MoveChunk { .. } if !self.is_leader() => match self.leader() {
                Some(l) if !req.forwarded && l.node_id != self.id() => {
                    let deadline = match req.op {
                        // It answers once its copy is done.
                        KvOp::MoveChunk { .. } => {
                            Instant::now() + super::handoff::MOVE_CALL_TIMEOUT
                        }
                        _ => deadline,
                    };
                    self.forward(l, &req, deadline).await
                }
                leader => Err(KvError::NotLeader {
                    shard: self.shard(),
                    leader,
                }),
            },
            KvOp::Split => self.split_at(ks, &req.key).await,
            KvOp::MoveChunk { id, to } => {
                let d = self.store.descriptor();
                let held = d.chunks.owned.get(id).is_some_and(|c| c.keyspace == ks);
                // A retried call of a move that finished here answers as the move did.
                let went = d.chunks.forwards.get(id);
                let moved_there = went.is_some_and(|f| f.keyspace == ks && f.target == *to);
                if !held && !moved_there {
                    return Err(range_wrong_shard(&d, ks, &req.key));
                }
                let epoch = self.move_chunk(*id, *to).await?;
                tracing::info!(shard = %self.shard(), chunk = %id, to = %to, epoch = %epoch, "chunk moved");
                Ok(KvReply::Written)
            }
            KvOp::Catalog(_) | KvOp::Usage => Err(KvError::BadRequest {
                code: "bad_command".into(),
                message: format!(
                    "{} is not a request for a range collection's key",
                    req.op.name()
                ),
            }),
            KvOp::Get | KvOp::Put { .. } | KvOp::Append { .. } | KvOp::Delete => {
                self.kv_in(req, ks, Home::Range).await
            }
        }
    }

    /// On the leader: splits the chunk holding `at` there (nothing to do if `at` already
    /// starts a chunk).
    pub(crate) async fn split_at(&self, ks: Keyspace, at: &str) -> Result<KvReply, KvError> {
        let d = self.store.descriptor();
        let Some((id, c)) = d.chunks.find(ks, at) else {
            return Err(range_wrong_shard(&d, ks, at));
        };
        if c.lo == at {
            return Ok(KvReply::Written);
        }
        if self.has_task(super::handoff::MOVING, id.0) {
            return Err(KvError::Refused {
                status: 409,
                code: "chunk_moving".into(),
                message: format!(
                    "chunk {id} is being copied to another shard; split it once it has arrived"
                ),
            });
        }
        self.propose(Command::Chunk(ChunkCommand::Split {
            id,
            at: at.to_string(),
            now_ms: wall_clock_ms(),
        }))
        .await
    }
}

/// The scan with its limits clamped to what one page may hold.
fn bounded(r: &ScanRange) -> Result<ScanRange, KvError> {
    if r.limit == 0 || r.limit > MAX_SCAN_LIMIT {
        return Err(KvError::BadRequest {
            code: "bad_limit".into(),
            message: format!("limit must be 1..={MAX_SCAN_LIMIT}, got {}", r.limit),
        });
    }
    if r.end.as_deref().is_some_and(|e| e < r.start.as_str()) {
        return Err(KvError::BadRequest {
            code: "bad_range".into(),
            message: format!("end {:?} is before start {:?}", r.end, r.start),
        });
    }
    Ok(ScanRange {
        max_bytes: r.max_bytes.clamp(1, SCAN_PAGE_BYTES),
        ..r.clone()
    })
}
