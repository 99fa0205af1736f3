//! `bench`: one load generator for unikv and for the systems it is compared with.
//!
//! The same client, with the same connection handling and the same latency bookkeeping, drives
//! unikv's router, one unikv node, or etcd's v3 JSON gateway, so a ratio between two runs measures
//! the servers and not two different load tools. Each connection keeps one request outstanding
//! (closed loop, like wrk), on a keep-alive HTTP/1.1 connection.

pub mod conn;
pub mod keys;
pub mod run;
pub mod stats;
pub mod target;

pub use run::{run, Config};
pub use stats::Summary;
pub use target::{Target, Workload};

/// Everything that can stop a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP response: {0}")]
    Response(String),
    #[error("invalid option: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
