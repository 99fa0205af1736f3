//! Reading and writing the JSON-lines format.

use std::io::Cursor;

use crate::error::Error;
use crate::history::{History, OpKind, Status};

const EXAMPLE: &str = r#"{"process":3,"key":"k1","op":"append","value":"p3-17;","status":"ok","invoke_ns":123,"complete_ns":456}
{"process":4,"key":"k1","op":"get","result":"p3-17;","status":"ok","invoke_ns":500,"complete_ns":600,"node":"n2"}

{"process":5,"key":"k2","op":"get","result":null,"status":"ok","invoke_ns":510,"complete_ns":520}
{"process":6,"key":"k2","op":"put","value":"x","status":"info","invoke_ns":700,"complete_ns":null,"error":"timeout"}
{"process":7,"key":"k2","op":"delete","status":"fail","invoke_ns":800,"complete_ns":900,"error":"no leader"}
{"process":8,"key":"k2","op":"get","status":"info","invoke_ns":800}
"#;

/// The line number of a `Malformed` error.
fn bad_line(text: &str) -> usize {
    match History::parse(text, "t.jsonl") {
        Err(Error::Malformed { line, origin, .. }) => {
            assert_eq!(origin, "t.jsonl");
            line
        }
        other => panic!("expected a malformed-line error, got {other:?}"),
    }
}

#[test]
fn parses_the_documented_format_and_ignores_unknown_fields() {
    let history: History = EXAMPLE.parse().unwrap();
    assert_eq!(history.ops.len(), 6);
    let [append, read, null_read, put, delete, info_get] = &history.ops[..] else {
        panic!("six ops");
    };
    assert_eq!(append.kind, OpKind::Append);
    assert_eq!(append.value.as_deref(), Some("p3-17;"));
    assert_eq!((append.invoke_ns, append.complete_ns), (123, Some(456)));
    assert_eq!(read.result.as_deref(), Some("p3-17;"));
    assert_eq!(null_read.result, None);
    assert_eq!(put.status, Status::Info);
    assert_eq!(put.complete_ns, None);
    assert_eq!(put.deadline_ns(), None);
    assert_eq!(delete.status, Status::Fail);
    assert!(!delete.is_relevant());
    assert!(!info_get.is_relevant());
    assert_eq!(history.by_key()["k2"].len(), 4);
}

#[test]
fn json_lines_round_trip() {
    let history: History = EXAMPLE.parse().unwrap();
    let text = history.to_json_lines();
    assert_eq!(text.lines().count(), 6);
    assert!(
        text.contains(r#""result":null"#),
        "null reads keep their result: {text}"
    );
    let again: History = text.parse().unwrap();
    assert_eq!(again, history);
}

#[test]
fn malformed_lines_are_named() {
    let good = r#"{"process":1,"key":"k","op":"put","value":"a","status":"ok","invoke_ns":0,"complete_ns":1}"#;
    // Not JSON at all, with a blank line before it (still counted).
    assert_eq!(bad_line(&format!("{good}\n\nnot json\n")), 3);
    // An ok get must say what it read.
    assert_eq!(
        bad_line(&format!(
            "{good}\n{}",
            r#"{"process":1,"key":"k","op":"get","status":"ok","invoke_ns":0,"complete_ns":1}"#
        )),
        2
    );
    // Puts and appends need a value.
    assert_eq!(
        bad_line(
            r#"{"process":1,"key":"k","op":"append","status":"ok","invoke_ns":0,"complete_ns":1}"#
        ),
        1
    );
    // Ok ops need a completion time, not before the invoke.
    assert_eq!(
        bad_line(r#"{"process":1,"key":"k","op":"delete","status":"ok","invoke_ns":0}"#),
        1
    );
    assert_eq!(
        bad_line(
            r#"{"process":1,"key":"k","op":"delete","status":"ok","invoke_ns":5,"complete_ns":4}"#
        ),
        1
    );
    // Unknown op kinds and statuses, negative times.
    assert_eq!(
        bad_line(
            r#"{"process":1,"key":"k","op":"cas","status":"ok","invoke_ns":0,"complete_ns":1}"#
        ),
        1
    );
    assert_eq!(
        bad_line(
            r#"{"process":1,"key":"k","op":"delete","status":"maybe","invoke_ns":0,"complete_ns":1}"#
        ),
        1
    );
    assert_eq!(
        bad_line(
            r#"{"process":1,"key":"k","op":"delete","status":"ok","invoke_ns":-1,"complete_ns":1}"#
        ),
        1
    );
    let message = History::parse("{", "f.jsonl").unwrap_err().to_string();
    assert!(message.starts_with("f.jsonl:1: "), "{message}");
}

#[test]
fn reader_rejects_invalid_utf8_with_its_line() {
    let bytes = b"\n\xff\xfe\n".to_vec();
    match History::read(Cursor::new(bytes), "bin") {
        Err(Error::Malformed { line: 2, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn reads_files_and_reports_missing_ones() {
    let dir = std::env::temp_dir().join(format!("unikv-checker-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("history.jsonl");
    std::fs::write(&path, EXAMPLE.replace('\n', "\r\n")).unwrap();
    let history = History::read_file(&path).unwrap();
    assert_eq!(history.ops.len(), 6);
    let missing = History::read_file(dir.join("missing.jsonl")).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }), "{missing:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
