//! Report output for humans and tools.

use super::{get, info, put};
use crate::history::History;
use crate::report::{render_ops, Report, Verdict};
use crate::{check, CheckOptions};

#[test]
fn renders_ops_with_relative_times() {
    let text = render_ops(&[
        put(1, "a", 5_000_000, 5_010_000),
        get(2, Some("a"), 6_000_000, 7_500_123),
        get(3, None, 8_000_000, 8_000_001),
        info(put(4, &"x".repeat(200), 9_000_000, 0)),
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].contains("+0.000000ms") && lines[0].contains("+0.010000ms"),
        "{text}"
    );
    assert!(lines[0].contains(r#"put "a""#), "{text}");
    assert!(
        lines[1].contains("+2.500123ms") && lines[1].contains(r#"get -> "a""#),
        "{text}"
    );
    assert!(lines[2].contains("get -> null"), "{text}");
    assert!(
        lines[3].contains('∞') && lines[3].contains("(200 bytes)"),
        "{text}"
    );
    assert!(lines[3].contains("info"), "{text}");
}

#[test]
fn report_displays_and_serialises() {
    let ops = vec![
        put(1, "a", 0, 10),
        put(2, "b", 20, 30),
        get(3, Some("a"), 40, 50),
    ];
    let report = check(&History::from_ops(ops), &CheckOptions::default());
    let text = report.to_string();
    assert!(text.starts_with("INVALID: 1 keys, 3 ops"), "{text}");
    assert!(text.contains(r#"key "k" is not linearizable"#), "{text}");
    assert!(
        text.contains("minimal failing sub-history of 3 ops"),
        "{text}"
    );
    assert!(text.contains("acknowledged put is missing"), "{text}");

    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains(r#""op":"put""#), "{json}");
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
}

#[test]
fn empty_report_is_valid() {
    let report = Report::default();
    assert_eq!(report.verdict(), Verdict::Valid);
    assert!(report.to_string().starts_with("VALID"));
}
