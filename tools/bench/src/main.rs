//! `bench --target router=127.0.0.1:3000 --workload put --conns 64 --duration 10`
//! prints one `RESULT ...` line (and JSON with `--json`).

use std::time::Duration;

use clap::Parser;
use unikv_bench::keys::Distribution;
use unikv_bench::{Config, Target, Workload};

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Closed-loop load generator for unikv (router or node) and etcd's JSON gateway"
)]
struct Args {
    /// router=HOST:PORT, node=HOST:PORT or etcd=HOST:PORT (a bare HOST:PORT is a router).
    #[arg(long, default_value = "router=127.0.0.1:3000")]
    target: Target,
    /// put | get | mixed (50/50) | mixed95 (95 % reads) | mixedN | load (each key once).
    #[arg(long, short, default_value = "put")]
    workload: Workload,
    /// Connections, each with one request outstanding.
    #[arg(long, short, default_value_t = 64)]
    conns: usize,
    /// Seconds measured (after the warm-up).
    #[arg(long, short, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// uniform | zipfian
    #[arg(long, default_value = "uniform")]
    dist: Distribution,
    #[arg(long, default_value_t = 0.99)]
    zipf_theta: f64,
    /// Per-request timeout in milliseconds (a timeout counts as an error).
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Client threads (default: 1 for one connection, else 2).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also print the summary as one JSON object; `--json FILE` writes it there instead.
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = args.threads.unwrap_or(if args.conns <= 1 { 1 } else { 2 });
    let config = Config {
        target: args.target,
        workload: args.workload,
        conns: args.conns,
        duration: Duration::from_secs_f64(args.duration.max(0.0)),
        warmup: Duration::from_secs_f64(args.warmup.max(0.0)),
        keys: args.keys,
        key_size: args.key_size,
        value_size: args.value_size,
        distribution: args.dist,
        zipf_theta: args.zipf_theta,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
        seed: args.seed,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let summary = rt.block_on(unikv_bench::run(config))?;
    println!("{}", summary.line());
    match args.json.as_deref() {
        None => {}
        Some("-") => println!("{}", serde_json::to_string(&summary)?),
        Some(path) => std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")?,
    }
    Ok(())
}
