//! The router's error type: what can stop it from starting or running (never a request error;
//! those are answered as JSON and never end the process).

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags that contradict each other or cannot be used.
    #[error("config: {0}")]
    Config(String),
    /// Local I/O (sockets, files) failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// TLS material or the QUIC endpoint could not be set up.
    #[error("transport: {0}")]
    Net(#[from] unikv_net::Error),
    /// Gossip could not start.
    #[error("gossip: {0}")]
    Gossip(String),
}
