//! Errors of the node library.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(#[from] unikv_storage::Error),
    #[error("transport: {0}")]
    Net(#[from] unikv_net::Error),
    #[error("gossip: {0}")]
    Gossip(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
