//! The shrinker: its output must itself fail, and be small.

use super::{append, delete, get, info, put};
use crate::budget::Budget;
use crate::history::Op;
use crate::search::{check_ops, Outcome};
use crate::shrink::{shrink, without, ShrinkOptions};

/// Many sequential put/get pairs (linearizable) before the ops of an anomaly.
fn with_noise(anomaly: Vec<Op>) -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..100u64 {
        let v = format!("v{i};");
        ops.push(put(1, &v, i * 100, i * 100 + 10));
        ops.push(get(2, Some(&v), i * 100 + 20, i * 100 + 30));
        ops.push(info(append(3, &format!("i{i}"), i * 100 + 40, 0)));
        ops.push(get(2, Some(&v), i * 100 + 50, i * 100 + 60));
    }
    ops.extend(anomaly);
    ops
}

#[test]
fn stale_read_shrinks_to_its_three_ops() {
    let t = 100_000;
    let ops = with_noise(vec![
        put(7, "old", t, t + 10),
        put(8, "new", t + 20, t + 30),
        get(9, Some("old"), t + 40, t + 50),
    ]);
    assert_eq!(
        check_ops(&ops, &Budget::UNLIMITED),
        Outcome::NotLinearizable
    );
    let shrunk = shrink(&ops, &ShrinkOptions::default()).unwrap();
    assert_eq!(
        check_ops(&shrunk.ops, &Budget::UNLIMITED),
        Outcome::NotLinearizable
    );
    let values: Vec<String> = shrunk
        .ops
        .iter()
        .map(|op| format!("{:?}", op.value.as_ref().or(op.result.as_ref())))
        .collect();
    // Not the one-op "read of a value nobody wrote": the write of "old" explains the read.
    assert_eq!(
        values,
        [r#"Some("old")"#, r#"Some("new")"#, r#"Some("old")"#]
    );
    assert!(shrunk.minimal);
}

#[test]
fn inconsistent_append_orders_shrink_to_four_ops() {
    let t = 100_000;
    let ops = with_noise(vec![
        append(7, "x", t, t + 10),
        append(8, "y", t, t + 10),
        get(9, Some("v99;xy"), t + 20, t + 30),
        get(9, Some("v99;yx"), t + 40, t + 50),
    ]);
    let shrunk = shrink(&ops, &ShrinkOptions::default()).unwrap();
    assert_eq!(
        check_ops(&shrunk.ops, &Budget::UNLIMITED),
        Outcome::NotLinearizable
    );
    // put "v99;", both appends, both reads.
    assert_eq!(shrunk.ops.len(), 5, "{:?}", shrunk.ops);
    assert!(shrunk.minimal);
}

#[test]
fn linearizable_input_does_not_shrink() {
    assert_eq!(
        shrink(&with_noise(Vec::new()), &ShrinkOptions::default()),
        None
    );
}

#[test]
fn a_tiny_budget_still_returns_a_failing_history() {
    let t = 100_000;
    let ops = with_noise(vec![
        put(7, "old", t, t + 10),
        put(8, "new", t + 20, t + 30),
        get(9, Some("old"), t + 40, t + 50),
    ]);
    let options = ShrinkOptions {
        max_checks: 5,
        ..ShrinkOptions::default()
    };
    let shrunk = shrink(&ops, &options).unwrap();
    assert!(!shrunk.minimal);
    assert_eq!(shrunk.checks, 5);
    assert_eq!(
        check_ops(&shrunk.ops, &Budget::UNLIMITED),
        Outcome::NotLinearizable
    );
}

/// The ops left when the shrinker removes op `i` of `ops` (with the reads it may have shaped).
fn left_without(ops: &[Op], i: usize) -> Vec<Op> {
    let refs: Vec<&Op> = ops.iter().collect();
    without(&refs, i).into_iter().cloned().collect()
}

#[test]
fn removing_a_write_takes_the_reads_that_show_it() {
    let ops = [
        append(1, "a;", 0, 10),
        append(2, "b;", 20, 30),
        get(3, Some("a;b;"), 40, 50),
        get(3, Some("a;"), 15, 18),
        get(3, Some("zzz"), 60, 70),
    ];
    // Both reads that show "a;" go with it; the others stay.
    let left = left_without(&ops, 0);
    assert_eq!(left, [ops[1].clone(), ops[4].clone()]);
    // Removing a read takes nothing else.
    assert_eq!(left_without(&ops, 2).len(), 4);
}

#[test]
fn removing_a_delete_takes_the_reads_it_may_have_shaped() {
    let ops = [
        put(1, "a", 0, 10),
        delete(2, 20, 30),
        get(3, None, 40, 50),
        append(1, "c", 60, 70),
        get(3, Some("c"), 80, 90),
        // Shielded: a put surely lies between the delete and these reads.
        put(1, "b", 100, 110),
        get(3, Some("b"), 120, 130),
        get(3, None, 120, 130),
        // Not shielded, but "a" cannot have been built after a delete: no append writes it.
        get(4, Some("a"), 20, 25),
    ];
    let left = left_without(&ops, 1);
    let expected: Vec<Op> = [0, 3, 5, 6, 7, 8].iter().map(|&i| ops[i].clone()).collect();
    assert_eq!(left, expected);
    // An info delete is never surely before anything, and nothing shields reads from it; only
    // the reads whose value cannot follow a delete stay.
    let mut with_info = ops.clone();
    with_info[1] = info(delete(2, 20, 30));
    let left = left_without(&with_info, 1);
    let expected: Vec<Op> = [0, 3, 5, 6, 8]
        .iter()
        .map(|&i| with_info[i].clone())
        .collect();
    assert_eq!(left, expected);
}

#[test]
fn info_deletes_do_not_stay_in_a_stale_read_witness() {
    let t = 100_000;
    let mut anomaly = vec![put(7, "p28;", t, t + 10)];
    for i in 0..6 {
        anomaly.push(info(delete(20 + i, t + 20 + i, 0)));
    }
    anomaly.push(delete(8, t + 100, t + 110));
    anomaly.push(get(8, Some("p28;"), t + 120, t + 130));
    let shrunk = shrink(&with_noise(anomaly), &ShrinkOptions::default()).unwrap();
    assert!(shrunk.minimal);
    let kinds: Vec<&str> = shrunk.ops.iter().map(|op| op.kind.name()).collect();
    assert_eq!(kinds, ["put", "delete", "get"], "{:?}", shrunk.ops);
}
