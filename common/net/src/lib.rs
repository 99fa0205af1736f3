//! unikv-net: the transport for node↔node Raft RPCs and router→node KV RPCs.
//!
//! Everything travels over QUIC so that many independent requests share one long-lived,
//! encrypted connection per peer without head-of-line blocking between them: each request is
//! one bidirectional stream carrying a `kind` byte and a msgpack payload, answered by a
//! msgpack payload on the same stream ([`Transport::call`] / [`Handler`]). Longer exchanges
//! such as snapshot transfer use raw streams ([`Transport::open`]) with length-prefixed
//! frames ([`write_frame`] / [`read_frame`]).
//!
//! Peers authenticate each other with mutual TLS against the cluster CA ([`ClusterTls`]);
//! nodes are addressed by IP and port, so a certificate's identity is its role (node or
//! router, [`CertRole`]) and, for a node, its shard and node id. Servers tell the
//! [`Handler`] the role of each request's sender, which decides what that role may send.

mod error;
mod frame;
pub mod identity;
pub mod pki;
mod pool;
pub mod secrets;
mod serve;
pub mod tls;
mod transport;

#[cfg(test)]
mod role_tests;
#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use frame::{read_frame, write_frame, MAX_MESSAGE};
pub use identity::{CertRole, Identity};
pub use pki::issue_certificates;
/// The stream halves of [`Incoming`] and [`Transport::open`], for streaming protocols.
pub use quinn::{RecvStream, SendStream};
pub use secrets::load_or_create_gossip_key;
pub use serve::{Handler, Incoming};
pub use tls::ClusterTls;
pub use transport::Transport;
