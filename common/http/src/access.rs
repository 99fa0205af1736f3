//! Who may change the cluster. Admin calls (`/addshard`, `/removeshard`, `/moveslot`,
//! `/shard/tags`, `/raft/join`, `/raft/leave`, and every later call that changes the cluster)
//! pass [`guard`]:
//! - with an admin token configured (`--admin_token_file`, or `UNIKV_ADMIN_TOKEN`), every
//!   caller needs `Authorization: Bearer <token>`: none → 401 `unauthorized`, another → 403
//!   `forbidden`;
//! - without one (the local default), only callers on loopback are let in — like Redis's
//!   protected mode — others get 403 `admin_from_loopback_only`.
//!
//! A process whose HTTP is reachable beyond loopback refuses to start without a token
//! ([`Access::check_exposure`]).
//!
//! Data calls (`/put`, `/get`, `/append`, `/delete`) are open unless a data token is
//! configured (`--data_token_file`, or `UNIKV_DATA_TOKEN`): then [`data_guard`] wants it (or the
//! admin token) as a bearer token.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// The environment variable that can hold the admin token instead of a file.
pub const TOKEN_ENV: &str = "UNIKV_ADMIN_TOKEN";
/// The environment variable that can hold the data token instead of a file.
pub const DATA_TOKEN_ENV: &str = "UNIKV_DATA_TOKEN";

/// The admin and data tokens, if configured.
#[derive(Clone, Default)]
pub struct Access {
    token: Option<Arc<[u8]>>,
    data: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("data", &self.data.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Access {
    /// The admin token from `admin_file` (trimmed), else from [`TOKEN_ENV`], else none; the
    /// data token likewise from `data_file` or [`DATA_TOKEN_ENV`].
    pub fn load(admin_file: Option<&Path>, data_file: Option<&Path>) -> Result<Access, String> {
        Ok(Access {
            token: load_token("admin", "--admin_token_file", admin_file, TOKEN_ENV)?,
            data: load_token("data", "--data_token_file", data_file, DATA_TOKEN_ENV)?,
        })
    }

    /// [`Access::load`], then [`Access::check_exposure`] for the listener bound at `bound`:
    /// what a node or router does at start.
    pub fn for_listener(
        what: &str,
        admin_file: Option<&Path>,
        data_file: Option<&Path>,
        bound: SocketAddr,
    ) -> Result<Access, String> {
        let access = Access::load(admin_file, data_file)?;
        access.check_exposure(what, bound)?;
        Ok(access)
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Refuses to serve beyond loopback (`bound`: the HTTP listener's address) without a
    /// token: anyone who could reach the port could otherwise drain shards.
    pub fn check_exposure(&self, what: &str, bound: SocketAddr) -> Result<(), String> {
        if bound.ip().is_loopback() || self.has_token() {
            return Ok(());
        }
        Err(format!(
            "this {what}'s HTTP would listen on {bound}, reachable from other machines, without an admin token: anyone who can reach it could change the cluster. Give --admin_token_file (or {TOKEN_ENV}), or listen on loopback"
        ))
    }

    /// Whether a caller from `peer` with `authorization` may make an admin call.
    pub fn check(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&HeaderValue>,
    ) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return match peer {
                Some(ip) if ip.is_loopback() => Ok(()),
                _ => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "admin_from_loopback_only",
                    "admin calls are accepted only from this machine unless an admin token is configured (--admin_token_file)",
                )),
            };
        };
        let Some(given) = bearer(authorization) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this admin call needs Authorization: Bearer <admin token>",
            ));
        };
        if constant_time_eq(given, token) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the admin token does not match",
            ))
        }
    }
}

fn load_token(
    what: &str,
    flag: &str,
    file: Option<&Path>,
    env: &str,
) -> Result<Option<Arc<[u8]>>, String> {
    let token = match file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("reading {flag} {}: {e}", f.display()))?,
        ),
        None => std::env::var(env).ok(),
    };
    match token.map(|t| t.trim().to_owned()) {
        Some(t) if t.len() < 16 => Err(format!(
            "the {what} token must be at least 16 characters (got {})",
            t.len()
        )),
        Some(t) => Ok(Some(t.into_bytes().into())),
        None => Ok(None),
    }
}

impl Access {
    /// Whether a data call with `authorization` may go on: always without a data token;
    /// with one, it (or the admin token) must be the bearer token.
    pub fn check_data(&self, authorization: Option<&HeaderValue>) -> Result<(), ApiError> {
        let Some(data) = &self.data else {
            return Ok(());
        };
        let Some(given) = bearer(authorization) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "data calls need Authorization: Bearer <data token>",
            ));
        };
        let admin = self.token.as_deref();
        if constant_time_eq(given, data) || admin.is_some_and(|a| constant_time_eq(given, a)) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the data token does not match",
            ))
        }
    }
}

/// The bearer token of an `Authorization` header, trimmed.
fn bearer(authorization: Option<&HeaderValue>) -> Option<&[u8]> {
    authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().as_bytes())
}

/// A 401 says how to authenticate.
fn refusal(e: ApiError) -> Response {
    let unauthorized = e.status == StatusCode::UNAUTHORIZED;
    let mut r = e.into_response();
    if unauthorized {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// Middleware for data routes (`route_layer(from_fn_with_state(access, data_guard))`).
pub async fn data_guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    match access.check_data(req.headers().get(header::AUTHORIZATION)) {
        Ok(()) => next.run(req).await,
        Err(e) => refusal(e),
    }
}

/// Compares without an early exit, so the time taken does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware for admin routes (`route_layer(from_fn_with_state(access, guard))`). The
/// caller's address comes from the server's connect info; without it the caller counts as
/// remote.
pub async fn guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match access.check(peer, req.headers().get(header::AUTHORIZATION)) {
        Ok(()) => next.run(req).await,
        Err(e) => refusal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)));

    fn bearer_header(t: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {t}")).unwrap()
    }

    #[test]
    fn without_a_token_only_loopback_is_admitted() {
        let a = Access::default();
        assert!(a.check(LOOPBACK, None).is_ok());
        let e = a.check(REMOTE, None).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (403, "admin_from_loopback_only")
        );
        assert!(
            a.check(None, None).is_err(),
            "unknown callers count as remote"
        );
    }

    #[test]
    fn with_a_token_everyone_needs_it() {
        let a = Access {
            token: Some(b"0123456789abcdef".to_vec().into()),
            data: None,
        };
        assert!(
            a.check_data(None).is_ok(),
            "data calls are open without a data token"
        );
        let e = a.check(LOOPBACK, None).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code.as_str()), (401, "unauthorized"));
        let e = a
            .check(REMOTE, Some(&bearer_header("0123456789abcdeX")))
            .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code.as_str()), (403, "forbidden"));
        assert!(a
            .check(REMOTE, Some(&bearer_header("0123456789abcdef")))
            .is_ok());
        assert!(a
            .check(REMOTE, Some(&bearer_header("0123456789abcde")))
            .is_err());
    }

    #[test]
    fn a_data_token_guards_data_calls_and_the_admin_token_opens_them_too() {
        let a = Access {
            token: Some(b"admin-admin-admin-1".to_vec().into()),
            data: Some(b"data-data-data-data".to_vec().into()),
        };
        let e = a.check_data(None).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code.as_str()), (401, "unauthorized"));
        let e = a.check_data(Some(&bearer_header("nope"))).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code.as_str()), (403, "forbidden"));
        assert!(a
            .check_data(Some(&bearer_header("data-data-data-data")))
            .is_ok());
        assert!(a
            .check_data(Some(&bearer_header("admin-admin-admin-1")))
            .is_ok());
        let e = a
            .check(LOOPBACK, Some(&bearer_header("data-data-data-data")))
            .unwrap_err();
        assert_eq!(e.status.as_u16(), 403, "the data token is no admin token");
    }

    #[test]
    fn exposure_without_a_token_is_refused() {
        let none = Access::default();
        assert!(none
            .check_exposure("node", "127.0.0.1:1".parse().unwrap())
            .is_ok());
        let err = none
            .check_exposure("node", "0.0.0.0:1".parse().unwrap())
            .unwrap_err();
        assert!(err.contains("--admin_token_file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "short\n").unwrap();
        assert!(Access::load(Some(&f), None).is_err(), "too short");
        std::fs::write(&f, "0123456789abcdef\n").unwrap();
        let t = Access::load(Some(&f), None).unwrap();
        assert!(t
            .check_exposure("node", "0.0.0.0:1".parse().unwrap())
            .is_ok());
    }
}
