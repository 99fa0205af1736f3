//! The short nemesis for every CI run: two 60-second runs on a single shard and two on the
//! unified cluster, 16 clients over 64 keys under kill -9, SIGSTOP, partitions, overlapping
//! faults, power cuts of the whole shard (single shard), slot moves, chunk splits and moves,
//! addshard and removeshard (unified, whose keys are a third each in `default`, a range and a
//! custom collection), the first run of each with clock-rate faults (nodes 2 and 3 at x1.4, within the
//! lease's drift margin), then the linearizability checker. Any anomaly or lost write fails the
//! build. Needs root, iptables, faketime and /dev/fuse (scripts/setup.sh).

use std::time::Duration;

use unikv_tests::nemesis::faults::FaultKind;
use unikv_tests::nemesis::topology::Kind;
use unikv_tests::nemesis::{run_once, RunConfig};

/// `UNIKV_NEMESIS_SECS` (seconds of faults per run, default 60) and `UNIKV_NEMESIS_RUNS`
/// (runs per topology, default 2).
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seconds() -> u64 {
    setting("UNIKV_NEMESIS_SECS", 60)
}

async fn run(kind: Kind) {
    for i in 0..setting("UNIKV_NEMESIS_RUNS", 2) {
        // Runs alternate clock skew, and (unified) the two slot-move protocols.
        run_one(kind, (i % 2 == 0).then_some(1.4), i % 2 == 0).await;
    }
}

async fn run_one(kind: Kind, clock_rate: Option<f64>, copy_first: bool) {
    // A fresh seed per run, printed so a failure can be replayed with the nemesis binary.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_007);
    let out = std::env::temp_dir().join("unikv-nemesis");
    let mut config = RunConfig::new(kind, Duration::from_secs(seconds()), seed, out);
    // Every fault kind (moves and reshards apply to the unified cluster only).
    config.faults = FaultKind::ALL.to_vec();
    config.clock_rate = clock_rate;
    config.copy_first = copy_first;
    let r = run_once(&config).await.expect("nemesis run");
    eprintln!("[nemesis] {kind} seed {seed}: {}", r.summary());
    assert!(
        r.ops > 100,
        "too few operations to mean anything: {}",
        r.ops
    );
    assert!(r.ok > 50, "too few successful operations: {}", r.summary());
    assert!(
        r.faults.counts.values().sum::<u64>() >= 3,
        "too few faults applied: {:?}",
        r.faults.counts
    );
    assert!(r.is_valid(), "{}\n{}", r.summary(), r.report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_one_shard() {
    run(Kind::Shard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_unified() {
    run(Kind::Unified).await;
}
