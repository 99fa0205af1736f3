//! The nemesis suite: concurrent clients record a history while faults hit real processes;
//! after every fault has healed, a final read of each key closes the history and
//! `unikv-checker` decides whether it is linearizable and whether an acknowledged write was
//! lost. Used by `tests/nemesis.rs` (a short version in CI) and the `nemesis` binary
//! (`scripts/nemesis.sh`, campaigns of many runs).

pub mod faults;
pub mod firewall;
pub mod history;
pub mod spaces;
pub mod topology;
pub mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::prelude::*;

use faults::{FaultKind, FaultLog};
use firewall::Firewall;
use history::{History, OpKind, Record, Status};
use topology::{Kind, Topology};
use workload::Workload;

/// One run's settings.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub topology: Kind,
    /// How long clients run while faults are applied.
    pub duration: Duration,
    pub clients: usize,
    pub keys: usize,
    pub faults: Vec<FaultKind>,
    /// Pause between one fault healing and the next starting.
    pub quiet: Duration,
    /// How long a fault is held (a random time in this range).
    pub hold_ms: (u64, u64),
    pub op_timeout: Duration,
    /// Clock-rate fault for the whole run: every shard's nodes 2 and 3 run their clocks
    /// (monotonic included) at this rate, so whichever node leads, a follower's clock runs at
    /// another rate (1.4: within the lease's drift margin; 2: beyond it).
    pub clock_rate: Option<f64>,
    /// Unified cluster: every slot move copies first (`--move_copy_min_kb 0`); false: small
    /// slots frozen and handed off up to 16 per target at once (`--move_batch_slots 16`).
    pub copy_first: bool,
    /// Extra node flags (e.g. `--lease_reads false`) — single shard only.
    pub node_flags: Vec<(String, String)>,
    pub seed: u64,
    /// Where the history (JSON lines) is written.
    pub out_dir: PathBuf,
}

impl RunConfig {
    pub fn new(topology: Kind, duration: Duration, seed: u64, out_dir: PathBuf) -> RunConfig {
        RunConfig {
            topology,
            duration,
            clients: 16,
            keys: 64,
            faults: FaultKind::ALL.to_vec(),
            quiet: Duration::from_millis(1500),
            hold_ms: (1500, 4000),
            op_timeout: Duration::from_secs(3),
            clock_rate: None,
            copy_first: true,
            node_flags: Vec::new(),
            seed,
            out_dir,
        }
    }
}

/// What one run found.
#[derive(Debug)]
pub struct RunResult {
    pub history_path: PathBuf,
    pub ops: usize,
    pub ok: usize,
    pub info: usize,
    pub fail: usize,
    pub faults: FaultLog,
    pub report: unikv_checker::Report,
}

impl RunResult {
    pub fn is_valid(&self) -> bool {
        self.report.is_valid()
    }

    pub fn summary(&self) -> String {
        let faults: Vec<String> = self
            .faults
            .counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "ops={} ok={} info={} fail={} faults[{}] anomalies={} lost={} undecided={} verdict={} history={}",
            self.ops,
            self.ok,
            self.info,
            self.fail,
            faults.join(" "),
            self.report.anomalies.len(),
            self.report.lost_writes.len(),
            self.report.undecided.len(),
            self.report.verdict(),
            self.history_path.display()
        )
    }
}

/// Runs clients and faults on a fresh cluster, heals, reads every key, checks the history.
pub async fn run_once(config: &RunConfig) -> anyhow::Result<RunResult> {
    std::fs::create_dir_all(&config.out_dir)?;
    let firewall = Firewall::new()?;
    let flags: Vec<(&str, &str)> = config
        .node_flags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let power_cuts = config.faults.contains(&FaultKind::PowerCut);
    let topo = Topology::start(config.topology, power_cuts, config.copy_first, &flags).await;
    if config.topology == Kind::Unified {
        let moves = if config.copy_first {
            "every slot copied first"
        } else {
            "small slots frozen, batched per target"
        };
        eprintln!("[nemesis] slot moves: {moves}");
    }
    if let Some(rate) = config.clock_rate {
        topo.set_clock_rate(rate).await;
        eprintln!("[nemesis] clocks of nodes 2 and 3 of every shard run at x{rate}");
    }
    let result = drive(config, &topo, &firewall).await;
    // Heal before anything else so a failing run leaves no rule behind (Drop removes the chain).
    let _ = firewall.heal();
    drop(firewall);
    if result.as_ref().map_or(true, |r| !r.is_valid()) {
        topo.dump_logs(40);
    }
    result
}

async fn drive(
    config: &RunConfig,
    topo: &Topology,
    firewall: &Firewall,
) -> anyhow::Result<RunResult> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let tag: u32 = rng.random();
    let collections = topo.kind() == Kind::Unified;
    if collections {
        spaces::create(topo).await?;
    }
    let keys = spaces::keys(tag, config.keys.max(1), collections);
    let history = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let workload = Arc::new(Workload {
        api: topo.api(),
        endpoints: topo.endpoints(),
        keys: keys.clone(),
        history: history.clone(),
        stop: stop.clone(),
        next_process: Arc::new(AtomicU64::new(1)),
        op_timeout: config.op_timeout,
    });
    let clients: Vec<_> = (0..config.clients.max(1))
        .map(|c| {
            tokio::spawn(
                workload
                    .clone()
                    .client(config.seed ^ ((c as u64 + 1) * 0x9e37)),
            )
        })
        .collect();

    // The nemesis: quiet, fault, heal, ... until the time is up.
    let mut log = FaultLog::default();
    if let Some(rate) = config.clock_rate {
        log.counts.insert(format!("clock_x{rate}"), 1);
    }
    let end = Instant::now() + config.duration;
    let mut fault_error = None;
    while Instant::now() + config.quiet < end && !config.faults.is_empty() {
        tokio::time::sleep(config.quiet).await;
        let kind = config.faults[rng.random_range(0..config.faults.len())];
        let (lo, hi) = config.hold_ms;
        let hold = Duration::from_millis(rng.random_range(lo..=hi.max(lo)));
        if let Err(e) = faults::apply(topo, firewall, kind, hold, &keys, &mut rng, &mut log).await {
            fault_error = Some(e);
            break;
        }
    }
    let left = end.saturating_duration_since(Instant::now());
    tokio::time::sleep(left).await;
    firewall.heal()?;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    if let Some(e) = fault_error {
        return Err(e.context("applying a fault"));
    }

    // Every fault healed: the cluster must recover, and each key gets a final read.
    topo.wait_healthy(Duration::from_secs(60)).await;
    final_reads(topo, &history, &keys).await?;

    let path = config
        .out_dir
        .join(format!("history-{}-{}.jsonl", config.topology, config.seed));
    history.write_jsonl(&path)?;
    let parsed = unikv_checker::History::read_file(&path)?;
    let report = unikv_checker::check(&parsed, &unikv_checker::CheckOptions::default());
    Ok(RunResult {
        history_path: path,
        ops: history.len(),
        ok: history.count(Status::Ok),
        info: history.count(Status::Info),
        fail: history.count(Status::Fail),
        faults: log,
        report,
    })
}

/// Reads every key until the read succeeds (bounded), recording the reads in the history.
async fn final_reads(topo: &Topology, history: &History, keys: &[String]) -> anyhow::Result<()> {
    let api = topo.api();
    let endpoints = topo.endpoints();
    let process = u64::MAX / 2;
    for key in keys {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let via = endpoints[0];
            let invoke_ns = history.now_ns();
            let (status, result, error) =
                workload::execute(&api, via, OpKind::Get, key, None, Duration::from_secs(5)).await;
            if status == Status::Ok {
                history.push(Record {
                    process,
                    key: key.clone(),
                    op: OpKind::Get,
                    value: None,
                    result,
                    status,
                    invoke_ns,
                    complete_ns: Some(history.now_ns()),
                    error: None,
                });
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "final read of {key} kept failing after every fault healed: {error:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
