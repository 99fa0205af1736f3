//! How a transport failure reads to openraft: a peer that cannot be reached is `Unreachable`
//! (openraft backs off before trying it again), anything else a plain network error. Both the
//! request/response network (`raft_net`) and the replication stream (`append_stream`) use it.

use openraft::errors::{NetworkError, RPCError, Unreachable};
use unikv_storage::TypeConfig;

pub(crate) fn to_rpc_error(e: unikv_net::Error) -> RPCError<TypeConfig> {
    if e.is_unreachable() {
        RPCError::Unreachable(Unreachable::new(&e))
    } else {
        RPCError::Network(NetworkError::new(&e))
    }
}
