//! At-most-once writes with bounded state: per slot, one record per client that wrote in the
//! last dedup window, and one number for everything older.
//!
//! A write carrying `(client_id, seq, ts)` (`ts`: when it was first sent, the same on every
//! retry) is answered from the client's record in its slot if it is a retry, refused if it is
//! older than the record (`stale_sequence`) or reuses the pair for another request
//! (`sequence_reused`), and applied otherwise. Records are kept for the dedup window after the
//! client's last write in the slot, then forgotten; forgetting one raises the slot's *horizon*
//! to the newest `ts` that record covered. A write with no record whose `ts` is not newer than
//! the horizon may be a late retry of a forgotten write, so it is refused (`session_expired`) —
//! never applied a second time. A new client's first write is stamped now, above any horizon
//! built from honest stamps, so it is applied.
//!
//! Everything is decided by the shard's clock as the log carries it ([`LeaderClock`], the
//! proposing leader's wall clock; the state machine keeps the largest seen, so it never goes
//! back), never by a replica's own clock, so every replica forgets the same records at the
//! same entry. Expiry runs when that clock enters a new second ([`GC_STEP_MS`]): a record
//! lives between one window and one window plus a second after its client's last write.
//!
//! Layout in the `dedup` column family (slot keys start below `0x40`):
//! - `slot ++ client id` → [`DedupRecord`] (msgpack);
//! - `slot` alone → the slot's horizon, u64 BE ms (it moves with the slot);
//! - `0xFF ++ at_ms (u64 BE) ++ slot ++ client id` → empty: the expiry index, oldest first.
//!   An entry whose record is gone or newer (the slot moved away, the client wrote again) is
//!   dropped when its time comes.
//!
//! So the records grow with the (client, slot) pairs that wrote within the window, not with
//! the number of writes or of clients ever seen; replies are kept small ([`stored_reply`]).

use rocksdb::{IteratorMode, WriteBatch};
use unikv_types::{ClientSeq, KvError, Slot};

use crate::command::{CommandResult, LeaderClock};
use crate::db::{age_key, dedup_key, parse_age_key, split_key, Db, AGE_PREFIX, CF_DEDUP, CF_SM};
use crate::error::{decode, Result};
use crate::meta::SmMeta;
use crate::overlay::Overlay;
use crate::records::{stored_reply, DedupRecord};

/// Expiry runs when the shard clock enters a new step.
pub const GC_STEP_MS: u64 = 1000;
/// How far ahead of the shard clock a request's `ts` may be (a sender's clock running fast):
/// more is refused (`bad_timestamp`), since a far-future stamp, once forgotten, would make the
/// slot refuse honest new clients until the clock catches up.
pub const MAX_TS_LEAD_MS: u64 = 60_000;
/// Marks a data dir whose records (from before expiry existed) were indexed.
const KEY_INDEXED: &[u8] = b"dedup_indexed";

/// What to do with a write that carries a client identity.
pub(crate) enum Check {
    /// Answer this without applying the write.
    Answer(CommandResult),
    /// Apply it, then [`remember`] it with these.
    Apply { prev: Option<DedupRecord>, ts: u64 },
}

/// Decides a write from client `c` to `slot` with request digest `digest`. `clock_ms` is the
/// shard clock, `None` for entries of versions before expiry (decided as they were then).
pub(crate) fn check(
    ov: &Overlay<'_>,
    slot: Slot,
    c: &ClientSeq,
    digest: u64,
    clock_ms: Option<u64>,
) -> Result<Check> {
    if c.client_id.is_empty() {
        return Ok(Check::Answer(Err(KvError::BadRequest {
            code: "bad_request".into(),
            message: "client_id must not be empty".into(),
        })));
    }
    let ts = c.ts.or(clock_ms).unwrap_or(0);
    if let Some(now) = clock_ms.filter(|now| ts > now.saturating_add(MAX_TS_LEAD_MS)) {
        return Ok(Check::Answer(Err(KvError::BadRequest {
            code: "bad_timestamp".into(),
            message: format!(
                "ts {ts} is more than {MAX_TS_LEAD_MS} ms ahead of the shard's clock ({now}); \
                 ts is when the request was first sent, in ms since the Unix epoch"
            ),
        })));
    }
    let prev = ov.get_dedup(&dedup_key(slot, &c.client_id))?;
    match &prev {
        Some(p) if p.seq == c.seq => {
            // A retry of the same request gets its reply; another request under the same
            // pair is refused (never answered with this reply).
            if p.request.is_some_and(|d| d != digest) {
                return Ok(Check::Answer(Err(KvError::SequenceReused {
                    client_id: c.client_id.clone(),
                    seq: c.seq,
                })));
            }
            return Ok(Check::Answer(Ok(p.reply.clone())));
        }
        Some(p) if p.seq > c.seq => {
            return Ok(Check::Answer(Err(KvError::StaleSequence {
                client_id: c.client_id.clone(),
                seq: c.seq,
                last: p.seq,
            })));
        }
        Some(_) => {}
        None if clock_ms.is_some() => {
            let horizon = ov.horizon(slot)?;
            if ts <= horizon {
                return Ok(Check::Answer(Err(KvError::SessionExpired {
                    client_id: c.client_id.clone(),
                    seq: c.seq,
                    ts_ms: ts,
                    forgotten_through_ms: horizon,
                })));
            }
        }
        None => {}
    }
    Ok(Check::Apply { prev, ts })
}

/// Records that the write `c` (decided [`Check::Apply`] with `prev` and `ts`) got `reply`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn remember(
    ov: &mut Overlay<'_>,
    slot: Slot,
    c: &ClientSeq,
    prev: Option<DedupRecord>,
    ts: u64,
    reply: &unikv_types::KvReply,
    digest: u64,
    at_ms: u64,
) -> Result<()> {
    let client = c.client_id.as_bytes();
    let ts_max = prev.as_ref().map_or(ts, |p| p.ts_max.max(ts));
    if let Some(p) = &prev {
        if p.at_ms != at_ms {
            ov.delete_age(age_key(p.at_ms, slot, client));
        }
    }
    ov.put_age(age_key(at_ms, slot, client));
    ov.put_dedup(
        dedup_key(slot, &c.client_id),
        DedupRecord {
            seq: c.seq,
            reply: stored_reply(reply),
            request: Some(digest),
            at_ms,
            ts_max,
        },
    )
}

/// Moves the shard clock to the entry's `clock` and, when it enters a new step, forgets the
/// records older than the window.
pub(crate) fn advance_clock(
    ov: &mut Overlay<'_>,
    meta: &mut SmMeta,
    clock: LeaderClock,
) -> Result<()> {
    let before = meta.clock_ms;
    meta.clock_ms = before.max(clock.now_ms);
    if meta.clock_ms / GC_STEP_MS > before / GC_STEP_MS {
        let step_start = meta.clock_ms / GC_STEP_MS * GC_STEP_MS;
        expire(ov, step_start.saturating_sub(clock.dedup_window_ms))?;
    }
    Ok(())
}

/// Forgets every record last written before `cutoff_ms`, raising the horizons of their slots.
/// Returns how many records were forgotten.
pub(crate) fn expire(ov: &mut Overlay<'_>, cutoff_ms: u64) -> Result<usize> {
    let floor = ov.age_floor();
    if cutoff_ms <= floor {
        return Ok(0);
    }
    let mut forgotten = 0;
    for k in ov.age_keys(age_key(floor, 0, &[]), age_key(cutoff_ms, 0, &[]))? {
        ov.delete_age(k.clone());
        let Some((at, slot, client)) = parse_age_key(&k) else {
            continue;
        };
        let key = crate::db::kv_key(slot, client);
        let Some(rec) = ov.get_dedup(&key)? else {
            continue;
        };
        if rec.at_ms != at {
            continue;
        }
        ov.delete_dedup(key);
        if rec.ts_max > ov.horizon(slot)? {
            ov.set_horizon(slot, rec.ts_max);
        }
        forgotten += 1;
    }
    ov.set_age_floor(cutoff_ms);
    Ok(forgotten)
}

/// Data dirs from before expiry hold records with no index entry: index them at age 0 (the
/// same on every replica), so the first expiry forgets them. Runs once per data dir.
pub fn index_legacy_records(db: &Db) -> Result<usize> {
    if db.raw().get_cf(db.cf(CF_SM), KEY_INDEXED)?.is_some() {
        return Ok(0);
    }
    let mut batch = WriteBatch::default();
    let mut n = 0;
    for item in db.raw().iterator_cf(db.cf(CF_DEDUP), IteratorMode::Start) {
        let (k, v) = item?;
        if k.first() == Some(&AGE_PREFIX) {
            break;
        }
        let Some((slot, client)) = split_key(&k) else {
            continue;
        };
        if client.is_empty() {
            continue;
        }
        let rec: DedupRecord = decode("dedup record", &v)?;
        if rec.at_ms == 0 {
            batch.put_cf(db.cf(CF_DEDUP), age_key(0, slot, client), []);
            n += 1;
        }
    }
    batch.put_cf(db.cf(CF_SM), KEY_INDEXED, [1u8]);
    db.write_sync(batch)?;
    if n > 0 {
        tracing::info!(
            records = n,
            "indexed dedup records of an older version for expiry"
        );
    }
    Ok(n)
}

/// Number of dedup records and of expiry index entries stored (for tests and status).
pub fn stored_counts(db: &Db) -> Result<(u64, u64)> {
    let (mut records, mut index) = (0, 0);
    for item in db.raw().iterator_cf(db.cf(CF_DEDUP), IteratorMode::Start) {
        let (k, _) = item?;
        if k.first() == Some(&AGE_PREFIX) {
            index += 1;
        } else if k.len() > 2 {
            records += 1;
        }
    }
    Ok((records, index))
}
