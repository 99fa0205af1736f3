//! Requests a web page could forge are refused, on every route of nodes and routers. The
//! seed's calls change state through GET (`/put?key=..`, `/addshard?..`), which any page a
//! user visits could fire with an `<img src>`; and a page on a domain that resolves to
//! 127.0.0.1 (DNS rebinding) could even read the answers. So, before anything else:
//! - `Sec-Fetch-Site: cross-site` or `same-site` (sent by every current browser for requests
//!   a page makes to another origin) → 403 `cross_site_request`;
//! - an `Origin` that is not this listener's own (`null` included) → 403 `cross_site_request`;
//! - a `Host` that is not one of this process's names → 403 `unknown_host`. Its names: any IP
//!   literal (rebinding needs a domain name), `localhost`, the names the process was started
//!   with (`--http_host`, `--advertise_host`) and `--allowed_hosts`.
//!
//! curl, the CLI tools and other servers send none of these headers (or a Host of an IP or
//! `localhost`), so the seed's calls work unchanged.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// The host names (besides IP literals and `localhost`) a process answers to.
#[derive(Clone, Debug, Default)]
pub struct HostNames {
    names: Arc<Vec<String>>,
}

impl HostNames {
    /// `names`: host names or addresses (with or without a port), as given in flags; empty
    /// ones are skipped.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> HostNames {
        let mut v: Vec<String> = names
            .into_iter()
            .map(|n| host_part(n.trim()).to_ascii_lowercase())
            .filter(|n| !n.is_empty())
            .collect();
        v.sort();
        v.dedup();
        HostNames { names: Arc::new(v) }
    }

    fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        host.parse::<IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
            || self.names.contains(&host)
    }

    /// Whether a request with these headers may go on.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let forged = |why: String| {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_site_request",
                why,
            ))
        };
        let text = |name: header::HeaderName| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap_or("\u{fffd}").trim().to_string())
        };
        if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
            if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
                return forged(format!(
                    "a web page of another site sent this request (Sec-Fetch-Site: {site}); the API takes requests from programs, not from pages of other sites"
                ));
            }
        }
        let host = text(header::HOST).unwrap_or_default();
        if let Some(origin) = text(header::ORIGIN) {
            let own = origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(&host));
            if !own {
                return forged(format!(
                    "a web page of origin {origin:?} sent this request to {host:?}; the API takes requests from programs, not from pages of other sites"
                ));
            }
        }
        let name = host_part(&host);
        if !host.is_empty() && !self.allows(name) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "unknown_host",
                format!(
                    "Host {host:?} is not a name of this server (a page using DNS rebinding sends such requests); use an IP address or localhost, or start the server with --allowed_hosts {name}"
                ),
            ));
        }
        Ok(())
    }
}

/// The host of `host[:port]`, `[v6]:port` or a bare name or address.
fn host_part(s: &str) -> &str {
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match s.rsplit_once(':') {
        // A bare IPv6 address has several colons; host:port has one.
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => s,
    }
}

/// Middleware for every route (`layer(from_fn_with_state(names, browser_guard))`).
pub async fn browser_guard(State(names): State<HostNames>, req: Request, next: Next) -> Response {
    match names.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn code(names: &HostNames, pairs: &[(&'static str, &str)]) -> Option<String> {
        names.check(&headers(pairs)).err().map(|e| e.code)
    }

    #[test]
    fn programs_pass_and_forged_browser_requests_do_not() {
        let n = HostNames::new(["db1.example.com:8011", "", "0.0.0.0"]);
        // curl and servers: an IP or localhost Host, no Origin, no Sec-Fetch-*.
        for host in [
            "127.0.0.1:8011",
            "localhost:3000",
            "[::1]:8011",
            "10.0.0.7",
            "DB1.example.com:8011",
        ] {
            assert_eq!(code(&n, &[("host", host)]), None, "{host}");
        }
        assert_eq!(code(&n, &[]), None);
        // A page of the node itself (a future console) is same-origin.
        let own = [
            ("host", "127.0.0.1:8011"),
            ("origin", "http://127.0.0.1:8011"),
            ("sec-fetch-site", "same-origin"),
        ];
        assert_eq!(code(&n, &own), None);
        assert_eq!(
            code(
                &n,
                &[("host", "localhost:8011"), ("sec-fetch-site", "none")]
            ),
            None
        );
        // Forged by another site's page.
        let cross = "cross_site_request";
        assert_eq!(
            code(
                &n,
                &[("host", "127.0.0.1:8011"), ("sec-fetch-site", "cross-site")]
            )
            .as_deref(),
            Some(cross)
        );
        assert_eq!(
            code(
                &n,
                &[("host", "127.0.0.1:8011"), ("sec-fetch-site", "same-site")]
            )
            .as_deref(),
            Some(cross)
        );
        assert_eq!(
            code(
                &n,
                &[
                    ("host", "127.0.0.1:8011"),
                    ("origin", "https://evil.example")
                ]
            )
            .as_deref(),
            Some(cross)
        );
        assert_eq!(
            code(&n, &[("host", "127.0.0.1:8011"), ("origin", "null")]).as_deref(),
            Some(cross)
        );
        assert_eq!(
            code(
                &n,
                &[
                    ("host", "127.0.0.1:8011"),
                    ("origin", "http://127.0.0.1:9999")
                ]
            )
            .as_deref(),
            Some(cross)
        );
        // DNS rebinding: a name of the attacker's that resolves here.
        assert_eq!(
            code(&n, &[("host", "rebind.evil.example:8011")]).as_deref(),
            Some("unknown_host")
        );
    }

    #[test]
    fn host_parts() {
        assert_eq!(host_part("a.b:80"), "a.b");
        assert_eq!(host_part("[::1]:80"), "::1");
        assert_eq!(host_part("::1"), "::1");
        assert_eq!(host_part("name"), "name");
    }
}
