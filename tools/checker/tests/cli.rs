//! The `unikv-check` binary: output and exit codes.

use std::path::PathBuf;
use std::process::Command;

const VALID: &str = r#"{"process":1,"key":"k","op":"put","value":"a","status":"ok","invoke_ns":0,"complete_ns":10}
{"process":2,"key":"k","op":"get","result":"a","status":"ok","invoke_ns":20,"complete_ns":30}
"#;

const STALE: &str = r#"{"process":1,"key":"k","op":"put","value":"a","status":"ok","invoke_ns":0,"complete_ns":10}
{"process":1,"key":"k","op":"put","value":"b","status":"ok","invoke_ns":20,"complete_ns":30}
{"process":2,"key":"k","op":"get","result":"a","status":"ok","invoke_ns":40,"complete_ns":50}
"#;

fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("unikv-check-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str], files: &[&PathBuf]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_unikv-check"))
        .args(args)
        .args(files)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn exit_codes() {
    let valid = file("valid.jsonl", VALID);
    let stale = file("stale.jsonl", STALE);
    let broken = file("broken.jsonl", &format!("{VALID}{{\"process\":1}}\n"));

    let (code, text) = run(&[], &[&valid]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("VALID"), "{text}");

    let (code, text) = run(&[], &[&valid, &stale]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not linearizable"), "{text}");

    let (code, text) = run(&["--json"], &[&stale]);
    assert_eq!(code, 1, "{text}");
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["verdict"], "invalid");

    let (code, text) = run(&[], &[&valid, &broken]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("broken.jsonl:3:"), "{text}");
}
