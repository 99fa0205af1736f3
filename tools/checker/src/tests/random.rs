//! Randomised tests: histories generated from a simulated sequential store are linearizable by
//! construction and must pass; one read changed to a value nobody wrote must fail.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Rng;
use crate::budget::Budget;
use crate::history::{History, Op, OpKind, Status};
use crate::search::{check_ops, Outcome};
use crate::shrink::{shrink, ShrinkOptions};
use crate::{check, CheckOptions, Verdict};

/// Shape of a generated history.
struct Shape {
    processes: u64,
    ops_per_process: usize,
    keys: &'static [&'static str],
    /// Percentages of info and fail outcomes.
    info: u64,
    fail: u64,
}

/// Generates a linearizable history: each process runs ops back to back (the next may start at
/// the instant the previous one completed), each op takes effect at a random point of its
/// interval (info ops: at a random later time, or never; fail ops: never), and gets return what
/// the store held at that point. Ends with one final read per key after everything.
fn generate(rng: &mut Rng, shape: &Shape) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut effects: Vec<(u64, u64, usize)> = Vec::new(); // (time, tiebreak, op index)
    let mut next_process = shape.processes;
    let mut horizon = 0;
    for first_id in 0..shape.processes {
        let mut process = first_id;
        let mut t = rng.below(20);
        for n in 0..shape.ops_per_process {
            let invoke = t + rng.below(10);
            let complete = invoke + rng.below(30);
            let key = shape.keys[rng.below(shape.keys.len() as u64) as usize];
            let kind = match rng.below(100) {
                0..=39 => OpKind::Get,
                40..=59 => OpKind::Put,
                60..=89 => OpKind::Append,
                _ => OpKind::Delete,
            };
            let roll = rng.below(100);
            let status = if roll < shape.info {
                Status::Info
            } else if roll < shape.info + shape.fail {
                Status::Fail
            } else {
                Status::Ok
            };
            let effect = match status {
                Status::Ok => Some(invoke + rng.below(complete - invoke + 1)),
                Status::Fail => None,
                Status::Info => {
                    (!rng.chance(50)).then(|| invoke + rng.below(complete - invoke + 100))
                }
            };
            let value =
                matches!(kind, OpKind::Put | OpKind::Append).then(|| format!("p{process}-{n};"));
            let complete_ns = if status == Status::Info && rng.chance(50) {
                None
            } else {
                Some(complete)
            };
            if let Some(at) = effect {
                effects.push((at, rng.next_u64(), ops.len()));
                horizon = horizon.max(at);
            }
            horizon = horizon.max(complete);
            ops.push(Op {
                process,
                key: key.to_string(),
                kind,
                value,
                // Gets that did not complete ok return garbage the checker must ignore.
                result: (kind == OpKind::Get).then(|| "garbage".to_string()),
                status,
                invoke_ns: invoke,
                complete_ns,
            });
            if status == Status::Info {
                process = next_process;
                next_process += 1;
            }
            t = complete;
        }
    }
    for (i, key) in shape.keys.iter().enumerate() {
        let at = horizon + 10 + 10 * i as u64;
        effects.push((at, 0, ops.len()));
        ops.push(Op {
            process: next_process,
            key: key.to_string(),
            kind: OpKind::Get,
            value: None,
            result: None,
            status: Status::Ok,
            invoke_ns: at,
            complete_ns: Some(at + 5),
        });
    }
    effects.sort_unstable();
    let mut store: HashMap<String, String> = HashMap::new();
    for (_, _, i) in effects {
        let op = &mut ops[i];
        match op.kind {
            OpKind::Get => {
                if op.status == Status::Ok {
                    op.result = store.get(&op.key).cloned();
                }
            }
            OpKind::Put => {
                store.insert(op.key.clone(), op.written().to_string());
            }
            OpKind::Append => store
                .entry(op.key.clone())
                .or_default()
                .push_str(op.value.as_deref().unwrap_or("")),
            OpKind::Delete => {
                store.remove(&op.key);
            }
        }
    }
    ops
}

fn small_shape(rng: &mut Rng) -> Shape {
    Shape {
        processes: 2 + rng.below(5),
        ops_per_process: 5 + rng.below(25) as usize,
        keys: &["a", "b"],
        info: rng.below(15),
        fail: rng.below(10),
    }
}

#[test]
fn generated_histories_pass() {
    for seed in 0..400 {
        let mut rng = Rng::new(seed);
        let shape = small_shape(&mut rng);
        let history = History::from_ops(generate(&mut rng, &shape));
        let report = check(&history, &CheckOptions::default());
        assert!(
            report.is_valid(),
            "seed {seed}:\n{report}\n{}",
            history.to_json_lines()
        );
    }
}

#[test]
fn a_read_of_a_value_never_written_fails() {
    for seed in 0..400 {
        let mut rng = Rng::new(seed);
        let shape = small_shape(&mut rng);
        let mut ops = generate(&mut rng, &shape);
        let reads: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].kind == OpKind::Get && ops[i].status == Status::Ok)
            .collect();
        let victim = reads[rng.below(reads.len() as u64) as usize];
        ops[victim].result = Some("never-written".to_string());
        let key = ops[victim].key.clone();

        let key_ops: Vec<Op> = ops.iter().filter(|op| op.key == key).cloned().collect();
        assert_eq!(
            check_ops(&key_ops, &Budget::UNLIMITED),
            Outcome::NotLinearizable,
            "seed {seed}"
        );
        let report = check(&History::from_ops(ops), &CheckOptions::default());
        assert_eq!(report.verdict(), Verdict::Invalid, "seed {seed}");
        assert_eq!(report.anomalies.len(), 1, "seed {seed}: {report}");
        let anomaly = &report.anomalies[0];
        assert_eq!(anomaly.key, key);
        assert_eq!(
            check_ops(&anomaly.ops, &Budget::UNLIMITED),
            Outcome::NotLinearizable,
            "seed {seed}: the shrunk history must fail too"
        );
        // Nothing explains the bad read, so it alone is the minimal witness.
        assert_eq!(anomaly.ops.len(), 1, "seed {seed}: {report}");
        assert_eq!(anomaly.ops[0].result.as_deref(), Some("never-written"));
    }
}

#[test]
fn shrinking_a_stale_read_in_a_random_history() {
    // A linearizable history with a stale read appended after it: the shrinker must dig out the
    // three ops that show it.
    for seed in 0..50 {
        let mut rng = Rng::new(1000 + seed);
        let shape = Shape {
            processes: 4,
            ops_per_process: 40,
            keys: &["a"],
            info: 5,
            fail: 5,
        };
        let mut ops = generate(&mut rng, &shape);
        let end = ops
            .iter()
            .filter_map(|op| op.complete_ns)
            .max()
            .unwrap_or(0)
            + 200;
        let at = |offset: u64| end + offset;
        let mut late = vec![
            super::put(90, "old", at(0), at(10)),
            super::put(91, "new", at(20), at(30)),
            super::get(92, Some("old"), at(40), at(50)),
        ];
        for op in &mut late {
            op.key = "a".to_string();
        }
        ops.extend(late);
        let shrunk = shrink(&ops, &ShrinkOptions::default()).expect("history fails");
        assert_eq!(
            check_ops(&shrunk.ops, &Budget::UNLIMITED),
            Outcome::NotLinearizable
        );
        assert!(shrunk.ops.len() <= 3, "seed {seed}: {:?}", shrunk.ops);
        assert!(shrunk.minimal);
    }
}

/// 8 processes, 4,000 ops on one hot key.
const HOT_KEY: Shape = Shape {
    processes: 8,
    ops_per_process: 500,
    keys: &["hot"],
    info: 3,
    fail: 2,
};

#[test]
fn thousands_of_ops_on_one_key_check_quickly() {
    // Typically 20-70 ms each in release builds; the search budget (20 s) is what may not be
    // exceeded — a speed figure belongs in a benchmark, not in an assertion.
    for seed in 0..4 {
        let mut rng = Rng::new(seed);
        let shape = HOT_KEY;
        let ops = generate(&mut rng, &shape);
        let started = Instant::now();
        let outcome = check_ops(&ops, &Budget::time(Duration::from_secs(20)));
        let took = started.elapsed();
        assert_eq!(outcome, Outcome::Linearizable, "seed {seed}");
        eprintln!(
            "seed {seed}: {} ops on one key checked in {took:?}",
            ops.len()
        );
    }
}

#[test]
fn a_late_stale_read_in_thousands_of_ops_is_found_and_shrunk() {
    // Refuting a history means exploring everything before the anomaly, so put it late: one read
    // two thirds of the way in (by process) returns what an earlier read saw.
    for seed in 0..3 {
        let mut rng = Rng::new(seed);
        let shape = HOT_KEY;
        let mut ops = generate(&mut rng, &shape);
        let reads: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].kind == OpKind::Get && ops[i].status == Status::Ok)
            .collect();
        let (early, late) = (reads[reads.len() / 3], reads[reads.len() / 2]);
        ops[late].result = ops[early].result.clone();

        let started = Instant::now();
        let report = check(&History::from_ops(ops), &CheckOptions::default());
        let took = started.elapsed();
        eprintln!("seed {seed}: checked and shrunk in {took:?}\n{report}");
        assert_eq!(report.verdict(), Verdict::Invalid, "seed {seed}: {report}");
        let anomaly = &report.anomalies[0];
        assert!(anomaly.minimal, "seed {seed}: {report}");
        assert!(anomaly.ops.len() <= 12, "seed {seed}: {report}");
        assert!(
            !super::oracle::brute_force(&anomaly.ops),
            "seed {seed}: the witness must fail on its own"
        );
        assert!(took < Duration::from_secs(20), "seed {seed} took {took:?}");
    }
}
