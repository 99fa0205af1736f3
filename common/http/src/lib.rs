//! HTTP plumbing shared by the node and the router, so both answer the same way: parameters
//! from the query string or a form/JSON body, and every error as `{"error", "code"}` JSON with
//! a 4xx/5xx status. Also the process plumbing both binaries share (`process`).

mod params;
pub mod process;
mod reply;

pub use params::Params;
pub use reply::{json_ok, method_not_allowed, not_found, ok, ApiError};
