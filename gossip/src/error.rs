//! Errors of the gossip crate (all from start-up: gossip never fails once running).

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of this crate. Gossip itself never fails once started; these come from start-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The UDP socket could not be bound (address in use, permission, ...).
    #[error("cannot bind gossip socket: {0}")]
    Bind(String),
    /// The configuration is invalid.
    #[error("invalid gossip configuration: {0}")]
    Config(String),
}
