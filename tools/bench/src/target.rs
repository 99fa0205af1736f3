//! What is being measured (router, node, etcd) and with which mix of operations.
//!
//! unikv takes `{"key": .., "val": ..}` JSON bodies on `/put` and `/get`; etcd's v3 gateway takes
//! base64 keys and values on `/v3/kv/put` and `/v3/kv/range` (a range without `serializable` is a
//! linearizable read, like unikv's default get). Bodies are built into a reused buffer.

use base64::Engine;

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// unikv's router (`host:port`).
    Router(String),
    /// One unikv node's HTTP port: it forwards what it does not lead.
    Node(String),
    /// etcd's JSON gateway (one member's client URL).
    Etcd(String),
}

impl std::str::FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Target> {
        let (kind, addr) = s.split_once('=').unwrap_or(("router", s));
        let addr = addr.trim_start_matches("http://").trim_end_matches('/');
        if addr.is_empty() || !addr.contains(':') {
            return Err(Error::Invalid(format!(
                "target address {addr:?} is not host:port"
            )));
        }
        let addr = addr.to_string();
        match kind {
            "router" => Ok(Target::Router(addr)),
            "node" => Ok(Target::Node(addr)),
            "etcd" => Ok(Target::Etcd(addr)),
            other => Err(Error::Invalid(format!(
                "unknown target kind {other:?} (router= | node= | etcd=)"
            ))),
        }
    }
}

impl Target {
    pub fn addr(&self) -> &str {
        match self {
            Target::Router(a) | Target::Node(a) | Target::Etcd(a) => a,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Router(_) => "router",
            Target::Node(_) => "node",
            Target::Etcd(_) => "etcd",
        }
    }

    /// Builds a write of `value` to `key` into `body`; returns the path.
    pub fn put(&self, key: &str, value: &str, body: &mut Vec<u8>) -> &'static str {
        body.clear();
        match self {
            Target::Etcd(_) => {
                body.extend_from_slice(b"{\"key\":\"");
                b64(key, body);
                body.extend_from_slice(b"\",\"value\":\"");
                b64(value, body);
                body.extend_from_slice(b"\"}");
                "/v3/kv/put"
            }
            _ => {
                body.extend_from_slice(b"{\"key\":\"");
                body.extend_from_slice(key.as_bytes());
                body.extend_from_slice(b"\",\"val\":\"");
                body.extend_from_slice(value.as_bytes());
                body.extend_from_slice(b"\"}");
                "/put"
            }
        }
    }

    /// Builds a linearizable read of `key` into `body`; returns the path.
    pub fn get(&self, key: &str, body: &mut Vec<u8>) -> &'static str {
        body.clear();
        body.extend_from_slice(b"{\"key\":\"");
        match self {
            Target::Etcd(_) => {
                b64(key, body);
                body.extend_from_slice(b"\"}");
                "/v3/kv/range"
            }
            _ => {
                body.extend_from_slice(key.as_bytes());
                body.extend_from_slice(b"\"}");
                "/get"
            }
        }
    }

    /// Whether `status` answers a read successfully: unikv says 404 for a missing key.
    pub fn read_ok(&self, status: u16) -> bool {
        (200..300).contains(&status) || (status == 404 && !matches!(self, Target::Etcd(_)))
    }
}

fn b64(s: &str, out: &mut Vec<u8>) {
    let start = out.len();
    let len = base64::encoded_len(s.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(s.as_bytes(), &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + n);
}

/// The operation mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Put,
    Get,
    /// Reads with this percentage, writes otherwise (50 → 50/50, 95 → 95/5).
    Mixed {
        read_pct: u8,
    },
    /// Writes every key exactly once, then stops (for loading data, e.g. before measuring RSS).
    Load,
}

impl std::str::FromStr for Workload {
    type Err = Error;
    fn from_str(s: &str) -> Result<Workload> {
        match s {
            "put" => Ok(Workload::Put),
            "get" => Ok(Workload::Get),
            "load" => Ok(Workload::Load),
            "mixed" => Ok(Workload::Mixed { read_pct: 50 }),
            _ => {
                let pct = s
                    .strip_prefix("mixed")
                    .map(|p| p.trim_start_matches(['-', ':', '=']))
                    .and_then(|p| p.parse::<u8>().ok())
                    .filter(|p| *p <= 100);
                match pct {
                    Some(read_pct) => Ok(Workload::Mixed { read_pct }),
                    None => Err(Error::Invalid(format!(
                        "unknown workload {s:?} (put | get | mixed | mixed95 | load)"
                    ))),
                }
            }
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workload::Put => f.write_str("put"),
            Workload::Get => f.write_str("get"),
            Workload::Load => f.write_str("load"),
            Workload::Mixed { read_pct } => write!(f, "mixed{read_pct}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets_and_workloads() {
        assert_eq!(
            "etcd=127.0.0.1:23791".parse::<Target>().unwrap(),
            Target::Etcd("127.0.0.1:23791".into())
        );
        assert_eq!(
            "http://localhost:3000/".parse::<Target>().unwrap(),
            Target::Router("localhost:3000".into())
        );
        assert!("mongo=x:1".parse::<Target>().is_err());
        assert!("router=nohost".parse::<Target>().is_err());
        assert_eq!(
            "mixed95".parse::<Workload>().unwrap(),
            Workload::Mixed { read_pct: 95 }
        );
        assert_eq!(
            "mixed".parse::<Workload>().unwrap(),
            Workload::Mixed { read_pct: 50 }
        );
        assert!("mixed101".parse::<Workload>().is_err());
    }

    #[test]
    fn etcd_bodies_are_base64_json() {
        let t = Target::Etcd("h:1".into());
        let mut body = Vec::new();
        assert_eq!(t.put("k0000001", "vv", &mut body), "/v3/kv/put");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["key"], "azAwMDAwMDE=");
        assert_eq!(v["value"], "dnY=");
        assert_eq!(t.get("k0000001", &mut body), "/v3/kv/range");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["key"], "azAwMDAwMDE=");
    }

    #[test]
    fn unikv_bodies_are_plain_json() {
        let t = Target::Router("h:1".into());
        let mut body = Vec::new();
        assert_eq!(t.put("k1", "v", &mut body), "/put");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (v["key"].as_str(), v["val"].as_str()),
            (Some("k1"), Some("v"))
        );
        assert!(t.read_ok(404) && !Target::Etcd("h:1".into()).read_ok(404));
    }
}
