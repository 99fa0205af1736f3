//! Range collections on the node: serving keys, scans, chunk listings and splits from the
//! chunks this shard holds (`serve`), moving a chunk to another shard (`handoff` on the
//! source — copied while it serves, over `crate::copy` — and `receive` on the target, over
//! `messages`), and the leader's loop that splits big chunks, finishes interrupted moves,
//! drops copies their source gave up, drains a draining shard and evens bytes (`balance`).
//!
//! The shard's descriptor is the only record of which chunks it holds; every step is a Raft
//! commit in the shard concerned (`unikv_storage::chunk_moves`), so a new leader picks up
//! whatever its predecessor left.

mod balance;
mod handoff;
mod messages;
mod receive;
mod serve;

pub use balance::spawn;
pub use messages::{ChunkIn, ChunkRefuse, ChunkStatusRequest};
