//! Applying chunk commands (the first chunk, splits and merges are `chunk_layout`'s), and
//! the steps of a chunk move — the slot move's protocol (`moves`) over a chunk id, with the
//! same invariant: at most one shard serves a chunk's keys at any moment (a gap is allowed,
//! an overlap never). The source copies the chunk to the target while it serves (`Stage`
//! pieces, stored there and not served), freezes it (`Out`: neither read nor written there
//! from then on), sends what was written since; the target's `In` completes the copy and
//! serves the chunk (the point of no return); the source then deletes its copy and keeps a
//! forwarding note (`Done`). The source may `Abort` only while the target cannot commit that
//! `In`: before any `In` was sent, or once the target committed `Refuse` for the epoch.
//!
//! Chunks' keys share one key range (`db::range_key`), so a shard may hold stale keys in
//! bounds it does not serve (an abandoned copy's). Every copy or `In` therefore clears the
//! bounds it is about to fill, and a copy is never staged over bounds this shard still holds
//! (serving or frozen: its own `Done` would delete them again).

use unikv_types::{ChunkId, Epoch, Keyspace, KvError, KvReply};

use crate::chunk_layout::{create_first, delete_data, merge, no_units, split};
use crate::chunk_map::{ChunkForward, ChunkState, OwnedChunk};
use crate::command::{ChunkCommand, CommandResult};
use crate::db::chunk_bounds;
use crate::descriptor::ShardDescriptor;
use crate::error::Result;
use crate::moves::{refused, ALREADY_RECEIVED, COPY_MISSING};
use crate::overlay::Overlay;

pub(crate) fn apply_chunk(
    ov: &mut Overlay<'_>,
    d: &mut ShardDescriptor,
    c: &ChunkCommand,
) -> Result<CommandResult> {
    let ok = Ok(KvReply::Written);
    let res = match c {
        ChunkCommand::Create { keyspace, now_ms } => {
            if d.dropped_keyspaces.contains(keyspace) {
                refused(format!("keyspace {keyspace} was deleted"))
            } else {
                create_first(d, *keyspace, *now_ms)
            }
        }
        ChunkCommand::Split { id, at, now_ms } => split(ov, d, *id, at, *now_ms)?,
        ChunkCommand::Merge {
            left,
            right,
            now_ms,
        } => merge(ov, d, *left, *right, *now_ms)?,
        ChunkCommand::Out {
            id,
            to,
            epoch,
            now_ms,
        } => match d.chunks.owned.get_mut(id) {
            Some(ch)
                if ch.state
                    == (ChunkState::Outgoing {
                        target: *to,
                        epoch: *epoch,
                    }) =>
            {
                ok
            }
            Some(ch) if ch.state != ChunkState::Serving => {
                refused(format!("chunk {id} is already moving"))
            }
            Some(ch) if ch.epoch < *epoch && *to != d.shard => {
                ch.state = ChunkState::Outgoing {
                    target: *to,
                    epoch: *epoch,
                };
                ch.updated_ms = *now_ms;
                d.version += 1;
                ok
            }
            Some(ch) => refused(format!(
                "chunk {id} is held at epoch {}, not below {epoch}",
                ch.epoch
            )),
            None => refused(format!("chunk {id} is not held by shard {}", d.shard)),
        },
        ChunkCommand::Stage {
            id,
            keyspace,
            lo,
            hi,
            from,
            epoch,
            copy,
            part,
            overwrite,
            kv,
            deleted,
        } => {
            let this = ChunkState::Staging {
                source: *from,
                epoch: *epoch,
                copy: *copy,
                parts: *part,
            };
            let bounds = (*keyspace, lo.as_str(), hi.as_deref());
            if received(d, *id, *epoch) {
                already_received(*id, *epoch)
            } else if let Some(why) = not_receivable(d, *id, bounds, *epoch) {
                refused(why)
            } else {
                match staging_of(d, *id) {
                    Some((s, _)) if same_copy(&s, &this) && s.3 > *part => ok,
                    Some((s, unit)) if same_copy(&s, &this) && s.3 == *part => {
                        ov.stage_range_pairs(unit, *keyspace, kv, deleted, *overwrite)?;
                        let ch = d.chunks.owned.get_mut(id).expect("staged");
                        ch.state = ChunkState::Staging {
                            source: *from,
                            epoch: *epoch,
                            copy: *copy,
                            parts: part + 1,
                        };
                        d.version += 1;
                        ok
                    }
                    _ if *part == 0 => {
                        // A new copy: whatever an older one left in these bounds goes.
                        clear_for(ov, d, bounds)?;
                        let staging = ChunkState::Staging {
                            source: *from,
                            epoch: *epoch,
                            copy: *copy,
                            parts: 1,
                        };
                        match place(d, *id, bounds, *epoch, (0, 0), staging) {
                            None => Err(no_units(d)),
                            Some(unit) => {
                                ov.stage_range_pairs(unit, *keyspace, kv, deleted, *overwrite)?;
                                ok
                            }
                        }
                    }
                    cur => copy_missing(*id, cur.map(|c| c.0), &this),
                }
            }
        }
        ChunkCommand::In {
            id,
            keyspace,
            lo,
            hi,
            from,
            epoch,
            kv,
            dedup,
            dedup_horizon_ms,
            version,
            now_ms,
            staged,
            deleted,
        } => {
            let bounds = (*keyspace, lo.as_str(), hi.as_deref());
            if received(d, *id, *epoch) {
                ok
            } else if let Some(why) = not_receivable(d, *id, bounds, *epoch) {
                refused(why)
            } else if let Some(sg) = staged {
                let want = ChunkState::Staging {
                    source: *from,
                    epoch: *epoch,
                    copy: sg.copy,
                    parts: sg.parts,
                };
                match d.chunks.owned.get(id) {
                    Some(c) if c.state == want && c.lo == *lo && c.hi == *hi => {
                        // The last writes since the copy read the chunk, then its dedup table.
                        let unit = c.unit;
                        ov.stage_range_pairs(unit, *keyspace, kv, deleted, true)?;
                        ov.install_dedup(unit, dedup, *dedup_horizon_ms)?;
                        let ch = d.chunks.owned.get_mut(id).expect("staged");
                        ch.version = version + 1;
                        ch.updated_ms = *now_ms;
                        serve_received(d, *id, *epoch);
                        ok
                    }
                    _ => copy_missing(*id, staging_of(d, *id).map(|c| c.0), &want),
                }
            } else {
                clear_for(ov, d, bounds)?;
                let placed = place(
                    d,
                    *id,
                    bounds,
                    *epoch,
                    (version + 1, *now_ms),
                    ChunkState::Serving,
                );
                match placed {
                    None => Err(no_units(d)),
                    Some(unit) => {
                        ov.install_chunk(unit, *keyspace, kv, dedup, *dedup_horizon_ms)?;
                        serve_received(d, *id, *epoch);
                        ok
                    }
                }
            }
        }
        ChunkCommand::Unstage { id, copy } => match staging_of(d, *id) {
            Some((s, _)) if s.2 == *copy => {
                drop_staged(ov, d, *id)?;
                ok
            }
            _ => ok,
        },
        ChunkCommand::Done { id, epoch } => match d.chunks.owned.get(id) {
            Some(ch) if matches!(ch.state, ChunkState::Outgoing { epoch: e, .. } if e == *epoch) => {
                let ChunkState::Outgoing { target, .. } = ch.state else {
                    unreachable!()
                };
                let ch = d.chunks.owned.remove(id).expect("held");
                delete_data(ov, &ch)?;
                d.chunks.remember_forward(
                    *id,
                    ChunkForward {
                        target,
                        epoch: *epoch,
                        keyspace: ch.keyspace,
                        lo: ch.lo,
                        hi: ch.hi,
                    },
                );
                d.version += 1;
                ok
            }
            _ if d.chunks.forwards.get(id).is_some_and(|f| f.epoch == *epoch) => ok,
            _ => refused(format!("chunk {id} has no hand-off at epoch {epoch}")),
        },
        ChunkCommand::Abort { id, epoch } => match d.chunks.owned.get_mut(id) {
            Some(ch) if matches!(ch.state, ChunkState::Outgoing { epoch: e, .. } if e == *epoch) => {
                // Held at the aborted epoch: every attempt has its own.
                ch.state = ChunkState::Serving;
                ch.epoch = *epoch;
                d.version += 1;
                ok
            }
            _ if d.chunks.forwards.get(id).is_some_and(|f| f.epoch == *epoch) => refused(format!(
                "chunk {id} was already handed off at epoch {epoch}"
            )),
            _ => ok,
        },
        ChunkCommand::Refuse { id, from, epoch } => {
            if received(d, *id, *epoch) {
                already_received(*id, *epoch)
            } else {
                // What a copy of this hand-off (or an older one) staged goes with it.
                if staging_of(d, *id).is_some_and(|(s, _)| s.1 <= *epoch) {
                    drop_staged(ov, d, *id)?;
                }
                if d.chunks.refused.get(id).is_none_or(|e| e < epoch) {
                    tracing::info!(shard = %d.shard, chunk = %id, from = %from, epoch = %epoch, "chunk hand-off refused for good: its source gives it up");
                    d.chunks.refused.insert(*id, *epoch);
                }
                d.version += 1;
                ok
            }
        }
    };
    if let Err(e) = &res {
        tracing::warn!(shard = %d.shard, command = %c, error = %e, "chunk step refused");
    }
    Ok(res)
}

/// A staging chunk's (source, epoch, copy, parts) and unit.
type StagingOf = ((unikv_types::ShardId, Epoch, u64, u32), unikv_types::Slot);

fn staging_of(d: &ShardDescriptor, id: ChunkId) -> Option<StagingOf> {
    match d.chunks.owned.get(&id) {
        Some(OwnedChunk {
            state:
                ChunkState::Staging {
                    source,
                    epoch,
                    copy,
                    parts,
                },
            unit,
            ..
        }) => Some(((*source, *epoch, *copy, *parts), *unit)),
        _ => None,
    }
}

/// Whether staged copy `s` is the copy `this` continues (same source, epoch and copy id).
fn same_copy(s: &(unikv_types::ShardId, Epoch, u64, u32), this: &ChunkState) -> bool {
    matches!(this, ChunkState::Staging { source, epoch, copy, .. } if (*source, *epoch, *copy) == (s.0, s.1, s.2))
}

/// Whether the `In` of chunk `id` at `epoch` committed here: held here (not staged) at that
/// epoch or a newer one, or passed through here since.
fn received(d: &ShardDescriptor, id: ChunkId, epoch: Epoch) -> bool {
    d.chunks
        .owned
        .get(&id)
        .is_some_and(|c| !c.is_staging() && c.epoch >= epoch)
        || d.chunks.forwards.get(&id).is_some_and(|f| f.epoch > epoch)
}

/// Why chunk `id` with bounds `(keyspace, lo, hi)` cannot be received at `epoch` here, if
/// it cannot.
fn not_receivable(
    d: &ShardDescriptor,
    id: ChunkId,
    (ks, lo, hi): (Keyspace, &str, Option<&str>),
    epoch: Epoch,
) -> Option<String> {
    if d.dropped_keyspaces.contains(&ks) {
        return Some(format!("keyspace {ks} was deleted here"));
    }
    if let Some(c) = d.chunks.owned.get(&id) {
        if !c.is_staging() {
            return Some(format!(
                "chunk {id} is already held here at epoch {}",
                c.epoch
            ));
        }
        if c.epoch > epoch {
            return Some(format!("chunk {id} is being received at a newer epoch"));
        }
    }
    if d.chunks.forwards.get(&id).is_some_and(|f| f.epoch >= epoch) {
        return Some(format!("chunk {id} already moved on from here"));
    }
    if d.chunks.refused.get(&id).is_some_and(|e| *e >= epoch) {
        return Some(format!(
            "chunk {id}: its hand-off at epoch {epoch} was given up by its source"
        ));
    }
    d.chunks
        .owned
        .iter()
        .find(|(other, c)| **other != id && !c.is_staging() && c.overlaps(ks, lo, hi))
        .map(|(other, _)| format!("chunk {other}, overlapping chunk {id}, is still held here"))
}

/// Records chunk `id` with bounds `(keyspace, lo, hi)` here under a new unit, with `epoch`,
/// `(version, updated_ms)` and `state`; the unit, or `None` if this shard has none left.
fn place(
    d: &mut ShardDescriptor,
    id: ChunkId,
    (keyspace, lo, hi): (Keyspace, &str, Option<&str>),
    epoch: Epoch,
    (version, updated_ms): (u64, u64),
    state: ChunkState,
) -> Option<unikv_types::Slot> {
    let unit = d.new_unit()?;
    let chunk = OwnedChunk {
        keyspace,
        lo: lo.to_string(),
        hi: hi.map(str::to_string),
        epoch,
        unit,
        version,
        updated_ms,
        state,
    };
    d.chunks.owned.insert(id, chunk);
    d.version += 1;
    Some(unit)
}

/// `In` committed: chunk `id` serves here from now on.
fn serve_received(d: &mut ShardDescriptor, id: ChunkId, epoch: Epoch) {
    if let Some(ch) = d.chunks.owned.get_mut(&id) {
        ch.state = ChunkState::Serving;
        ch.epoch = epoch;
    }
    d.chunks.forwards.remove(&id);
    d.chunks.refused.remove(&id);
    d.version += 1;
}

/// Clears bounds `(keyspace, lo, hi)` before a copy or a whole chunk fills them: copies
/// staged over them go (whole: none overlaps a held chunk), and any key left in them (from an
/// abandoned copy: this shard does not hold them) is deleted.
fn clear_for(
    ov: &mut Overlay<'_>,
    d: &mut ShardDescriptor,
    (ks, lo, hi): (Keyspace, &str, Option<&str>),
) -> Result<()> {
    let stale: Vec<ChunkId> = d
        .chunks
        .owned
        .iter()
        .filter(|(_, c)| c.is_staging() && c.overlaps(ks, lo, hi))
        .map(|(id, _)| *id)
        .collect();
    for id in stale {
        drop_staged(ov, d, id)?;
    }
    let (lo_k, hi_k) = chunk_bounds(ks, lo, hi);
    ov.delete_kv_range(&lo_k, &hi_k);
    Ok(())
}

/// Deletes a copy staged here (its keys and unit).
fn drop_staged(ov: &mut Overlay<'_>, d: &mut ShardDescriptor, id: ChunkId) -> Result<()> {
    if let Some(ch) = d.chunks.owned.remove(&id) {
        delete_data(ov, &ch)?;
        d.version += 1;
    }
    Ok(())
}

fn already_received(id: ChunkId, epoch: Epoch) -> CommandResult {
    Err(KvError::BadRequest {
        code: ALREADY_RECEIVED.into(),
        message: format!("chunk {id} was already received at epoch {epoch}"),
    })
}

fn copy_missing(
    id: ChunkId,
    cur: Option<(unikv_types::ShardId, Epoch, u64, u32)>,
    want: &ChunkState,
) -> CommandResult {
    let want = match want {
        ChunkState::Staging { copy, parts, .. } => format!("copy {copy:x} part {parts}"),
        other => format!("{other:?}"),
    };
    Err(KvError::BadRequest {
        code: COPY_MISSING.into(),
        message: match cur {
            Some((source, epoch, copy, parts)) => format!(
                "chunk {id}: {want} does not follow what is staged here (copy {copy:x} from shard {source} at epoch {epoch}, {parts} parts)"
            ),
            None => format!("chunk {id}: {want} does not follow what is staged here (nothing)"),
        },
    })
}
