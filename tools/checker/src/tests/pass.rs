//! Histories that are linearizable and must pass.

use super::{append, delete, fail, get, info, on, outcome, put};
use crate::history::History;
use crate::search::Outcome::Linearizable;
use crate::{check, CheckOptions};

#[test]
fn empty_history() {
    assert_eq!(outcome(&[]), Linearizable);
    assert!(check(&History::default(), &CheckOptions::default()).is_valid());
}

#[test]
fn get_of_missing_key_is_null() {
    assert_eq!(outcome(&[get(1, None, 0, 10)]), Linearizable);
}

#[test]
fn sequential_puts_and_gets() {
    let ops = [
        put(1, "a", 0, 10),
        get(2, Some("a"), 20, 30),
        put(1, "b", 40, 50),
        get(2, Some("b"), 60, 70),
        get(3, Some("b"), 80, 90),
    ];
    assert_eq!(outcome(&ops), Linearizable);
}

#[test]
fn concurrent_writes_may_land_in_either_order() {
    for last in ["a", "b"] {
        let ops = [
            put(1, "a", 0, 10),
            put(2, "b", 5, 15),
            get(3, Some(last), 20, 30),
            get(3, Some(last), 40, 50),
        ];
        assert_eq!(outcome(&ops), Linearizable, "final {last}");
    }
}

#[test]
fn read_concurrent_with_write_sees_old_or_new() {
    for seen in [Some("a"), Some("b")] {
        let ops = [
            put(1, "a", 0, 10),
            put(2, "b", 20, 40),
            get(3, seen, 25, 35),
        ];
        assert_eq!(outcome(&ops), Linearizable, "{seen:?}");
    }
}

#[test]
fn reads_straddling_a_write_flip_once() {
    // The write of b overlaps both reads: old then new is fine.
    let ops = [
        put(1, "a", 0, 10),
        put(2, "b", 20, 100),
        get(3, Some("a"), 30, 40),
        get(3, Some("b"), 50, 60),
    ];
    assert_eq!(outcome(&ops), Linearizable);
}

#[test]
fn info_write_that_happened() {
    let ops = [
        put(1, "a", 0, 10),
        info(put(2, "x", 20, 30)),
        get(3, Some("x"), 40, 50),
    ];
    assert_eq!(outcome(&ops), Linearizable);
}

#[test]
fn info_write_that_never_happened() {
    let ops = [
        put(1, "a", 0, 10),
        info(put(2, "x", 20, 30)),
        get(3, Some("a"), 40, 50),
        get(3, Some("a"), 60, 70),
    ];
    assert_eq!(outcome(&ops), Linearizable);
}

#[test]
fn info_write_may_take_effect_long_after_its_reply_time() {
    // The info op's complete_ns is 6, but info ops end at infinity: x may land after the read of a.
    let mut late = info(put(2, "x", 5, 6));
    late.complete_ns = Some(6);
    let ops = [
        put(1, "a", 0, 10),
        late,
        get(3, Some("a"), 20, 30),
        get(3, Some("x"), 40, 50),
    ];
    assert_eq!(outcome(&ops), Linearizable);
}

#[test]
fn fail_ops_are_ignored() {
    let ops = [
        put(1, "a", 0, 10),
        fail(put(2, "b", 20, 30)),
        fail(append(2, "c", 20, 30)),
        fail(delete(2, 20, 30)),
        // A failed get's result means nothing.
        fail(get(4, Some("garbage"), 20, 30)),
        get(3, Some("a"), 40, 50),
    ];
    assert_eq!(outcome(&ops), Linearizable);
}

#[test]
fn info_gets_are_ignored() {
    let ops = [
        put(1, "a", 0, 10),
        info(get(2, Some("garbage"), 20, 30)),
        get(3, Some("a"), 40, 50),
    ];
    assert_eq!(outcome(&ops), Linearizable);
}

#[test]
fn delete_then_get_null() {
    let ops = [
        put(1, "a", 0, 10),
        delete(1, 20, 30),
        get(2, None, 40, 50),
        append(1, "b", 60, 70),
        get(2, Some("b"), 80, 90),
    ];
    assert_eq!(outcome(&ops), Linearizable);
}

#[test]
fn concurrent_appends_in_either_order() {
    for seen in ["ab", "ba"] {
        let ops = [
            append(1, "a", 0, 10),
            append(2, "b", 0, 10),
            get(3, Some(seen), 20, 30),
            append(1, "c", 40, 50),
            get(3, Some(&format!("{seen}c")), 60, 70),
        ];
        assert_eq!(outcome(&ops), Linearizable, "{seen}");
    }
}

#[test]
fn append_after_put_and_empty_values() {
    let ops = [
        put(1, "", 0, 10),
        get(2, Some(""), 20, 30),
        append(1, "", 40, 50),
        append(1, "x", 60, 70),
        get(2, Some("x"), 80, 90),
        delete(1, 100, 110),
        append(1, "", 120, 130),
        get(2, Some(""), 140, 150),
    ];
    assert_eq!(outcome(&ops), Linearizable);
}

#[test]
fn equal_timestamps_count_as_concurrent() {
    // The put completes at 10 and the get is invoked at 10: the get may go first.
    assert_eq!(
        outcome(&[put(1, "a", 0, 10), get(2, None, 10, 20)]),
        Linearizable
    );
    // Zero-length ops at the same instant.
    assert_eq!(
        outcome(&[
            put(1, "a", 5, 5),
            get(2, None, 5, 5),
            get(3, Some("a"), 5, 5)
        ]),
        Linearizable
    );
}

#[test]
fn keys_are_checked_independently() {
    let ops = vec![
        on("x", put(1, "1", 0, 10)),
        on("y", put(2, "2", 0, 10)),
        on("x", get(3, Some("1"), 20, 30)),
        on("y", get(3, Some("2"), 40, 50)),
        on("z", get(3, None, 40, 50)),
    ];
    let report = check(&History::from_ops(ops), &CheckOptions::default());
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.keys, 3);
    assert_eq!(report.ops_checked, 5);
}
