//! KV requests and replies as they travel over QUIC (router → node, follower → leader), and the
//! errors a node answers with. HTTP front ends translate these to JSON.

use serde::{Deserialize, Serialize};

use crate::{Epoch, NodeId, ShardId, Slot};

/// A node as clients need to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    pub node_id: NodeId,
    /// HTTP address, `host:port`.
    pub http: String,
    /// QUIC (Raft and KV RPC) address, `host:port`.
    pub raft: String,
}

/// The client identity and sequence number that make a write at-most-once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientSeq {
    pub client_id: String,
    pub seq: u64,
    /// When the request was first sent (ms since the Unix epoch, the sender's clock), the same
    /// on every retry. A shard forgets a client's record some time after its last write (the
    /// dedup window) and remembers, per slot, the newest `ts` it forgot: a request without a
    /// record whose `ts` is not newer may be a late retry of a forgotten write and is refused
    /// (`session_expired`), never applied twice. Absent: stamped where the request enters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
}

impl ClientSeq {
    pub fn new(client_id: impl Into<String>, seq: u64) -> ClientSeq {
        ClientSeq {
            client_id: client_id.into(),
            seq,
            ts: None,
        }
    }

    /// Sets `ts` to `now_ms` unless it is set already (a retry keeps its first stamp).
    pub fn stamped(mut self, now_ms: u64) -> ClientSeq {
        self.ts.get_or_insert(now_ms);
        self
    }
}

/// Milliseconds since the Unix epoch by this machine's wall clock (0 if the clock is before it).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The operation of a KV request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Get,
    Put {
        value: String,
    },
    Append {
        value: String,
    },
    Delete,
    /// A change of the catalog (only ever sent for the system collection's catalog key).
    Catalog(crate::catalog::CatalogOp),
    /// Range collections: read keys in order from the chunk holding the request's key
    /// (`ScanRange::first_position`), on through whatever else the shard holds next.
    Scan(crate::chunk::ScanRange),
    /// Range collections: the chunks of the collection this shard holds (key ignored).
    Chunks,
    /// Range collections: split the chunk holding the request's key at that key.
    Split,
    /// Range collections: hand chunk `id` (which holds the request's key) to shard `to`.
    MoveChunk {
        id: crate::chunk::ChunkId,
        to: ShardId,
    },
    /// The keys and bytes this shard holds of the request's collection or shard key (key
    /// ignored).
    Usage,
}

impl KvOp {
    /// Whether the operation changes anything (a write gets a router session).
    pub fn is_write(&self) -> bool {
        !matches!(self, KvOp::Get | KvOp::Scan(_) | KvOp::Chunks | KvOp::Usage)
    }
    /// Whether the operation exists for range collections only.
    pub fn is_range_only(&self) -> bool {
        matches!(
            self,
            KvOp::Scan(_) | KvOp::Chunks | KvOp::Split | KvOp::MoveChunk { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            KvOp::Get => "get",
            KvOp::Put { .. } => "put",
            KvOp::Append { .. } => "append",
            KvOp::Delete => "delete",
            KvOp::Catalog(_) => "catalog",
            KvOp::Scan(_) => "scan",
            KvOp::Chunks => "chunks",
            KvOp::Split => "split",
            KvOp::MoveChunk { .. } => "move_chunk",
            KvOp::Usage => "usage",
        }
    }
}

/// One KV request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvRequest {
    pub key: String,
    pub op: KvOp,
    /// Present on writes that must be applied at most once.
    pub client: Option<ClientSeq>,
    /// Set by a node that forwards the request, so the receiver never forwards it again.
    pub forwarded: bool,
    /// The collection the key belongs to (`None`: `default`). Each node resolves the name
    /// through its catalog cache; absent from older senders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// The shard key, for a custom collection (absent: its default shard key, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_key: Option<String>,
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvReply {
    /// `get`: the value, or `None` if the key does not exist.
    Value(Option<String>),
    /// `put` applied.
    Written,
    /// `append` applied; the value before the append.
    Appended { previous: Option<String> },
    /// A retry of an `append` that was applied once before, whose previous value was too long
    /// to keep in the dedup record (only its length was kept).
    RetriedAppend { previous_bytes: u64 },
    /// `delete` applied; whether the key existed.
    Deleted { existed: bool },
    /// A catalog change applied.
    Catalog(crate::catalog::CatalogReply),
    /// One shard's page of a scan.
    Scan(crate::chunk::ScanPage),
    /// The chunks a shard holds.
    Chunks(Vec<crate::chunk::ChunkInfo>),
    /// What a shard holds of a collection or shard key.
    Usage { keys: u64, bytes: u64 },
}

/// Why a node did not serve a KV request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KvError {
    /// This node is not the leader of its shard; `leader` is its best guess.
    #[error("node is not the leader of shard {shard}")]
    NotLeader {
        shard: ShardId,
        leader: Option<NodeRef>,
    },
    /// The slot is not owned by this shard; `owner` is the shard it believes owns it, at `epoch`.
    /// For a key of a range collection `slot` is [`RANGE_SLOT`]: its chunk is not here.
    #[error("{}", wrong_shard_message(*slot, *shard))]
    WrongShard {
        slot: Slot,
        shard: ShardId,
        owner: Option<ShardId>,
        epoch: Option<Epoch>,
    },
    /// The request is invalid; `code` is a stable machine-readable name.
    #[error("{message}")]
    BadRequest { code: String, message: String },
    /// A retried write whose sequence number is older than one already applied for the client.
    #[error("sequence {seq} for client {client_id} is older than the last applied ({last})")]
    StaleSequence {
        client_id: String,
        seq: u64,
        last: u64,
    },
    /// A write reused a (client id, seq) pair already applied for a different request (another
    /// key, operation or value): it is refused, never answered with the other request's reply.
    #[error("sequence {seq} for client {client_id} was already used for a different request")]
    SequenceReused { client_id: String, seq: u64 },
    /// A write without a dedup record whose `ts` is not newer than what the slot already
    /// forgot: it may be a late retry of a write applied and forgotten, so it is refused.
    #[error("client {client_id} seq {seq} was not applied: it was first sent at {ts_ms} ms and this slot no longer remembers writes sent up to {forgotten_through_ms} ms (the dedup window); an earlier attempt may have been applied")]
    SessionExpired {
        client_id: String,
        seq: u64,
        ts_ms: u64,
        forgotten_through_ms: u64,
    },
    /// The leader's data dir is out of space: the write was not proposed (reads still work).
    /// Writes are taken again, without a restart, once space returns.
    #[error("shard {shard} refuses writes: node {node} is out of disk space ({reason})")]
    InsufficientStorage {
        shard: ShardId,
        node: NodeId,
        reason: String,
    },
    /// Refused for a reason with its own HTTP status (404 `unknown_collection`, 409
    /// `version_conflict`, ...); `code` is a stable machine-readable name.
    #[error("{message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// The shard cannot serve now (no leader, no quorum, shutting down); retry later.
    #[error("shard {shard} unavailable: {reason}")]
    Unavailable { shard: ShardId, reason: String },
    /// The write may or may not have been applied (leader changed before it answered). Retrying
    /// with the same client id and sequence is safe.
    #[error("outcome unknown: {reason}")]
    Unknown { reason: String },
    /// A storage or internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The `slot` of a `WrongShard` for a key of a range collection (not a hash slot).
pub const RANGE_SLOT: Slot = crate::SLOT_COUNT;

fn wrong_shard_message(slot: Slot, shard: ShardId) -> String {
    if slot == RANGE_SLOT {
        format!("the key's chunk is not held by shard {shard}")
    } else {
        format!("slot {slot} is not owned by shard {shard}")
    }
}

impl KvError {
    /// A stable machine-readable code for JSON error bodies.
    pub fn code(&self) -> &str {
        match self {
            KvError::NotLeader { .. } => "not_leader",
            KvError::WrongShard { .. } => "wrong_shard",
            KvError::BadRequest { code, .. } | KvError::Refused { code, .. } => code,
            KvError::StaleSequence { .. } => "stale_sequence",
            KvError::SequenceReused { .. } => "sequence_reused",
            KvError::SessionExpired { .. } => "session_expired",
            KvError::InsufficientStorage { .. } => "insufficient_storage",
            KvError::Unavailable { .. } => "unavailable",
            KvError::Unknown { .. } => "outcome_unknown",
            KvError::Internal(_) => "internal",
        }
    }

    /// The HTTP status that fits the error.
    pub fn http_status(&self) -> u16 {
        match self {
            KvError::BadRequest { .. } => 400,
            KvError::Refused { status, .. } => *status,
            KvError::StaleSequence { .. }
            | KvError::SequenceReused { .. }
            | KvError::SessionExpired { .. } => 409,
            KvError::WrongShard { .. } | KvError::NotLeader { .. } => 421,
            KvError::InsufficientStorage { .. } => 507,
            KvError::Unavailable { .. } => 503,
            KvError::Unknown { .. } => 504,
            KvError::Internal(_) => 500,
        }
    }
}

/// A refused catalog call: a 400 is a `BadRequest`, anything else `Refused` with its status.
impl From<crate::catalog::CatalogError> for KvError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        if e.status == 400 {
            KvError::BadRequest {
                code: e.code,
                message: e.message,
            }
        } else {
            KvError::Refused {
                status: e.status,
                code: e.code,
                message: e.message,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let e = KvError::BadRequest {
            code: "empty_key".into(),
            message: "m".into(),
        };
        assert_eq!(e.code(), "empty_key");
        assert_eq!(e.http_status(), 400);
        assert_eq!(
            KvError::Unavailable {
                shard: ShardId(1),
                reason: "x".into()
            }
            .http_status(),
            503
        );
        let full = KvError::InsufficientStorage {
            shard: ShardId(1),
            node: NodeId(2),
            reason: "No space left on device".into(),
        };
        assert_eq!(
            (full.http_status(), full.code()),
            (507, "insufficient_storage")
        );
    }
}
