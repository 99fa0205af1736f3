//! Histories that are not linearizable and must be rejected.

use super::{append, delete, fail, get, info, on, outcome, put};
use crate::history::History;
use crate::search::Outcome::NotLinearizable;
use crate::{check, CheckOptions, Verdict};

#[test]
fn stale_read_after_a_completed_write() {
    let ops = [
        put(1, "a", 0, 10),
        put(2, "b", 20, 30),
        get(3, Some("a"), 40, 50),
    ];
    assert_eq!(outcome(&ops), NotLinearizable);
}

#[test]
fn null_read_after_a_completed_write() {
    assert_eq!(
        outcome(&[put(1, "a", 0, 10), get(2, None, 11, 20)]),
        NotLinearizable
    );
}

#[test]
fn read_of_a_value_never_written() {
    let ops = [put(1, "a", 0, 10), get(2, Some("zzz"), 20, 30)];
    assert_eq!(outcome(&ops), NotLinearizable);
    assert_eq!(outcome(&[get(2, Some(""), 0, 10)]), NotLinearizable);
}

#[test]
fn new_value_then_older_value() {
    // b is being written; one read sees b, a later read sees a again.
    let ops = [
        put(1, "a", 0, 10),
        put(2, "b", 20, 100),
        get(3, Some("b"), 30, 40),
        get(4, Some("a"), 50, 60),
    ];
    assert_eq!(outcome(&ops), NotLinearizable);
}

#[test]
fn append_order_differs_between_reads() {
    let ops = [
        append(1, "x", 0, 10),
        append(2, "y", 0, 10),
        get(3, Some("xy"), 20, 30),
        get(4, Some("yx"), 40, 50),
    ];
    assert_eq!(outcome(&ops), NotLinearizable);
}

#[test]
fn read_of_a_failed_write() {
    let ops = [
        put(1, "a", 0, 10),
        fail(put(2, "b", 20, 30)),
        get(3, Some("b"), 40, 50),
    ];
    assert_eq!(outcome(&ops), NotLinearizable);
}

#[test]
fn lost_append() {
    let ops = [
        append(1, "a;", 0, 10),
        append(2, "b;", 20, 30),
        get(3, Some("b;"), 40, 50),
    ];
    assert_eq!(outcome(&ops), NotLinearizable);
}

#[test]
fn read_of_a_deleted_value() {
    let ops = [
        put(1, "a", 0, 10),
        delete(2, 20, 30),
        get(3, Some("a"), 40, 50),
    ];
    assert_eq!(outcome(&ops), NotLinearizable);
}

#[test]
fn info_write_cannot_act_before_its_invoke() {
    let ops = [get(1, Some("x"), 0, 10), info(put(2, "x", 20, 30))];
    assert_eq!(outcome(&ops), NotLinearizable);
}

#[test]
fn info_write_acts_at_most_once() {
    // One info append cannot explain two copies of its value.
    let ops = [
        info(append(1, "a", 0, 10)),
        get(2, Some("a"), 20, 30),
        get(2, Some("aa"), 40, 50),
    ];
    assert_eq!(outcome(&ops), NotLinearizable);
}

#[test]
fn report_names_the_failing_key_only() {
    let ops = vec![
        on("good", put(1, "1", 0, 10)),
        on("good", get(2, Some("1"), 20, 30)),
        on("bad", put(1, "a", 0, 10)),
        on("bad", put(1, "b", 20, 30)),
        on("bad", get(2, Some("a"), 40, 50)),
    ];
    let report = check(&History::from_ops(ops), &CheckOptions::default());
    assert_eq!(report.verdict(), Verdict::Invalid);
    assert_eq!(report.anomalies.len(), 1);
    assert_eq!(report.anomalies[0].key, "bad");
    assert_eq!(report.anomalies[0].ops.len(), 3);
    assert!(report.anomalies[0].minimal);
    // "b" was the last write, alone, yet the final read shows "a": a lost put as well.
    assert_eq!(report.lost_writes.len(), 1);
    assert_eq!(report.lost_writes[0].write.written(), "b");
}
