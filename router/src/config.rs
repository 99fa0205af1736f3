//! Router configuration: the seed's one flag (`--shard_ports "8011,8021,8031"`) plus ports, TLS,
//! timeouts and limits with defaults that work on one machine. Flags are accepted in snake_case
//! and kebab-case, as the node's are, so scripts written for either spelling keep working.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use unikv_types::Limits;

use crate::error::{Error, Result};

/// The host a bare port in `--shard_ports` refers to. Nodes gossip over IPv4, so the IPv4
/// loopback is used rather than `localhost`, which may resolve to `::1` first.
const LOCAL_HOST: &str = "127.0.0.1";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "unikv-router",
    about = "The unikv router: learns the cluster map by gossip and routes each key to its shard",
    // A flag given twice takes its last value (UNIKV_ROUTER_ARGS can override the scripts').
    args_override_self = true
)]
pub struct Config {
    /// Seed nodes, comma separated: a port (this machine) or `host:port`. These are the nodes'
    /// HTTP ports; a node gossips over UDP on the same port number, so they are gossip seeds.
    #[arg(long = "shard_ports", alias = "shard-ports")]
    pub shard_ports: String,
    /// HTTP port (TCP).
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// Threads running the router: `1` runs everything on one thread (no hand-offs between
    /// workers; `scripts/run_unified.sh` passes it, the router sharing two cores with nine
    /// nodes); `0`, the default, one worker per CPU core.
    #[arg(long = "worker_threads", alias = "worker-threads", default_value_t = 0)]
    pub worker_threads: usize,
    /// Gossip port (UDP) [default: the same number as --port].
    #[arg(long = "gossip_port", alias = "gossip-port")]
    pub gossip_port: Option<u16>,
    /// Interface the HTTP server and gossip bind (an IP address). Loopback by default, so
    /// only this machine reaches the router; give this host's address, or `0.0.0.0`, to
    /// serve other machines.
    #[arg(long, alias = "http_host", default_value = "127.0.0.1")]
    pub host: String,
    /// File holding the admin token (at least 16 characters; or set UNIKV_ADMIN_TOKEN):
    /// required to listen beyond loopback, and for the router's admin calls.
    #[arg(long = "admin_token_file", alias = "admin-token-file")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the data token (or set UNIKV_DATA_TOKEN): data calls then need it (or
    /// the admin token) as `Authorization: Bearer`. Off by default.
    #[arg(long = "data_token_file", alias = "data-token-file")]
    pub data_token_file: Option<PathBuf>,
    /// Host names (comma-separated) the router's HTTP answers to besides IP addresses,
    /// `localhost` and `--host`: a request with another `Host` is refused as a possible
    /// DNS-rebinding attack from a web page.
    #[arg(long = "allowed_hosts", alias = "allowed-hosts", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Address other cluster members use to reach this router's gossip.
    #[arg(
        long = "advertise_host",
        alias = "advertise-host",
        default_value = "127.0.0.1"
    )]
    pub advertise_host: String,
    /// The router's certificate directory, as `unikv-node certs … router` writes it; or the
    /// nodes' local development CA directory (loopback only). The router is a mutual-TLS
    /// client of the nodes.
    #[arg(long = "tls_dir", alias = "tls-dir", default_value = "data/tls")]
    pub tls_dir: PathBuf,
    /// How long one client request may take, retries and redirects included.
    #[arg(
        long = "request_timeout_ms",
        alias = "request-timeout-ms",
        default_value_t = 5_000
    )]
    pub request_timeout_ms: u64,
    /// Largest accepted key, in bytes.
    #[arg(
        long = "max_key_bytes",
        alias = "max-key-bytes",
        default_value_t = 1024
    )]
    pub max_key_bytes: usize,
    /// Largest accepted value, in bytes.
    #[arg(long = "max_value_bytes", alias = "max-value-bytes", default_value_t = 1024 * 1024)]
    pub max_value_bytes: usize,
    /// Most HTTP connections served at once; beyond it new ones wait to be accepted.
    #[arg(
        long = "max_http_connections",
        alias = "max-http-connections",
        default_value_t = 1024
    )]
    pub max_http_connections: usize,
    /// Write logs to this file instead of stderr (filter with RUST_LOG).
    #[arg(long = "log_file", alias = "log-file")]
    pub log_file: Option<PathBuf>,
}

impl Config {
    /// The seeds as `host:port` strings, in the order given. Invalid entries are kept verbatim
    /// so that [`Config::validate`] can name them.
    pub fn seeds(&self) -> Vec<String> {
        self.shard_ports
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(seed_addr)
            .collect()
    }

    /// The UDP port gossip uses.
    pub fn gossip_port(&self) -> u16 {
        self.gossip_port.unwrap_or(self.port)
    }

    /// The address the HTTP server binds (`[..]` around an IPv6 host).
    pub fn http_bind(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, self.port).to_string(),
            Err(_) => format!("{}:{}", self.host, self.port),
        }
    }

    /// The address gossip binds.
    pub fn gossip_listen(&self) -> Result<SocketAddr> {
        let ip: IpAddr = self.host.parse().map_err(|_| {
            Error::Config(format!("--host must be an IP address, got {:?}", self.host))
        })?;
        Ok(SocketAddr::new(ip, self.gossip_port()))
    }

    /// Whether `--host` lets other machines in (anything but a loopback address).
    pub fn http_exposed(&self) -> bool {
        unikv_http::bind::is_exposed(&self.host)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
        }
    }

    pub fn http_limits(&self) -> unikv_http::HttpLimits {
        unikv_http::HttpLimits {
            max_connections: self.max_http_connections,
            ..Default::default()
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Checks the flags before anything starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.max_http_connections == 0 {
            return bad("--max_http_connections must be positive".into());
        }
        let seeds = self.seeds();
        if seeds.is_empty() {
            return bad("--shard_ports must name at least one node".into());
        }
        for seed in &seeds {
            if !is_host_port(seed) {
                return bad(format!(
                    "--shard_ports entries must be a port or host:port, got {seed:?}"
                ));
            }
        }
        self.gossip_listen()?;
        if self.advertise_host.trim().is_empty() {
            return bad("--advertise_host must not be empty".into());
        }
        if self.request_timeout_ms == 0 {
            return bad("--request_timeout_ms must be positive".into());
        }
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return bad("--max_key_bytes and --max_value_bytes must be positive".into());
        }
        Ok(())
    }
}

/// One `--shard_ports` entry as `host:port`: a bare number is a port on this machine.
fn seed_addr(entry: &str) -> String {
    if entry.parse::<u16>().is_ok() {
        format!("{LOCAL_HOST}:{entry}")
    } else {
        entry.to_string()
    }
}

/// `host:port` with a non-empty host and a port in 1..=65535.
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("unikv-router").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn seed_flag_parses_in_both_spellings() {
        for flag in ["--shard_ports", "--shard-ports"] {
            let c = parse(&[flag, "8011,8021,8031"]);
            c.validate().unwrap();
            assert_eq!(
                c.seeds(),
                ["127.0.0.1:8011", "127.0.0.1:8021", "127.0.0.1:8031"]
            );
            assert_eq!(c.port, 3000);
            assert_eq!(c.gossip_port(), 3000);
            assert_eq!(c.http_bind(), "127.0.0.1:3000");
            assert!(!c.http_exposed());
            assert_eq!(c.request_timeout(), Duration::from_secs(5));
        }
        let mut c = parse(&["--shard_ports", "8011", "--host", "::"]);
        c.validate().unwrap();
        assert_eq!(c.http_bind(), "[::]:3000");
        c.host = "127.0.0.1".into();
        assert_eq!(
            c.gossip_listen().unwrap(),
            "127.0.0.1:3000".parse().unwrap()
        );
    }

    #[test]
    fn shard_ports_accept_ports_and_host_ports() {
        let c = parse(&[
            "--shard_ports",
            " 8011 , node-b:8021,10.0.0.3:8031,,[::1]:8041",
        ]);
        c.validate().unwrap();
        assert_eq!(
            c.seeds(),
            [
                "127.0.0.1:8011",
                "node-b:8021",
                "10.0.0.3:8031",
                "[::1]:8041"
            ]
        );
    }

    #[test]
    fn other_flags_in_both_spellings() {
        let a = parse(&[
            "--shard_ports",
            "1",
            "--port",
            "3100",
            "--gossip_port",
            "3200",
            "--advertise_host",
            "10.1.1.1",
            "--tls_dir",
            "x/tls",
            "--request_timeout_ms",
            "900",
            "--max_key_bytes",
            "10",
            "--max_value_bytes",
            "20",
            "--log_file",
            "logs/router.log",
        ]);
        let b = parse(&[
            "--shard-ports",
            "1",
            "--port",
            "3100",
            "--gossip-port",
            "3200",
            "--advertise-host",
            "10.1.1.1",
            "--tls-dir",
            "x/tls",
            "--request-timeout-ms",
            "900",
            "--max-key-bytes",
            "10",
            "--max-value-bytes",
            "20",
            "--log-file",
            "logs/router.log",
        ]);
        for c in [a, b] {
            c.validate().unwrap();
            assert_eq!(c.gossip_port(), 3200);
            assert_eq!(
                c.gossip_listen().unwrap(),
                "127.0.0.1:3200".parse().unwrap()
            );
            assert_eq!(c.advertise_host, "10.1.1.1");
            assert_eq!(c.tls_dir, PathBuf::from("x/tls"));
            assert_eq!(c.request_timeout(), Duration::from_millis(900));
            assert_eq!(c.limits().max_key_bytes, 10);
            assert_eq!(c.limits().max_value_bytes, 20);
            assert_eq!(c.log_file, Some(PathBuf::from("logs/router.log")));
        }
    }

    #[test]
    fn validate_rejects_nonsense() {
        assert!(Config::try_parse_from(["unikv-router"]).is_err());
        for ports in [
            "",
            " , ",
            "0",
            "host:",
            ":8011",
            "host:0",
            "host:99999",
            "eighty",
        ] {
            let c = parse(&["--shard_ports", ports]);
            assert!(c.validate().is_err(), "{ports:?} accepted");
        }
        let mut c = parse(&["--shard_ports", "8011"]);
        c.host = "not-an-ip".into();
        assert!(c.validate().is_err());
        let mut c = parse(&["--shard_ports", "8011"]);
        c.request_timeout_ms = 0;
        assert!(c.validate().is_err());
        let mut c = parse(&["--shard_ports", "8011"]);
        c.max_value_bytes = 0;
        assert!(c.validate().is_err());
    }
}
