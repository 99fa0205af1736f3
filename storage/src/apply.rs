//! Applying committed entries to the state machine: ownership check, at-most-once dedup, the KV
//! operation, all written as one RocksDB batch per group of entries together with the applied
//! log id (so a crash leaves either all of a group or none of it).

use std::collections::HashMap;

use openraft::EntryPayload;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use unikv_types::{ClientSeq, KvError, KvOp, KvReply, Slot};

use crate::apply_cache::ApplyCache;
use crate::db::{dedup_key, kv_key, slot_bounds, CF_DEDUP, CF_KV, CF_SM, CF_STATS};
use crate::error::{decode, encode};
use crate::raft_types::{Entry, LogId, StoredMembership};
use crate::{Command, CommandResult, Db, Result, ShardDescriptor};

pub const KEY_APPLIED: &[u8] = b"applied";
pub const KEY_MEMBERSHIP: &[u8] = b"membership";
pub const KEY_DESCRIPTOR: &[u8] = b"descriptor";

/// The last reply to a client within one slot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DedupRecord {
    pub seq: u64,
    pub reply: KvReply,
}

/// State machine metadata kept in memory and in the `sm` family.
#[derive(Debug, Clone, Default)]
pub struct SmMeta {
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
    pub descriptor: ShardDescriptor,
}

impl SmMeta {
    pub fn load(db: &Db, shard: unikv_types::ShardId) -> Result<Self> {
        Self::load_with(shard, |k| db.raw().get_cf(db.cf(CF_SM), k))
    }

    /// Loads the metadata as of a RocksDB snapshot.
    pub fn load_at(
        db: &Db,
        snap: &rocksdb::Snapshot<'_>,
        shard: unikv_types::ShardId,
    ) -> Result<Self> {
        Self::load_with(shard, |k| {
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_snapshot(snap);
            db.raw().get_cf_opt(db.cf(CF_SM), k, &ro)
        })
    }

    fn load_with(
        shard: unikv_types::ShardId,
        get: impl Fn(&[u8]) -> std::result::Result<Option<Vec<u8>>, rocksdb::Error>,
    ) -> Result<Self> {
        let applied = match get(KEY_APPLIED)? {
            Some(b) => decode("applied", &b)?,
            None => None,
        };
        let membership = match get(KEY_MEMBERSHIP)? {
            Some(b) => decode("membership", &b)?,
            None => StoredMembership::default(),
        };
        let descriptor = match get(KEY_DESCRIPTOR)? {
            Some(b) => decode("descriptor", &b)?,
            None => ShardDescriptor::new(shard),
        };
        Ok(Self {
            applied,
            membership,
            descriptor,
        })
    }

    /// Adds the applied log id alone to `batch` (membership and descriptor unchanged).
    pub fn write_applied_to(&self, db: &Db, batch: &mut WriteBatch) -> Result<()> {
        batch.put_cf(db.cf(CF_SM), KEY_APPLIED, encode("applied", &self.applied)?);
        Ok(())
    }

    /// Adds this metadata to `batch`.
    pub fn write_to(&self, db: &Db, batch: &mut WriteBatch) -> Result<()> {
        let cf = db.cf(CF_SM);
        batch.put_cf(cf, KEY_APPLIED, encode("applied", &self.applied)?);
        batch.put_cf(cf, KEY_MEMBERSHIP, encode("membership", &self.membership)?);
        batch.put_cf(cf, KEY_DESCRIPTOR, encode("descriptor", &self.descriptor)?);
        Ok(())
    }
}

/// Reads through the pending batch to the cache and the database, and accumulates per-slot
/// statistics.
pub(crate) struct Overlay<'a> {
    pub(crate) db: &'a Db,
    cache: &'a mut ApplyCache,
    kv: HashMap<Vec<u8>, Option<Vec<u8>>>,
    dedup: HashMap<Vec<u8>, DedupRecord>,
    /// Slots whose data and dedup table this batch deleted or replaced.
    replaced: Vec<Slot>,
    /// Statistics this batch writes, for the cache once the batch is durable in RocksDB.
    new_stats: Vec<(Slot, SlotStats)>,
    /// Per-slot (keys, bytes) changes of this batch; `Reset` replaces the stored value.
    stats: HashMap<Slot, StatsChange>,
    pub(crate) batch: WriteBatch,
}

#[derive(Debug, Clone, Copy)]
enum StatsChange {
    Delta(i64, i64),
    Reset(SlotStats),
}

/// Number of keys and bytes (keys + values) stored in one slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStats {
    pub keys: u64,
    pub bytes: u64,
}

impl SlotStats {
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.keys.to_be_bytes());
        b[8..].copy_from_slice(&self.bytes.to_be_bytes());
        b
    }
    pub fn decode(b: &[u8]) -> Self {
        let word = |r: std::ops::Range<usize>| {
            b.get(r)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0)
        };
        Self {
            keys: word(0..8),
            bytes: word(8..16),
        }
    }
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(db: &'a Db, cache: &'a mut ApplyCache) -> Self {
        Overlay {
            db,
            cache,
            kv: HashMap::new(),
            dedup: HashMap::new(),
            replaced: Vec::new(),
            new_stats: Vec::new(),
            stats: HashMap::new(),
            batch: WriteBatch::default(),
        }
    }

    fn count(&mut self, slot: Slot, keys: i64, bytes: i64) {
        let e = self.stats.entry(slot).or_insert(StatsChange::Delta(0, 0));
        match e {
            StatsChange::Delta(k, b) => {
                *k += keys;
                *b += bytes;
            }
            StatsChange::Reset(s) => {
                s.keys = s.keys.saturating_add_signed(keys);
                s.bytes = s.bytes.saturating_add_signed(bytes);
            }
        }
    }

    /// Deletes everything stored for `slot` (data, dedup table, statistics).
    pub(crate) fn delete_slot(&mut self, slot: Slot) {
        let (lo, hi) = slot_bounds(slot);
        self.batch.delete_range_cf(self.db.cf(CF_KV), &lo, &hi);
        self.batch.delete_range_cf(self.db.cf(CF_DEDUP), &lo, &hi);
        self.kv.retain(|k, _| !k.starts_with(&lo));
        self.dedup.retain(|k, _| !k.starts_with(&lo));
        self.replaced.push(slot);
        self.stats
            .insert(slot, StatsChange::Reset(SlotStats::default()));
    }

    /// Writes a slot's data and dedup table as received from another shard.
    pub(crate) fn install_slot(
        &mut self,
        slot: Slot,
        kv: &[(String, String)],
        dedup: &[(String, DedupRecord)],
    ) -> Result<()> {
        self.delete_slot(slot);
        let mut st = SlotStats::default();
        for (k, v) in kv {
            let key = kv_key(slot, k.as_bytes());
            self.batch.put_cf(self.db.cf(CF_KV), &key, v.as_bytes());
            self.kv.insert(key, Some(v.as_bytes().to_vec()));
            st.keys += 1;
            st.bytes += (k.len() + v.len()) as u64;
        }
        for (client, rec) in dedup {
            self.put_dedup(dedup_key(slot, client), rec.clone())?;
        }
        self.stats.insert(slot, StatsChange::Reset(st));
        Ok(())
    }

    /// Adds the statistics changes to the batch.
    fn flush_stats(&mut self) -> Result<()> {
        let cf = self.db.cf(CF_STATS);
        for (slot, change) in std::mem::take(&mut self.stats) {
            let key = slot.to_be_bytes();
            let next = match change {
                StatsChange::Reset(s) => s,
                StatsChange::Delta(k, b) => {
                    let cur = self.cache.stats(self.db, slot)?;
                    SlotStats {
                        keys: cur.keys.saturating_add_signed(k),
                        bytes: cur.bytes.saturating_add_signed(b),
                    }
                }
            };
            if next == SlotStats::default() {
                self.batch.delete_cf(cf, key);
            } else {
                self.batch.put_cf(cf, key, next.encode());
            }
            self.new_stats.push((slot, next));
        }
        Ok(())
    }

    /// Writes the batch, then tells the cache what is now in RocksDB.
    fn commit(self) -> Result<()> {
        let Overlay {
            db,
            cache,
            dedup,
            replaced,
            new_stats,
            batch,
            ..
        } = self;
        db.write(batch)?;
        for slot in replaced {
            cache.forget_slot(slot);
        }
        for (slot, st) in new_stats {
            cache.set_stats(slot, st);
        }
        for (k, rec) in dedup {
            cache.put_dedup(k, rec);
        }
        Ok(())
    }

    fn get_kv(&self, k: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.kv.get(k) {
            return Ok(v.clone());
        }
        Ok(self.db.raw().get_cf(self.db.cf(CF_KV), k)?)
    }
    fn put_kv(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.batch.put_cf(self.db.cf(CF_KV), &k, &v);
        self.kv.insert(k, Some(v));
    }
    fn delete_kv(&mut self, k: Vec<u8>) {
        self.batch.delete_cf(self.db.cf(CF_KV), &k);
        self.kv.insert(k, None);
    }
    fn get_dedup(&self, k: &[u8]) -> Result<Option<DedupRecord>> {
        if let Some(v) = self.dedup.get(k) {
            return Ok(Some(v.clone()));
        }
        if let Some(v) = self.cache.dedup(k) {
            return Ok(Some(v.clone()));
        }
        match self.db.raw().get_cf(self.db.cf(CF_DEDUP), k)? {
            Some(b) => Ok(Some(decode("dedup record", &b)?)),
            None => Ok(None),
        }
    }
    pub(crate) fn put_dedup(&mut self, k: Vec<u8>, rec: DedupRecord) -> Result<()> {
        self.batch
            .put_cf(self.db.cf(CF_DEDUP), &k, encode("dedup record", &rec)?);
        self.dedup.insert(k, rec);
        Ok(())
    }
}

/// Applies `entries` in order, updating `meta`, and writes everything as one batch. Returns one
/// result per entry. (A cold cache: tests and one-off callers.)
pub fn apply_entries(db: &Db, meta: &mut SmMeta, entries: &[Entry]) -> Result<Vec<CommandResult>> {
    apply_entries_cached(db, meta, &mut ApplyCache::default(), entries)
}

/// [`apply_entries`] with the state machine's long-lived [`ApplyCache`].
pub fn apply_entries_cached(
    db: &Db,
    meta: &mut SmMeta,
    cache: &mut ApplyCache,
    entries: &[Entry],
) -> Result<Vec<CommandResult>> {
    let mut ov = Overlay::new(db, cache);
    let mut out = Vec::with_capacity(entries.len());
    // Membership and descriptor are rewritten only by the entries that change them: the
    // descriptor of a shard that took part in many moves is kilobytes.
    let mut meta_changed = false;
    for entry in entries {
        meta.applied = Some(entry.log_id);
        let res = match &entry.payload {
            EntryPayload::Blank => Ok(KvReply::Written),
            EntryPayload::Membership(m) => {
                meta.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                meta_changed = true;
                Ok(KvReply::Written)
            }
            EntryPayload::Normal(cmd) => {
                meta_changed |= !matches!(cmd, Command::Kv { .. });
                apply_command(&mut ov, meta, cmd)?
            }
        };
        out.push(res);
    }
    ov.flush_stats()?;
    if meta_changed {
        meta.write_to(db, &mut ov.batch)?;
    } else {
        meta.write_applied_to(db, &mut ov.batch)?;
    }
    ov.commit()?;
    Ok(out)
}

fn apply_command(ov: &mut Overlay<'_>, meta: &mut SmMeta, cmd: &Command) -> Result<CommandResult> {
    match cmd {
        Command::Move(m) => crate::moves::apply_move(ov, &mut meta.descriptor, m),
        Command::Bootstrap { ranges, epoch, .. } => {
            if meta.descriptor.bootstrap(ranges, *epoch) {
                tracing::info!(shard = %meta.descriptor.shard, slots = meta.descriptor.slot_count(), "initial slots claimed");
            }
            Ok(Ok(KvReply::Written))
        }
        Command::Kv {
            slot,
            key,
            op,
            client,
        } => {
            if !meta.descriptor.initialised {
                return Ok(Err(KvError::Unavailable {
                    shard: meta.descriptor.shard,
                    reason: "the shard has not claimed its slots yet".into(),
                }));
            }
            if let Some(h) = meta.descriptor.outgoing.get(slot) {
                return Ok(Err(KvError::Unavailable {
                    shard: meta.descriptor.shard,
                    reason: format!("slot {slot} is moving to shard {}", h.peer),
                }));
            }
            if meta.descriptor.owns(*slot).is_none() {
                return Ok(Err(KvError::WrongShard {
                    slot: *slot,
                    shard: meta.descriptor.shard,
                    owner: meta.descriptor.forwards.get(slot).map(|h| h.peer),
                    epoch: meta.descriptor.forwards.get(slot).map(|h| h.epoch),
                }));
            }
            if let Some(c) = client {
                if let Some(prev) = ov.get_dedup(&dedup_key(*slot, &c.client_id))? {
                    if prev.seq == c.seq {
                        return Ok(Ok(prev.reply));
                    }
                    if prev.seq > c.seq {
                        return Ok(Err(KvError::StaleSequence {
                            client_id: c.client_id.clone(),
                            seq: c.seq,
                            last: prev.seq,
                        }));
                    }
                }
            }
            let reply = apply_op(ov, *slot, key, op)?;
            if let (Ok(reply), Some(ClientSeq { client_id, seq })) = (&reply, client) {
                ov.put_dedup(
                    dedup_key(*slot, client_id),
                    DedupRecord {
                        seq: *seq,
                        reply: reply.clone(),
                    },
                )?;
            }
            Ok(reply)
        }
    }
}

fn apply_op(ov: &mut Overlay<'_>, slot: Slot, key: &str, op: &KvOp) -> Result<CommandResult> {
    let k = kv_key(slot, key.as_bytes());
    Ok(match op {
        KvOp::Put { value } => {
            match ov.get_kv(&k)? {
                Some(old) => ov.count(slot, 0, value.len() as i64 - old.len() as i64),
                None => ov.count(slot, 1, (key.len() + value.len()) as i64),
            }
            ov.put_kv(k, value.as_bytes().to_vec());
            Ok(KvReply::Written)
        }
        KvOp::Append { value } => {
            let prev = ov.get_kv(&k)?;
            match &prev {
                Some(_) => ov.count(slot, 0, value.len() as i64),
                None => ov.count(slot, 1, (key.len() + value.len()) as i64),
            }
            let mut next = prev.clone().unwrap_or_default();
            next.extend_from_slice(value.as_bytes());
            ov.put_kv(k, next);
            Ok(KvReply::Appended {
                previous: prev.map(|p| String::from_utf8_lossy(&p).into_owned()),
            })
        }
        KvOp::Delete => {
            let old = ov.get_kv(&k)?;
            if let Some(old) = &old {
                ov.count(slot, -1, -((key.len() + old.len()) as i64));
            }
            let existed = old.is_some();
            ov.delete_kv(k);
            Ok(KvReply::Deleted { existed })
        }
        KvOp::Get => Err(KvError::BadRequest {
            code: "bad_command".into(),
            message: "get is not a replicated command".into(),
        }),
    })
}
