//! `unikv-check FILE...`: checks recorded nemesis histories and prints a report per file.
//!
//! Exit status: 0 all valid, 1 an anomaly or lost write, 2 malformed input (nothing is checked
//! then), 3 nothing wrong found but some key was undecided within the budget.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use unikv_checker::{check, Budget, CheckOptions, History, ShrinkOptions, Verdict};

/// Checks unikv histories (JSON lines, one completed operation per line) for linearizability
/// and lost acknowledged writes.
#[derive(Parser)]
#[command(name = "unikv-check")]
struct Args {
    /// History files; each is checked on its own unless --merge is given.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Check all files as one history (e.g. one file per client process).
    #[arg(long)]
    merge: bool,
    /// Print one JSON object per history instead of text.
    #[arg(long)]
    json: bool,
    /// Time budget of each key's search, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    key_time_ms: u64,
    /// Step budget of each key's search (default: none).
    #[arg(long)]
    key_steps: Option<u64>,
    /// Memory budget of each key's search, in MiB.
    #[arg(long, default_value_t = 512)]
    key_memory_mib: usize,
    /// Time budget for shrinking each failing key, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    shrink_time_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut histories: Vec<(String, History)> = Vec::new();
    let mut malformed = false;
    for path in &args.files {
        match History::read_file(path) {
            Ok(history) => histories.push((path.display().to_string(), history)),
            Err(e) => {
                eprintln!("unikv-check: {e}");
                malformed = true;
            }
        }
    }
    if malformed {
        return ExitCode::from(2);
    }
    if args.merge {
        let ops = histories.drain(..).flat_map(|(_, h)| h.ops).collect();
        histories.push(("(merged)".to_string(), History::from_ops(ops)));
    }

    let options = CheckOptions {
        budget: Budget {
            max_steps: args.key_steps,
            time_limit: Some(Duration::from_millis(args.key_time_ms)),
            max_memory: Some(args.key_memory_mib << 20),
        },
        shrink: ShrinkOptions {
            time_limit: Duration::from_millis(args.shrink_time_ms),
            ..ShrinkOptions::default()
        },
    };
    let mut worst = Verdict::Valid;
    for (name, history) in &histories {
        let report = check(history, &options);
        let verdict = report.verdict();
        if args.json {
            let line = serde_json::json!({ "file": name, "verdict": verdict, "report": report });
            println!("{line}");
        } else {
            println!("== {name}\n{report}");
        }
        worst = match (worst, verdict) {
            (Verdict::Invalid, _) | (_, Verdict::Invalid) => Verdict::Invalid,
            (Verdict::Unknown, _) | (_, Verdict::Unknown) => Verdict::Unknown,
            _ => Verdict::Valid,
        };
    }
    ExitCode::from(match worst {
        Verdict::Valid => 0,
        Verdict::Invalid => 1,
        Verdict::Unknown => 3,
    })
}
