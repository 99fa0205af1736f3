//! Moving a shard key's data off one shard (its *unit* there) to another: the slot move's
//! protocol (`moves`) over a keyspace, with the same invariant — at most one shard serves a
//! unit at any moment (a gap is allowed, an overlap never). The source freezes writes
//! (`Out`), the target stores the data without serving it (`In`), the source deletes its copy
//! and keeps a forwarding note (`Done`) — from then on a write of that shard key there is
//! refused, never given a fresh empty unit — and only then does the target serve
//! (`Activate`). `Abort` is possible until `Done`; the target then `Drop`s its copy. Which
//! shards a shard key's buckets go to is the catalog's (changed by the mover once `Done`
//! committed); the shards only ever say what they hold.

use unikv_types::{KvError, KvReply};

use crate::command::{CommandResult, UnitCommand};
use crate::descriptor::{Forward, Incoming, Outgoing, ShardDescriptor};
use crate::error::Result;
use crate::moves::refused;
use crate::overlay::Overlay;

pub(crate) fn apply_unit(
    ov: &mut Overlay<'_>,
    d: &mut ShardDescriptor,
    c: &UnitCommand,
) -> Result<CommandResult> {
    let ok = Ok(KvReply::Written);
    let res = match c {
        UnitCommand::Out {
            keyspace,
            to,
            epoch,
        } => {
            let ks = *keyspace;
            let want = Outgoing {
                target: *to,
                epoch: *epoch,
            };
            if d.unit_moves.outgoing.get(&ks) == Some(&want) {
                ok
            } else if d.unit_moves.outgoing.contains_key(&ks)
                || d.unit_moves.incoming.contains_key(&ks)
            {
                refused(format!("shard key {ks} is already moving"))
            } else if *to == d.shard || d.unit_moves.epoch(ks) >= *epoch {
                refused(format!(
                    "shard key {ks} is held at epoch {}, not below {epoch}",
                    d.unit_moves.epoch(ks)
                ))
            } else if !d.units.contains_key(&ks) && d.unit_moves.forwards.contains_key(&ks) {
                refused(format!("shard key {ks} already moved away from here"))
            } else if d.dropped_keyspaces.contains(&ks) {
                refused(format!("keyspace {ks} was deleted here"))
            } else if d.unit_for(ks).is_none() {
                // A shard key nothing was written to here yet moves as an empty unit.
                Err(KvError::Unavailable {
                    shard: d.shard,
                    reason: "this shard has handed out every unit number it has".into(),
                })
            } else {
                d.unit_moves.outgoing.insert(ks, want);
                d.version += 1;
                ok
            }
        }
        UnitCommand::In {
            keyspace,
            from,
            epoch,
            kv,
            dedup,
            dedup_horizon_ms,
        } => {
            let ks = *keyspace;
            let arriving = Incoming {
                source: *from,
                epoch: *epoch,
            };
            let same = d.unit_moves.arrived.get(&ks) == Some(&arriving);
            if d.unit_moves.incoming.get(&ks) == Some(&arriving)
                || (same && d.units.contains_key(&ks))
            {
                ok
            } else if d.units.contains_key(&ks) {
                // A part of this shard key is here already (from another source, or this
                // shard's own): a shard holds one part of a key at most.
                refused(format!(
                    "shard key {ks} already has a part on shard {}",
                    d.shard
                ))
            } else if same {
                refused(format!(
                    "shard key {ks}: the hand-off from {from} at {epoch} was received here already and has left or was dropped"
                ))
            } else if d.dropped_keyspaces.contains(&ks) {
                refused(format!("keyspace {ks} was deleted here"))
            } else {
                match d.new_unit() {
                    None => Err(KvError::Unavailable {
                        shard: d.shard,
                        reason: "this shard has handed out every unit number it has".into(),
                    }),
                    Some(unit) => {
                        let pairs: Vec<_> =
                            kv.iter().map(|(k, v)| (ks, k.clone(), v.clone())).collect();
                        ov.install_slot(unit, &[], &pairs, dedup, *dedup_horizon_ms)?;
                        d.units.insert(ks, unit);
                        d.unit_moves.incoming.insert(ks, arriving);
                        d.unit_moves.arrived.insert(ks, arriving);
                        d.unit_moves.epochs.insert(ks, *epoch);
                        d.version += 1;
                        ok
                    }
                }
            }
        }
        UnitCommand::Done { keyspace, epoch } => {
            let ks = *keyspace;
            match d.unit_moves.outgoing.get(&ks).copied() {
                Some(h) if h.epoch == *epoch => {
                    delete_unit(ov, d, ks)?;
                    d.unit_moves.outgoing.remove(&ks);
                    d.unit_moves.forwards.insert(ks, Forward::from(h));
                    ok
                }
                _ if d
                    .unit_moves
                    .forwards
                    .get(&ks)
                    .is_some_and(|f| f.epoch == *epoch) =>
                {
                    ok
                }
                _ => refused(format!("shard key {ks} has no hand-off at epoch {epoch}")),
            }
        }
        UnitCommand::Abort { keyspace, epoch } => {
            let ks = *keyspace;
            match d.unit_moves.outgoing.get(&ks).copied() {
                Some(h) if h.epoch == *epoch => {
                    // Held at the aborted epoch: every attempt has its own.
                    d.unit_moves.outgoing.remove(&ks);
                    d.unit_moves.epochs.insert(ks, *epoch);
                    d.version += 1;
                    ok
                }
                _ if d
                    .unit_moves
                    .forwards
                    .get(&ks)
                    .is_some_and(|f| f.epoch == *epoch) =>
                {
                    refused(format!(
                        "shard key {ks} was already handed off at epoch {epoch}"
                    ))
                }
                _ => ok,
            }
        }
        UnitCommand::Activate { keyspace, epoch } => {
            let ks = *keyspace;
            match d.unit_moves.incoming.get(&ks).copied() {
                Some(h) if h.epoch == *epoch => {
                    // Serving it now: a note that it once left is void (kept until here, so
                    // a dropped arrival leaves the note that refuses a fresh unit).
                    d.unit_moves.incoming.remove(&ks);
                    d.unit_moves.forwards.remove(&ks);
                    d.version += 1;
                    ok
                }
                _ if d.units.contains_key(&ks) && d.unit_moves.epoch(ks) == *epoch => ok,
                _ => refused(format!("shard key {ks} was not received at epoch {epoch}")),
            }
        }
        UnitCommand::Drop { keyspace, epoch } => {
            let ks = *keyspace;
            match d.unit_moves.incoming.get(&ks).copied() {
                Some(h) if h.epoch == *epoch => {
                    delete_unit(ov, d, ks)?;
                    d.unit_moves.incoming.remove(&ks);
                    ok
                }
                _ => ok,
            }
        }
    };
    if let Err(e) = &res {
        tracing::warn!(shard = %d.shard, command = ?c, error = %e, "shard key move step refused");
    }
    Ok(res)
}

/// Deletes the unit of `ks` held here (data, dedup table, statistics) and its epoch; the
/// caller records why (a hand-off done, an arrival dropped).
fn delete_unit(
    ov: &mut Overlay<'_>,
    d: &mut ShardDescriptor,
    ks: unikv_types::Keyspace,
) -> Result<()> {
    if let Some(unit) = d.units.remove(&ks) {
        ov.delete_slot(unit)?;
    }
    d.unit_moves.epochs.remove(&ks);
    d.version += 1;
    Ok(())
}
