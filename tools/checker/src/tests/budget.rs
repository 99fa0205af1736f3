//! The search budget: a pathological history must come back `Unknown`, never as a pass.

use std::time::Duration;

use super::{get, info, put};
use crate::budget::{Budget, Exceeded};
use crate::history::{History, Op};
use crate::search::{check_ops, Outcome};
use crate::{check, CheckOptions, Verdict};

/// `n` concurrent info puts of distinct values, each seen by its own concurrent read, and one
/// more read of a value nobody wrote that completes last. Every value is seen, so no put can be
/// dropped ([`crate::observed`]), and to reject the last read the search must first try every
/// subset of the puts in every order that satisfies the other reads: about 2^n · n states.
fn pathological(n: u64) -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..n {
        let value = format!("v{i};");
        ops.push(info(put(i, &value, i, i + 1)));
        ops.push(get(100 + i, Some(&value), i, 1_000 + i));
    }
    ops.push(get(1_000, Some("nobody wrote this"), 0, 5_000));
    ops
}

#[test]
fn step_budget_gives_unknown() {
    assert_eq!(
        check_ops(&pathological(24), &Budget::steps(100_000)),
        Outcome::Unknown(Exceeded::Steps(100_000))
    );
}

#[test]
fn time_budget_gives_unknown() {
    assert_eq!(
        check_ops(&pathological(40), &Budget::time(Duration::from_millis(50))),
        Outcome::Unknown(Exceeded::TimeMs(50))
    );
}

#[test]
fn memory_budget_gives_unknown() {
    let budget = Budget {
        max_memory: Some(1 << 20),
        ..Budget::UNLIMITED
    };
    assert_eq!(
        check_ops(&pathological(24), &budget),
        Outcome::Unknown(Exceeded::MemoryMib(1))
    );
}

#[test]
fn the_same_shape_small_enough_is_decided() {
    assert_eq!(
        check_ops(&pathological(8), &Budget::steps(1_000_000)),
        Outcome::NotLinearizable
    );
}

#[test]
fn undecided_keys_make_the_report_unknown_not_valid() {
    let options = CheckOptions {
        budget: Budget::steps(10_000),
        ..CheckOptions::default()
    };
    let report = check(&History::from_ops(pathological(24)), &options);
    assert_eq!(report.verdict(), Verdict::Unknown);
    assert!(!report.is_valid());
    assert_eq!(report.undecided.len(), 1);
    assert_eq!(report.undecided[0].reason, Exceeded::Steps(10_000));
    assert!(report.anomalies.is_empty());
}
