//! Applying changes of the shard's registry entry (state and tags) to its descriptor. They are
//! not steps of a slot move: the balancers of every shard read the state from gossip, and the
//! tags only describe the shard to operators.

use unikv_types::{KvReply, ShardState};

use crate::command::{CommandResult, RegistryCommand};
use crate::descriptor::ShardDescriptor;
use crate::moves::refused;

pub(crate) fn apply_registry(d: &mut ShardDescriptor, r: &RegistryCommand) -> CommandResult {
    let ok = Ok(KvReply::Written);
    match r {
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
    }
}
