//! The short nemesis for every CI run: one run on a single shard and one on the unified
//! cluster, clients under kill -9, SIGSTOP, partitions (and slot moves on the unified
//! cluster), then the linearizability checker. Any anomaly or lost write fails the build.
//! Needs root and iptables (scripts/setup.sh installs it).

use std::time::Duration;

use unikv_tests::nemesis::topology::Kind;
use unikv_tests::nemesis::{run_once, RunConfig};

/// Seconds of faults per run; `UNIKV_NEMESIS_SECS` overrides.
fn seconds() -> u64 {
    std::env::var("UNIKV_NEMESIS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

async fn run(kind: Kind) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    let out = std::env::temp_dir().join("unikv-nemesis");
    let config = RunConfig::new(kind, Duration::from_secs(seconds()), seed, out);
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
