//! `/scan` (GET, POST): keys of a range collection in order, a page at a time.
//!
//! `collection` (a range collection), `start` (inclusive, default: the first key), `end`
//! (exclusive, default: past the last), `limit` (1..=1000, default 100), `reverse=true` for
//! descending order, and `cursor`: the `next` of the previous page (the other parameters
//! repeated as they were). The reply is `{"items": [{"key", "value"}...], "next": CURSOR|null}`;
//! `null` means the range is exhausted. A page also ends after about 1 MiB of keys and values.
//!
//! Each page is read at one linearizable point per shard it touches; a scan of several pages
//! (or a page spanning shards) is not one point-in-time view: a key written meanwhile may or
//! may not appear, but a key present and unchanged throughout appears exactly once.

use data_encoding::BASE64URL_NOPAD;
use serde_json::json;
use unikv_types::chunk::{MAX_SCAN_LIMIT, SCAN_PAGE_BYTES};
use unikv_types::{ScanPage, ScanRange};

use crate::error::ApiError;
use crate::params::Params;

/// Default items per page.
const DEFAULT_LIMIT: u32 = 100;

/// The key that requests without one carry (scans route by their range, not by it).
pub const SCAN_KEY: &str = "scan";

/// The JSON reply of a page.
pub fn page_json(page: ScanPage) -> serde_json::Value {
    let items: Vec<_> = page
        .items
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    let next = page.resume.map(|r| BASE64URL_NOPAD.encode(r.as_bytes()));
    json!({"items": items, "next": next})
}

/// The scan a request asks for.
pub fn scan_range(p: &Params) -> Result<ScanRange, ApiError> {
    let reverse = p.flag("reverse")?;
    let limit = match p.optional("limit") {
        None => DEFAULT_LIMIT,
        Some(_) => {
            let l = p.u64("limit")?;
            if !(1..=u64::from(MAX_SCAN_LIMIT)).contains(&l) {
                return Err(ApiError::bad_request(
                    "bad_limit",
                    format!("limit must be 1..={MAX_SCAN_LIMIT}, got {l}"),
                ));
            }
            l as u32
        }
    };
    let mut start = p.optional("start").unwrap_or_default().to_string();
    let mut end = p.optional("end").map(str::to_string);
    if let Some(c) = p.optional("cursor").filter(|c| !c.is_empty()) {
        let bad =
            || ApiError::bad_request("bad_cursor", "cursor is not a cursor this API returned");
        let bytes = BASE64URL_NOPAD.decode(c.as_bytes()).map_err(|_| bad())?;
        let at = String::from_utf8(bytes).map_err(|_| bad())?;
        if reverse {
            end = Some(at);
        } else {
            start = at;
        }
    }
    if end.as_deref().is_some_and(|e| e < start.as_str()) {
        return Err(ApiError::bad_request(
            "bad_range",
            format!("end {end:?} is before start {start:?}"),
        ));
    }
    Ok(ScanRange {
        start,
        end,
        reverse,
        limit,
        max_bytes: SCAN_PAGE_BYTES,
    })
}
