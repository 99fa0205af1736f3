//! Applying changes of the shard's registry entry (state, tags, dropped collections) to its
//! descriptor. They are
//! not steps of a slot move: the balancers of every shard read the state from gossip, and the
//! tags only describe the shard to operators.

use unikv_types::{Keyspace, KvError, KvReply, ShardState};

use crate::command::{CommandResult, RegistryCommand};
use crate::descriptor::ShardDescriptor;
use crate::error::Result;
use crate::moves::refused;
use crate::overlay::Overlay;

pub(crate) fn apply_registry(
    ov: &mut Overlay<'_>,
    d: &mut ShardDescriptor,
    r: &RegistryCommand,
) -> Result<CommandResult> {
    let ok = Ok(KvReply::Written);
    Ok(match r {
        RegistryCommand::SetState { state } => {
            if *state == ShardState::Unreachable {
                refused("unreachable is derived by observers, not a registry state".into())
            } else if d.state == ShardState::Removed && *state != ShardState::Removed {
                Err(removed(d))
            } else if *state == ShardState::Removed {
                remove(d)
            } else {
                if d.state != *state || !d.state_set {
                    d.state = *state;
                    d.state_set = true;
                    d.version += 1;
                }
                if *state == ShardState::Active && d.forget_when_drained {
                    d.forget_when_drained = false;
                    d.version += 1;
                }
                ok
            }
        }
        RegistryCommand::Retire => match d.state {
            ShardState::Removed => ok,
            // Drained already: the balancer removes it once no shard key is placed here
            // either (the catalog is not this shard's to read while applying).
            ShardState::Inactive => {
                if !d.forget_when_drained {
                    d.forget_when_drained = true;
                    d.version += 1;
                }
                ok
            }
            _ => {
                if d.state != ShardState::Draining || !d.forget_when_drained {
                    d.state = ShardState::Draining;
                    d.state_set = true;
                    d.forget_when_drained = true;
                    d.version += 1;
                }
                ok
            }
        },
        RegistryCommand::SetTags { tags } => {
            for (k, v) in tags {
                if v.is_empty() {
                    d.tags.remove(k);
                } else {
                    d.tags.insert(k.clone(), v.clone());
                }
            }
            d.version += 1;
            ok
        }
        RegistryCommand::Fence {
            token,
            until_ms,
            now_ms,
        } => {
            if d.fence.is_some_and(|f| f.token == *token) {
                ok
            } else if let Some(f) = d.fence.filter(|f| f.until_ms > *now_ms) {
                Err(KvError::Refused {
                    status: 409,
                    code: "promote_in_progress".into(),
                    message: format!(
                        "another promote holds shard {} (fence {}): one at a time",
                        d.shard, f.token
                    ),
                })
            } else if !d.outgoing.is_empty() {
                let moving: Vec<_> = d.outgoing.keys().take(5).collect();
                Err(KvError::Refused {
                    status: 409,
                    code: "move_in_progress".into(),
                    message: format!(
                        "shard {} is moving slots {moving:?}: try again once they are done",
                        d.shard
                    ),
                })
            } else if d.state != ShardState::Active {
                Err(KvError::Refused {
                    status: 409,
                    code: "shard_not_active".into(),
                    message: format!("shard {} is {}", d.shard, d.state),
                })
            } else {
                d.fence = Some(crate::descriptor::Fence {
                    token: *token,
                    until_ms: *until_ms,
                });
                d.version += 1;
                ok
            }
        }
        RegistryCommand::Unfence { token } => {
            if d.fence.is_some_and(|f| f.token == *token) {
                d.fence = None;
                d.version += 1;
            }
            ok
        }
        RegistryCommand::DropKeyspace { keyspace } => {
            if *keyspace < Keyspace::FIRST_USER {
                refused(format!("keyspace {keyspace} is not a user collection's"))
            } else {
                if d.dropped_keyspaces.insert(*keyspace) {
                    ov.drop_keyspace(*keyspace)?;
                    if let Some(unit) = d.units.remove(keyspace) {
                        ov.delete_slot(unit)?;
                    }
                    d.unit_moves.forget(*keyspace);
                    crate::chunk_layout::drop_keyspace_chunks(ov, d, *keyspace)?;
                    d.version += 1;
                }
                ok
            }
        }
    })
}

fn removed(d: &ShardDescriptor) -> KvError {
    KvError::Refused {
        status: 409,
        code: "shard_removed".into(),
        message: format!(
            "shard {} was removed from the cluster for good; to add a shard with this id, start its nodes with new data dirs",
            d.shard
        ),
    }
}

/// Removes the shard for good: only a drained (inactive) shard that holds nothing.
fn remove(d: &mut ShardDescriptor) -> CommandResult {
    if d.state == ShardState::Removed {
        return Ok(KvReply::Written);
    }
    if d.state != ShardState::Inactive {
        return Err(KvError::Refused {
            status: 409,
            code: "shard_active".into(),
            message: format!(
                "shard {} is {}: drain it first (/removeshard?shardID={}, with forget=true to remove it once drained)",
                d.shard, d.state, d.shard
            ),
        });
    }
    if let Some(what) = d.holdings() {
        return Err(KvError::Refused {
            status: 409,
            code: "shard_not_empty".into(),
            message: format!("shard {} still holds {what}", d.shard),
        });
    }
    d.state = ShardState::Removed;
    d.state_set = true;
    d.forget_when_drained = false;
    d.version += 1;
    tracing::info!(shard = %d.shard, "shard removed from the cluster");
    Ok(KvReply::Written)
}
