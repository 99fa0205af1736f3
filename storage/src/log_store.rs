//! The Raft log and vote, in the `log` and `raft` column families.
//!
//! `append` writes the entries at once (so they are readable when it returns) and hands the
//! fsync to the group-commit thread, which calls openraft back once the WAL is durable: many
//! concurrent proposals share one fsync.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

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

#[derive(Clone, Debug)]
pub struct LogStore {
    db: Db,
    /// The newest entries, shared by every clone (the log reader handed to replication and
    /// the state machine is a clone).
    cache: Arc<Mutex<LogCache>>,
}

impl LogStore {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: Arc::new(Mutex::new(LogCache::new(log_cache::DEFAULT_CAPACITY))),
        }
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
        let bytes = encode("vote", vote)?;
        let db = self.db.clone();
        blocking(move || {
            let mut b = WriteBatch::default();
            b.put_cf(db.cf(CF_RAFT), KEY_VOTE, bytes);
            db.write_sync(b)
        })
        .await?;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: losing it only means re-applying a little more after a crash.
        let mut b = WriteBatch::default();
        b.put_cf(
            self.db.cf(CF_RAFT),
            KEY_COMMITTED,
            encode("committed", &committed)?,
        );
        self.db.write(b)?;
        Ok(())
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
        for entry in &entries {
            b.put_cf(
                cf,
                index_key(entry.log_id.index()),
                encode("log entry", entry)?,
            );
        }
        // Written now so the entries are readable on return; durable when the callback runs.
        // The cache is updated under its lock after the write, so a reader never sees an entry
        // in the cache that RocksDB does not have yet.
        let mut cache = self.cache();
        self.db.write(b)?;
        cache.append(&entries);
        drop(cache);
        self.db.sync_then(move |res| callback.io_completed(res));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        let mut b = WriteBatch::default();
        b.delete_range_cf(self.db.cf(CF_LOG), index_key(from), index_key(u64::MAX));
        // Synced: a truncated suffix must not reappear after a crash next to newer entries.
        let db = self.db.clone();
        blocking(move || db.write_sync(b)).await?;
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
        self.db.write(b)?;
        self.cache().purge(log_id.index());
        Ok(())
    }
}
