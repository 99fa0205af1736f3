//! Durable state of one shard replica, in one RocksDB: the Raft log and vote (`log_store`), the
//! replicated state machine (`state_machine`: KV data, per-slot dedup tables, the shard
//! descriptor), and snapshot files that stream the state machine to lagging followers.
//!
//! Writes that acknowledge are fsynced: the log store completes an append only after a group
//! commit thread has synced the WAL. State machine writes are not synced on their own (the log
//! covers them); a snapshot syncs the WAL before it is reported built, so logs are never purged
//! ahead of durable state.

pub mod apply;
pub mod apply_cache;
pub mod chunk_layout;
pub mod chunk_map;
pub mod chunk_moves;
pub mod command;
mod command_display;
pub mod copy;
pub mod db;
pub mod dedup;
pub mod descriptor;
pub mod disk;
pub mod error;
pub mod keyspace_stats;
pub mod log_cache;
pub mod log_store;
pub mod meta;
pub mod moves;
pub mod overlay;
pub mod raft_types;
pub mod range_reads;
pub mod records;
pub mod registry;
pub mod snapshot;
pub mod state_machine;
pub mod stats_view;
pub mod unit_moves;
pub mod unit_reads;
pub mod usage;

pub use chunk_map::{ChunkMap, ChunkState, OwnedChunk};
pub use command::{
    ChunkCommand, Command, CommandResult, LeaderClock, MoveCommand, RegistryCommand, Staged,
    UnitCommand,
};
pub use copy::{CopyUnit, Piece};
pub use db::{Db, DbOptions};
pub use descriptor::{Forward, Incoming, Outgoing, OwnedRange, ShardDescriptor, Staging};
pub use error::{Error, Result};
pub use log_store::LogStore;
pub use moves::SlotExport;
pub use raft_types::{NodeAddr, TypeConfig};
pub use records::{DedupRecord, SlotStats};
pub use snapshot::{Snapshot, SnapshotFile};
pub use state_machine::{CopyWrites, OwnedRead, StateMachine, Store};

/// Opens (or creates) the storage of one replica under `dir`: the RocksDB and the snapshot folder.
pub fn open(
    dir: &std::path::Path,
    shard: unikv_types::ShardId,
) -> Result<(LogStore, StateMachine)> {
    open_with(dir, shard, &DbOptions::default())
}

/// [`open`] with explicit RocksDB memory bounds.
pub fn open_with(
    dir: &std::path::Path,
    shard: unikv_types::ShardId,
    memory: &DbOptions,
) -> Result<(LogStore, StateMachine)> {
    let db = Db::open_with(&dir.join("db"), memory)?;
    let log = LogStore::new(db.clone());
    let sm = StateMachine::open(db, &dir.join("snapshots"), shard)?;
    Ok((log, sm))
}
