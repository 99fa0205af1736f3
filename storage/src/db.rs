//! The replica's RocksDB: column families, key layout and the group-commit WAL syncer.
//!
//! Column families:
//! - `log`: Raft log entries, key = index (u64 big-endian), value = msgpack entry.
//! - `raft`: vote, committed log id, last purged log id.
//! - `kv`: user data, key = slot (u16 big-endian) ++ user key for the collection `default`,
//!   slot ++ 0xFF ++ keyspace (u32 BE) ++ user key for every other collection (user keys are
//!   UTF-8, where 0xFF never occurs, so the two never collide and `default`'s bytes are the
//!   seed's); value = raw bytes. Every collection's keys of a slot sit in that slot's range.
//!   Range collections keep their keys under one prefix, [`RANGE_PREFIX`] ++ 0xFF ++
//!   keyspace ++ user key, in byte order across chunks.
//! - `dedup`: at-most-once table, key = slot (u16 BE) ++ client id, value = msgpack record.
//! - `sm`: state machine metadata: applied log id, membership, shard descriptor.
//! - `stats`: per-slot key count and bytes, key = slot (u16 BE), value = two u64 BE.
//!
//! Slot-prefixed keys make "all data of a slot" one contiguous range, so exporting or deleting a
//! slot on a move is a range operation.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use unikv_types::{Keyspace, Slot};

use crate::disk::{self, DiskState};
use crate::error::Result;

pub const CF_LOG: &str = "log";
pub const CF_RAFT: &str = "raft";
pub const CF_KV: &str = "kv";
pub const CF_DEDUP: &str = "dedup";
pub const CF_SM: &str = "sm";
pub const CF_STATS: &str = "stats";
const ALL_CFS: [&str; 6] = [CF_LOG, CF_RAFT, CF_KV, CF_DEDUP, CF_SM, CF_STATS];

/// A request to the syncer: run `done` once the WAL is fsynced (or failed to).
type SyncWaiter = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// Shared handle to the replica's database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DB>,
    syncer: mpsc::Sender<SyncWaiter>,
    stats: Arc<SyncStats>,
    /// [`DbOptions::unsafe_skip_fsync`].
    skip_fsync: bool,
    /// The first sign that stored bytes are damaged that any reader or writer met.
    corruption: Arc<std::sync::Mutex<Option<String>>>,
    /// Whether the data dir ran out of space (see `disk`).
    disk: Arc<DiskState>,
    /// Every slot's statistics in memory (see `stats_view`).
    stats_view: Arc<crate::stats_view::StatsView>,
}

/// RocksDB's memory bounds (the node's `--memtable_mb` and `--block_cache_mb`): memtables of
/// all column families together, and one block cache shared by them. Index and filter blocks
/// and iterators come on top (small next to these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbOptions {
    pub memtable_mb: usize,
    pub block_cache_mb: usize,
    /// Test-only negative control: never fsync the WAL (every "sync" becomes a plain write
    /// to the OS), so acknowledged writes are lost on power loss. The power-cut test turns it
    /// on to prove it can see such a loss; nothing else may.
    pub unsafe_skip_fsync: bool,
    /// Space reserved next to the database for a full disk (`disk`), in MiB; 0: none.
    pub ballast_mb: usize,
    /// Writes are refused once less than this is free (MiB; `None`: twice the largest
    /// memtable, half the room kept for resuming; 0: only at ENOSPC).
    pub reserve_mb: Option<usize>,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            memtable_mb: 64,
            block_cache_mb: 64,
            unsafe_skip_fsync: false,
            ballast_mb: 0,
            reserve_mb: None,
        }
    }
}

/// Counters that show how well group commit batches, and how large log entries get.
#[derive(Default, Debug)]
pub struct SyncStats {
    /// WAL fsyncs performed.
    pub fsyncs: std::sync::atomic::AtomicU64,
    /// Appends whose durability those fsyncs covered.
    pub synced_appends: std::sync::atomic::AtomicU64,
    /// Time spent in those fsyncs, in microseconds.
    pub fsync_micros: std::sync::atomic::AtomicU64,
    /// The largest Raft log entry written since the process started, encoded, in bytes.
    pub largest_entry_bytes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.path())
            .finish()
    }
}

impl Db {
    pub fn open(path: &Path) -> Result<Self> {
        Db::open_with(path, &DbOptions::default())
    }

    /// Opens with explicit memory bounds.
    pub fn open_with(path: &Path, memory: &DbOptions) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        let mb = |n: usize| n.max(1).saturating_mul(1 << 20);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        // All memtables together stay under this; past it RocksDB flushes the largest.
        opts.set_db_write_buffer_size(mb(memory.memtable_mb));
        let cache = rocksdb::Cache::new_lru_cache(mb(memory.block_cache_mb));
        let write_buffer = mb(memory.memtable_mb / 2).min(64 << 20);
        // The unused `default` family is listed too, with the same small write buffer:
        // RocksDB resumes after a full disk only once the largest family's buffer fits.
        let cfs = std::iter::once(&rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
            .chain(ALL_CFS.iter())
            .map(|name| {
                let mut cf = Options::default();
                cf.set_write_buffer_size(write_buffer);
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_block_cache(&cache);
                table.set_bloom_filter(10.0, false);
                cf.set_block_based_table_factory(&table);
                ColumnFamilyDescriptor::new(*name, cf)
            })
            .collect::<Vec<_>>();
        let db = Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?);
        let stats = Arc::new(SyncStats::default());
        let skip_fsync = memory.unsafe_skip_fsync;
        if skip_fsync {
            tracing::warn!(path = %path.display(), "fsync is OFF (test-only switch): acknowledged writes are lost on power loss");
        }
        // RocksDB resumes after a full disk once one memtable fits; writes are taken again
        // with room for a few more (no 507/200 flapping on the last megabytes).
        let ballast = path
            .parent()
            .map(|p| (p.join("ballast"), (memory.ballast_mb as u64) << 20));
        // Writes are taken again with twice the reserve free at least, so that 507s do not
        // flap around it.
        let reserve = memory
            .reserve_mb
            .map_or(2 * write_buffer as u64, |m| (m as u64) << 20);
        let headroom = (4 * write_buffer as u64).max(2 * reserve);
        let disk = DiskState::new(path, headroom, reserve, ballast);
        let syncer = spawn_syncer(db.clone(), stats.clone(), disk.clone(), skip_fsync);
        disk::spawn_watcher(Arc::downgrade(&db), disk.clone(), !skip_fsync);
        Ok(Self {
            inner: db,
            syncer,
            stats,
            skip_fsync,
            corruption: Arc::default(),
            disk,
            stats_view: Arc::default(),
        })
    }

    /// Every slot's statistics, kept current by apply.
    pub fn stats_view(&self) -> &crate::stats_view::StatsView {
        &self.stats_view
    }

    pub fn raw(&self) -> &DB {
        &self.inner
    }

    pub fn cf(&self, name: &str) -> &ColumnFamily {
        // The five column families are created at open; a missing one is a programming error.
        self.inner
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} missing"))
    }

    /// Notes `e` if it says stored bytes are damaged (the first such error is kept and shown
    /// by [`Db::corruption`]) or the disk is full ([`Db::disk`]); returns it.
    pub fn note(&self, e: crate::Error) -> crate::Error {
        if e.is_no_space() {
            self.disk.mark_full("write", &e);
        }
        if e.is_corruption() {
            let mut c = self.corruption.lock().unwrap_or_else(|p| p.into_inner());
            if c.is_none() {
                tracing::error!(path = %self.inner.path().display(), error = %e, "stored data is corrupted: this replica stops serving; rebuild it from its peers");
                *c = Some(e.to_string());
            }
        }
        e
    }

    /// What damaged data was found in this database, if any.
    pub fn corruption(&self) -> Option<String> {
        self.corruption
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Writes without syncing (the WAL is still written to the OS).
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        self.inner
            .write(batch)
            .map_err(|e| self.note(crate::Error::Rocks(e)))?;
        Ok(())
    }

    /// Writes and fsyncs before returning.
    pub fn write_sync(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(!self.skip_fsync);
        self.inner
            .write_opt(batch, &wo)
            .map_err(|e| self.note(crate::Error::Rocks(e)))?;
        Ok(())
    }

    /// Fsyncs the WAL now.
    pub fn sync_wal(&self) -> Result<()> {
        disk::sync_write(&self.inner, !self.skip_fsync)
            .map_err(|e| self.note(crate::Error::Rocks(e)))
    }

    /// The data dir's space: whether it ran out (writes are then refused), and what is held.
    pub fn disk(&self) -> &DiskState {
        &self.disk
    }

    /// Asks the group-commit thread to fsync the WAL and then call `done`. Every write made
    /// before this call is covered by that fsync.
    pub fn sync_then(&self, done: impl FnOnce(std::io::Result<()>) + Send + 'static) {
        if let Err(mpsc::SendError(done)) = self.syncer.send(Box::new(done)) {
            done(Err(std::io::Error::other("wal syncer stopped")));
        }
    }

    pub fn sync_stats(&self) -> &SyncStats {
        &self.stats
    }
}

/// The group-commit thread: it waits for sync requests, takes every request queued so far, and
/// covers them all with one WAL fsync. While the disk is full the requests are held (the
/// writes they cover are in RocksDB, not yet durable) and the fsync retried; they complete
/// once it succeeds, never with an error openraft would stop on.
fn spawn_syncer(
    db: Arc<DB>,
    stats: Arc<SyncStats>,
    disk: Arc<DiskState>,
    skip_fsync: bool,
) -> mpsc::Sender<SyncWaiter> {
    let (tx, rx) = mpsc::channel::<SyncWaiter>();
    let weak = Arc::downgrade(&db);
    drop(db);
    std::thread::Builder::new()
        .name("wal-sync".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiters = vec![first];
                let mut held = None;
                let (started, res) = loop {
                    while let Ok(more) = rx.try_recv() {
                        waiters.push(more);
                    }
                    let started = std::time::Instant::now();
                    let res = match weak.upgrade() {
                        Some(db) => disk::sync_write(&db, !skip_fsync),
                        None => break (started, Err(std::io::Error::other("database closed"))),
                    };
                    match res.map_err(crate::Error::Rocks) {
                        Err(e) if e.is_no_space() => {
                            disk.mark_full("wal fsync", &e);
                            held.get_or_insert_with(|| disk.hold());
                            std::thread::sleep(disk::RETRY_EVERY);
                        }
                        other => break (started, other.map_err(std::io::Error::other)),
                    }
                };
                drop(held);
                use std::sync::atomic::Ordering::Relaxed;
                stats
                    .fsync_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
                stats.fsyncs.fetch_add(1, Relaxed);
                stats
                    .synced_appends
                    .fetch_add(waiters.len() as u64, Relaxed);
                for w in waiters {
                    let r = match &res {
                        Ok(()) => Ok(()),
                        Err(e) => Err(std::io::Error::other(e.to_string())),
                    };
                    w(r);
                }
            }
        })
        .expect("spawning the wal-sync thread");
    tx
}

/// Key of a user key of the collection `default` in the `kv` family.
pub fn kv_key(slot: Slot, key: &[u8]) -> Vec<u8> {
    kv_key_in(slot, Keyspace::DEFAULT, key)
}

/// The byte after the slot that marks a key of a keyspace other than `default` (never the
/// first byte of a UTF-8 key).
pub const KEYSPACE_MARK: u8 = 0xFF;

/// Key of a user key of keyspace `ks` in the `kv` family.
pub fn kv_key_in(slot: Slot, ks: Keyspace, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(7 + key.len());
    k.extend_from_slice(&slot.to_be_bytes());
    if !ks.is_default() {
        k.push(KEYSPACE_MARK);
        k.extend_from_slice(&ks.0.to_be_bytes());
    }
    k.extend_from_slice(key);
    k
}

/// Splits what follows the slot in a `kv` key into keyspace and user key.
pub fn split_keyspace(rest: &[u8]) -> Option<(Keyspace, &[u8])> {
    match rest.first() {
        Some(&KEYSPACE_MARK) if rest.len() >= 5 => Some((
            Keyspace(u32::from_be_bytes(rest[1..5].try_into().ok()?)),
            &rest[5..],
        )),
        Some(&KEYSPACE_MARK) => None,
        _ => Some((Keyspace::DEFAULT, rest)),
    }
}

/// The key range `[start, end)` holding every key of keyspace `ks` (not `default`) in `slot`.
pub fn keyspace_bounds(slot: Slot, ks: Keyspace) -> (Vec<u8>, Vec<u8>) {
    let start = kv_key_in(slot, ks, b"");
    let end = match ks.0.checked_add(1) {
        Some(next) => kv_key_in(slot, Keyspace(next), b""),
        None => slot_bounds(slot).1,
    };
    (start, end)
}

/// Key of the totals (keys, bytes) a shard holds of one hash collection, in the `stats`
/// family: five bytes, so never mistaken for a slot's (two).
pub fn keyspace_stats_key(ks: Keyspace) -> [u8; 5] {
    let mut k = [b'k'; 5];
    k[1..].copy_from_slice(&ks.0.to_be_bytes());
    k
}

/// The slot-sized prefix under which every range collection's keys are stored, in byte order
/// (between the hash slots, below 0x4000, and the units, from 0x8000): a chunk is the range
/// `range_key(ks, lo) .. range_key(ks, hi)`, so a split rewrites nothing.
pub const RANGE_PREFIX: Slot = 0x4000;

/// Key of a user key of the range collection of keyspace `ks` in the `kv` family.
pub fn range_key(ks: Keyspace, key: &[u8]) -> Vec<u8> {
    kv_key_in(RANGE_PREFIX, ks, key)
}

/// The `kv` key range of a chunk `[lo, hi)` of keyspace `ks` (`hi` `None`: the keyspace's end).
pub fn chunk_bounds(ks: Keyspace, lo: &str, hi: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let start = range_key(ks, lo.as_bytes());
    let end = match hi {
        Some(h) => range_key(ks, h.as_bytes()),
        None => keyspace_bounds(RANGE_PREFIX, ks).1,
    };
    (start, end)
}

/// The user key of a `kv` key of a range collection.
pub fn range_user_key(k: &[u8]) -> &[u8] {
    k.get(7..).unwrap_or_default()
}

/// Key of a client's record in the `dedup` family.
pub fn dedup_key(slot: Slot, client_id: &str) -> Vec<u8> {
    kv_key(slot, client_id.as_bytes())
}

/// First byte of the dedup expiry index keys in the `dedup` family (above every slot prefix;
/// see `dedup`).
pub const AGE_PREFIX: u8 = 0xFF;

/// Key of an expiry index entry.
pub fn age_key(at_ms: u64, slot: Slot, client: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(11 + client.len());
    k.push(AGE_PREFIX);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(&slot.to_be_bytes());
    k.extend_from_slice(client);
    k
}

pub fn parse_age_key(k: &[u8]) -> Option<(u64, Slot, &[u8])> {
    if k.len() < 11 || k[0] != AGE_PREFIX {
        return None;
    }
    let at = u64::from_be_bytes(k[1..9].try_into().ok()?);
    let slot = u16::from_be_bytes([k[9], k[10]]);
    Some((at, slot, &k[11..]))
}

/// Key of a slot's horizon.
pub fn horizon_key(slot: Slot) -> Vec<u8> {
    slot.to_be_bytes().to_vec()
}

/// The key range `[start, end)` holding every key of `slot` in the `kv` or `dedup` family.
pub fn slot_bounds(slot: Slot) -> (Vec<u8>, Vec<u8>) {
    let start = slot.to_be_bytes().to_vec();
    let end = (u32::from(slot) + 1).to_be_bytes()[2..].to_vec();
    (start, end)
}

/// Splits a `kv`/`dedup` key into slot and rest.
pub fn split_key(k: &[u8]) -> Option<(Slot, &[u8])> {
    if k.len() < 2 {
        return None;
    }
    Some((u16::from_be_bytes([k[0], k[1]]), &k[2..]))
}

pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn key_index(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_slot_then_key() {
        let a = kv_key(1, b"zzz");
        let b = kv_key(2, b"aaa");
        assert!(a < b);
        assert_eq!(split_key(&a), Some((1, &b"zzz"[..])));
        assert_eq!(key_index(&index_key(42)), Some(42));
        assert!(index_key(9) < index_key(256));
    }

    #[test]
    fn keyspaces_share_the_slot_range_and_never_collide() {
        // `default` keeps the seed's layout byte for byte.
        assert_eq!(kv_key(7, b"k"), vec![0, 7, b'k']);
        let other = kv_key_in(7, Keyspace(16), b"k");
        assert_eq!(other, vec![0, 7, 0xFF, 0, 0, 0, 16, b'k']);
        let (lo, hi) = slot_bounds(7);
        assert!(lo <= other && other < hi);
        let (_, rest) = split_key(&other).unwrap();
        assert_eq!(split_keyspace(rest), Some((Keyspace(16), &b"k"[..])));
        let plain = kv_key(7, "ü".as_bytes());
        let (_, rest) = split_key(&plain).unwrap();
        assert_eq!(
            split_keyspace(rest),
            Some((Keyspace::DEFAULT, "ü".as_bytes()))
        );
        // A keyspace's range holds its keys and nothing of its neighbours.
        let (a, b) = keyspace_bounds(7, Keyspace(16));
        assert!(a <= other && other < b);
        assert!(kv_key_in(7, Keyspace(17), b"") >= b);
        assert!(kv_key_in(7, Keyspace(15), b"\xff\xff") < a);
        let (_, b) = keyspace_bounds(7, Keyspace(u32::MAX));
        assert!(b <= hi);
    }

    #[test]
    fn dedup_index_keys_sort_by_age_and_parse_back() {
        let a = age_key(5, 16383, b"zz");
        let b = age_key(6, 0, b"a");
        assert!(a < b);
        assert_eq!(parse_age_key(&a), Some((5, 16383, &b"zz"[..])));
        // Above every slot key, and every slot key's horizon.
        assert!(age_key(0, 0, b"") > kv_key(16383, b"\xff\xff"));
        assert_eq!(parse_age_key(&horizon_key(3)), None);
    }

    #[test]
    fn group_commit_syncs_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..50 {
            let mut b = WriteBatch::default();
            b.put_cf(db.cf(CF_RAFT), b"k", b"v");
            db.write(b).unwrap();
            let tx = tx.clone();
            db.sync_then(move |r| tx.send(r.is_ok()).unwrap());
        }
        for _ in 0..50 {
            assert!(rx.recv().unwrap());
        }
        let s = db.sync_stats();
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(s.synced_appends.load(Relaxed), 50);
        assert!(s.fsyncs.load(Relaxed) >= 1 && s.fsyncs.load(Relaxed) <= 50);
    }
}
