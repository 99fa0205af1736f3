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
    /// Comma-separated subset of kill, pause, partition, move, reshard, overlap, powercut
    /// (move and reshard apply to the unified cluster only, powercut to the single shard).
    #[arg(
        long,
        default_value = "kill,pause,partition,move,reshard,overlap,powercut",
        value_delimiter = ','
    )]
    faults: Vec<FaultKind>,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 64)]
    keys: usize,
    /// Clock-rate fault: run every shard's nodes 2 and 3 at this clock rate (e.g. 1.4 within
    /// the lease's drift margin, 2 beyond it).
    #[arg(long)]
    clock_rate: Option<f64>,
    /// Every other run gets the clock-rate fault at this rate (alternating with none).
    #[arg(long)]
    alternate_clock_rate: Option<f64>,
    /// Run the nodes with `--lease_reads false` (every read a ReadIndex round).
    #[arg(long, default_value_t = false)]
    no_lease_reads: bool,
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
        // Unified runs alternate the two slot-move protocols (copy first; small slots batched).
        config.copy_first = (i / args.topology.len() as u64).is_multiple_of(2);
        config.clock_rate = args
            .clock_rate
            .or(args.alternate_clock_rate.filter(|_| (i / 2) % 2 == 1));
        if args.no_lease_reads {
            config.node_flags = vec![("--lease_reads".into(), "false".into())];
        }
        match run_once(&config).await {
            Ok(r) => {
                let clock = config
                    .clock_rate
                    .map_or(String::new(), |r| format!(" clock x{r}"));
                println!(
                    "run {} {kind}{clock} seed {}: {}",
                    i + 1,
                    config.seed,
                    r.summary()
                );
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
