//! The crate's error type.
//!
//! Transport failures are sorted by what the caller should do about them: errors that mean
//! "the peer may be down or unreachable" (dial failures, timeouts, lost connections, DNS) are
//! reported through [`Error::is_unreachable`] so Raft and the router can back off or fail over,
//! while codec and protocol errors point at a bug or a version mismatch.

use quinn::{ConnectionError, ReadError, ReadExactError, ReadToEndError, WriteError};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The stream error code with which a server refuses a request the sender's certificate role
/// may not make ([`Error::Refused`] on the sender's side).
pub const REFUSED: u32 = 0x403;

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
    /// The peer refused the request: this process's certificate role may not send its kind.
    #[error("{0}: refused: this process's certificate role may not send this request (a router may send only KV, KV_BATCH and READ_INDEX)")]
    Refused(String),
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
            Error::Refused(s) => Error::Refused(s.clone()),
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
    ///
    /// A TLS refusal is never sent either: a server serves no stream of a connection whose
    /// handshake it refused. Nor is a request refused for the sender's role, which the server
    /// resets before reading it.
    pub fn not_sent(&self) -> bool {
        match self {
            Error::Resolve(_) | Error::Tls(_) | Error::Refused(_) => true,
            Error::Connect { reason, .. } => !reason.starts_with("connection lost"),
            _ => false,
        }
    }

    /// Establishing a connection to `addr` failed. A TLS rejection (either side refusing the
    /// other's certificate) is a configuration problem, not an unreachable peer.
    pub(crate) fn dial(addr: &str, e: ConnectionError) -> Error {
        if is_crypto(&e) {
            return Error::handshake(addr, e, false);
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
            return Error::handshake(peer.unwrap_or("peer"), e, false);
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

    /// A TLS handshake with `peer` failed: [`Error::Tls`] saying what to do about it when the
    /// alert tells (a certificate from another CA, a non-node serving, an expired one).
    /// `as_server`: this process accepted the connection (the peer is a client).
    pub(crate) fn handshake(peer: &str, e: ConnectionError, as_server: bool) -> Error {
        const HINT: &str =
            "copy the cluster's ca.pem, or issue certificates from its CA with `unikv-node certs`";
        let (code, ours) = match &e {
            ConnectionError::TransportError(t) => (u64::from(t.code), true),
            ConnectionError::ConnectionClosed(c) => (u64::from(c.error_code), false),
            _ => (0, false),
        };
        // QUIC carries a TLS alert as 0x100 + its code (RFC 9001, 4.8). Every cluster CA has
        // the same subject, so another cluster's certificate mostly fails on its signature
        // (decrypt_error, 51) rather than as an unknown issuer (unknown_ca, 48).
        let cause = match (code.checked_sub(0x100), ours) {
            (Some(48 | 51), true) => {
                format!("the peer's certificate is from another cluster CA: {HINT}")
            }
            (Some(48 | 51), false) => {
                format!("the peer refused our certificate as from another cluster CA: {HINT}")
            }
            (Some(42), true) if !as_server => {
                "the peer's certificate is not a unikv node's (only a node's certificate may serve)"
                    .to_owned()
            }
            (Some(45), _) => format!("a certificate has expired or is not yet valid: {HINT}"),
            _ => return Error::Tls(format!("{peer}: {e}")),
        };
        Error::Tls(format!("{peer}: handshake refused: {cause} ({e})"))
    }

    pub(crate) fn write(peer: Option<&str>, e: WriteError) -> Error {
        match e {
            WriteError::Stopped(code) if code.into_inner() == u64::from(REFUSED) => {
                Error::Refused(peer.unwrap_or("peer").to_owned())
            }
            WriteError::ConnectionLost(c) => Error::lost(peer, c),
            other => Error::Stream(format!("{}write: {other}", prefix(peer))),
        }
    }

    pub(crate) fn read(peer: Option<&str>, e: ReadError) -> Error {
        match e {
            ReadError::Reset(code) if code.into_inner() == u64::from(REFUSED) => {
                Error::Refused(peer.unwrap_or("peer").to_owned())
            }
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
