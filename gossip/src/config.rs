//! Configuration of a gossip member.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What kind of process a member is. Only nodes publish a [`crate::NodeState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    Node,
    Router,
}

/// Default cluster name.
pub const DEFAULT_CLUSTER: &str = "unikv";
/// Default gossip round interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);
/// Default time after which a dead member's state is forgotten by chitchat.
pub const DEFAULT_DEAD_GRACE_PERIOD: Duration = Duration::from_secs(60);

/// How a member joins the gossip.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// Unique, stable per process incarnation is fine: e.g. "node-1-2" or "router-3000". Used as
    /// chitchat node id. Each start also gets a fresh generation (start time), so a restarted
    /// member with the same name replaces its previous incarnation at once.
    pub name: String,
    pub kind: MemberKind,
    /// UDP address to bind (e.g. 0.0.0.0:8011). Port 0 picks a free port (see
    /// [`crate::Gossip::local_addr`]).
    pub listen: SocketAddr,
    /// Address others should use to reach us (e.g. 127.0.0.1:8011); must not be an unspecified
    /// address. Port 0 is allowed only with a listen port of 0 and then means "the bound port".
    /// Use [`crate::resolve_addr`] to turn "localhost:8011" into 127.0.0.1:8011.
    pub advertise: SocketAddr,
    /// Seed addresses "host:port" (UDP). Unresolvable seeds are skipped with a warning.
    pub seeds: Vec<String>,
    /// Cluster name; members with a different one are ignored (chitchat cluster id).
    pub cluster: String,
    /// Gossip round interval.
    pub interval: Duration,
    /// How long a dead member's state is kept by chitchat before it is garbage-collected (and a
    /// member that comes back with the same generation would be ignored). Failure detection
    /// itself is tuned from `interval`: a silent member is reported dead after roughly
    /// 15-25 gossip intervals (about 3-5 s at the 200 ms default).
    pub dead_grace_period: Duration,
    /// The cluster's gossip key: every datagram is sealed with it and one that does not open
    /// is dropped (`sealed`). `None` gossips in the clear (tests of what an outsider sends).
    pub key: Option<crate::sealed::GossipKey>,
}

impl GossipConfig {
    /// A configuration with the defaults: cluster "unikv", 200 ms interval, 60 s dead grace period.
    pub fn new(
        name: impl Into<String>,
        kind: MemberKind,
        listen: SocketAddr,
        advertise: SocketAddr,
        seeds: Vec<String>,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            listen,
            advertise,
            seeds,
            cluster: DEFAULT_CLUSTER.to_string(),
            interval: DEFAULT_INTERVAL,
            dead_grace_period: DEFAULT_DEAD_GRACE_PERIOD,
            key: None,
        }
    }

    /// Checks the configuration without touching the network.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.len() > 200 {
            return Err(Error::Config(format!(
                "member name must be 1 to 200 bytes, got {:?}",
                self.name
            )));
        }
        if self
            .name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Error::Config(format!(
                "member name must not contain whitespace or control characters: {:?}",
                self.name
            )));
        }
        if self.cluster.is_empty() {
            return Err(Error::Config("cluster name must not be empty".into()));
        }
        if self.interval < Duration::from_millis(10) || self.interval > Duration::from_secs(60) {
            return Err(Error::Config(format!(
                "gossip interval must be between 10 ms and 60 s, got {:?}",
                self.interval
            )));
        }
        if self.dead_grace_period < self.interval * 10 {
            return Err(Error::Config(format!(
                "dead grace period ({:?}) must be at least 10 gossip intervals ({:?})",
                self.dead_grace_period,
                self.interval * 10
            )));
        }
        if self.advertise.ip().is_unspecified() {
            return Err(Error::Config(format!(
                "advertise address {} is unspecified; give an address peers can reach",
                self.advertise
            )));
        }
        if self.advertise.port() == 0 && self.listen.port() != 0 {
            return Err(Error::Config(format!(
                "advertise port 0 is only allowed with listen port 0 (listen is {})",
                self.listen
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GossipConfig {
        GossipConfig::new(
            "node-1-1",
            MemberKind::Node,
            "0.0.0.0:8011".parse().unwrap(),
            "127.0.0.1:8011".parse().unwrap(),
            vec!["127.0.0.1:8012".into()],
        )
    }

    #[test]
    fn defaults_are_valid() {
        let c = cfg();
        assert_eq!(c.cluster, "unikv");
        assert_eq!(c.interval, Duration::from_millis(200));
        c.validate().unwrap();
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let mut c = cfg();
        c.name = String::new();
        assert!(matches!(c.validate(), Err(Error::Config(_))));
        let mut c = cfg();
        c.name = "a b".into();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.advertise = "0.0.0.0:8011".parse().unwrap();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.advertise = "127.0.0.1:0".parse().unwrap();
        assert!(c.validate().is_err());
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.validate().unwrap();
        let mut c = cfg();
        c.interval = Duration::ZERO;
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.cluster = String::new();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.dead_grace_period = Duration::from_millis(100);
        assert!(c.validate().is_err());
    }
}
