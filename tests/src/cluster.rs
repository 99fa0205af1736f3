//! A 3-node `unikv-node` cluster for one shard, run as real processes in a fresh tempdir.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::{Api, RaftStatus, Resp};
use crate::machine::concurrent_clusters;
use crate::ports::alloc_ports;
use crate::wait::wait_until_ok;

/// The shard every node of a [`Cluster`] serves.
pub const SHARD_ID: u64 = 1;
/// Bound of every cluster-level wait (startup, convergence, restart).
pub const WAIT: Duration = Duration::from_secs(30);
/// Lines of each node log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 80;

/// Tuning flags passed to every node unless a test overrides them.
const DEFAULT_FLAGS: &[(&str, &str)] = &[
    ("--heartbeat_ms", "100"),
    ("--election_min_ms", "500"),
    ("--election_max_ms", "1000"),
];

/// Path of the binary under test: `$UNIKV_NODE_BIN`, else `unikv-node` in the profile dir of
/// this executable (`<profile>/deps/<test exe>` or `<profile>/<bin>`).
pub fn node_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("UNIKV_NODE_BIN") {
        return PathBuf::from(p);
    }
    crate::machine::profile_dir().join("unikv-node")
}

/// Limits how many clusters run at once in this test process, so parallel tests on a small
/// machine do not starve each other's heartbeats. `$UNIKV_TEST_CLUSTERS` overrides the default
/// (half the CPUs, at least 2).
fn cluster_slots() -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS
        .get_or_init(|| Arc::new(Semaphore::new(concurrent_clusters(2, 2))))
        .clone()
}

struct NodeState {
    child: Option<Child>,
    /// How many times the process was started.
    runs: u32,
    /// Run the next start's clocks at this rate (through `faketime`, monotonic included).
    clock_rate: Option<f64>,
}

struct Node {
    id: u64,
    http_port: u16,
    raft_port: u16,
    data_dir: PathBuf,
    state: Mutex<NodeState>,
}

impl Node {
    fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn raft_addr(&self) -> String {
        format!("127.0.0.1:{}", self.raft_port)
    }
}

/// Three `unikv-node` processes forming shard 1. Dropping it kills every process it started.
pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// The local development CA's directory, shared by every node; or, for a cluster
    /// exposed beyond loopback (`--http_host`), the folder of the nodes' own certificate
    /// directories (`node-1-N`, issued with `unikv-node certs`).
    tls_dir: PathBuf,
    issued: bool,
    bin: PathBuf,
    flags: Vec<(String, String)>,
    nodes: Vec<Node>,
    api: Api,
    _slot: OwnedSemaphorePermit,
}

impl Cluster {
    /// Starts a 3-node cluster with default flags and waits until it is fully formed.
    pub async fn start() -> Cluster {
        Cluster::start_with(&[]).await
    }

    /// Starts a 3-node cluster, passing `flags` (`("--flag", "value")`, overriding defaults)
    /// to every node: node 1 first (waits until it leads), then nodes 2 and 3, joined through
    /// node 1; returns once all three report the same leader and voters `[1, 2, 3]`.
    pub async fn start_with(flags: &[(&str, &str)]) -> Cluster {
        Cluster::start_on(flags, None).await
    }

    /// [`Cluster::start_with`] with the nodes' data dirs and TLS dir under `data_root` (e.g.
    /// a test file system) instead of the cluster's temporary folder, which keeps the logs.
    pub async fn start_on(flags: &[(&str, &str)], data_root: Option<&Path>) -> Cluster {
        let slot = cluster_slots()
            .acquire_owned()
            .await
            .expect("cluster semaphore closed");
        let bin = node_bin();
        assert!(
            bin.is_file(),
            "node binary {} not found: build it with `cargo build --release -p unikv-node` or set UNIKV_NODE_BIN",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("unikv-test-")
            .tempdir()
            .expect("create tempdir");
        let root = dir.path().to_path_buf();
        let data_root = data_root.map_or_else(|| root.clone(), Path::to_path_buf);
        let tls_dir = data_root.join("tls");
        fs::create_dir_all(&tls_dir).expect("create tls dir");
        let issued = flags.iter().any(|(k, _)| *k == "--http_host");

        let mut all_flags: Vec<(String, String)> = DEFAULT_FLAGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in flags {
            let k = k.to_string();
            match all_flags.iter_mut().find(|(name, _)| *name == k) {
                Some(slot) => slot.1 = v.to_string(),
                None => all_flags.push((k, v.to_string())),
            }
        }

        // Nodes with an admin token get it from the harness's calls too.
        let admin_token = all_flags
            .iter()
            .find(|(k, _)| k == "--admin_token_file")
            .map(|(_, f)| {
                fs::read_to_string(f)
                    .expect("read the admin token file")
                    .trim()
                    .to_owned()
            });
        let ports = alloc_ports(6);
        let mut nodes = Vec::new();
        let mut addrs = BTreeMap::new();
        for i in 0..3u64 {
            let http_port = ports[2 * i as usize];
            let raft_port = ports[2 * i as usize + 1];
            let id = i + 1;
            let data_dir = data_root.join(format!("node-{id}"));
            addrs.insert(id, format!("127.0.0.1:{http_port}"));
            nodes.push(Node {
                id,
                http_port,
                raft_port,
                data_dir,
                state: Mutex::new(NodeState {
                    child: None,
                    runs: 0,
                    clock_rate: None,
                }),
            });
        }
        let cluster = Cluster {
            dir: Some(dir),
            root,
            tls_dir,
            issued,
            bin,
            flags: all_flags,
            nodes,
            api: Api::new(addrs).with_admin_token(admin_token),
            _slot: slot,
        };
        eprintln!(
            "[cluster] dir {} nodes: {}",
            cluster.root.display(),
            cluster
                .nodes
                .iter()
                .map(|n| format!("{}=http:{}/raft:{}", n.id, n.http_port, n.raft_port))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let t0 = Instant::now();

        cluster.spawn(1);
        cluster.wait_healthy(1).await;
        wait_until_ok(WAIT, "node 1 to become leader of the new group", || async {
            cluster.check_processes();
            let s = cluster.status(1).await.map_err(|e| format!("{e:#}"))?;
            if s.role == "leader" {
                Ok(())
            } else {
                Err(s.summary())
            }
        })
        .await;

        for id in [2, 3] {
            cluster.spawn(id);
        }
        for id in [2, 3] {
            cluster.wait_healthy(id).await;
            let addr = cluster.raft_addr(id);
            let idstr = id.to_string();
            let what = format!("node {id} to join via node 1");
            wait_until_ok(WAIT, &what, || async {
                cluster.check_processes();
                let r = cluster
                    .api
                    .join(1, &idstr, &addr)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                if r.is_ok() && r.field("ok") == Some(&serde_json::Value::Bool(true)) {
                    Ok(())
                } else {
                    Err(r.to_string())
                }
            })
            .await;
        }
        let leader = cluster.wait_converged(WAIT).await;
        eprintln!(
            "[cluster] formed in {:?}, leader node {leader}",
            t0.elapsed()
        );
        cluster
    }

    /// A cloneable HTTP client for this cluster's nodes.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// Node ids `[1, 2, 3]`.
    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// `127.0.0.1:<http port>` of a node.
    pub fn http_addr(&self, node: u64) -> String {
        self.api.http_addr(node).to_string()
    }

    /// `127.0.0.1:<raft (QUIC) port>` of a node.
    pub fn raft_addr(&self, node: u64) -> String {
        self.node(node).raft_addr()
    }

    /// The tempdir holding data dirs, TLS dir and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn node(&self, id: u64) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn log_path(&self, id: u64, run: u32) -> PathBuf {
        if run <= 1 {
            self.root.join(format!("node-{id}.log"))
        } else {
            self.root.join(format!("node-{id}.run{run}.log"))
        }
    }

    /// The `--tls_dir` of node `id`; issued certificates are made on first use.
    fn node_tls_dir(&self, id: u64) -> PathBuf {
        if !self.issued {
            return self.tls_dir.clone();
        }
        let dir = self.tls_dir.join(format!("node-{SHARD_ID}-{id}"));
        if !dir.join("cert.pem").exists() {
            let out = Command::new(&self.bin)
                .arg("certs")
                .arg("--ca_dir")
                .arg(self.tls_dir.join("ca"))
                .arg("--out")
                .arg(&dir)
                .args(["node", "--shard_id", &SHARD_ID.to_string()])
                .args(["--node_id", &id.to_string()])
                .output()
                .expect("run unikv-node certs");
            assert!(
                out.status.success(),
                "unikv-node certs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    }

    fn spawn(&self, id: u64) {
        let node = self.node(id);
        let mut st = node.lock();
        assert!(st.child.is_none(), "node {id} is already running");
        st.runs += 1;
        let log = self.log_path(id, st.runs);
        let out_path = self.root.join(format!("node-{id}.stdout.log"));
        let open = |p: &Path| {
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
        };
        let stdout = open(&out_path);
        let stderr = stdout.try_clone().expect("clone stdout file");
        let mut cmd = Command::new(&self.bin);
        if let Some(rate) = st.clock_rate {
            cmd.envs(crate::clock::env(rate));
        }
        cmd.arg("--shard_id")
            .arg(SHARD_ID.to_string())
            .arg("--node_id")
            .arg(id.to_string())
            .arg("--port")
            .arg(node.http_port.to_string())
            .arg("--raft_addr")
            .arg(node.raft_addr())
            .arg("--data_dir")
            .arg(&node.data_dir)
            .arg("--tls_dir")
            .arg(self.node_tls_dir(id))
            .arg("--log_file")
            .arg(&log);
        for (k, v) in &self.flags {
            cmd.arg(k).arg(v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        eprintln!(
            "[cluster] started node {id} (run {}, pid {})",
            st.runs,
            child.id()
        );
        st.child = Some(child);
    }

    async fn wait_healthy(&self, id: u64) {
        let what = format!("node {id} to answer GET /health");
        wait_until_ok(WAIT, &what, || async {
            self.check_processes();
            if self.api.healthy(id).await {
                Ok(())
            } else {
                Err("not healthy yet".to_string())
            }
        })
        .await;
    }

    /// Panics if a node that should be running has exited (crash), with its exit status.
    pub fn check_processes(&self) {
        for node in &self.nodes {
            let mut st = node.lock();
            if let Some(child) = st.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    st.child = None;
                    drop(st);
                    panic!(
                        "node {} exited unexpectedly (not killed by this harness): {status}",
                        node.id
                    );
                }
            }
        }
    }

    /// True if this harness has a running process for the node.
    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).lock().child.is_some()
    }

    /// The pid of a node's running process.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).lock().child.as_ref().map(|c| c.id())
    }

    /// A node's UDP ports: QUIC (Raft and KV RPCs) and gossip (the HTTP port number).
    pub fn udp_ports(&self, id: u64) -> Vec<u16> {
        let n = self.node(id);
        vec![n.raft_port, n.http_port]
    }

    /// Every node id but `leader`.
    pub fn followers(&self, leader: u64) -> Vec<u64> {
        self.node_ids()
            .into_iter()
            .filter(|n| *n != leader)
            .collect()
    }

    /// Asserts that every node reads `key` as `expected` (`None` = not found).
    pub async fn assert_value_everywhere(&self, key: &str, expected: Option<&str>) {
        for n in self.node_ids() {
            assert_eq!(
                self.get_value(n, key).await.as_deref(),
                expected,
                "value of {key:?} read on node {n}"
            );
        }
    }

    /// Nodes this harness believes are running.
    pub fn live_nodes(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.lock().child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// SIGKILLs a running node (`Child::kill` is SIGKILL on unix) and reaps it.
    pub fn kill9(&self, id: u64) {
        let mut st = self.node(id).lock();
        let mut child = st
            .child
            .take()
            .unwrap_or_else(|| panic!("kill9: node {id} is not running"));
        if let Ok(Some(status)) = child.try_wait() {
            panic!("kill9: node {id} had already exited: {status}");
        }
        child.kill().expect("SIGKILL node");
        let status = child.wait().expect("reap killed node");
        eprintln!("[cluster] kill -9 node {id} ({status})");
    }

    /// Runs node `id`'s clocks at `rate` from its next start (None: real time).
    pub fn set_clock_rate(&self, id: u64, rate: Option<f64>) {
        self.node(id).lock().clock_rate = rate;
    }

    /// Sets (or replaces) a flag for the nodes' next starts.
    pub fn set_flag(&mut self, name: &str, value: &str) {
        match self.flags.iter_mut().find(|(k, _)| k == name) {
            Some(f) => f.1 = value.to_string(),
            None => self.flags.push((name.to_string(), value.to_string())),
        }
    }

    /// Starts a killed node again with the same flags and data dir; returns once its HTTP
    /// server answers `/health`.
    pub async fn restart(&self, id: u64) {
        self.spawn(id);
        self.wait_healthy(id).await;
    }

    /// `GET /raft/status` of a node.
    pub async fn status(&self, id: u64) -> anyhow::Result<RaftStatus> {
        self.api.status(id).await
    }

    /// One look at the running nodes: `Ok(leader)` if a running node says it is leader and a
    /// majority of the cluster (counting it) reports that node as leader; else a description.
    pub async fn observe_leader(&self) -> Result<u64, String> {
        let live = self.live_nodes();
        let mut statuses = Vec::new();
        let mut notes = Vec::new();
        for id in live {
            match self.status(id).await {
                Ok(s) => {
                    notes.push(s.summary());
                    statuses.push(s);
                }
                Err(e) => notes.push(format!("node {id}: {e:#}")),
            }
        }
        let candidate = statuses
            .iter()
            .filter(|s| s.role == "leader")
            .max_by_key(|s| s.term)
            .map(|s| s.node_id);
        if let Some(l) = candidate {
            let agree = statuses.iter().filter(|s| s.leader_id() == Some(l)).count();
            if agree * 2 > self.nodes.len() {
                return Ok(l);
            }
        }
        Err(notes.join(" | "))
    }

    /// Waits (up to `timeout`) for a leader among the running nodes, see [`observe_leader`].
    ///
    /// [`observe_leader`]: Cluster::observe_leader
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        wait_until_ok(timeout, "a leader acknowledged by a majority", || async {
            self.check_processes();
            self.observe_leader().await
        })
        .await
    }

    /// The current leader (waits up to 30 s for one).
    pub async fn leader(&self) -> u64 {
        self.wait_for_leader(WAIT).await
    }

    /// Waits until every running node answers `/raft/status` with the same leader, which is
    /// itself running and says it is leader, and voters `[1, 2, 3]`. Returns the leader.
    pub async fn wait_converged(&self, timeout: Duration) -> u64 {
        let all = self.node_ids();
        wait_until_ok(
            timeout,
            "all running nodes to agree on one leader and voters [1, 2, 3]",
            || async {
                self.check_processes();
                let live = self.live_nodes();
                let mut statuses = Vec::new();
                for id in &live {
                    let s = self.status(*id).await.map_err(|e| format!("{e:#}"))?;
                    statuses.push(s);
                }
                let describe = || {
                    statuses
                        .iter()
                        .map(|s| s.summary())
                        .collect::<Vec<_>>()
                        .join(" | ")
                };
                let leader = match statuses[0].leader_id() {
                    Some(l) => l,
                    None => return Err(describe()),
                };
                let consistent = statuses
                    .iter()
                    .all(|s| s.leader_id() == Some(leader) && s.sorted_voters() == all);
                let leader_ok = statuses
                    .iter()
                    .any(|s| s.node_id == leader && s.role == "leader");
                if consistent && leader_ok && live.contains(&leader) {
                    Ok(leader)
                } else {
                    Err(describe())
                }
            },
        )
        .await
    }

    /// `POST /put?key&val` on `node`.
    pub async fn put(&self, node: u64, key: &str, val: &str) -> Resp {
        self.api
            .put(node, key, val)
            .await
            .unwrap_or_else(|e| panic!("put {key:?} on node {node}: {e:#}"))
    }

    /// `POST /put`, asserting 200 `{"ok":true}`.
    pub async fn put_ok(&self, node: u64, key: &str, val: &str) {
        let r = self.put(node, key, val).await;
        assert!(
            r.is_ok() && r.field("ok") == Some(&serde_json::Value::Bool(true)),
            "put {key:?}={val:?} on node {node}: expected 200 {{\"ok\":true}}, got {r}"
        );
    }

    /// `GET /get?key` on `node`.
    pub async fn get(&self, node: u64, key: &str) -> Resp {
        self.api
            .get(node, key)
            .await
            .unwrap_or_else(|e| panic!("get {key:?} on node {node}: {e:#}"))
    }

    /// The value of `key` read on `node` (`None` = 404 not_found); panics on anything else.
    pub async fn get_value(&self, node: u64, key: &str) -> Option<String> {
        self.api
            .get_value(node, key)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `POST /append?key&val` on `node`.
    pub async fn append(&self, node: u64, key: &str, val: &str) -> Resp {
        self.api
            .append(node, key, val)
            .await
            .unwrap_or_else(|e| panic!("append {key:?} on node {node}: {e:#}"))
    }

    /// `DELETE /delete?key` on `node`.
    pub async fn delete(&self, node: u64, key: &str) -> Resp {
        self.api
            .delete(node, key)
            .await
            .unwrap_or_else(|e| panic!("delete {key:?} on node {node}: {e:#}"))
    }

    /// Prints the last `lines` lines of every node log (and captured stdout/stderr).
    pub fn dump_logs(&self, lines: usize) {
        crate::log_tails::print_log_tails(
            "cluster",
            &self.root,
            |p| p.extension().is_some_and(|x| x == "log"),
            lines,
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            let mut st = node.lock();
            if let Some(mut child) = st.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("[cluster] test failed; node logs follow");
            self.dump_logs(LOG_TAIL_LINES);
        }
        // UNIKV_KEEP_DIRS=1 keeps the data and logs of every test, passed or failed.
        if std::env::var_os("UNIKV_KEEP_DIRS").is_some() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("[cluster] kept {}", kept.display());
            }
        }
    }
}
