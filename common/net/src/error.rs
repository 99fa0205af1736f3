//! The crate's error type.
//!
//! Transport failures are sorted by what the caller should do about them: errors that mean
//! "the peer may be down or unreachable" (dial failures, timeouts, lost connections, DNS) are
//! reported through [`Error::is_unreachable`] so Raft and the router can back off or fail over,
//! while codec and protocol errors point at a bug or a version mismatch.

use quinn::{ConnectionError, ReadError, ReadExactError, ReadToEndError, WriteError};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building or loading certificates / TLS configuration failed.
    #[error("tls: {0}")]
    Tls(String),
    /// Local I/O (files, sockets) failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Could not establish (or lost) the connection to `addr`.
    #[error("connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The whole operation did not finish within its deadline.
    #[error("{addr}: timed out after {after_ms} ms")]
    Timeout { addr: String, after_ms: u64 },
    /// A payload could not be encoded or decoded as msgpack.
    #[error("codec: {0}")]
    Codec(String),
    /// A stream-level failure (reset, stopped, finished early, protocol violation).
    #[error("stream: {0}")]
    Stream(String),
    /// A message exceeded the size limit.
    #[error("message larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The address could not be resolved.
    #[error("resolve: {0}")]
    Resolve(String),
}

/// One failed exchange that carried several requests (the router's KV batches) fails each of
/// them the same way; `io::Error` is not `Clone`, so it keeps its kind and message.
impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::Tls(s) => Error::Tls(s.clone()),
            Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), e.to_string())),
            Error::Connect { addr, reason } => Error::Connect {
                addr: addr.clone(),
                reason: reason.clone(),
            },
            Error::Timeout { addr, after_ms } => Error::Timeout {
                addr: addr.clone(),
                after_ms: *after_ms,
            },
            Error::Codec(s) => Error::Codec(s.clone()),
            Error::Stream(s) => Error::Stream(s.clone()),
            Error::TooLarge { limit } => Error::TooLarge { limit: *limit },
            Error::Resolve(s) => Error::Resolve(s.clone()),
        }
    }
}

impl Error {
    /// True when the failure suggests the peer is down or unreachable (as opposed to a bug or a
    /// protocol mismatch): connect failures, timeouts and resolution failures.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::Timeout { .. } | Error::Resolve(_)
        )
    }

    /// True when the request certainly never reached the peer, so resending it cannot apply it
    /// twice: the address did not resolve or no connection could be established. (A connection
    /// lost mid-request is `Connect` too, but its reason starts with "connection lost".)
    pub fn not_sent(&self) -> bool {
        match self {
            Error::Resolve(_) => true,
            Error::Connect { reason, .. } => !reason.starts_with("connection lost"),
            _ => false,
        }
    }

    /// Establishing a connection to `addr` failed. A TLS rejection (either side refusing the
    /// other's certificate) is a configuration problem, not an unreachable peer.
    pub(crate) fn dial(addr: &str, e: ConnectionError) -> Error {
        if is_crypto(&e) {
            return Error::Tls(format!("{addr}: {e}"));
        }
        Error::Connect {
            addr: addr.to_owned(),
            reason: e.to_string(),
        }
    }

    /// A connection was lost while a stream was in use. Losing it because the peer went silent,
    /// restarted or shut down means the peer may be down; a TLS rejection (the server checks the
    /// client certificate after the client already considers the handshake done) is a
    /// [`Error::Tls`]; anything else is a protocol error.
    pub(crate) fn lost(peer: Option<&str>, e: ConnectionError) -> Error {
        if is_crypto(&e) {
            return Error::Tls(format!("{}{e}", prefix(peer)));
        }
        match (peer, &e) {
            (
                Some(addr),
                ConnectionError::TimedOut
                | ConnectionError::Reset
                | ConnectionError::ApplicationClosed(_),
            ) => Error::Connect {
                addr: addr.to_owned(),
                reason: format!("connection lost: {e}"),
            },
            (Some(addr), _) => Error::Stream(format!("{addr}: connection lost: {e}")),
            (None, _) => Error::Stream(format!("connection lost: {e}")),
        }
    }

    pub(crate) fn write(peer: Option<&str>, e: WriteError) -> Error {
        match e {
            WriteError::ConnectionLost(c) => Error::lost(peer, c),
            other => Error::Stream(format!("{}write: {other}", prefix(peer))),
        }
    }

    pub(crate) fn read(peer: Option<&str>, e: ReadError) -> Error {
        match e {
            ReadError::ConnectionLost(c) => Error::lost(peer, c),
            other => Error::Stream(format!("{}read: {other}", prefix(peer))),
        }
    }

    pub(crate) fn read_to_end(peer: Option<&str>, e: ReadToEndError, limit: usize) -> Error {
        match e {
            ReadToEndError::TooLong => Error::TooLarge { limit },
            ReadToEndError::Read(r) => Error::read(peer, r),
        }
    }

    pub(crate) fn read_exact(peer: Option<&str>, e: ReadExactError) -> Error {
        match e {
            ReadExactError::ReadError(r) => Error::read(peer, r),
            ReadExactError::FinishedEarly(n) => Error::Stream(format!(
                "{}stream finished early ({n} bytes read)",
                prefix(peer)
            )),
        }
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100..=0x1ff.
fn is_crypto(e: &ConnectionError) -> bool {
    let code = match e {
        ConnectionError::TransportError(t) => t.code,
        ConnectionError::ConnectionClosed(c) => c.error_code,
        _ => return false,
    };
    (0x100..0x200).contains(&u64::from(code))
}

fn prefix(peer: Option<&str>) -> String {
    peer.map(|p| format!("{p}: ")).unwrap_or_default()
}
