//! Applying the steps of a slot move to the descriptor and the data.
//!
//! Invariant: at most one shard serves a slot at any moment; a gap is allowed, an overlap
//! never. The source freezes the slot (`Out`: neither read nor written there from then on),
//! the target installs the data and serves it (`In`, the point of no return), then the source
//! deletes its copy and keeps a forwarding note (`Done`). The frozen window is therefore one
//! `In` round trip, not the whole hand-off.
//!
//! The source may `Abort` (serve the slot again, at the aborted epoch, so the next attempt
//! uses a new epoch) only while the target cannot commit that `In`: before any `In` was sent,
//! or once the target committed `Refuse` for the epoch (it then refuses that `In` for good,
//! and drops what it staged) — `Refuse` answers `already_received` if the `In` committed
//! first, and the source finishes with `Done` instead. A target that never answers keeps the
//! slot frozen (unavailable, never served twice) until it does or a leader resumes.
//! Every step checks the epoch and is idempotent, so a new leader on either side can resume.

use rocksdb::{Direction, IteratorMode, ReadOptions};
use unikv_types::{Keyspace, KvError, KvReply, Slot};

use crate::command::{CommandResult, MoveCommand};
use crate::db::{slot_bounds, split_key, split_keyspace, Db, CF_DEDUP, CF_KV};
use crate::descriptor::{Outgoing, ShardDescriptor, Staging};
use crate::error::{decode, Result};
use crate::overlay::Overlay;
use crate::records::{DedupRecord, SlotStats};

/// A step (or registry change) that does not apply in the current state.
pub(crate) fn refused(message: String) -> CommandResult {
    Err(KvError::BadRequest {
        code: "move_refused".into(),
        message,
    })
}

pub(crate) fn apply_move(
    ov: &mut Overlay<'_>,
    d: &mut ShardDescriptor,
    m: &MoveCommand,
    clock_ms: u64,
) -> Result<CommandResult> {
    let ok = Ok(KvReply::Written);
    let res = match m {
        MoveCommand::Out {
            slot,
            to,
            epoch,
            now_ms,
        } => {
            let h = Outgoing {
                target: *to,
                epoch: *epoch,
            };
            let now = clock_ms.max(now_ms.unwrap_or(0));
            if let Some(f) = d.fence.filter(|f| f.until_ms > now) {
                return Ok(Err(f.refusal(now)));
            }
            match (d.owns(*slot), d.outgoing.get(slot)) {
                (_, Some(cur)) if *cur == h => ok,
                (_, Some(cur)) => refused(format!(
                    "slot {slot} is already moving to shard {}",
                    cur.target
                )),
                (Some(e), None) if e < *epoch && *to != d.shard => {
                    d.outgoing.insert(*slot, h);
                    d.version += 1;
                    ok
                }
                (Some(e), None) => refused(format!(
                    "slot {slot} is owned at epoch {e}, not below {epoch}"
                )),
                (None, None) => refused(format!("slot {slot} is not owned by shard {}", d.shard)),
            }
        }
        MoveCommand::In {
            slot,
            from,
            epoch,
            kv,
            dedup,
            dedup_horizon_ms,
            collections_kv,
            staged,
            deleted,
        } => {
            if received(d, *slot, *epoch) {
                ok
            } else if let Some(why) = not_receivable(d, *slot, *epoch) {
                refused(why)
            } else if let Some(sg) = staged {
                let want = Staging {
                    source: *from,
                    epoch: *epoch,
                    copy: sg.copy,
                    parts: sg.parts,
                };
                if d.staging.get(slot) != Some(&want) {
                    copy_missing(*slot, d.staging.get(slot), &want)
                } else {
                    // The last writes since the copy read the slot, then its dedup table.
                    let (pairs, deleted) = kept(d, kv, collections_kv, deleted);
                    ov.stage_pairs(*slot, &pairs, &deleted, true)?;
                    ov.install_dedup(*slot, dedup, *dedup_horizon_ms)?;
                    serve_received(d, *slot, *epoch);
                    ok
                }
            } else {
                // A collection deleted here meanwhile stays deleted.
                let collections_kv: Vec<_> = collections_kv
                    .iter()
                    .filter(|(ks, _, _)| !d.dropped_keyspaces.contains(ks))
                    .cloned()
                    .collect();
                ov.install_slot(*slot, kv, &collections_kv, dedup, *dedup_horizon_ms)?;
                serve_received(d, *slot, *epoch);
                ok
            }
        }
        MoveCommand::Stage {
            slot,
            from,
            epoch,
            copy,
            part,
            overwrite,
            kv,
            collections_kv,
            deleted,
        } => {
            let this = Staging {
                source: *from,
                epoch: *epoch,
                copy: *copy,
                parts: *part,
            };
            let same =
                |s: &Staging| (s.source, s.epoch, s.copy) == (this.source, this.epoch, this.copy);
            if received(d, *slot, *epoch) {
                // The final `In` of this hand-off committed already (a resumed source asks).
                Err(KvError::BadRequest {
                    code: ALREADY_RECEIVED.into(),
                    message: format!("slot {slot} was already received at epoch {epoch}"),
                })
            } else if let Some(why) = not_receivable(d, *slot, *epoch) {
                refused(why)
            } else {
                match d.staging.get(slot).copied() {
                    Some(s) if same(&s) && *part < s.parts => ok,
                    Some(s) if same(&s) && *part == s.parts => {
                        let (pairs, deleted) = kept(d, kv, collections_kv, deleted);
                        ov.stage_pairs(*slot, &pairs, &deleted, *overwrite)?;
                        d.staging.insert(
                            *slot,
                            Staging {
                                parts: s.parts + 1,
                                ..s
                            },
                        );
                        d.version += 1;
                        ok
                    }
                    _ if *part == 0 => {
                        // A new copy: whatever an older one (or an aborted hand-off) left goes.
                        ov.delete_slot(*slot)?;
                        let (pairs, deleted) = kept(d, kv, collections_kv, deleted);
                        ov.stage_pairs(*slot, &pairs, &deleted, *overwrite)?;
                        d.staging.insert(*slot, Staging { parts: 1, ..this });
                        d.version += 1;
                        ok
                    }
                    cur => copy_missing(*slot, cur.as_ref(), &this),
                }
            }
        }
        MoveCommand::Unstage { slot, copy } => match d.staging.get(slot).copied() {
            Some(s) if s.copy == *copy => {
                ov.delete_slot(*slot)?;
                d.staging.remove(slot);
                d.version += 1;
                ok
            }
            _ => ok,
        },
        MoveCommand::Done { slot, epoch } => match d.outgoing.get(slot).copied() {
            Some(h) if h.epoch == *epoch => {
                ov.delete_slot(*slot)?;
                d.remove_slot(*slot);
                d.outgoing.remove(slot);
                d.forwards.insert(*slot, h.into());
                d.version += 1;
                ok
            }
            _ if d.forwards.get(slot).is_some_and(|f| f.epoch == *epoch) => ok,
            _ => refused(format!("slot {slot} has no hand-off at epoch {epoch}")),
        },
        MoveCommand::Abort { slot, epoch } => match d.outgoing.get(slot).copied() {
            Some(h) if h.epoch == *epoch => {
                // Keep the slot at the aborted epoch: every hand-off attempt then has its own
                // epoch, so a target holding the aborted copy can always tell it was aborted.
                d.outgoing.remove(slot);
                d.add_slot(*slot, *epoch);
                d.version += 1;
                ok
            }
            _ if d.forwards.get(slot).is_some_and(|f| f.epoch == *epoch) => refused(format!(
                "slot {slot} was already handed off at epoch {epoch}"
            )),
            _ => ok,
        },
        MoveCommand::Refuse { slot, from, epoch } => {
            if received(d, *slot, *epoch) {
                Err(KvError::BadRequest {
                    code: ALREADY_RECEIVED.into(),
                    message: format!("slot {slot} was already received at epoch {epoch}"),
                })
            } else {
                // What a copy of this hand-off (or an older one) staged goes with it.
                if d.staging.get(slot).is_some_and(|s| s.epoch <= *epoch) {
                    ov.delete_slot(*slot)?;
                    d.staging.remove(slot);
                }
                if d.refused.get(slot).is_none_or(|e| e < epoch) {
                    tracing::info!(shard = %d.shard, slot, from = %from, epoch = %epoch, "hand-off refused for good: its source gives it up");
                    d.refused.insert(*slot, *epoch);
                }
                d.version += 1;
                ok
            }
        }
    };
    if let (Err(e), MoveCommand::Out { .. } | MoveCommand::In { .. } | MoveCommand::Stage { .. }) =
        (&res, m)
    {
        tracing::warn!(shard = %d.shard, command = %m, error = %e, "slot move step refused");
    }
    Ok(res)
}

/// The code of a `Stage` refused because the hand-off's final `In` already committed here.
pub const ALREADY_RECEIVED: &str = "already_received";
/// The code of a `Stage` or `In` refused because the copy it continues is not staged here.
pub const COPY_MISSING: &str = "copy_missing";

/// Whether the `In` of `slot` at `epoch` committed here: the slot is served here at that
/// epoch or a newer one, or it passed through here since (epochs of a slot only grow, and
/// one at or above `epoch` can only follow that hand-off).
fn received(d: &ShardDescriptor, slot: Slot, epoch: unikv_types::Epoch) -> bool {
    d.owns(slot).is_some_and(|e| e >= epoch)
        || d.forwards.get(&slot).is_some_and(|f| f.epoch > epoch)
}

/// `In` committed: the slot is served here from now on.
fn serve_received(d: &mut ShardDescriptor, slot: Slot, epoch: unikv_types::Epoch) {
    d.staging.remove(&slot);
    d.forwards.remove(&slot);
    d.refused.remove(&slot);
    d.add_slot(slot, epoch);
    d.version += 1;
}

/// Why `slot` cannot be received at `epoch` here (it is owned, moved on, or arriving at a
/// newer epoch), if it cannot.
fn not_receivable(d: &ShardDescriptor, slot: Slot, epoch: unikv_types::Epoch) -> Option<String> {
    if let Some(e) = d.owns(slot) {
        Some(format!("slot {slot} is already owned here at epoch {e}"))
    } else if d.forwards.get(&slot).is_some_and(|f| f.epoch >= epoch) {
        Some(format!(
            "slot {slot} already moved on from here at a newer epoch"
        ))
    } else if d.refused.get(&slot).is_some_and(|e| *e >= epoch) {
        Some(format!(
            "slot {slot}: its hand-off at epoch {epoch} was given up by its source"
        ))
    } else if d.staging.get(&slot).is_some_and(|s| s.epoch > epoch) {
        Some(format!("slot {slot} is being received at a newer epoch"))
    } else {
        None
    }
}

fn copy_missing(slot: Slot, cur: Option<&Staging>, want: &Staging) -> CommandResult {
    Err(KvError::BadRequest {
        code: COPY_MISSING.into(),
        message: match cur {
            Some(c) => format!(
                "slot {slot}: copy {:x} part {} does not follow what is staged here (copy {:x} from shard {} at epoch {}, {} parts)",
                want.copy, want.parts, c.copy, c.source, c.epoch, c.parts
            ),
            None => format!(
                "slot {slot}: copy {:x} part {} does not follow what is staged here (nothing)",
                want.copy, want.parts
            ),
        },
    })
}

/// A piece's pairs of every collection (keyspace, key, value) and its deleted keys.
type Kept<'p> = (Vec<(Keyspace, &'p str, &'p str)>, Vec<(Keyspace, &'p str)>);

/// Pairs (every collection, with its keyspace) and deleted keys of a piece, without those of
/// collections deleted here meanwhile.
fn kept<'p>(
    d: &ShardDescriptor,
    kv: &'p [(String, String)],
    collections_kv: &'p [(Keyspace, String, String)],
    deleted: &'p [(Keyspace, String)],
) -> Kept<'p> {
    let live = |ks: &Keyspace| !d.dropped_keyspaces.contains(ks);
    let pairs = kv
        .iter()
        .map(|(k, v)| (Keyspace::DEFAULT, k.as_str(), v.as_str()))
        .chain(
            collections_kv
                .iter()
                .map(|(ks, k, v)| (*ks, k.as_str(), v.as_str())),
        )
        .filter(|(ks, _, _)| live(ks))
        .collect();
    let deleted = deleted
        .iter()
        .filter(|(ks, _)| live(ks))
        .map(|(ks, k)| (*ks, k.as_str()))
        .collect();
    (pairs, deleted)
}

/// Everything stored for `slot`, for handing it off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotExport {
    /// The pairs of `default`.
    pub kv: Vec<(String, String)>,
    /// The pairs of every other collection, with their keyspace.
    pub collections_kv: Vec<(Keyspace, String, String)>,
    /// Client id → record.
    pub dedup: Vec<(String, DedupRecord)>,
    /// The slot's dedup horizon (see `dedup`).
    pub dedup_horizon_ms: u64,
}

/// Everything stored for `slot`: its pairs, its dedup table and horizon.
pub fn export_slot(db: &Db, slot: Slot) -> Result<SlotExport> {
    let (lo, hi) = slot_bounds(slot);
    let scan = |cf: &str| -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(hi.clone());
        let mut out = Vec::new();
        for item in
            db.raw()
                .iterator_cf_opt(db.cf(cf), ro, IteratorMode::From(&lo, Direction::Forward))
        {
            let (k, v) = item?;
            if let Some((_, rest)) = split_key(&k) {
                out.push((rest.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = SlotExport::default();
    for (k, v) in scan(CF_KV)? {
        match split_keyspace(&k) {
            Some((ks, key)) if ks.is_default() => out.kv.push((text(key), text(&v))),
            Some((ks, key)) => out.collections_kv.push((ks, text(key), text(&v))),
            None => {
                return Err(crate::Error::Decode {
                    what: "kv key",
                    reason: format!("slot {slot}: a keyspace mark without a keyspace"),
                })
            }
        }
    }
    (out.dedup, out.dedup_horizon_ms) = dedup_of_slot(db, slot)?;
    Ok(out)
}

/// `slot`'s dedup table (client id → record) and horizon.
pub fn dedup_of_slot(db: &Db, slot: Slot) -> Result<(Vec<(String, DedupRecord)>, u64)> {
    let (lo, hi) = slot_bounds(slot);
    let mut ro = ReadOptions::default();
    ro.set_iterate_upper_bound(hi);
    let (mut dedup, mut horizon) = (Vec::new(), 0);
    for item in db.raw().iterator_cf_opt(
        db.cf(CF_DEDUP),
        ro,
        IteratorMode::From(&lo, Direction::Forward),
    ) {
        let (k, v) = item?;
        let Some((_, client)) = split_key(&k) else {
            continue;
        };
        if client.is_empty() {
            horizon = <[u8; 8]>::try_from(&v[..]).map_or(0, u64::from_be_bytes);
        } else {
            dedup.push((
                String::from_utf8_lossy(client).into_owned(),
                decode("dedup record", &v)?,
            ));
        }
    }
    Ok((dedup, horizon))
}

/// Key count and bytes of one slot (zero if it holds nothing).
pub fn slot_stat(db: &Db, slot: Slot) -> Result<SlotStats> {
    db.stats_view().with(
        || crate::apply_cache::stored_stats(db),
        |all| all.get(usize::from(slot)).copied().unwrap_or_default(),
    )
}

/// Key count and bytes of every slot that holds data.
pub fn slot_stats(db: &Db) -> Result<Vec<(Slot, SlotStats)>> {
    db.stats_view().with(
        || crate::apply_cache::stored_stats(db),
        |all| {
            all.iter()
                .enumerate()
                .filter(|(_, s)| s.keys > 0 || s.bytes > 0)
                .map(|(slot, s)| (slot as Slot, *s))
                .collect()
        },
    )
}
