//! `bench`: one load generator for unikv and for the systems it is compared with.
//!
//! The same client, with the same connection handling and the same latency bookkeeping, drives
//! unikv's router, one unikv node, or etcd's v3 JSON gateway, so a ratio between two runs measures
//! the servers and not two different load tools. Each connection keeps one request outstanding
//! (closed loop, like wrk), on a keep-alive HTTP/1.1 connection.

pub mod conn;
pub mod error;
pub mod keys;
pub mod run;
pub mod stats;
pub mod target;

pub use error::{Error, Result};
pub use run::{run, Config};
pub use stats::Summary;
pub use target::{Target, Workload};
