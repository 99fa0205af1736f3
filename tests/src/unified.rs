//! The unified cluster (3 shards x 3 nodes + one router), started, restarted and stopped only
//! through `scripts/run_unified.sh`, the path users run, with per-test ports and a tempdir.
//!
//! Every process of a cluster is addressed through one [`Api`]: node `N` of shard `S` is id
//! [`node_ref`]`(S, N)` (= `10 * S + N`, e.g. 21 = shard 2 node 1) and the router is
//! [`ROUTER`] (0). A cluster starts with [`SHARDS`] shards (or as many as
//! [`Unified::start_shards`] asks for) and can grow to [`MAX_SHARDS`] with
//! [`Unified::add_shard`] (`run_unified.sh addshard S`), whose ports are reserved up front.
//! Port blocks, script and binary paths live in `unified_env` (re-exported here); the typed
//! status queries and the waits built on them in `unified/queries.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;

use crate::api::{Api, Body, Method, RaftStatus, PROBE_TIMEOUT};
use crate::machine::target_dir;
use crate::wait::{wait_until_ok, wait_until_ok_every};

/// Shards the script starts (`UNIKV_SHARDS`) unless a test asks for another count.
pub const SHARDS: u64 = 3;
/// The [`Api`] id of the router.
pub const ROUTER: u64 = 0;
/// The router's per-request deadline in these tests (`--request_timeout_ms`).
pub const ROUTER_DEADLINE: Duration = Duration::from_millis(2_000);
/// Bound of cluster-level waits (convergence, a restarted node catching up).
pub const UNIFIED_WAIT: Duration = Duration::from_secs(60);
/// Bound of one `run_unified.sh` invocation (`start` waits up to 60 s per shard and 90 s for
/// the router itself).
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(330);
/// Lines of each log printed when a test fails.
pub const LOG_TAIL_LINES: usize = 60;

/// The [`Api`] id of node `node` of shard `shard`.
pub fn node_ref(shard: u64, node: u64) -> u64 {
    10 * shard + node
}

/// The shard of an [`Api`] node id made by [`node_ref`].
pub fn shard_of(id: u64) -> u64 {
    id / 10
}

/// The node number within its shard of an [`Api`] node id made by [`node_ref`].
pub fn node_of(id: u64) -> u64 {
    id % 10
}

/// A process the script started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proc {
    /// Node `.1` of shard `.0`.
    Node(u64, u64),
    /// The router.
    Router,
}

impl fmt::Display for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proc::Node(s, n) => write!(f, "node {s}/{n}"),
            Proc::Router => write!(f, "router"),
        }
    }
}

/// Every process of a cluster of [`SHARDS`] shards: nine nodes, then the router (for a
/// cluster of another size, or one that grew, see [`Unified::procs`]).
pub fn all_procs() -> Vec<Proc> {
    let mut v: Vec<Proc> = (1..=SHARDS)
        .flat_map(|s| (1..=NODES_PER_SHARD).map(move |n| Proc::Node(s, n)))
        .collect();
    v.push(Proc::Router);
    v
}

pub use crate::unified_env::*;
pub use crate::views::*;

mod queries;

/// A unified cluster (3 shards unless asked otherwise) run by `scripts/run_unified.sh` in a
/// tempdir. Dropping it runs `run_unified.sh stop` and then SIGKILLs any process of its pid
/// files still alive.
pub struct Unified {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    data: PathBuf,
    logs: PathBuf,
    target_dir: PathBuf,
    ports: UnifiedPorts,
    node_args: String,
    router_args: String,
    /// Shards `run_unified.sh start` starts (`UNIKV_SHARDS`).
    shards: u64,
    /// Shards started later with `run_unified.sh addshard`.
    added: Mutex<BTreeSet<u64>>,
    api: Api,
    /// Every pid ever read from this cluster's pid files.
    pids: Mutex<BTreeSet<u32>>,
    /// Script invocations so far (names the script output files).
    /// Nodes whose clocks run at another rate from their next start (`UNIKV_CLOCK_RATE`).
    clock_rates: Mutex<BTreeMap<(u64, u64), f64>>,
    /// `FAILPOINTS` for every node start (empty: none).
    failpoints: String,
    runs: AtomicUsize,
    _slot: OwnedSemaphorePermit,
}

impl Unified {
    /// Starts a cluster whose router answers within [`ROUTER_DEADLINE`].
    pub async fn start() -> Unified {
        Unified::start_with(&[], &[]).await
    }

    /// Starts a cluster with extra node and router flags (`UNIKV_NODE_ARGS`,
    /// `UNIKV_ROUTER_ARGS`, after `--request_timeout_ms 2000` for the router) through
    /// `run_unified.sh start`, which returns once the router sees every slot owned and every
    /// leader.
    pub async fn start_with(node_args: &[&str], router_args: &[&str]) -> Unified {
        Unified::start_shards(SHARDS, node_args, router_args).await
    }

    /// Like [`Unified::start_with`] with `shards` shards (`UNIKV_SHARDS`, 1..=[`MAX_SHARDS`]).
    pub async fn start_shards(shards: u64, node_args: &[&str], router_args: &[&str]) -> Unified {
        Unified::start_failpoints(shards, node_args, router_args, "").await
    }

    /// Like [`Unified::start_shards`] with every node started (and restarted) with
    /// `FAILPOINTS=failpoints` (the node's fault-injection points, `unikv_node::failpoints`).
    pub async fn start_failpoints(
        shards: u64,
        node_args: &[&str],
        router_args: &[&str],
        failpoints: &str,
    ) -> Unified {
        assert!(
            (1..=MAX_SHARDS).contains(&shards),
            "a test cluster has 1..={MAX_SHARDS} shards, not {shards}"
        );
        let slot = cluster_slots()
            .acquire_owned()
            .await
            .expect("cluster semaphore closed");
        let target_dir = target_dir();
        for bin in ["unikv-node", "unikv-router"] {
            let p = target_dir.join("release").join(bin);
            assert!(
                p.is_file(),
                "{} not found: build it with `cargo build --release -p {bin}`",
                p.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("unikv-unified-")
            .tempdir()
            .expect("create tempdir");
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        let logs = root.join("logs");
        fs::create_dir_all(&logs).expect("create logs dir");
        let ports = alloc_unified_ports();
        let mut addrs = BTreeMap::new();
        addrs.insert(ROUTER, format!("127.0.0.1:{}", ports.router));
        for s in 1..=MAX_SHARDS {
            for n in 1..=NODES_PER_SHARD {
                addrs.insert(node_ref(s, n), format!("127.0.0.1:{}", ports.http(s, n)));
            }
        }
        let mut all_router_args = vec![
            "--request_timeout_ms".to_string(),
            ROUTER_DEADLINE.as_millis().to_string(),
        ];
        all_router_args.extend(router_args.iter().map(|a| a.to_string()));
        let u = Unified {
            dir: Some(dir),
            root,
            data,
            logs,
            target_dir,
            ports,
            node_args: node_args.join(" "),
            router_args: all_router_args.join(" "),
            shards,
            added: Mutex::new(BTreeSet::new()),
            api: Api::new(addrs),
            pids: Mutex::new(BTreeSet::new()),
            runs: AtomicUsize::new(0),
            clock_rates: Mutex::new(BTreeMap::new()),
            failpoints: failpoints.to_string(),
            _slot: slot,
        };
        eprintln!(
            "[unified] dir {} http base {} raft base {} router port {}",
            u.root.display(),
            ports.http_base,
            ports.raft_base,
            ports.router
        );
        let t0 = Instant::now();
        let out = u
            .script(&["start"])
            .await
            .unwrap_or_else(|e| panic!("run_unified.sh start failed: {e:#}"));
        assert!(
            out.contains("unikv ready"),
            "run_unified.sh start exited 0 without \"unikv ready\":\n{out}"
        );
        eprintln!("[unified] ready in {:?}", t0.elapsed());
        u
    }

    /// A cloneable client for every node ([`node_ref`]) and the router ([`ROUTER`]).
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// The cluster's ports.
    pub fn ports(&self) -> UnifiedPorts {
        self.ports
    }

    /// The tempdir holding `data/` and `logs/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// [`Api`] ids of the nodes of a shard.
    pub fn shard_nodes(&self, shard: u64) -> Vec<u64> {
        (1..=NODES_PER_SHARD).map(|n| node_ref(shard, n)).collect()
    }

    /// The shards this cluster runs: those started first and those added since.
    pub fn shard_ids(&self) -> Vec<u64> {
        let mut ids: BTreeSet<u64> = (1..=self.shards).collect();
        ids.extend(self.lock_added().iter().copied());
        ids.into_iter().collect()
    }

    /// Every process of this cluster: the nodes of [`Unified::shard_ids`], then the router.
    pub fn procs(&self) -> Vec<Proc> {
        let mut v: Vec<Proc> = self
            .shard_ids()
            .into_iter()
            .flat_map(|s| (1..=NODES_PER_SHARD).map(move |n| Proc::Node(s, n)))
            .collect();
        v.push(Proc::Router);
        v
    }

    /// [`Api`] ids of every node of [`Unified::shard_ids`].
    pub fn all_nodes(&self) -> Vec<u64> {
        self.shard_ids()
            .into_iter()
            .flat_map(|s| self.shard_nodes(s))
            .collect()
    }

    fn lock_added(&self) -> MutexGuard<'_, BTreeSet<u64>> {
        self.added.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let p = self.ports;
        vec![
            ("CARGO_TARGET_DIR", self.target_dir.display().to_string()),
            ("UNIKV_SHARDS", self.shards.to_string()),
            ("UNIKV_HTTP_BASE", p.http_base.to_string()),
            ("UNIKV_RAFT_BASE", p.raft_base.to_string()),
            ("UNIKV_ROUTER_PORT", p.router.to_string()),
            ("UNIKV_DATA", self.data.display().to_string()),
            ("UNIKV_LOGS", self.logs.display().to_string()),
            ("UNIKV_HOST", "127.0.0.1".to_string()),
            ("UNIKV_NO_BUILD", "1".to_string()),
            ("UNIKV_NODE_ARGS", self.node_args.clone()),
            ("UNIKV_ROUTER_ARGS", self.router_args.clone()),
            ("FAILPOINTS", self.failpoints.clone()),
        ]
    }

    /// A fresh file in the logs dir for the output of one script invocation.
    fn script_output(&self, args: &[&str]) -> (PathBuf, File) {
        let run = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let path = self
            .logs
            .join(format!("script-{run:02}-{}.txt", args.join("-")));
        let file = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        (path, file)
    }

    /// Runs `run_unified.sh <args>` with this cluster's environment, at most
    /// [`SCRIPT_TIMEOUT`]; returns its output (stdout and stderr) if it exits 0.
    pub async fn script(&self, args: &[&str]) -> anyhow::Result<String> {
        self.script_env(args, &[]).await
    }

    /// [`Unified::script`] with extra environment variables.
    pub async fn script_env(
        &self,
        args: &[&str],
        extra: &[(&'static str, String)],
    ) -> anyhow::Result<String> {
        let (out_path, file) = self.script_output(args);
        let err_file = file.try_clone().context("clone output file")?;
        let mut child = tokio::process::Command::new("bash")
            .arg(script_path())
            .args(args)
            .envs(self.env())
            .envs(extra.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err_file))
            .kill_on_drop(true)
            .spawn()
            .context("spawn bash scripts/run_unified.sh")?;
        let waited = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait()).await;
        self.record_pids();
        let out = fs::read_to_string(&out_path).unwrap_or_default();
        match waited {
            Ok(Ok(status)) if status.success() => Ok(out),
            Ok(Ok(status)) => bail!("run_unified.sh {args:?} exited with {status}; output:\n{out}"),
            Ok(Err(e)) => bail!("waiting for run_unified.sh {args:?}: {e}"),
            Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "run_unified.sh {args:?} did not finish in {SCRIPT_TIMEOUT:?}; output:\n{out}"
                )
            }
        }
    }

    fn pid_file(&self, p: Proc) -> PathBuf {
        let pids = self.data.join("pids");
        match p {
            Proc::Node(s, n) => pids.join(format!("unikv_{s}_{n}.pid")),
            Proc::Router => pids.join("router.pid"),
        }
    }

    /// The pid in a process's pid file.
    pub fn pid(&self, p: Proc) -> anyhow::Result<u32> {
        let f = self.pid_file(p);
        let text = fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{} holds {text:?}, not a pid", f.display()))
    }

    fn lock_pids(&self) -> MutexGuard<'_, BTreeSet<u32>> {
        self.pids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers every pid now in the pid files, so Drop can clean them up whatever happens.
    fn record_pids(&self) {
        let found: Vec<u32> = self
            .procs()
            .into_iter()
            .filter_map(|p| self.pid(p).ok())
            .collect();
        self.lock_pids().extend(found);
    }

    /// True if `pid` is a live unikv process of this cluster (its command line names our
    /// data dir), so a recycled pid is never signalled.
    pub fn is_ours(&self, pid: u32) -> bool {
        if !pid_alive(pid) {
            return false;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        cmdline.contains("unikv-") && cmdline.contains(&*self.data.to_string_lossy())
    }

    /// True if the process of a pid file is alive.
    pub fn is_running(&self, p: Proc) -> bool {
        self.pid(p).is_ok_and(|pid| self.is_ours(pid))
    }

    /// Panics naming every process of `procs` that is not running (a crash, or a pid file
    /// the script did not write).
    pub fn assert_running(&self, procs: &[Proc]) {
        let dead: Vec<String> = procs
            .iter()
            .filter(|p| !self.is_running(**p))
            .map(|p| format!("{p} (pid file: {:?})", self.pid(*p).ok()))
            .collect();
        assert!(
            dead.is_empty(),
            "processes not running: {}",
            dead.join(", ")
        );
    }

    /// SIGKILLs a running process (by its pid file) and waits until it is gone; returns its
    /// pid.
    pub async fn kill9(&self, p: Proc) -> u32 {
        let pid = self.pid(p).unwrap_or_else(|e| panic!("kill9 {p}: {e:#}"));
        assert!(self.is_ours(pid), "kill9 {p}: pid {pid} is not running");
        self.lock_pids().insert(pid);
        send_sigkill(pid).unwrap_or_else(|e| panic!("kill -9 {pid} ({p}): {e:#}"));
        wait_until_ok(
            Duration::from_secs(10),
            &format!("{p} (pid {pid}) to die"),
            || async {
                if pid_alive(pid) {
                    Err("still alive")
                } else {
                    Ok(())
                }
            },
        )
        .await;
        eprintln!("[unified] kill -9 {p} (pid {pid})");
        pid
    }

    /// Runs node S/N's clocks at `rate` from its next start (None: real time).
    pub fn set_clock_rate(&self, shard: u64, node: u64, rate: Option<f64>) {
        let mut rates = self.clock_rates.lock().unwrap_or_else(|e| e.into_inner());
        match rate {
            Some(r) => rates.insert((shard, node), r),
            None => rates.remove(&(shard, node)),
        };
    }

    /// `run_unified.sh node S N`: (re)starts one node with its flags and data dir.
    pub async fn restart_node(&self, shard: u64, node: u64) {
        let (s, n) = (shard.to_string(), node.to_string());
        let rate = self
            .clock_rates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(shard, node))
            .copied();
        let extra: Vec<_> = rate
            .map(|r| ("UNIKV_CLOCK_RATE", r.to_string()))
            .into_iter()
            .collect();
        self.script_env(&["node", &s, &n], &extra)
            .await
            .unwrap_or_else(|e| panic!("run_unified.sh node {s} {n}: {e:#}"));
        eprintln!(
            "[unified] restarted node {shard}/{node} (pid {:?})",
            self.pid(Proc::Node(shard, node)).ok()
        );
    }

    /// `run_unified.sh router`: (re)starts the router.
    pub async fn restart_router(&self) {
        self.script(&["router"])
            .await
            .unwrap_or_else(|e| panic!("run_unified.sh router: {e:#}"));
        eprintln!(
            "[unified] restarted the router (pid {:?})",
            self.pid(Proc::Router).ok()
        );
    }

    /// Prints the state of every process and the last `lines` lines of every log.
    pub fn dump_logs(&self, lines: usize) {
        for p in self.procs() {
            let pid = self.pid(p).ok();
            let alive = pid.is_some_and(|pid| self.is_ours(pid));
            eprintln!("[unified] {p}: pid {pid:?} alive={alive}");
        }
        crate::log_tails::print_log_tails("unified", &self.logs, |_| true, lines);
    }

    /// `run_unified.sh stop`, blocking (for Drop), bounded by [`SCRIPT_TIMEOUT`].
    fn stop_blocking(&self) -> anyhow::Result<()> {
        let (out_path, file) = self.script_output(&["stop"]);
        let err_file = file.try_clone()?;
        let mut child = std::process::Command::new("bash")
            .arg(crate::unified_env::try_script_path()?)
            .arg("stop")
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err_file))
            .spawn()
            .context("spawn run_unified.sh stop")?;
        let deadline = Instant::now() + SCRIPT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                let out = fs::read_to_string(&out_path).unwrap_or_default();
                bail!("run_unified.sh stop exited with {status}: {out}");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("run_unified.sh stop did not finish in {SCRIPT_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `kill -9 <pid>`.
fn send_sigkill(pid: u32) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .context("run kill")?;
    if !status.success() {
        bail!("kill -9 {pid} exited with {status}");
    }
    Ok(())
}

impl Drop for Unified {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            eprintln!("[unified] test failed; process states and logs follow");
            self.dump_logs(LOG_TAIL_LINES);
        }
        self.record_pids();
        if let Err(e) = self.stop_blocking() {
            eprintln!("[unified] {e:#}");
        }
        let pids: Vec<u32> = self.lock_pids().iter().copied().collect();
        for pid in pids {
            if self.is_ours(pid) {
                eprintln!("[unified] pid {pid} survived run_unified.sh stop; kill -9");
                if let Err(e) = send_sigkill(pid) {
                    eprintln!("[unified] {e:#}");
                }
            }
        }
        // UNIKV_KEEP_DIRS=1 keeps the data and logs of every test, passed or failed.
        if std::env::var_os("UNIKV_KEEP_DIRS").is_some() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("[unified] kept {}", kept.display());
            }
        }
        let _ = std::io::stderr().flush();
    }
}
