//! The register-with-append model and its hash-consed states.

use super::{append, delete, get, put};
use crate::history::Op;
use crate::model::{Model, ABSENT, EMPTY};

#[test]
fn states_spell_their_values() {
    let ops = [
        put(1, "ab", 0, 1),
        append(1, "c", 0, 1),
        append(1, "", 0, 1),
        delete(1, 0, 1),
    ];
    let refs: Vec<&Op> = ops.iter().collect();
    let mut model = Model::new(&refs, &[]);
    let s = model.step(ABSENT, 0).unwrap();
    assert_eq!(model.spell(s).as_deref(), Some("ab"));
    let s = model.step(s, 1).unwrap();
    assert_eq!(model.spell(s).as_deref(), Some("abc"));
    assert_eq!(model.step(s, 2), Some(s), "appending \"\" changes nothing");
    assert_eq!(
        model.step(ABSENT, 2),
        Some(EMPTY),
        "but creates an absent key"
    );
    assert_eq!(model.step(s, 3), Some(ABSENT));
    assert_eq!(model.spell(ABSENT), None);
    assert_eq!(model.spell(EMPTY).as_deref(), Some(""));
}

#[test]
fn reads_compare_spelled_text_not_write_sequences() {
    let ops = [
        append(1, "a", 0, 1),
        append(1, "bc", 0, 1),
        put(1, "abc", 0, 1),
        get(2, Some("abc"), 0, 1),
        get(2, Some("ab"), 0, 1),
        get(2, None, 0, 1),
        get(2, Some(""), 0, 1),
    ];
    let refs: Vec<&Op> = ops.iter().collect();
    let mut model = Model::new(&refs, &[]);
    let a = model.step(ABSENT, 0).unwrap();
    let abc = model.step(a, 1).unwrap();
    let put_abc = model.step(a, 2).unwrap();
    assert_ne!(abc, put_abc, "different write sequences, different ids");
    for state in [abc, put_abc] {
        assert_eq!(model.step(state, 3), Some(state));
        assert_eq!(model.step(state, 4), None);
        assert_eq!(model.step(state, 5), None);
        assert_eq!(model.step(state, 6), None);
    }
    assert_eq!(model.step(ABSENT, 5), Some(ABSENT));
    assert_eq!(
        model.step(ABSENT, 6),
        None,
        "absent is not the empty string"
    );
    assert_eq!(model.step(EMPTY, 6), Some(EMPTY));
    // The same sequence of writes gives the same id.
    let again = model.step(ABSENT, 0).unwrap();
    assert_eq!(model.step(again, 1), Some(abc));
}

#[test]
fn multibyte_values_compare_bytewise_without_panics() {
    let ops = [
        append(1, "é", 0, 1),
        append(1, "ü", 0, 1),
        get(2, Some("éü"), 0, 1),
        get(2, Some("\u{301}ü"), 0, 1),
    ];
    let refs: Vec<&Op> = ops.iter().collect();
    let mut model = Model::new(&refs, &[]);
    let s = model.step(ABSENT, 0).unwrap();
    let s = model.step(s, 1).unwrap();
    assert_eq!(model.step(s, 2), Some(s));
    assert_eq!(model.step(s, 3), None);
}
