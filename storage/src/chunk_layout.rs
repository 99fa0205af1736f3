//! The chunks of range collections a shard holds, apart from moving them (`chunk_moves`):
//! the first chunk of a collection, splits and merges, dropping a deleted collection's
//! chunks, the listing, and the reads a hand-off or a split needs.

use rocksdb::{Direction, IteratorMode, ReadOptions};
use unikv_types::{ChunkId, ChunkInfo, Epoch, Keyspace, KvError, KvReply};

use crate::chunk_map::{within, ChunkState, OwnedChunk};
use crate::command::CommandResult;
use crate::db::{chunk_bounds, range_user_key, Db, CF_KV};
use crate::descriptor::ShardDescriptor;
use crate::error::Result;
use crate::moves::refused;
use crate::overlay::Overlay;
use crate::records::{DedupRecord, SlotStats};

pub(crate) fn no_units(d: &ShardDescriptor) -> KvError {
    KvError::Unavailable {
        shard: d.shard,
        reason: "this shard has handed out every unit number it has".into(),
    }
}

/// Creates the first chunk of range keyspace `ks` here, unless this shard minted one already.
pub(crate) fn create_first(d: &mut ShardDescriptor, ks: Keyspace, now_ms: u64) -> CommandResult {
    if d.chunks.owned.values().any(|c| c.keyspace == ks) {
        return Ok(KvReply::Written);
    }
    let Some(unit) = d.new_unit() else {
        return Err(no_units(d));
    };
    let id = d.chunks.mint(d.shard);
    d.chunks.owned.insert(
        id,
        OwnedChunk {
            keyspace: ks,
            lo: String::new(),
            hi: None,
            epoch: Epoch(1),
            unit,
            version: 1,
            updated_ms: now_ms,
            state: ChunkState::Serving,
        },
    );
    d.version += 1;
    tracing::info!(shard = %d.shard, keyspace = %ks, chunk = %id, "first chunk of a range collection");
    Ok(KvReply::Written)
}

/// Deletes a chunk's keys, dedup table and statistics (its unit goes to the batch's replaced
/// list, so readers stop trusting it before the batch lands).
pub(crate) fn delete_data(ov: &mut Overlay<'_>, ch: &OwnedChunk) -> Result<()> {
    let (lo, hi) = chunk_bounds(ch.keyspace, &ch.lo, ch.hi.as_deref());
    ov.delete_kv_range(&lo, &hi);
    ov.delete_slot(ch.unit)
}

/// Drops every chunk of keyspace `ks` held here (a deleted collection).
pub(crate) fn drop_keyspace_chunks(
    ov: &mut Overlay<'_>,
    d: &mut ShardDescriptor,
    ks: Keyspace,
) -> Result<()> {
    let ids: Vec<ChunkId> = d
        .chunks
        .owned
        .iter()
        .filter(|(_, c)| c.keyspace == ks)
        .map(|(id, _)| *id)
        .collect();
    for id in ids {
        if let Some(ch) = d.chunks.owned.remove(&id) {
            delete_data(ov, &ch)?;
        }
    }
    d.chunks.forwards.retain(|_, f| f.keyspace != ks);
    Ok(())
}

pub(crate) fn split(
    ov: &mut Overlay<'_>,
    d: &mut ShardDescriptor,
    id: ChunkId,
    at: &str,
    now_ms: u64,
) -> Result<CommandResult> {
    let Some(ch) = d.chunks.owned.get(&id).cloned() else {
        return Ok(refused(format!(
            "chunk {id} is not held by shard {}",
            d.shard
        )));
    };
    if ch.state != ChunkState::Serving {
        return Ok(Err(KvError::Refused {
            status: 409,
            code: "chunk_moving".into(),
            message: format!("chunk {id} is moving; split it once it has arrived"),
        }));
    }
    if at <= ch.lo.as_str() || !within(&ch.lo, ch.hi.as_deref(), at) {
        return Ok(Err(KvError::BadRequest {
            code: "bad_split".into(),
            message: format!(
                "{at:?} is not inside chunk {id} [{:?}, {}) past its first key",
                ch.lo,
                ch.hi
                    .as_deref()
                    .map_or("end".to_string(), |h| format!("{h:?}"))
            ),
        }));
    }
    let Some(unit) = d.new_unit() else {
        return Ok(Err(no_units(d)));
    };
    // What moves to the right half: its keys' count and bytes, and a copy of the dedup table
    // (a retry is recognised in either half).
    let (lo, hi) = chunk_bounds(ch.keyspace, at, ch.hi.as_deref());
    let mut st = SlotStats::default();
    for (k, v) in ov.pairs_in(&lo, &hi)? {
        st.keys += 1;
        st.bytes += (range_user_key(&k).len() + v.len()) as u64;
    }
    let (records, horizon) = ov.dedup_of(ch.unit)?;
    ov.install_dedup(unit, &records, horizon)?;
    ov.count(ch.unit, -(st.keys as i64), -(st.bytes as i64));
    ov.count(unit, st.keys as i64, st.bytes as i64);
    let new_id = d.chunks.mint(d.shard);
    let left = d.chunks.owned.get_mut(&id).expect("held");
    left.hi = Some(at.to_string());
    left.version += 1;
    left.updated_ms = now_ms;
    d.chunks.owned.insert(
        new_id,
        OwnedChunk {
            lo: at.to_string(),
            hi: ch.hi.clone(),
            unit,
            version: 1,
            updated_ms: now_ms,
            ..ch
        },
    );
    d.version += 1;
    tracing::info!(shard = %d.shard, chunk = %id, new = %new_id, at, moved_keys = st.keys, "chunk split");
    Ok(Ok(KvReply::Written))
}

/// Merges chunk `right` into `left`: both held here and serving, neighbours in one keyspace.
/// The right chunk's statistics join the left's; its dedup records join the left's table (per
/// client the record with the larger seq: a retry of the other then gets `stale_sequence`,
/// never a second apply), the larger horizon stays.
pub(crate) fn merge(
    ov: &mut Overlay<'_>,
    d: &mut ShardDescriptor,
    left: ChunkId,
    right: ChunkId,
    now_ms: u64,
) -> Result<CommandResult> {
    let (Some(l), Some(r)) = (d.chunks.owned.get(&left), d.chunks.owned.get(&right)) else {
        return Ok(refused(format!(
            "chunks {left} and {right} are not both held by shard {}",
            d.shard
        )));
    };
    if l.keyspace != r.keyspace || l.hi.as_deref() != Some(r.lo.as_str()) {
        return Ok(refused(format!(
            "chunk {right} does not start where chunk {left} ends"
        )));
    }
    if l.state != ChunkState::Serving || r.state != ChunkState::Serving {
        return Ok(Err(KvError::Refused {
            status: 409,
            code: "chunk_moving".into(),
            message: format!("chunk {left} or {right} is moving"),
        }));
    }
    let (l_unit, r) = (l.unit, r.clone());
    let (mine, my_horizon) = ov.dedup_of(l_unit)?;
    let (theirs, their_horizon) = ov.dedup_of(r.unit)?;
    let mine: std::collections::HashMap<String, u64> =
        mine.into_iter().map(|(c, rec)| (c, rec.seq)).collect();
    let newer: Vec<(String, DedupRecord)> = theirs
        .into_iter()
        .filter(|(c, rec)| mine.get(c).is_none_or(|seq| *seq < rec.seq))
        .collect();
    let horizon = if their_horizon > my_horizon {
        their_horizon
    } else {
        0
    };
    ov.install_dedup(l_unit, &newer, horizon)?;
    let st = ov.stats_of(r.unit)?;
    ov.delete_slot(r.unit)?;
    ov.count(l_unit, st.keys as i64, st.bytes as i64);
    d.chunks.owned.remove(&right);
    let l = d.chunks.owned.get_mut(&left).expect("held");
    l.hi = r.hi;
    l.version += 1;
    l.updated_ms = now_ms;
    d.version += 1;
    tracing::info!(shard = %d.shard, chunk = %left, merged = %right, keys = st.keys, "chunks merged");
    Ok(Ok(KvReply::Written))
}

/// The listing of chunks held here (not those still arriving), with their statistics.
pub fn chunk_infos(
    shard: unikv_types::ShardId,
    owned: &std::collections::BTreeMap<ChunkId, OwnedChunk>,
    ks: Option<Keyspace>,
    stats: &dyn Fn(u16) -> SlotStats,
) -> Vec<ChunkInfo> {
    owned
        .iter()
        // A copy being staged here is not held yet.
        .filter(|(_, c)| ks.is_none_or(|k| c.keyspace == k) && !c.is_staging())
        .map(|(id, c)| {
            let st = stats(c.unit);
            ChunkInfo {
                id: *id,
                keyspace: c.keyspace,
                shard,
                min: c.lo.clone(),
                max: c.hi.clone(),
                count: st.keys,
                size: st.bytes,
                version: c.version,
                epoch: c.epoch,
                updated_ms: c.updated_ms,
                moving_to: match c.state {
                    ChunkState::Outgoing { target, .. } => Some(target),
                    _ => None,
                },
            }
        })
        .collect()
}

/// Everything stored for a chunk, for handing it off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkExport {
    pub kv: Vec<(String, String)>,
    pub dedup: Vec<(String, DedupRecord)>,
    pub dedup_horizon_ms: u64,
}

/// The user keys and values of `[lo, hi)` of range keyspace `ks`, as stored.
pub fn chunk_pairs(
    db: &Db,
    ks: Keyspace,
    lo: &str,
    hi: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let (lo, hi) = chunk_bounds(ks, lo, hi);
    let mut ro = ReadOptions::default();
    ro.set_iterate_upper_bound(hi);
    let mut out = Vec::new();
    for item in db.raw().iterator_cf_opt(
        db.cf(CF_KV),
        ro,
        IteratorMode::From(&lo, Direction::Forward),
    ) {
        let (k, v) = item?;
        out.push((
            String::from_utf8_lossy(range_user_key(&k)).into_owned(),
            String::from_utf8_lossy(&v).into_owned(),
        ));
    }
    Ok(out)
}

/// A split point for a chunk of `[lo, hi)`: the first key past half its bytes (`None` if the
/// chunk has fewer than two keys).
pub fn split_point(
    db: &Db,
    ks: Keyspace,
    lo: &str,
    hi: Option<&str>,
    total: u64,
) -> Result<Option<String>> {
    let (lo_k, hi_k) = chunk_bounds(ks, lo, hi);
    let mut ro = ReadOptions::default();
    ro.set_iterate_upper_bound(hi_k);
    let mut seen = 0u64;
    let mut first = true;
    for item in db.raw().iterator_cf_opt(
        db.cf(CF_KV),
        ro,
        IteratorMode::From(&lo_k, Direction::Forward),
    ) {
        let (k, v) = item?;
        let key = range_user_key(&k);
        if !first && seen >= total / 2 {
            return Ok(Some(String::from_utf8_lossy(key).into_owned()));
        }
        first = false;
        seen += (key.len() + v.len()) as u64;
    }
    Ok(None)
}
