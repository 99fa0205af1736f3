//! The two clusters the nemesis runs against, behind one interface: a single shard (three
//! node processes, clients talk to any node) and the unified cluster (3 shards x 3 nodes and a
//! router started by `scripts/run_unified.sh`, clients talk to the router).

use std::time::Duration;

use crate::api::Api;
use crate::cluster::Cluster;
use crate::lazyfs::{LazyFs, PowerCutReport};
use crate::unified::{node_ref, Proc, Unified, NODES_PER_SHARD, ROUTER};

/// The test file system a single shard's data lives on when power cuts are among the faults.
pub struct PowerFs {
    fs: LazyFs,
    _dir: tempfile::TempDir,
}

impl PowerFs {
    fn mount() -> PowerFs {
        let dir = tempfile::Builder::new()
            .prefix("unikv-nemesis-fs-")
            .tempdir()
            .expect("tempdir");
        let (backing, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
        std::fs::create_dir_all(&backing).expect("create backing dir");
        std::fs::create_dir_all(&mnt).expect("create mount point");
        let fs = LazyFs::mount(&backing, &mnt).expect("mount the power-cut file system");
        PowerFs { fs, _dir: dir }
    }
}

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
    /// A shard, with its data on a [`PowerFs`] if power cuts are wanted (the cluster is
    /// dropped, its processes killed, before the file system unmounts).
    Shard(Cluster, Option<PowerFs>),
    Unified(Unified),
}

impl Topology {
    /// Starts the cluster with extra node `flags`; `power_cuts` puts a single shard's data on
    /// a [`PowerFs`] (the unified cluster takes no power cuts yet). `copy_first`: every slot
    /// move of the unified cluster copies first; otherwise small slots move frozen, up to 16
    /// per hand-off (`--move_batch_slots 16`).
    pub async fn start(
        kind: Kind,
        power_cuts: bool,
        copy_first: bool,
        flags: &[(&str, &str)],
    ) -> Topology {
        match kind {
            Kind::Shard if power_cuts => {
                let fs = PowerFs::mount();
                let c = Cluster::start_on(flags, Some(fs.fs.mountpoint())).await;
                Topology::Shard(c, Some(fs))
            }
            Kind::Shard => Topology::Shard(Cluster::start_with(flags).await, None),
            Kind::Unified => {
                // Every move copies first (the protocol larger slots take), however few keys
                // the nemesis' slots hold — or the small-slot batches.
                let mut args = if copy_first {
                    vec!["--move_copy_min_kb", "0"]
                } else {
                    vec!["--move_batch_slots", "16"]
                };
                args.extend(flags.iter().flat_map(|(k, v)| [*k, *v]));
                Topology::Unified(Unified::start_with(&args, &[]).await)
            }
        }
    }

    /// Runs the clocks of every shard's nodes 2 and 3 at `rate` from now on (restarting them
    /// one at a time): whichever node leads, some follower's clock runs at another rate.
    pub async fn set_clock_rate(&self, rate: f64) {
        for shard in self.shards() {
            for node in 2..=NODES_PER_SHARD {
                let n = NodeRef { shard, node };
                match self {
                    Topology::Shard(c, _) => c.set_clock_rate(node, Some(rate)),
                    Topology::Unified(u) => u.set_clock_rate(shard, node, Some(rate)),
                }
                self.kill9(n).await;
                self.restart(n).await;
            }
        }
        self.wait_healthy(Duration::from_secs(60)).await;
    }

    /// A power cut of the whole shard: every node killed at once, the bytes no fsync covered
    /// dropped, every node started again. None if this topology takes no power cuts.
    pub async fn power_cut(&self) -> Option<PowerCutReport> {
        let Topology::Shard(c, Some(fs)) = self else {
            return None;
        };
        for id in c.node_ids() {
            c.kill9(id);
        }
        let report = fs.fs.power_cut();
        for id in c.node_ids() {
            c.restart(id).await;
        }
        Some(report)
    }

    pub fn kind(&self) -> Kind {
        match self {
            Topology::Shard(..) => Kind::Shard,
            Topology::Unified(_) => Kind::Unified,
        }
    }

    pub fn api(&self) -> Api {
        match self {
            Topology::Shard(c, _) => c.api(),
            Topology::Unified(u) => u.api(),
        }
    }

    /// The [`Api`] ids clients send requests to.
    pub fn endpoints(&self) -> Vec<u64> {
        match self {
            Topology::Shard(c, _) => c.node_ids(),
            Topology::Unified(_) => vec![ROUTER],
        }
    }

    pub fn shards(&self) -> Vec<u64> {
        match self {
            Topology::Shard(..) => vec![1],
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
            Topology::Shard(..) => n.node,
            Topology::Unified(_) => node_ref(n.shard, n.node),
        }
    }

    pub fn pid(&self, n: NodeRef) -> Option<u32> {
        match self {
            Topology::Shard(c, _) => c.pid(n.node),
            Topology::Unified(u) => u
                .pid(Proc::Node(n.shard, n.node))
                .ok()
                .filter(|p| u.is_ours(*p)),
        }
    }

    pub fn udp_ports(&self, n: NodeRef) -> Vec<u16> {
        match self {
            Topology::Shard(c, _) => c.udp_ports(n.node),
            Topology::Unified(u) => {
                let p = u.ports();
                vec![p.raft(n.shard, n.node), p.http(n.shard, n.node)]
            }
        }
    }

    pub async fn kill9(&self, n: NodeRef) {
        match self {
            Topology::Shard(c, _) => c.kill9(n.node),
            Topology::Unified(u) => {
                u.kill9(Proc::Node(n.shard, n.node)).await;
            }
        }
    }

    pub async fn restart(&self, n: NodeRef) {
        match self {
            Topology::Shard(c, _) => c.restart(n.node).await,
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
            Topology::Shard(c, _) => {
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
            Topology::Shard(c, _) => c.dump_logs(lines),
            Topology::Unified(u) => u.dump_logs(lines),
        }
    }
}
