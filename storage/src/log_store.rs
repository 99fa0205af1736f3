//! The Raft log and vote, in the `log` and `raft` column families.
//!
//! `append` writes the entries at once (so they are readable when it returns) and hands the
//! fsync to the group-commit thread, which calls openraft back once the WAL is durable: many
//! concurrent proposals share one fsync.
//!
//! A full disk never reaches openraft as an error (that would stop Raft for good): an append
//! that meets ENOSPC is held — readable from the log cache, its callback not yet called — and
//! written by a `log-held` thread (started for the episode) once RocksDB takes writes again;
//! later appends queue behind
//! it, so the log stays in order. Votes and truncations wait for space (they must be durable
//! before Raft goes on); the committed index and purges are skipped (neither is needed for
//! safety; a skipped purge leaves old entries that the next purge deletes).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Condvar, Mutex};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::db::Db;
use crate::db::{index_key, key_index, CF_LOG, CF_RAFT};
use crate::error::{blocking, decode, encode};
use crate::log_cache::{self, LogCache};
use crate::raft_types::TypeConfig;
use crate::raft_types::{Entry, LogId, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

/// At most this many entries are held for a full disk; an append past it waits for room
/// (they must stay in the log cache, the only place they can be read from until written).
const MAX_HELD_ENTRIES: usize = log_cache::DEFAULT_CAPACITY / 2;
/// And at most about this many bytes (slot moves write entries of up to a piece each).
const MAX_HELD_BYTES: usize = log_cache::DEFAULT_MAX_BYTES / 2;

#[derive(Clone, Debug)]
pub struct LogStore {
    db: Db,
    /// The newest entries, shared by every clone (the log reader handed to replication and
    /// the state machine is a clone).
    cache: Arc<Mutex<LogCache>>,
    /// Appends waiting for disk space, oldest first.
    held: Arc<HeldAppends>,
}

#[derive(Default)]
struct HeldAppends {
    queue: Mutex<HeldQueue>,
    /// Signalled when the queue drains.
    changed: Condvar,
}

#[derive(Default)]
struct HeldQueue {
    items: VecDeque<(Vec<Entry>, IOFlushed<TypeConfig>)>,
    /// Whether a `log-held` thread is draining the queue (it exits when the queue is empty,
    /// so nothing keeps the database open once the store is dropped).
    writer: bool,
}

impl Debug for HeldAppends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldAppends").finish_non_exhaustive()
    }
}

impl HeldAppends {
    fn lock(&self) -> std::sync::MutexGuard<'_, HeldQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries held, and about how many bytes they hold.
    fn held(&self) -> (usize, usize) {
        let q = self.lock();
        let entries = q.items.iter().map(|(e, _)| e.len()).sum();
        let bytes = q
            .items
            .iter()
            .flat_map(|(e, _)| e.iter())
            .map(log_cache::entry_bytes)
            .sum();
        (entries, bytes)
    }
}

impl LogStore {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: Arc::new(Mutex::new(LogCache::new(log_cache::DEFAULT_CAPACITY))),
            held: Arc::default(),
        }
    }

    /// Waits (off the async threads) until no append is held.
    async fn drained(&self) {
        let held = self.held.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut q = held.lock();
            while !q.items.is_empty() {
                q = held.changed.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        })
        .await;
    }

    /// Writes `batch` (rebuilt by `make` for each attempt), waiting as long as the disk is full.
    async fn write_waiting(
        &self,
        what: &'static str,
        sync: bool,
        make: impl Fn(&Db) -> io::Result<WriteBatch> + Send + 'static,
    ) -> io::Result<()> {
        let db = self.db.clone();
        blocking(move || {
            let mut held = None;
            loop {
                let b = make(&db)?;
                let r = if sync { db.write_sync(b) } else { db.write(b) };
                match r {
                    Err(e) if e.is_no_space() => {
                        held.get_or_insert_with(|| db.disk().hold());
                        tracing::debug!(what, "disk full: waiting for space");
                        std::thread::sleep(crate::disk::RETRY_EVERY);
                    }
                    other => return other,
                }
            }
        })
        .await?;
        Ok(())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LogCache> {
        // The cache holds no invariant a panic could break halfway: recover it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self
            .db
            .raw()
            .get_cf(self.db.cf(CF_RAFT), key)
            .map_err(|e| self.damaged(crate::Error::Rocks(e)))?
        {
            Some(bytes) => Ok(Some(
                decode("raft meta", &bytes).map_err(|e| self.damaged(e))?,
            )),
            None => Ok(None),
        }
    }

    fn read_range(&self, start: u64, end_inclusive: Option<u64>) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let from = index_key(start);
        let it = self.db.raw().iterator_cf(
            self.db.cf(CF_LOG),
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in it {
            let (k, v) = item.map_err(|e| self.damaged(crate::Error::Rocks(e)))?;
            let idx = key_index(&k).ok_or_else(|| io::Error::other("bad log key"))?;
            if end_inclusive.is_some_and(|end| idx > end) {
                break;
            }
            out.push(decode::<Entry>("log entry", &v).map_err(|e| self.damaged(e))?);
        }
        Ok(out)
    }

    /// A storage error for openraft, noted first if it says the log is damaged.
    fn damaged(&self, e: crate::Error) -> io::Error {
        self.db.note(e).into()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => Some(*x),
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(x) => Some(*x - 1),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|e| e < start) {
            return Ok(Vec::new());
        }
        if let Some(hit) = self.cache().get(start, end) {
            return Ok(hit);
        }
        let this = self.clone();
        Ok(blocking(move || Ok(this.read_range(start, end)?)).await?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last = self
            .db
            .raw()
            .iterator_cf(self.db.cf(CF_LOG), IteratorMode::End)
            .next();
        let last_log_id = match last {
            Some(item) => {
                let (_, v) = item.map_err(|e| self.damaged(crate::Error::Rocks(e)))?;
                Some(
                    decode::<Entry>("log entry", &v)
                        .map_err(|e| self.damaged(e))?
                        .log_id,
                )
            }
            None => None,
        };
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last_log_id = last_log_id.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // Durable before Raft answers with it: on a full disk this node cannot vote until
        // space returns (its Raft waits here; the others elect without it).
        let bytes = encode("vote", vote)?;
        self.write_waiting("vote", true, move |db| {
            let mut b = WriteBatch::default();
            b.put_cf(db.cf(CF_RAFT), KEY_VOTE, &bytes);
            Ok(b)
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: losing it only means re-applying a little more after a crash.
        let mut b = WriteBatch::default();
        b.put_cf(
            self.db.cf(CF_RAFT),
            KEY_COMMITTED,
            encode("committed", &committed)?,
        );
        match self.db.write(b) {
            Err(e) if e.is_no_space() => Ok(()),
            other => Ok(other?),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut b = WriteBatch::default();
        let cf = self.db.cf(CF_LOG);
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut largest = 0;
        for entry in &entries {
            let bytes = encode("log entry", entry)?;
            largest = largest.max(bytes.len() as u64);
            b.put_cf(cf, index_key(entry.log_id.index()), bytes);
        }
        self.db
            .sync_stats()
            .largest_entry_bytes
            .fetch_max(largest, std::sync::atomic::Ordering::Relaxed);
        // Written now so the entries are readable on return; durable when the callback runs.
        // The cache is updated under its lock after the write, so a reader never sees an entry
        // in the cache that RocksDB does not have yet — except held ones (disk full), which
        // only the cache has until the held writer gets them in.
        let (held_entries, held_bytes) = self.held.held();
        if held_entries >= MAX_HELD_ENTRIES || held_bytes >= MAX_HELD_BYTES {
            self.drained().await;
        }
        let mut cache = self.cache();
        let mut held = self.held.lock();
        if held.items.is_empty() {
            match self.db.write(b) {
                Ok(()) => {
                    drop(held);
                    cache.append(&entries, None);
                    drop(cache);
                    self.db.sync_then(move |res| callback.io_completed(res));
                    return Ok(());
                }
                Err(e) if e.is_no_space() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let first_held = held
            .items
            .front()
            .and_then(|(e, _)| e.first())
            .or(entries.first())
            .map(|e| e.log_id.index());
        cache.append(&entries, first_held);
        held.items.push_back((entries, callback));
        if !held.writer {
            held.writer = true;
            spawn_held_writer(self.db.clone(), self.held.clone());
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        // Held appends go in first (in order), then the suffix goes: synced, since a truncated
        // suffix must not reappear after a crash next to newer entries.
        self.drained().await;
        self.write_waiting("log truncation", true, move |db| {
            let mut b = WriteBatch::default();
            b.delete_range_cf(db.cf(CF_LOG), index_key(from), index_key(u64::MAX));
            Ok(b)
        })
        .await?;
        self.cache().truncate_after(last_log_id.map(|l| l.index()));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: entries at or before it are ignored from then on.
        let mut b = WriteBatch::default();
        b.put_cf(self.db.cf(CF_RAFT), KEY_PURGED, encode("purged", &log_id)?);
        b.delete_range_cf(
            self.db.cf(CF_LOG),
            index_key(0),
            index_key(log_id.index() + 1),
        );
        match self.db.write(b) {
            // The old entries stay (still readable, `last_purged` still older): the next
            // purge deletes them.
            Err(e) if e.is_no_space() => {}
            other => other?,
        }
        self.cache().purge(log_id.index());
        Ok(())
    }
}

/// The thread that writes held appends once the disk has room: oldest first, each one's
/// callback handed to the group-commit fsync after its write. It ends when none is left.
fn spawn_held_writer(db: Db, h: Arc<HeldAppends>) {
    std::thread::Builder::new()
        .name("log-held".into())
        .spawn(move || loop {
            let mut q = h.lock();
            if q.items.is_empty() {
                q.writer = false;
                h.changed.notify_all();
                return;
            }
            let _hold = db.disk().hold();
            let mut b = WriteBatch::default();
            let encoded = q.items[0].0.iter().try_for_each(|entry| {
                b.put_cf(
                    db.cf(CF_LOG),
                    index_key(entry.log_id.index()),
                    encode("log entry", entry)?,
                );
                Ok::<_, crate::Error>(())
            });
            match encoded.and_then(|()| db.write(b)) {
                Ok(()) => {
                    let (_, callback) = q.items.pop_front().expect("front exists");
                    if q.items.is_empty() {
                        h.changed.notify_all();
                    }
                    drop(q);
                    db.sync_then(move |res| callback.io_completed(res));
                }
                Err(e) if e.is_no_space() => {
                    drop(q);
                    std::thread::sleep(crate::disk::RETRY_EVERY);
                }
                Err(e) => {
                    // Not a full disk: fail every held append as an unheld one would have.
                    tracing::error!(error = %e, "writing held log entries failed");
                    let all: Vec<_> = q.items.drain(..).collect();
                    h.changed.notify_all();
                    drop(q);
                    let msg = e.to_string();
                    for (_, callback) in all {
                        callback.io_completed(Err(io::Error::other(msg.clone())));
                    }
                }
            }
        })
        .expect("spawning the log-held thread");
}
