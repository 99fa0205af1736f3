//! Applying committed entries to the state machine: ownership check, at-most-once dedup, the KV
//! operation, all written as one RocksDB batch per group of entries together with the applied
//! log id (so a crash leaves either all of a group or none of it).

use openraft::EntryPayload;
use unikv_types::catalog::{
    Catalog, CatalogChange, CatalogOutcome, CatalogReply, Sharding, CATALOG_KEY,
};
use unikv_types::{Keyspace, KvError, KvOp, KvReply, Slot};

use crate::apply_cache::ApplyCache;
use crate::chunk_layout::create_first;
use crate::chunk_map::ChunkState;
use crate::chunk_moves::apply_chunk;
use crate::command::{Command, CommandResult};
use crate::copy::CopyTracker;
use crate::db::{kv_key_in, Db, RANGE_PREFIX};
use crate::dedup::{self, Check};
use crate::descriptor::ShardDescriptor;
use crate::error::Result;
use crate::meta::SmMeta;
use crate::moves::apply_move;
use crate::overlay::Overlay;
use crate::raft_types::{Entry, StoredMembership};
use crate::records::request_digest;
use crate::registry::apply_registry;

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
    apply_entries_with(
        db,
        meta,
        cache,
        entries,
        &mut |_| {},
        &CopyTracker::default(),
    )
}

/// [`apply_entries_cached`], calling `before_write` with the slots whose data the group
/// deletes or replaces just before its batch reaches RocksDB, and telling `copies` which keys
/// it wrote once it is there.
pub fn apply_entries_with(
    db: &Db,
    meta: &mut SmMeta,
    cache: &mut ApplyCache,
    entries: &[Entry],
    before_write: &mut dyn FnMut(&[Slot]),
    copies: &CopyTracker,
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
                let version = meta.descriptor.version;
                let res = apply_command(&mut ov, meta, cmd)?;
                // A KV write changes the descriptor only when it opens a unit.
                meta_changed |=
                    !matches!(cmd, Command::Kv { .. }) || meta.descriptor.version != version;
                res
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
    ov.commit(before_write, copies)?;
    Ok(out)
}

fn apply_command(ov: &mut Overlay<'_>, meta: &mut SmMeta, cmd: &Command) -> Result<CommandResult> {
    match cmd {
        Command::Move(m) => apply_move(ov, &mut meta.descriptor, m, meta.clock_ms),
        Command::Chunk(c) => apply_chunk(ov, &mut meta.descriptor, c),
        Command::Unit(u) => crate::unit_moves::apply_unit(ov, &mut meta.descriptor, u),
        Command::Registry(r) => apply_registry(ov, &mut meta.descriptor, r),
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
            max_value_bytes,
            clock,
            keyspace,
            bucket,
            range,
        } => {
            if let Some(c) = clock {
                dedup::advance_clock(ov, meta, *c)?;
            }
            if !meta.descriptor.initialised {
                return Ok(Err(KvError::Unavailable {
                    shard: meta.descriptor.shard,
                    reason: "the shard has not claimed its slots yet".into(),
                }));
            }
            if meta.descriptor.dropped_keyspaces.contains(keyspace) {
                return Ok(Err(dropped(*keyspace)));
            }
            // A shard key's write goes to its unit here; placement was the proposer's to
            // check (from its catalog; a part that moved away is refused below).
            // A range collection's write goes to the chunk holding the key here: its keys are
            // in the range prefix, its dedup table and statistics in the chunk's unit.
            let mut data_slot = None;
            if *range {
                match range_home(&meta.descriptor, *keyspace, key) {
                    Ok(unit) => data_slot = Some((unit, RANGE_PREFIX)),
                    Err(e) => return Ok(Err(e)),
                }
            }
            let slot = match bucket {
                _ if data_slot.is_some() => data_slot.map_or(*slot, |(unit, _)| unit),
                Some(_) if keyspace.is_default() || *keyspace == Keyspace::SYSTEM => {
                    return Ok(Err(KvError::BadRequest {
                        code: "bad_command".into(),
                        message: "a bucket write needs a shard key's keyspace".into(),
                    }))
                }
                Some(_) => {
                    // Not while it moves, and never a fresh unit for one that moved away.
                    if let Err(e) = meta.descriptor.unit_home(*keyspace, *slot, true) {
                        return Ok(Err(e));
                    }
                    match meta.descriptor.unit_for(*keyspace) {
                        Some(u) => u,
                        None => {
                            return Ok(Err(KvError::Unavailable {
                                shard: meta.descriptor.shard,
                                reason: "this shard holds as many shard keys as it can".into(),
                            }))
                        }
                    }
                }
                None => *slot,
            };
            let slot = &slot;
            if let Some(h) = meta.descriptor.outgoing.get(slot) {
                return Ok(Err(KvError::Unavailable {
                    shard: meta.descriptor.shard,
                    reason: format!("slot {slot} is moving to shard {}", h.target),
                }));
            }
            if bucket.is_none() && data_slot.is_none() && meta.descriptor.owns(*slot).is_none() {
                return Ok(Err(KvError::WrongShard {
                    slot: *slot,
                    shard: meta.descriptor.shard,
                    owner: meta.descriptor.forwards.get(slot).map(|f| f.target),
                    epoch: meta.descriptor.forwards.get(slot).map(|f| f.epoch),
                }));
            }
            let w = Write {
                slot: *slot,
                data_slot: data_slot.map_or(*slot, |(_, d)| d),
                keyspace: *keyspace,
                key,
                max_value_bytes: *max_value_bytes,
                now_ms: meta.clock_ms,
            };
            let Some(c) = client else {
                return apply_op_then(ov, meta, &w, op);
            };
            let digest = request_digest(*keyspace, key, op);
            let clock_ms = clock.map(|_| meta.clock_ms);
            let (prev, ts) = match dedup::check(ov, *slot, c, digest, clock_ms)? {
                Check::Answer(answer) => return Ok(answer),
                Check::Apply { prev, ts } => (prev, ts),
            };
            let reply = apply_op_then(ov, meta, &w, op)?;
            if let Ok(r) = &reply {
                dedup::remember(ov, *slot, c, prev, ts, r, digest, meta.clock_ms)?;
            }
            Ok(reply)
        }
    }
}

/// The unit of the chunk of range keyspace `ks` holding `key` here, if it serves writes.
fn range_home(d: &ShardDescriptor, ks: Keyspace, key: &str) -> Result<Slot, KvError> {
    match d.chunks.find(ks, key) {
        Some((_, c)) if c.state == ChunkState::Serving => Ok(c.unit),
        Some((id, c)) => Err(KvError::Unavailable {
            shard: d.shard,
            reason: match c.state {
                ChunkState::Outgoing { target, .. } => {
                    format!("chunk {id} is moving to shard {target}")
                }
                _ => format!("chunk {id} is arriving here"),
            },
        }),
        None => Err(range_wrong_shard(d, ks, key)),
    }
}

/// `WrongShard` for a key of range keyspace `ks` this shard does not hold, naming where it
/// went if a forwarding note says.
pub fn range_wrong_shard(d: &ShardDescriptor, ks: Keyspace, key: &str) -> KvError {
    let f = d.chunks.forward_for(ks, key);
    KvError::WrongShard {
        slot: unikv_types::kv::RANGE_SLOT,
        shard: d.shard,
        owner: f.map(|f| f.target),
        epoch: f.map(|f| f.epoch),
    }
}

/// [`apply_op`], then: a range collection created in this (the catalog's) shard gets its
/// first chunk here, in the same entry.
fn apply_op_then(
    ov: &mut Overlay<'_>,
    meta: &mut SmMeta,
    w: &Write<'_>,
    op: &KvOp,
) -> Result<CommandResult> {
    let res = apply_op(ov, w, op)?;
    if let Ok(KvReply::Catalog(r)) = &res {
        if let (CatalogOutcome::Created, Some(c)) = (&r.outcome, &r.collection) {
            if c.sharding == Sharding::Range {
                if let Err(e) = create_first(&mut meta.descriptor, c.id, w.now_ms) {
                    tracing::error!(collection = %c.name, error = %e, "no first chunk for a range collection");
                }
            }
        }
    }
    Ok(res)
}

/// Where one KV write goes and what the entry says about it.
struct Write<'k> {
    /// The slot (or unit) whose dedup table and statistics the write uses.
    slot: Slot,
    /// The slot prefix of its stored key (`slot`, or the range prefix).
    data_slot: Slot,
    keyspace: Keyspace,
    key: &'k str,
    /// For an append: the longest value it may leave.
    max_value_bytes: Option<u64>,
    /// The shard's clock as of this entry.
    now_ms: u64,
}

/// The answer to a request for a keyspace this shard dropped.
pub fn dropped(keyspace: Keyspace) -> KvError {
    KvError::Refused {
        status: 404,
        code: "unknown_collection".into(),
        message: format!("the collection (or shard key) of keyspace {keyspace} was deleted"),
    }
}

fn apply_op(ov: &mut Overlay<'_>, w: &Write<'_>, op: &KvOp) -> Result<CommandResult> {
    let (slot, key, max_value_bytes) = (w.slot, w.key, w.max_value_bytes);
    let k = kv_key_in(w.data_slot, w.keyspace, key.as_bytes());
    Ok(match op {
        KvOp::Put { value } => {
            match ov.get_kv(&k)? {
                Some(old) => {
                    ov.count_in(slot, w.keyspace, 0, value.len() as i64 - old.len() as i64)
                }
                None => ov.count_in(slot, w.keyspace, 1, (key.len() + value.len()) as i64),
            }
            ov.put_kv(k, value.as_bytes().to_vec());
            Ok(KvReply::Written)
        }
        KvOp::Append { value } => {
            let prev = ov.get_kv(&k)?;
            let len = prev.as_ref().map_or(0, Vec::len) + value.len();
            if let Some(max) = max_value_bytes.filter(|m| len as u64 > *m) {
                return Ok(Err(KvError::BadRequest {
                    code: "value_too_long".into(),
                    message: format!(
                        "the append would make the value {len} bytes long; the limit is {max}"
                    ),
                }));
            }
            match &prev {
                Some(_) => ov.count_in(slot, w.keyspace, 0, value.len() as i64),
                None => ov.count_in(slot, w.keyspace, 1, (key.len() + value.len()) as i64),
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
                ov.count_in(slot, w.keyspace, -1, -((key.len() + old.len()) as i64));
            }
            let existed = old.is_some();
            ov.delete_kv(k);
            Ok(KvReply::Deleted { existed })
        }
        KvOp::Catalog(change) => {
            if w.keyspace != Keyspace::SYSTEM || key != CATALOG_KEY {
                return Ok(Err(KvError::BadRequest {
                    code: "bad_command".into(),
                    message: "a catalog change applies to the catalog key only".into(),
                }));
            }
            let prev = ov.get_kv(&k)?;
            let mut catalog: Catalog = match &prev {
                Some(b) => serde_json::from_slice(b).map_err(|e| crate::Error::Decode {
                    what: "catalog",
                    reason: e.to_string(),
                })?,
                None => Catalog::default(),
            };
            let outcome = match catalog.apply(change, w.now_ms) {
                Ok(o) => o,
                Err(e) => return Ok(Err(e.into())),
            };
            let collection = match &change.change {
                CatalogChange::Create { name, .. } => catalog.get(name),
                CatalogChange::CreateShardKey { collection, .. }
                | CatalogChange::DeleteShardKey { collection, .. }
                | CatalogChange::MoveShardKey { collection, .. }
                | CatalogChange::Promote { collection, .. } => catalog.get(collection),
                CatalogChange::Delete { .. } | CatalogChange::Forget { .. } => None,
            };
            let reply = CatalogReply {
                outcome,
                version: catalog.version,
                collection,
            };
            let bytes = serde_json::to_vec(&catalog).map_err(|e| crate::Error::Encode {
                what: "catalog",
                reason: e.to_string(),
            })?;
            if prev.as_ref() == Some(&bytes) {
                // Nothing changed (an idempotent create, a second forget).
                return Ok(Ok(KvReply::Catalog(reply)));
            }
            match &prev {
                Some(old) => {
                    ov.count_in(slot, w.keyspace, 0, bytes.len() as i64 - old.len() as i64)
                }
                None => ov.count_in(slot, w.keyspace, 1, (key.len() + bytes.len()) as i64),
            }
            ov.put_kv(k, bytes);
            Ok(KvReply::Catalog(reply))
        }
        KvOp::Get
        | KvOp::Scan(_)
        | KvOp::Chunks
        | KvOp::Split
        | KvOp::MoveChunk { .. }
        | KvOp::Usage => Err(KvError::BadRequest {
            code: "bad_command".into(),
            message: format!("{} is not a replicated KV command", op.name()),
        }),
    })
}
