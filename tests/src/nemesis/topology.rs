//! The two clusters the nemesis runs against, behind one interface: a single shard (three
//! node processes, clients talk to any node) and the unified cluster (3 shards x 3 nodes and a
//! router started by `scripts/run_unified.sh`, clients talk to the router).

use std::time::Duration;

use crate::api::Api;
use crate::cluster::Cluster;
use crate::unified::{node_ref, Proc, Unified, NODES_PER_SHARD, ROUTER};

/// A node: (shard, node within the shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeRef {
    pub shard: u64,
    pub node: u64,
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.shard, self.node)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Shard,
    Unified,
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "shard" => Ok(Kind::Shard),
            "unified" => Ok(Kind::Unified),
            other => Err(format!("unknown topology {other:?} (shard | unified)")),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Shard => "shard",
            Kind::Unified => "unified",
        })
    }
}

pub enum Topology {
    Shard(Cluster),
    Unified(Unified),
}

impl Topology {
    pub async fn start(kind: Kind) -> Topology {
        match kind {
            Kind::Shard => Topology::Shard(Cluster::start().await),
            Kind::Unified => Topology::Unified(Unified::start().await),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Topology::Shard(_) => Kind::Shard,
            Topology::Unified(_) => Kind::Unified,
        }
    }

    pub fn api(&self) -> Api {
        match self {
            Topology::Shard(c) => c.api(),
            Topology::Unified(u) => u.api(),
        }
    }

    /// The [`Api`] ids clients send requests to.
    pub fn endpoints(&self) -> Vec<u64> {
        match self {
            Topology::Shard(c) => c.node_ids(),
            Topology::Unified(_) => vec![ROUTER],
        }
    }

    pub fn shards(&self) -> Vec<u64> {
        match self {
            Topology::Shard(_) => vec![1],
            Topology::Unified(u) => u.shard_ids(),
        }
    }

    pub fn nodes(&self) -> Vec<NodeRef> {
        self.shards()
            .into_iter()
            .flat_map(|shard| (1..=NODES_PER_SHARD).map(move |node| NodeRef { shard, node }))
            .collect()
    }

    /// The [`Api`] id of a node.
    pub fn api_id(&self, n: NodeRef) -> u64 {
        match self {
            Topology::Shard(_) => n.node,
            Topology::Unified(_) => node_ref(n.shard, n.node),
        }
    }

    pub fn pid(&self, n: NodeRef) -> Option<u32> {
        match self {
            Topology::Shard(c) => c.pid(n.node),
            Topology::Unified(u) => u
                .pid(Proc::Node(n.shard, n.node))
                .ok()
                .filter(|p| u.is_ours(*p)),
        }
    }

    pub fn udp_ports(&self, n: NodeRef) -> Vec<u16> {
        match self {
            Topology::Shard(c) => c.udp_ports(n.node),
            Topology::Unified(u) => {
                let p = u.ports();
                vec![p.raft(n.shard, n.node), p.http(n.shard, n.node)]
            }
        }
    }

    pub async fn kill9(&self, n: NodeRef) {
        match self {
            Topology::Shard(c) => c.kill9(n.node),
            Topology::Unified(u) => {
                u.kill9(Proc::Node(n.shard, n.node)).await;
            }
        }
    }

    pub async fn restart(&self, n: NodeRef) {
        match self {
            Topology::Shard(c) => c.restart(n.node).await,
            Topology::Unified(u) => u.restart_node(n.shard, n.node).await,
        }
    }

    /// The node a shard's members agree leads it, if they answer within a short time.
    pub async fn leader(&self, shard: u64) -> Option<NodeRef> {
        let api = self.api();
        for node in 1..=NODES_PER_SHARD {
            let n = NodeRef { shard, node };
            let id = self.api_id(n);
            let status = tokio::time::timeout(Duration::from_secs(1), api.status(id)).await;
            if let Ok(Ok(st)) = status {
                if let Some(l) = st.leader_id() {
                    return Some(NodeRef { shard, node: l });
                }
            }
        }
        None
    }

    /// Waits until every shard has a leader its members agree on (panics after `timeout`:
    /// a cluster that does not recover once every fault healed is a failed run).
    pub async fn wait_healthy(&self, timeout: Duration) {
        match self {
            Topology::Shard(c) => {
                c.wait_converged(timeout).await;
            }
            Topology::Unified(u) => {
                for shard in u.shard_ids() {
                    u.wait_shard_leader(shard, &[1, 2, 3], timeout).await;
                }
            }
        }
    }

    pub fn dump_logs(&self, lines: usize) {
        match self {
            Topology::Shard(c) => c.dump_logs(lines),
            Topology::Unified(u) => u.dump_logs(lines),
        }
    }
}
