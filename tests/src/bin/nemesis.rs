//! `nemesis --runs 50 --seconds 120 --topology shard,unified`: a fault-injection campaign.
//! Each run starts a fresh cluster, runs clients under faults, heals, checks the history, and
//! prints one line; the last line totals runs, operations, faults, anomalies and lost writes.
//! Exits 1 if any run found an anomaly or a lost write (or could not be checked).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use unikv_tests::nemesis::faults::FaultKind;
use unikv_tests::nemesis::topology::Kind;
use unikv_tests::nemesis::{run_once, RunConfig};

#[derive(Parser, Debug)]
#[command(
    name = "nemesis",
    about = "Linearizability under crashes, pauses, partitions and slot moves"
)]
struct Args {
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Seconds of clients and faults per run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Comma-separated: shard, unified (runs alternate between them).
    #[arg(long, default_value = "shard,unified", value_delimiter = ',')]
    topology: Vec<Kind>,
    /// Comma-separated subset of kill, pause, partition, move, reshard (move and reshard
    /// apply to the unified cluster only).
    #[arg(
        long,
        default_value = "kill,pause,partition,move,reshard",
        value_delimiter = ','
    )]
    faults: Vec<FaultKind>,
    #[arg(long, default_value_t = 6)]
    clients: usize,
    #[arg(long, default_value_t = 6)]
    keys: usize,
    /// Seed of the first run (run i uses seed + i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where histories are written.
    #[arg(long, default_value = "target/nemesis")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let (mut bad_runs, mut ops, mut anomalies, mut lost, mut errors) = (0, 0, 0, 0, 0);
    for i in 0..args.runs {
        let kind = args.topology[(i as usize) % args.topology.len()];
        let mut config = RunConfig::new(
            kind,
            Duration::from_secs(args.seconds),
            args.seed + i,
            args.out.clone(),
        );
        config.faults = args.faults.clone();
        config.clients = args.clients;
        config.keys = args.keys;
        match run_once(&config).await {
            Ok(r) => {
                println!("run {} {kind} seed {}: {}", i + 1, config.seed, r.summary());
                if !r.is_valid() {
                    println!("{}", r.report);
                    bad_runs += 1;
                }
                ops += r.ops as u64;
                anomalies += r.report.anomalies.len() as u64;
                lost += r.report.lost_writes.len() as u64;
                for (k, v) in &r.faults.counts {
                    *totals.entry(k.clone()).or_default() += v;
                }
            }
            Err(e) => {
                println!("run {} {kind} seed {}: ERROR {e:#}", i + 1, config.seed);
                errors += 1;
            }
        }
    }
    let faults: Vec<String> = totals.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "TOTAL runs={} ops={ops} faults[{}] anomalies={anomalies} lost_writes={lost} invalid_runs={bad_runs} errored_runs={errors}",
        args.runs,
        faults.join(" ")
    );
    if bad_runs + errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}
