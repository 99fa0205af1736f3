//! Types shared by every unikv process that speaks to a node: typed ids, hash slots, the KV
//! request/response messages carried over QUIC, and the JSON error shape of the HTTP APIs;
//! also the one leader-finding walk that the router and nodes both use to reach a shard
//! (`leader`).
//!
//! This crate deliberately has no storage or Raft dependency so that the router (and tools) can
//! use the wire types without pulling RocksDB in.

pub mod catalog;
pub mod chunk;
pub mod cluster;
pub mod ids;
pub mod kv;
pub mod leader;
pub mod limits;
pub mod slot;

pub use catalog::Keyspace;
pub use chunk::{ChunkId, ChunkInfo, ScanPage, ScanRange};
pub use cluster::{Role, ShardState, ShardSummary};
pub use ids::{Epoch, NodeId, ShardId};
pub use kv::{wall_clock_ms, ClientSeq, KvError, KvOp, KvReply, KvRequest, NodeRef};
pub use limits::Limits;
pub use slot::{key_slot, Slot, SlotRange, SLOT_COUNT};

/// Stream kinds on the QUIC transport: the first byte of every request stream.
pub mod rpc_kind {
    /// Raft AppendEntries (node → node).
    pub const APPEND: u8 = 1;
    /// Raft Vote (node → node).
    pub const VOTE: u8 = 2;
    /// Raft full snapshot, streamed (node → node).
    pub const SNAPSHOT: u8 = 3;
    /// Raft Pre-Vote: would you vote for me? (node → node, changes nothing).
    pub const PRE_VOTE: u8 = 4;
    /// A replication session: AppendEntries frames one way, their answers back, in order
    /// (node → node, one stream per session; `unikv_node::append_stream`).
    pub const APPEND_STREAM: u8 = 5;
    /// A KV request (router or forwarding node → node).
    pub const KV: u8 = 10;
    /// Several KV requests (the router batches reads) to one node in one exchange: `Vec<KvRequest>` in,
    /// one `Result<KvReply, KvError>` per request out, in the same order.
    pub const KV_BATCH: u8 = 12;
    /// Ask a leader for a read index so a follower can serve a linearizable read locally.
    pub const READ_INDEX: u8 = 11;
    /// Who are you? Used to validate joins and learn a peer's HTTP address.
    pub const HELLO: u8 = 20;
    /// Membership change forwarded to the leader.
    pub const ADMIN: u8 = 21;
    /// A slot's data from the source shard's leader to the target's.
    pub const MOVE_IN: u8 = 30;
    /// Target asks the source whether a copy staged there is still wanted.
    pub const MOVE_STATUS: u8 = 31;
    /// Registry change or explicit move for a shard's leader.
    pub const SHARD_ADMIN: u8 = 33;
    /// A piece of a slot's copy from the source shard's leader to the target's.
    pub const MOVE_STAGE: u8 = 34;
    /// Several small slots' data in one exchange: `Vec` of `MOVE_IN`'s message in, one
    /// result per slot out, in the same order.
    pub const MOVE_IN_MANY: u8 = 35;
    /// Source asks the target never to take a hand-off (it commits `Refuse`, or answers
    /// `already_received`), so the source may give the hand-off up.
    pub const MOVE_REFUSE: u8 = 37;
    /// Drop a deleted collection's data (the catalog shard's leader → every shard's leader).
    pub const DROP_KEYSPACE: u8 = 40;
    /// Set or release a promote's fence on slot moves (the catalog shard's leader → every
    /// shard's leader).
    pub const FENCE: u8 = 41;
    /// A chunk's data from the source shard's leader to the target's.
    pub const CHUNK_IN: u8 = 50;
    /// Target asks the source whether a chunk's copy staged there is still wanted.
    pub const CHUNK_STATUS: u8 = 51;
    /// A piece of a chunk's copy from the source shard's leader to the target's.
    pub const CHUNK_STAGE: u8 = 56;
    /// Source asks the target never to take a chunk's hand-off (as `MOVE_REFUSE`).
    pub const CHUNK_REFUSE: u8 = 57;
    /// A shard key's data on one shard, from that shard's leader to the target's.
    pub const UNIT_IN: u8 = 53;
    /// Target asks the source how a shard key's hand-off ended.
    pub const UNIT_STATUS: u8 = 54;
    /// Source tells the target a shard key's hand-off is done.
    pub const UNIT_ACTIVATE: u8 = 55;

    /// The kinds a router's certificate may send: client requests. Raft, move, membership
    /// and every other kind need a node's certificate (docs/ARCHITECTURE.md, Security).
    pub const ROUTER_KINDS: [u8; 3] = [KV, KV_BATCH, READ_INDEX];

    /// Whether a router's certificate may send `kind`.
    pub fn router_may_send(kind: u8) -> bool {
        ROUTER_KINDS.contains(&kind)
    }
}
