//! The replicated state machine of a shard replica (openraft's `RaftStateMachine`), plus the
//! read handle (`Store`) the node serves linearizable reads from once Raft says it may.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{OptionalSend, RaftSnapshotBuilder};
use rocksdb::WriteBatch;
use unikv_types::{Keyspace, ShardId, Slot};

use crate::apply::apply_entries_with;
use crate::apply_cache::ApplyCache;
use crate::command::{Command, CommandResult};
use crate::copy::{CopyTracker, CopyUnit, Piece};
use crate::db::{kv_key_in, Db, CF_DEDUP, CF_KV, CF_STATS};
use crate::descriptor::ShardDescriptor;
use crate::error::{blocking, Error, Result};
use crate::meta::SmMeta;
use crate::raft_types::{Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::records::{DedupRecord, SlotStats};
use crate::snapshot::{
    file_name, index_of, read_snapshot, sync_dir, verify_snapshot, write_snapshot, Record,
    Snapshot, SnapshotFile, SnapshotHeader,
};

/// Shared state between the state machine, its snapshot builders and read handles.
#[derive(Debug)]
struct Shared {
    db: Db,
    shard: ShardId,
    meta: RwLock<SmMeta>,
    /// Bumped (under the `meta` write lock) whenever the published ownership is narrowed
    /// because a batch is about to delete or replace slot data: a read that saw the slot
    /// owned and then finds the counter moved reads again (see [`Store::read_owned`]).
    generation: AtomicU64,
    /// Statistics and dedup records apply would otherwise read back (only apply and snapshot
    /// install touch it).
    cache: Mutex<ApplyCache>,
    /// Slots being copied to another shard from this replica, and the keys written since.
    copies: CopyTracker,
    snap_dir: PathBuf,
    /// The latest snapshot on disk.
    current: Mutex<Option<(SnapshotMeta, PathBuf)>>,
}

impl Shared {
    /// Notes `e` if it is a sign of corruption (see [`Db::note`]); returns `e`.
    fn note(&self, e: Error) -> Error {
        self.db.note(e)
    }
}

/// The record of the writes to a slot or chunk being copied from this replica (see
/// [`Store::start_copy`]).
#[derive(Debug)]
pub struct CopyWrites {
    shared: Arc<Shared>,
    unit: CopyUnit,
}

impl CopyWrites {
    /// The raw keys written since the last call (sorted); an error if the record is lost.
    pub fn take(&self) -> Result<Vec<Vec<u8>>> {
        self.shared.copies.take(&self.unit)
    }

    /// How many keys, and how many bytes of keys, were written since the last `take`; an
    /// error if the record is lost.
    pub fn pending(&self) -> Result<(usize, usize)> {
        self.shared.copies.pending(&self.unit)
    }
}

impl Drop for CopyWrites {
    fn drop(&mut self) {
        self.shared.copies.stop(&self.unit);
    }
}

/// openraft's state machine for one replica.
#[derive(Debug, Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

/// Read-only handle for serving reads and reporting state.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// A read that checked ownership and data as one view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedRead {
    /// The slot is owned here; its value of the key (`None`: no such key).
    Value(Option<String>),
    /// The slot is not owned here (never, no longer, or not yet).
    NotOwned,
    /// The shard has not claimed its initial slots yet.
    NotInitialised,
    /// The key's collection was deleted (its keyspace dropped here).
    Dropped,
    /// Not served here now: the answer to give (a shard key moving in, or moved away).
    Elsewhere(unikv_types::KvError),
}

impl Store {
    /// The value of `key` if this replica owns `slot`, read so that ownership and data belong
    /// to one applied state: a batch that deletes a slot's data first withdraws the slot from
    /// the published descriptor and bumps the generation, so a read that overlapped it (saw
    /// "owned", then read) notices the bump and reads again.
    pub fn read_owned(&self, slot: Slot, keyspace: Keyspace, key: &str) -> Result<OwnedRead> {
        loop {
            let before = self.shared.generation.load(Ordering::SeqCst);
            {
                let m = read_lock(&self.shared.meta);
                if !m.descriptor.initialised {
                    return Ok(OwnedRead::NotInitialised);
                }
                if m.descriptor.owns(slot).is_none() {
                    return Ok(OwnedRead::NotOwned);
                }
                if let Some(h) = m.descriptor.outgoing.get(&slot) {
                    // Its target may serve it (and take writes) from its `In` on.
                    return Ok(OwnedRead::Elsewhere(unikv_types::KvError::Unavailable {
                        shard: m.descriptor.shard,
                        reason: format!("slot {slot} is moving to shard {}", h.target),
                    }));
                }
                if m.descriptor.dropped_keyspaces.contains(&keyspace) {
                    return Ok(OwnedRead::Dropped);
                }
            }
            let value = self
                .get_in(slot, keyspace, key)
                .map_err(|e| self.shared.note(e))?;
            if self.shared.generation.load(Ordering::SeqCst) == before {
                return Ok(OwnedRead::Value(value));
            }
        }
    }

    /// The value of `key` of a shard key's `keyspace` placed on this shard (its unit; `None`
    /// before its first write here).
    pub fn read_unit(&self, keyspace: Keyspace, key: &str) -> Result<OwnedRead> {
        loop {
            let before = self.shared.generation.load(Ordering::SeqCst);
            let unit = {
                let m = read_lock(&self.shared.meta);
                if !m.descriptor.initialised {
                    return Ok(OwnedRead::NotInitialised);
                }
                if m.descriptor.dropped_keyspaces.contains(&keyspace) {
                    return Ok(OwnedRead::Dropped);
                }
                let slot = unikv_types::key_slot(key.as_bytes());
                if let Err(e) = m.descriptor.unit_home(keyspace, slot, false) {
                    return Ok(OwnedRead::Elsewhere(e));
                }
                m.descriptor.units.get(&keyspace).copied()
            };
            let Some(unit) = unit else {
                return Ok(OwnedRead::Value(None));
            };
            let value = self
                .get_in(unit, keyspace, key)
                .map_err(|e| self.shared.note(e))?;
            if self.shared.generation.load(Ordering::SeqCst) == before {
                return Ok(OwnedRead::Value(value));
            }
        }
    }

    /// Key count and bytes of every shard key stored here as a unit (not one still
    /// arriving: its source counts it until the hand-off).
    pub fn unit_stats(&self) -> Result<Vec<(Keyspace, SlotStats)>> {
        let units = {
            let m = read_lock(&self.shared.meta);
            let mut units = m.descriptor.units.clone();
            units.retain(|ks, _| !m.descriptor.unit_moves.incoming.contains_key(ks));
            units
        };
        let stats: std::collections::HashMap<Slot, SlotStats> =
            self.slot_stats()?.into_iter().collect();
        Ok(units
            .into_iter()
            .map(|(ks, u)| (ks, stats.get(&u).copied().unwrap_or_default()))
            .collect())
    }

    /// The value of `key` in `slot` as currently applied (whoever owns it: moves and tests).
    pub fn get(&self, slot: Slot, key: &str) -> Result<Option<String>> {
        self.get_in(slot, Keyspace::DEFAULT, key)
    }

    /// [`Store::get`] for a key of keyspace `keyspace`.
    pub fn get_in(&self, slot: Slot, keyspace: Keyspace, key: &str) -> Result<Option<String>> {
        let db = &self.shared.db;
        let v = db
            .raw()
            .get_cf(db.cf(CF_KV), kv_key_in(slot, keyspace, key.as_bytes()))?;
        Ok(v.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Everything stored for `slot`: its pairs, dedup table and horizon (for handing it off).
    pub fn export_slot(&self, slot: Slot) -> Result<crate::moves::SlotExport> {
        crate::moves::export_slot(&self.shared.db, slot)
    }

    /// Starts recording the writes to `unit` for a copy of it to another shard (see `copy`);
    /// `None` if a copy of it runs already. Recording stops when the handle is dropped.
    pub fn start_copy(&self, unit: &CopyUnit) -> Option<CopyWrites> {
        self.shared.copies.start(unit).then(|| CopyWrites {
            shared: self.shared.clone(),
            unit: unit.clone(),
        })
    }

    /// The next piece (about `max_bytes`) of `unit`'s pairs after raw key `after`, and where
    /// to continue (`None`: done).
    pub fn copy_piece(
        &self,
        unit: &CopyUnit,
        after: Option<&[u8]>,
        max_bytes: u64,
    ) -> Result<(Piece, Option<Vec<u8>>)> {
        crate::copy::scan_piece(&self.shared.db, unit, after, max_bytes)
    }

    /// The current values (or absence) of the first raw keys of `unit` in `keys`, as one
    /// piece of about `max_bytes`, and how many keys it took.
    pub fn read_piece(
        &self,
        unit: &CopyUnit,
        keys: &[Vec<u8>],
        max_bytes: u64,
    ) -> Result<(Piece, usize)> {
        crate::copy::read_piece(&self.shared.db, unit, keys, max_bytes)
    }

    /// `slot`'s dedup table and horizon (for the final step of a copy).
    pub fn export_dedup(&self, slot: Slot) -> Result<(Vec<(String, DedupRecord)>, u64)> {
        crate::moves::dedup_of_slot(&self.shared.db, slot)
    }

    /// Key count and bytes of one slot (zero if it holds nothing).
    pub fn slot_stat(&self, slot: Slot) -> Result<SlotStats> {
        crate::moves::slot_stat(&self.shared.db, slot)
    }

    /// Key count and bytes of every slot that holds data.
    pub fn slot_stats(&self) -> Result<Vec<(Slot, SlotStats)>> {
        crate::moves::slot_stats(&self.shared.db)
    }

    /// What damaged data this replica found, if any (it then serves nothing).
    pub fn corruption(&self) -> Option<String> {
        self.shared.db.corruption()
    }

    /// The published descriptor's version (it grows with every change), without a copy.
    pub fn descriptor_version(&self) -> u64 {
        read_lock(&self.shared.meta).descriptor.version
    }

    /// Whether `slot` is frozen for a hand-off here (`Out` applied, `Done`/`Abort` not yet).
    pub fn is_outgoing(&self, slot: Slot) -> bool {
        read_lock(&self.shared.meta)
            .descriptor
            .outgoing
            .contains_key(&slot)
    }

    pub fn descriptor(&self) -> ShardDescriptor {
        read_lock(&self.shared.meta).descriptor.clone()
    }

    /// Runs `read` on what `pick` takes from the published descriptor (under its lock: only
    /// what the read needs is copied) and on the database, as one view: if a batch narrowed
    /// ownership meanwhile (it deletes data someone may be reading), reads again.
    pub fn consistent<P, T>(
        &self,
        pick: impl Fn(&ShardDescriptor) -> P,
        mut read: impl FnMut(P, &Db) -> Result<T>,
    ) -> Result<T> {
        loop {
            let before = self.shared.generation.load(Ordering::SeqCst);
            let picked = pick(&read_lock(&self.shared.meta).descriptor);
            let out = read(picked, &self.shared.db).map_err(|e| self.shared.note(e))?;
            if self.shared.generation.load(Ordering::SeqCst) == before {
                return Ok(out);
            }
        }
    }

    pub fn applied(&self) -> Option<LogId> {
        read_lock(&self.shared.meta).applied
    }

    pub fn db(&self) -> &Db {
        &self.shared.db
    }

    pub fn snapshot_dir(&self) -> &Path {
        &self.shared.snap_dir
    }
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A poisoned lock means a panic while holding it; the data is still the last written value.
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

impl StateMachine {
    pub fn open(db: Db, snap_dir: &Path, shard: ShardId) -> Result<Self> {
        std::fs::create_dir_all(snap_dir)?;
        crate::meta::check_format(&db)?;
        crate::dedup::index_legacy_records(&db)?;
        let meta = SmMeta::load(&db, shard)?;
        let current = find_latest_snapshot(snap_dir)?;
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                shard,
                meta: RwLock::new(meta),
                generation: AtomicU64::new(0),
                cache: Mutex::new(ApplyCache::default()),
                copies: CopyTracker::default(),
                snap_dir: snap_dir.to_path_buf(),
                current: Mutex::new(current),
            }),
        })
    }

    pub fn store(&self) -> Store {
        Store {
            shared: self.shared.clone(),
        }
    }

    /// A path in the snapshot folder for receiving a snapshot from the leader.
    pub fn incoming_snapshot_path(&self) -> PathBuf {
        incoming_path(&self.shared.snap_dir)
    }
}

/// A unique temporary path in `dir` for a snapshot being written or received.
pub fn incoming_path(dir: &Path) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("tmp-{}-{n}.part", std::process::id()))
}

/// Finds the newest snapshot file — by the log index in its name — that reads back whole
/// (structure, count, checksum), and removes partial ones. A file that does not read back is
/// skipped with a warning: the state machine's data is in RocksDB, the file only serves
/// lagging followers, and openraft builds a new one when it needs it.
fn find_latest_snapshot(dir: &Path) -> Result<Option<(SnapshotMeta, PathBuf)>> {
    let mut found: Vec<(Option<u64>, PathBuf)> = Vec::new();
    for ent in std::fs::read_dir(dir)? {
        let path = ent?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".part") {
            let _ = std::fs::remove_file(&path);
        } else if let Some(index) = index_of(name) {
            found.push((index, path));
        }
    }
    found.sort();
    for (_, path) in found.into_iter().rev() {
        match verify_snapshot(&path) {
            Ok(header) => return Ok(Some((header.meta, path))),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "snapshot file skipped");
            }
        }
    }
    Ok(None)
}

/// Replaces the current snapshot with `path` and deletes older files.
fn set_current(shared: &Shared, meta: SnapshotMeta, path: PathBuf) {
    let mut cur = lock(&shared.current);
    if let Some((_, old)) = cur.take() {
        if old != path {
            let _ = std::fs::remove_file(old);
        }
    }
    *cur = Some((meta, path));
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let shared = self.shared.clone();
        let snap = blocking(move || {
            let mut held = None;
            loop {
                let tmp = incoming_path(&shared.snap_dir);
                match build_once(&shared, &tmp).map_err(|e| shared.note(e)) {
                    // A full disk: the partial file goes, and the build waits for space (it
                    // runs on its own task; applies go on).
                    Err(e) if e.is_no_space() => {
                        let _ = std::fs::remove_file(&tmp);
                        held.get_or_insert_with(|| shared.db.disk().hold());
                        std::thread::sleep(crate::disk::RETRY_EVERY);
                    }
                    other => return other,
                }
            }
        })
        .await?;
        Ok(snap)
    }
}

/// Writes a snapshot of the current state through `tmp` and makes it the current one.
fn build_once(shared: &Shared, tmp: &Path) -> Result<Snapshot> {
    let db = &shared.db;
    let rs = db.raw().snapshot();
    let meta = SmMeta::load_at(db, &rs, shared.shard)?;
    let snap_meta = SnapshotMeta {
        last_log_id: meta.applied,
        last_membership: meta.membership.clone(),
    };
    let header = SnapshotHeader {
        meta: snap_meta.clone(),
        descriptor: meta.descriptor.clone(),
        clock_ms: meta.clock_ms,
    };
    let records = write_snapshot(db, &header, &rs, tmp)?;
    drop(rs);
    // The state up to the snapshot must be durable before openraft purges the log.
    db.sync_wal()?;
    let path = shared.snap_dir.join(file_name(&snap_meta));
    std::fs::rename(tmp, &path)?;
    sync_dir(&shared.snap_dir)?;
    tracing::info!(shard = %shared.shard, records, last = ?snap_meta.last_log_id, "snapshot built");
    let file = SnapshotFile::open(&path)?;
    set_current(shared, snap_meta.clone(), path);
    Ok(Snapshot {
        meta: snap_meta,
        snapshot: file,
    })
}

/// Groups of at most this many entries are applied on the state machine's own task.
const INLINE_APPLY_MAX: usize = 64;

/// Whether a group is small and plain enough to apply without the blocking pool: a handful of
/// KV writes costs a few memtable inserts and one unsynced WAL write, less than the two
/// thread hand-offs of `spawn_blocking` (~100 µs of a one-connection write's latency on this
/// machine, docs/benchmarks.md). Slot and chunk moves and splits (which may import, delete or
/// scan whole units) and big
/// catch-up groups still go to the blocking pool.
fn applies_inline(group: &[Entry]) -> bool {
    group.len() <= INLINE_APPLY_MAX
        && !group.iter().any(|e| {
            matches!(
                &e.payload,
                openraft::EntryPayload::Normal(
                    Command::Move(_)
                        | Command::Chunk(_)
                        | Command::Registry(crate::command::RegistryCommand::DropKeyspace { .. })
                )
            )
        })
}

/// Applies one group to a copy of `base` (the published metadata before the group); the
/// caller publishes the copy. It can be retried with the same `base` after a failed write
/// (a full disk): nothing but the narrowed published descriptor changes before the write
/// succeeds.
fn apply_group(
    shared: &Shared,
    base: &SmMeta,
    group: &[Entry],
) -> Result<(SmMeta, Vec<CommandResult>)> {
    let mut meta = base.clone();
    let mut cache = lock(&shared.cache);
    let mut hide = |slots: &[Slot]| {
        if slots.is_empty() {
            return;
        }
        hide_slots(shared, |d| {
            for s in slots {
                if d.owns(*s).is_some() {
                    d.remove_slot(*s);
                }
            }
            // A chunk whose data goes: its unit is among the slots.
            d.chunks.owned.retain(|_, c| !slots.contains(&c.unit));
        })
    };
    let results = apply_entries_with(
        &shared.db,
        &mut meta,
        &mut cache,
        group,
        &mut hide,
        &shared.copies,
    )?;
    Ok((meta, results))
}

/// Before a batch deletes or replaces slot data: narrows the published descriptor with
/// `narrow` (the slots stop being served here) and bumps the generation, so no read can see
/// "owned" and then the deleted data. The full new state is published once the batch is in.
fn hide_slots(shared: &Shared, narrow: impl FnOnce(&mut ShardDescriptor)) {
    let mut m = write_lock(&shared.meta);
    narrow(&mut m.descriptor);
    shared.generation.fetch_add(1, Ordering::SeqCst);
}

/// Replaces the state with the snapshot's (one synced batch); `Err` leaves it to be retried.
fn install_once(shared: &Shared, meta: &SnapshotMeta, snapshot: &SnapshotFile) -> Result<SmMeta> {
    let db = &shared.db;
    // Whatever happens below, the cached state no longer describes the database, and a
    // copy running here no longer knows every write since it started.
    lock(&shared.cache).clear();
    shared.copies.lose_all();
    let mut batch = WriteBatch::default();
    // Slot keys start with a big-endian u16 below 0x4000, so [0, 0xff) covers them all;
    // the dedup expiry index is 0xff ++ age (ms, far below 2^56), so [0, 0xffff) there.
    batch.delete_range_cf(db.cf(CF_KV), [0u8].as_slice(), [0xffu8].as_slice());
    batch.delete_range_cf(db.cf(CF_DEDUP), [0u8].as_slice(), [0xffu8; 2].as_slice());
    batch.delete_range_cf(db.cf(CF_STATS), [0u8].as_slice(), [0xffu8].as_slice());
    let file = snapshot.reopen()?;
    let header = read_snapshot(file, &snapshot.path, |rec| {
        match rec {
            Record::Kv(k, v) => batch.put_cf(db.cf(CF_KV), k, v),
            Record::Dedup(k, v) => batch.put_cf(db.cf(CF_DEDUP), k, v),
            Record::Stats(k, v) => batch.put_cf(db.cf(CF_STATS), k, v),
        }
        Ok(())
    })?;
    if header.meta.last_log_id != meta.last_log_id {
        return Err(Error::CorruptSnapshot {
            path: snapshot.path.display().to_string(),
            reason: "file does not match the snapshot meta".into(),
        });
    }
    let new_meta = SmMeta {
        applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
        descriptor: header.descriptor,
        clock_ms: header.clock_ms,
    };
    new_meta.write_to(db, &mut batch)?;
    // The batch replaces every slot's data: nothing is served until it is published.
    hide_slots(shared, |d| d.ranges.clear());
    db.write_sync(batch)?;
    db.stats_view().forget();
    // And a copy started while the batch was written.
    shared.copies.lose_all();
    let path = shared.snap_dir.join(file_name(meta));
    if snapshot.path != path {
        std::fs::rename(&snapshot.path, &path)?;
        sync_dir(&shared.snap_dir)?;
    }
    tracing::info!(shard = %shared.shard, last = ?meta.last_log_id, "snapshot installed");
    set_current(shared, meta.clone(), path);
    Ok(new_meta)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let m = read_lock(&self.shared.meta);
        Ok((m.applied, m.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        const MAX_GROUP: usize = 4096;
        loop {
            let mut group = Vec::new();
            let mut responders = Vec::new();
            while group.len() < MAX_GROUP {
                match entries.try_next().await? {
                    Some((entry, responder)) => {
                        group.push(entry);
                        responders.push(responder);
                    }
                    None => break,
                }
            }
            if group.is_empty() {
                return Ok(());
            }
            let base = read_lock(&self.shared.meta).clone();
            let group = Arc::new(group);
            let mut held = None;
            let (meta, results) = loop {
                let res = if applies_inline(&group) {
                    apply_group(&self.shared, &base, &group)
                } else {
                    let (shared, base, group) = (self.shared.clone(), base.clone(), group.clone());
                    blocking(move || apply_group(&shared, &base, &group)).await
                };
                match res.map_err(|e| self.shared.note(e)) {
                    // A full disk: the group stays here (its entries are committed; the
                    // responders wait) and is applied once RocksDB takes writes again.
                    Err(e) if e.is_no_space() => {
                        held.get_or_insert_with(|| self.shared.db.disk().hold());
                        tokio::time::sleep(crate::disk::RETRY_EVERY).await;
                    }
                    other => break other?,
                }
            };
            drop(held);
            *write_lock(&self.shared.meta) = meta;
            for (responder, result) in responders.into_iter().zip(results) {
                if let Some(r) = responder {
                    r.send(result);
                }
            }
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// No policy snapshot while the disk is full (it would only fail and wait).
    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<Self::SnapshotBuilder> {
        if self.shared.db.disk().is_full() {
            return None;
        }
        Some(self.clone())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let shared = self.shared.clone();
        let meta = meta.clone();
        let new_meta = blocking(move || {
            let mut held = None;
            loop {
                match install_once(&shared, &meta, &snapshot).map_err(|e| shared.note(e)) {
                    Err(e) if e.is_no_space() => {
                        held.get_or_insert_with(|| shared.db.disk().hold());
                        std::thread::sleep(crate::disk::RETRY_EVERY);
                    }
                    other => return other,
                }
            }
        })
        .await?;
        *write_lock(&self.shared.meta) = new_meta;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        // Opened under the lock: a concurrent build may replace (and delete) the file.
        let cur = lock(&self.shared.current);
        match &*cur {
            Some((meta, path)) => Ok(Some(Snapshot {
                meta: meta.clone(),
                snapshot: SnapshotFile::open(path)?,
            })),
            None => Ok(None),
        }
    }
}
