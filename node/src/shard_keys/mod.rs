//! Moving a shard key's data between shards (a custom collection's unit on one shard), so a
//! shard holding shard keys can be drained: `handoff` on the source (freeze, send, `Done`,
//! then the catalog commit that puts the target in the source's place in the key's shard
//! list), `receive` on the target and the source's answers to it, over `messages`; the
//! leader's loop that resumes interrupted moves and drains a draining shard is `drain`.
//!
//! Every step is a Raft commit in the shard concerned (`unikv_storage::unit_moves`), so a new
//! leader picks up whatever its predecessor left; the catalog commit is retried until it
//! lands (until then requests for the moved buckets get `wrong_shard` or wait, never an
//! answer from a shard that does not hold the data).

mod drain;
mod handoff;
mod messages;
mod receive;

pub use drain::spawn;
pub use messages::{UnitActivate, UnitIn, UnitStatusRequest};
