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
            } else {
                if d.state != *state || !d.state_set {
                    d.state = *state;
                    d.state_set = true;
                    d.version += 1;
                }
                ok
            }
        }
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
            } else if !d.outgoing.is_empty() || !d.incoming.is_empty() {
                let moving: Vec<_> = d.outgoing.keys().chain(d.incoming.keys()).take(5).collect();
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
                        ov.delete_slot(unit);
                    }
                    crate::chunk_moves::drop_keyspace_chunks(ov, d, *keyspace);
                    d.version += 1;
                }
                ok
            }
        }
    })
}
