//! The tail of the Raft log, kept in memory.
//!
//! Entries are read back soon after they are appended: by the leader's replication streams
//! (one read per AppendEntries per follower) and by the state-machine worker on every node
//! (one read per apply batch). Served from RocksDB, each read is an iterator seek into a
//! memtable of up to tens of thousands of log entries plus a decode; on a follower under load
//! that was the largest single item in the CPU profile. The cache holds the last appended
//! entries, always ending at the last entry written, so a range inside it never needs RocksDB.

use std::collections::VecDeque;

use openraft::entry::RaftEntry;

use crate::raft_types::Entry;

/// How many of the newest entries are kept (a few MB with 256-byte values).
pub const DEFAULT_CAPACITY: usize = 8192;
/// Most bytes the kept entries may hold (slot moves write entries of up to a piece each).
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct LogCache {
    entries: VecDeque<Entry>,
    capacity: usize,
    /// Sum of the kept entries' [`entry_bytes`].
    bytes: usize,
    max_bytes: usize,
}

/// About how many bytes an entry holds in memory.
pub(crate) fn entry_bytes(e: &Entry) -> usize {
    match &e.payload {
        openraft::EntryPayload::Normal(c) => c.approx_bytes(),
        _ => 256,
    }
}

impl LogCache {
    pub fn new(capacity: usize) -> LogCache {
        LogCache::with_max_bytes(capacity, DEFAULT_MAX_BYTES)
    }

    /// A cache of at most `capacity` entries holding at most `max_bytes` (the newest entry is
    /// kept whatever its size).
    pub fn with_max_bytes(capacity: usize, max_bytes: usize) -> LogCache {
        LogCache {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            bytes: 0,
            max_bytes,
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= entry_bytes(&e);
        }
    }

    fn truncate(&mut self, len: usize) {
        while self.entries.len() > len {
            if let Some(e) = self.entries.pop_back() {
                self.bytes -= entry_bytes(&e);
            }
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id().index())
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|e| e.log_id().index())
    }

    /// Records entries just written to the log. They replace any cached entries at or after
    /// their first index (the log was overwritten from there), and a gap restarts the cache.
    /// Entries from `keep_from` on are never dropped for size: held appends (a full disk)
    /// can be read only from here until they are written.
    pub fn append(&mut self, new: &[Entry], keep_from: Option<u64>) {
        let Some(first_new) = new.first().map(|e| e.log_id().index()) else {
            return;
        };
        match (self.first_index(), self.last_index()) {
            (Some(first), Some(last)) if first_new >= first && first_new <= last + 1 => {
                self.truncate((first_new - first) as usize);
            }
            _ => self.truncate(0),
        }
        for e in new {
            self.bytes += entry_bytes(e);
            self.entries.push_back(e.clone());
        }
        let pinned = keep_from.unwrap_or(u64::MAX);
        while self.entries.len() > self.capacity
            || (self.bytes > self.max_bytes
                && self.entries.len() > 1
                && self.first_index().is_some_and(|i| i < pinned))
        {
            self.pop_front();
        }
    }

    /// Entries after `last_kept` were removed from the log.
    pub fn truncate_after(&mut self, last_kept: Option<u64>) {
        match (last_kept, self.first_index()) {
            (Some(last), Some(first)) if last >= first => {
                self.truncate((last - first + 1) as usize)
            }
            _ => self.truncate(0),
        }
    }

    /// Entries up to and including `upto` were purged from the log.
    pub fn purge(&mut self, upto: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id().index() <= upto)
        {
            self.pop_front();
        }
    }

    /// The entries `start..=end` (`end` None: to the last entry), if the cache holds all of them.
    pub fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let (first, last) = (self.first_index()?, self.last_index()?);
        let end = end.unwrap_or(last);
        if start < first || end > last {
            return None;
        }
        if end < start {
            return Some(Vec::new());
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(self.entries.range(from..=to).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft_types::TypeConfig;
    use openraft::testing::log_id;
    use unikv_types::NodeId;

    fn entry(term: u64, index: u64) -> Entry {
        Entry::new_blank(log_id::<TypeConfig>(term, NodeId(1), index))
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id().index()).collect())
    }

    #[test]
    fn serves_ranges_it_holds_and_only_those() {
        let mut c = LogCache::new(4);
        c.append(&[entry(1, 1), entry(1, 2), entry(1, 3)], None);
        assert_eq!(indexes(c.get(1, Some(3))), Some(vec![1, 2, 3]));
        assert_eq!(indexes(c.get(2, None)), Some(vec![2, 3]));
        assert_eq!(indexes(c.get(3, Some(4))), None);
        c.append(&[entry(1, 4), entry(1, 5)], None);
        // Capacity 4: entry 1 fell out.
        assert_eq!(indexes(c.get(1, Some(2))), None);
        assert_eq!(indexes(c.get(2, None)), Some(vec![2, 3, 4, 5]));
    }

    #[test]
    fn overwrite_truncate_purge_and_gap() {
        let mut c = LogCache::new(16);
        c.append(&[entry(1, 1), entry(1, 2), entry(1, 3)], None);
        // A new leader overwrote index 2 onwards.
        c.append(&[entry(2, 2)], None);
        let got = c.get(1, None).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].log_id().leader_id.term, 2);
        c.truncate_after(Some(1));
        assert_eq!(indexes(c.get(1, None)), Some(vec![1]));
        c.append(&[entry(2, 2), entry(2, 3)], None);
        c.purge(2);
        assert_eq!(indexes(c.get(3, None)), Some(vec![3]));
        assert_eq!(indexes(c.get(2, None)), None);
        // A gap (e.g. after a snapshot install) restarts the cache.
        c.append(&[entry(3, 10)], None);
        assert_eq!(indexes(c.get(10, None)), Some(vec![10]));
        assert_eq!(indexes(c.get(3, None)), None);
        c.truncate_after(None);
        assert_eq!(indexes(c.get(10, None)), None);
    }

    #[test]
    fn bounded_by_bytes_too() {
        // Blank entries count 256 bytes: 1000 bytes hold three of them.
        let mut c = LogCache::with_max_bytes(100, 1000);
        c.append(&(1..=10).map(|i| entry(1, i)).collect::<Vec<_>>(), None);
        assert_eq!(indexes(c.get(8, None)), Some(vec![8, 9, 10]));
        assert_eq!(indexes(c.get(7, None)), None);
        assert_eq!(c.bytes, 768);
        c.truncate_after(Some(8));
        assert_eq!(c.bytes, 256);
        c.purge(8);
        assert_eq!(c.bytes, 0);
        // The newest entry stays even when it alone is over the bound.
        let mut small = LogCache::with_max_bytes(100, 10);
        small.append(&[entry(1, 1), entry(1, 2)], None);
        assert_eq!(indexes(small.get(2, None)), Some(vec![2]));
        // Held entries (from index 3 here) stay, over the bound or not.
        small.append(&[entry(1, 3), entry(1, 4)], Some(3));
        assert_eq!(indexes(small.get(3, None)), Some(vec![3, 4]));
    }
}
