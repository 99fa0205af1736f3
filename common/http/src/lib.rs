//! HTTP plumbing shared by the node and the router, so both answer the same way: parameters
//! from the query string or a form/JSON body (`params`), every error as `{"error", "code"}`
//! JSON with a 4xx/5xx status (`error`, `reply`), and the KV endpoints themselves (`kv`). Also
//! the process plumbing both binaries share (`process`) and the limited HTTP server (`serve`).
//!
//! This file only declares modules and re-exports; no module imports through it.

pub mod access;
pub mod bind;
pub mod browser;
pub mod catalog_cache;
pub mod chunks;
pub mod collections;
mod error;
pub mod kv;
mod params;
pub mod process;
mod reply;
pub mod scan;
pub mod serve;

pub use collections::CatalogService;
pub use error::ApiError;
pub use kv::KvService;
pub use params::Params;
pub use reply::{json_ok, method_not_allowed, not_found, ok};
pub use serve::HttpLimits;
