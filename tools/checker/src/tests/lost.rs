//! Lost acknowledged writes: reported when certain, never otherwise.

use super::{append, delete, fail, get, info, on, put};
use crate::history::{History, Op};
use crate::lost::lost_writes;

/// The written values of the lost writes.
fn lost(ops: Vec<Op>) -> Vec<String> {
    lost_writes(&History::from_ops(ops))
        .into_iter()
        .map(|l| format!("{} {}", l.write.kind.name(), l.write.written()))
        .collect()
}

#[test]
fn append_missing_from_the_final_read() {
    let ops = vec![
        append(1, "a;", 0, 10),
        append(2, "b;", 20, 30),
        append(3, "c;", 25, 35),
        get(4, Some("b;c;"), 40, 50),
    ];
    assert_eq!(lost(ops), ["append a;"]);
}

#[test]
fn appends_present_in_any_order_are_not_lost() {
    let ops = vec![
        append(1, "a;", 0, 10),
        append(2, "b;", 0, 10),
        get(4, Some("b;a;"), 40, 50),
    ];
    assert!(lost(ops).is_empty());
}

#[test]
fn final_read_is_the_last_ok_get() {
    let ops = vec![
        append(1, "a;", 0, 10),
        get(4, Some("a;"), 40, 50),
        get(4, Some(""), 60, 70),
        fail(get(5, None, 80, 90)),
        info(get(5, None, 80, 90)),
    ];
    assert_eq!(lost(ops), ["append a;"]);
}

#[test]
fn append_that_a_put_or_delete_may_have_overwritten_is_not_lost() {
    for overwrite in [
        put(2, "x", 20, 30),     // later
        delete(2, 20, 30),       // later
        put(2, "x", 0, 5),       // ends when the append starts: a tie, so could be later
        info(put(2, "x", 0, 1)), // info: may land any time after its invoke
        info(delete(2, 0, 1)),
    ] {
        let ops = vec![
            append(1, "a;", 5, 10),
            overwrite.clone(),
            get(4, Some("x"), 40, 50),
        ];
        let lost = lost(ops);
        assert!(
            !lost.contains(&"append a;".to_string()),
            "{overwrite:?}: {lost:?}"
        );
    }
}

#[test]
fn append_with_only_earlier_or_failed_overwrites_is_lost() {
    let ops = vec![
        put(2, "x", 0, 4),
        append(1, "a;", 5, 10),
        fail(put(2, "y", 20, 30)),
        // Invoked after the final read completed: cannot have hidden the append from it.
        delete(3, 60, 70),
        get(4, Some("x"), 40, 50),
    ];
    assert_eq!(lost(ops), ["append a;"]);
}

#[test]
fn append_concurrent_with_the_final_read_is_not_judged() {
    let ops = vec![append(1, "a;", 35, 45), get(4, Some(""), 40, 50)];
    assert!(lost(ops).is_empty());
    let ops = vec![append(1, "a;", 30, 40), get(4, None, 40, 50)];
    assert!(
        lost(ops).is_empty(),
        "completion tied with the read's invoke"
    );
}

#[test]
fn last_put_alone_must_be_the_final_value() {
    let ops = vec![
        put(1, "a", 0, 10),
        put(2, "b", 20, 30),
        get(3, Some("a"), 40, 50),
    ];
    assert_eq!(lost(ops), ["put b"]);
    let ops = vec![put(2, "b", 20, 30), get(3, None, 40, 50)];
    assert_eq!(lost(ops), ["put b"]);
    let ops = vec![put(2, "b", 20, 30), get(3, Some("b"), 40, 50)];
    assert!(lost(ops).is_empty());
}

#[test]
fn put_with_a_concurrent_later_or_info_write_is_not_judged() {
    for other in [
        put(2, "x", 25, 28),     // concurrent
        append(2, "x", 35, 38),  // later
        delete(2, 35, 38),       // later
        info(put(2, "x", 0, 1)), // info, invoked long before
        append(2, "x", 0, 20),   // ends as the put starts: a tie
    ] {
        let ops = vec![
            put(1, "b", 20, 30),
            other.clone(),
            get(3, Some("zzz"), 40, 50),
        ];
        let lost = lost(ops);
        assert!(!lost.contains(&"put b".to_string()), "{other:?}: {lost:?}");
    }
}

#[test]
fn lost_delete() {
    let ops = vec![
        put(1, "a", 0, 10),
        delete(2, 20, 30),
        get(3, Some("a"), 40, 50),
    ];
    assert_eq!(lost(ops), ["delete "]);
}

#[test]
fn keys_without_a_final_read_are_skipped_and_keys_are_separate() {
    let ops = vec![
        on("x", append(1, "a;", 0, 10)),
        on("y", get(3, None, 40, 50)),
        on("z", append(1, "a;", 0, 10)),
        on("z", get(3, Some("a;"), 40, 50)),
    ];
    assert!(lost(ops).is_empty());
}
