//! Reads of range collections on one replica: a key, an ordered scan through the chunks held
//! here, the chunk listing, and what a chunk move or split needs to read. Each runs against
//! one published descriptor and reads again if a batch deleted chunk data meanwhile
//! (`Store::consistent`, copying only the chunks it needs), so a read never sees "held" and then the deleted data.

use rocksdb::{Direction, IteratorMode, ReadOptions};
use unikv_types::{ChunkId, ChunkInfo, Keyspace, KvError, ScanPage, ScanRange, Slot};

use crate::chunk_layout::{chunk_infos, chunk_pairs, split_point, ChunkExport};
use crate::chunk_map::{ChunkMap, ChunkState, OwnedChunk};
use crate::db::{chunk_bounds, range_key, range_user_key, Db, CF_KV, CF_STATS};
use crate::error::Result;
use crate::moves::export_slot;
use crate::records::SlotStats;
use crate::state_machine::{OwnedRead, Store};

/// A chunk that can be read here: serving. One moving out is frozen (its target may serve
/// it from its `In` on), one being staged is not held yet.
fn readable(c: &OwnedChunk) -> bool {
    c.state == ChunkState::Serving
}

/// Why a read of a chunk held here but not readable must wait (it is frozen for a hand-off).
pub fn frozen(d: &crate::descriptor::ShardDescriptor, id: ChunkId, c: &OwnedChunk) -> KvError {
    let to = match c.state {
        ChunkState::Outgoing { target, .. } => target.to_string(),
        _ => "another shard".into(),
    };
    KvError::Unavailable {
        shard: d.shard,
        reason: format!("chunk {id} is frozen while it is handed to shard {to}"),
    }
}

fn unit_stats(db: &Db, unit: Slot) -> SlotStats {
    match db.raw().get_cf(db.cf(CF_STATS), unit.to_be_bytes()) {
        Ok(Some(b)) => SlotStats::decode(&b),
        _ => SlotStats::default(),
    }
}

impl Store {
    /// The value of `key` of range keyspace `ks`, if a chunk held here holds it.
    pub fn read_range(&self, ks: Keyspace, key: &str) -> Result<OwnedRead> {
        self.consistent(
            |d| {
                if d.dropped_keyspaces.contains(&ks) {
                    return Some(OwnedRead::Dropped);
                }
                match d.chunks.find(ks, key) {
                    Some((_, c)) if readable(c) => None,
                    Some((id, c)) => Some(OwnedRead::Elsewhere(frozen(d, id, c))),
                    None => Some(OwnedRead::NotOwned),
                }
            },
            |refused, db| {
                if let Some(r) = refused {
                    return Ok(r);
                }
                let v = db
                    .raw()
                    .get_cf(db.cf(CF_KV), range_key(ks, key.as_bytes()))?;
                Ok(OwnedRead::Value(
                    v.map(|b| String::from_utf8_lossy(&b).into_owned()),
                ))
            },
        )
    }

    /// One page of a scan of range keyspace `ks`, from the chunk holding `r`'s first
    /// position on through the adjacent chunks held here; `None` if that chunk is not held
    /// (readable) here.
    pub fn scan_range(&self, ks: Keyspace, r: &ScanRange) -> Result<Option<ScanPage>> {
        self.consistent(
            |d| ChunkMap {
                owned: d
                    .chunks
                    .owned
                    .iter()
                    .filter(|(_, c)| c.keyspace == ks)
                    .map(|(id, c)| (*id, c.clone()))
                    .collect(),
                ..Default::default()
            },
            |chunks, db| scan(&chunks, db, ks, r),
        )
    }

    /// The chunks held here (of `ks`, or all), with their key counts and bytes.
    pub fn chunks(&self, ks: Option<Keyspace>) -> Result<Vec<ChunkInfo>> {
        self.consistent(
            |d| (d.shard, d.chunks.owned.clone()),
            |(shard, owned), db| Ok(chunk_infos(shard, &owned, ks, &|u| unit_stats(db, u))),
        )
    }

    /// Chunk `id` as held here and everything stored for it, for handing it off.
    pub fn export_chunk(&self, id: ChunkId) -> Result<Option<(OwnedChunk, ChunkExport)>> {
        self.consistent(
            |d| d.chunks.owned.get(&id).cloned(),
            |c, db| {
                let Some(c) = c else {
                    return Ok(None);
                };
                let kv = chunk_pairs(db, c.keyspace, &c.lo, c.hi.as_deref())?;
                let dedup = export_slot(db, c.unit)?;
                Ok(Some((
                    c,
                    ChunkExport {
                        kv,
                        dedup: dedup.dedup,
                        dedup_horizon_ms: dedup.dedup_horizon_ms,
                    },
                )))
            },
        )
    }

    /// Where to split chunk `id` so each half holds about half its bytes (`None`: not held
    /// here, or too few keys).
    pub fn split_point(&self, id: ChunkId) -> Result<Option<String>> {
        self.consistent(
            |d| d.chunks.owned.get(&id).cloned(),
            |c, db| {
                let Some(c) = c else {
                    return Ok(None);
                };
                let total = unit_stats(db, c.unit).bytes;
                split_point(db, c.keyspace, &c.lo, c.hi.as_deref(), total)
            },
        )
    }
}

fn scan(chunks: &ChunkMap, db: &Db, ks: Keyspace, r: &ScanRange) -> Result<Option<ScanPage>> {
    let first = if r.reverse {
        chunks.find_before(ks, r.end.as_deref())
    } else {
        chunks.find(ks, &r.start)
    };
    let Some((_, mut chunk)) = first.filter(|(_, c)| readable(c)) else {
        return Ok(None);
    };
    let mut page = ScanPage::default();
    let mut bytes = 0u64;
    let limit = r.limit.max(1) as usize;
    // The bounds still to read: [start, end).
    let (mut start, mut end) = (r.start.clone(), r.end.clone());
    loop {
        // This chunk's part of the range.
        let lo = start.as_str().max(chunk.lo.as_str()).to_string();
        let hi = match (end.as_deref(), chunk.hi.as_deref()) {
            (Some(e), Some(h)) => Some(e.min(h).to_string()),
            (e, h) => e.or(h).map(str::to_string),
        };
        if hi.as_deref().is_none_or(|h| lo.as_str() < h) {
            let (lo_k, hi_k) = chunk_bounds(ks, &lo, hi.as_deref());
            let mut ro = ReadOptions::default();
            ro.set_iterate_lower_bound(lo_k.clone());
            ro.set_iterate_upper_bound(hi_k.clone());
            let mode = if r.reverse {
                IteratorMode::End
            } else {
                IteratorMode::From(&lo_k, Direction::Forward)
            };
            for item in db.raw().iterator_cf_opt(db.cf(CF_KV), ro, mode) {
                let (k, v) = item?;
                let key = String::from_utf8_lossy(range_user_key(&k)).into_owned();
                bytes += (key.len() + v.len()) as u64;
                page.items
                    .push((key, String::from_utf8_lossy(&v).into_owned()));
                if page.items.len() >= limit || bytes >= r.max_bytes {
                    let last = &page.items[page.items.len() - 1].0;
                    page.resume = Some(if r.reverse {
                        last.clone()
                    } else {
                        format!("{last}\0")
                    });
                    return Ok(Some(page));
                }
            }
        }
        // This chunk is exhausted: the range ends here, or goes on in the next chunk.
        let next = if r.reverse {
            if chunk.lo.as_str() <= start.as_str() {
                return Ok(Some(page));
            }
            end = Some(chunk.lo.clone());
            chunks.find_before(ks, end.as_deref())
        } else {
            match chunk.hi.as_deref() {
                None => return Ok(Some(page)),
                Some(h) if end.as_deref().is_some_and(|e| e <= h) => return Ok(Some(page)),
                Some(h) => {
                    start = h.to_string();
                    chunks.find(ks, &start)
                }
            }
        };
        match next.filter(|(_, c)| readable(c)) {
            Some((_, c)) => chunk = c,
            None => {
                page.resume = Some(if r.reverse {
                    end.clone().unwrap_or_default()
                } else {
                    start.clone()
                });
                return Ok(Some(page));
            }
        }
    }
}
