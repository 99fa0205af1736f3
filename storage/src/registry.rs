//! Applying changes of the shard's registry entry (state, tags, dropped collections) to its
//! descriptor. They are
//! not steps of a slot move: the balancers of every shard read the state from gossip, and the
//! tags only describe the shard to operators.

use unikv_types::{Keyspace, KvReply, ShardState};

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
        RegistryCommand::DropKeyspace { keyspace } => {
            if *keyspace < Keyspace::FIRST_USER {
                refused(format!("keyspace {keyspace} is not a user collection's"))
            } else {
                if d.dropped_keyspaces.insert(*keyspace) {
                    ov.drop_keyspace(*keyspace)?;
                    d.version += 1;
                }
                ok
            }
        }
    })
}
