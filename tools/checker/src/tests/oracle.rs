//! The search against a brute-force oracle on small random histories, valid or not. The search's
//! prunings (matching reads taken at once, unobserved writes, the next-read check, info ops tried
//! last) must never change a verdict; this is where that is checked. The shrinker's output and
//! the lost-write rules are checked against the same oracle.

use std::collections::HashSet;

use super::Rng;
use crate::budget::Budget;
use crate::history::{Op, OpKind, Status};
use crate::lost::lost_in_key;
use crate::search::{check_ops, Outcome};
use crate::shrink::{shrink, without, ShrinkOptions};

/// Tries every order of every subset of the info ops that respects real time, remembering
/// (placed ops, state) pairs that lead nowhere: plain memoised search, none of the prunings.
pub(super) fn brute_force(ops: &[Op]) -> bool {
    let ops: Vec<&Op> = ops.iter().filter(|op| op.is_relevant()).collect();
    assert!(ops.len() <= 32);
    search(&ops, 0, None, &mut HashSet::new())
}

fn search(
    ops: &[&Op],
    placed: u32,
    state: Option<String>,
    dead: &mut HashSet<(u32, Option<String>)>,
) -> bool {
    let is_placed = |i: usize| placed & (1 << i) != 0;
    if (0..ops.len()).all(|i| is_placed(i) || ops[i].status == Status::Info) {
        return true;
    }
    if dead.contains(&(placed, state.clone())) {
        return false;
    }
    for i in 0..ops.len() {
        if is_placed(i) {
            continue;
        }
        // Some unplaced op must come first if it completed strictly before this one started.
        let blocked = (0..ops.len()).any(|j| {
            !is_placed(j)
                && j != i
                && ops[j]
                    .deadline_ns()
                    .is_some_and(|end| end < ops[i].invoke_ns)
        });
        if blocked {
            continue;
        }
        let op = ops[i];
        let next = match op.kind {
            OpKind::Get if op.result == state => state.clone(),
            OpKind::Get => continue,
            OpKind::Put => Some(op.written().to_string()),
            OpKind::Append => Some(state.clone().unwrap_or_default() + op.written()),
            OpKind::Delete => None,
        };
        if search(ops, placed | (1 << i), next, dead) {
            return true;
        }
    }
    dead.insert((placed, state));
    false
}

/// Up to `max_ops` ops with tiny values and times, so ties, duplicate values and strings that
/// several write sequences spell ("a"+"b" = "ab") are common.
fn random_history(rng: &mut Rng, max_ops: u64) -> Vec<Op> {
    const VALUES: [&str; 4] = ["a", "b", "ab", ""];
    let n = 1 + rng.below(max_ops);
    let span = 2 * n;
    (0..n)
        .map(|p| {
            let kind = match rng.below(10) {
                0..=3 => OpKind::Get,
                4..=5 => OpKind::Put,
                6..=8 => OpKind::Append,
                _ => OpKind::Delete,
            };
            let status = match rng.below(10) {
                0..=6 => Status::Ok,
                7..=8 => Status::Info,
                _ => Status::Fail,
            };
            let invoke = rng.below(span);
            let complete = invoke + rng.below(8);
            let value = VALUES[rng.below(4) as usize].to_string();
            let result = if rng.chance(15) {
                None
            } else {
                let len = rng.below(4);
                Some(
                    (0..len)
                        .map(|_| if rng.chance(50) { 'a' } else { 'b' })
                        .collect(),
                )
            };
            Op {
                process: p,
                key: "k".to_string(),
                kind,
                value: matches!(kind, OpKind::Put | OpKind::Append).then_some(value),
                result: (kind == OpKind::Get).then_some(result).flatten(),
                status,
                invoke_ns: invoke,
                complete_ns: (status != Status::Info || rng.chance(50)).then_some(complete),
            }
        })
        .collect()
}

#[test]
fn search_agrees_with_brute_force() {
    let (mut valid, mut invalid) = (0, 0);
    for seed in 0..30_000 {
        let mut rng = Rng::new(seed);
        let ops = random_history(&mut rng, 14);
        let expected = if brute_force(&ops) {
            valid += 1;
            Outcome::Linearizable
        } else {
            invalid += 1;
            Outcome::NotLinearizable
        };
        assert_eq!(
            check_ops(&ops, &Budget::UNLIMITED),
            expected,
            "seed {seed}: {ops:#?}"
        );
    }
    // Both verdicts must be well represented for the comparison to mean anything.
    assert!(
        valid > 3_000 && invalid > 3_000,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn shrunk_histories_fail_and_lost_writes_never_flag_valid_histories() {
    for seed in 0..10_000 {
        let mut rng = Rng::new(seed);
        let ops = random_history(&mut rng, 12);
        let refs: Vec<&Op> = ops.iter().collect();
        if brute_force(&ops) {
            assert!(lost_in_key(&refs).is_empty(), "seed {seed}: {ops:#?}");
        } else {
            let shrunk = shrink(&ops, &ShrinkOptions::default()).expect("fails");
            assert!(!brute_force(&shrunk.ops), "seed {seed}: {:#?}", shrunk.ops);
            assert!(shrunk.minimal);
            // 1-minimal: removing any one op (and the reads it alone explains) makes it pass.
            let shrunk_refs: Vec<&Op> = shrunk.ops.iter().collect();
            for i in 0..shrunk.ops.len() {
                let rest: Vec<Op> = without(&shrunk_refs, i).into_iter().cloned().collect();
                assert!(
                    brute_force(&rest),
                    "seed {seed}: op {i} of {:#?} could go",
                    shrunk.ops
                );
            }
        }
    }
}
