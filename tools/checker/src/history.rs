//! The recorded history: one JSON object per line, one line per completed operation.
//!
//! ```text
//! {"process":3,"key":"k1","op":"append","value":"p3-17;","status":"ok","invoke_ns":123,"complete_ns":456}
//! {"process":4,"key":"k1","op":"get","result":"p3-17;","status":"ok","invoke_ns":500,"complete_ns":600}
//! {"process":5,"key":"k2","op":"get","result":null,"status":"ok","invoke_ns":510,"complete_ns":520}
//! {"process":6,"key":"k2","op":"put","value":"x","status":"info","invoke_ns":700,"complete_ns":null}
//! ```
//!
//! The format is the contract between the test driver and this checker, so it is validated
//! strictly (a put without a value, or an ok get without a `result`, is an error naming the line)
//! while unknown fields are ignored, so drivers can add their own (`error`, `node`, ...).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What an operation does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Read the value; `result` is the value or `null` for "not found".
    Get,
    /// Set the value to `value`.
    Put,
    /// Append `value` to the value (to `""` if the key is absent).
    Append,
    /// Remove the key.
    Delete,
}

/// How the client saw the operation end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It happened, between `invoke_ns` and `complete_ns`, with the recorded result.
    Ok,
    /// It definitely did not happen; the checker drops it.
    Fail,
    /// Unknown (timeout, lost connection): it may take effect at any time after `invoke_ns`, or
    /// never. Its completion time is treated as infinity whatever `complete_ns` says.
    Info,
}

/// One completed operation on one key.
///
/// (De)serialises as the JSON line described in the [module docs](self): `kind` is the `op`
/// field, `value` appears for put/append, `result` for get.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawOp", into = "RawOp")]
pub struct Op {
    /// The client process. A process that got `info` continues under a new id.
    pub process: u64,
    pub key: String,
    pub kind: OpKind,
    /// The written string for put and append; `None` for get and delete.
    pub value: Option<String>,
    /// What an ok get returned (`None` = not found); `None` for everything else.
    pub result: Option<String>,
    pub status: Status,
    /// When the client sent the request, in nanoseconds on a clock shared by all processes.
    pub invoke_ns: u64,
    /// When the client saw the reply; required for ok ops, ignored for info ops.
    pub complete_ns: Option<u64>,
}

impl Op {
    /// Whether the operation can change the key (put, append, delete).
    pub fn is_write(&self) -> bool {
        self.kind != OpKind::Get
    }

    /// Whether the linearizability check must account for it: fail ops never happened and an
    /// info get constrains nothing, so both are dropped.
    pub fn is_relevant(&self) -> bool {
        match self.status {
            Status::Ok => true,
            Status::Fail => false,
            Status::Info => self.is_write(),
        }
    }

    /// The latest time the operation can take effect: its completion for ok and fail ops,
    /// `None` (infinity) for info ops.
    pub fn deadline_ns(&self) -> Option<u64> {
        match self.status {
            Status::Info => None,
            Status::Ok | Status::Fail => Some(self.complete_ns.unwrap_or(u64::MAX)),
        }
    }

    /// The written string of a put or append (`""` if a hand-built op lacks one).
    pub fn written(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }

    /// Checks the invariants the JSON reader enforces; useful for hand-built ops.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self.kind {
            OpKind::Put | OpKind::Append if self.value.is_none() => {
                return Err(format!("{} needs a string `value`", self.kind.name()));
            }
            _ => {}
        }
        if self.status != Status::Info {
            match self.complete_ns {
                None if self.status == Status::Ok => {
                    return Err("an ok op needs a numeric `complete_ns`".to_string());
                }
                Some(c) if c < self.invoke_ns => {
                    return Err(format!(
                        "complete_ns {c} is before invoke_ns {}",
                        self.invoke_ns
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The op as one JSON line (without the newline).
    pub fn to_json_line(&self) -> String {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl OpKind {
    /// The lowercase name used in the JSON format.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Append => "append",
            OpKind::Delete => "delete",
        }
    }
}

/// The wire shape of an [`Op`]; `result` is doubly optional to tell "absent" from `null`.
#[derive(Serialize, Deserialize)]
struct RawOp {
    process: u64,
    key: String,
    op: OpKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    result: Option<Option<String>>,
    status: Status,
    invoke_ns: u64,
    #[serde(default)]
    complete_ns: Option<u64>,
}

/// Deserialises a field that is present (possibly `null`) as `Some(..)`.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl TryFrom<RawOp> for Op {
    type Error = String;

    fn try_from(raw: RawOp) -> std::result::Result<Op, String> {
        if raw.op == OpKind::Get && raw.status == Status::Ok && raw.result.is_none() {
            return Err("an ok get needs a `result` (a string, or null for not found)".into());
        }
        let op = Op {
            process: raw.process,
            key: raw.key,
            kind: raw.op,
            value: match raw.op {
                OpKind::Put | OpKind::Append => raw.value,
                OpKind::Get | OpKind::Delete => None,
            },
            result: match (raw.op, raw.status) {
                (OpKind::Get, Status::Ok) => raw.result.flatten(),
                _ => None,
            },
            status: raw.status,
            invoke_ns: raw.invoke_ns,
            complete_ns: raw.complete_ns,
        };
        op.validate()?;
        Ok(op)
    }
}

impl From<Op> for RawOp {
    fn from(op: Op) -> RawOp {
        RawOp {
            process: op.process,
            key: op.key,
            op: op.kind,
            value: op.value,
            result: (op.kind == OpKind::Get).then_some(op.result),
            status: op.status,
            invoke_ns: op.invoke_ns,
            complete_ns: op.complete_ns,
        }
    }
}

/// A whole recorded history, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    /// Wraps ops built in code (not validated; see [`Op::validate`]).
    pub fn from_ops(ops: Vec<Op>) -> History {
        History { ops }
    }

    /// Parses JSON lines; `origin` names the input in errors. Blank lines are skipped.
    pub fn parse(text: &str, origin: &str) -> Result<History> {
        let mut ops = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if let Some(op) = parse_line(line, origin, index + 1)? {
                ops.push(op);
            }
        }
        Ok(History { ops })
    }

    /// Reads JSON lines from a reader; `origin` names the input in errors.
    pub fn read(reader: impl BufRead, origin: &str) -> Result<History> {
        let mut ops = Vec::new();
        for (index, bytes) in reader.split(b'\n').enumerate() {
            let line_no = index + 1;
            let bytes = bytes.map_err(|e| Error::Malformed {
                origin: origin.to_string(),
                line: line_no,
                message: format!("read error: {e}"),
            })?;
            let line = std::str::from_utf8(&bytes).map_err(|e| Error::Malformed {
                origin: origin.to_string(),
                line: line_no,
                message: format!("not UTF-8: {e}"),
            })?;
            if let Some(op) = parse_line(line, origin, line_no)? {
                ops.push(op);
            }
        }
        Ok(History { ops })
    }

    /// Reads a JSON-lines file.
    pub fn read_file(path: impl AsRef<Path>) -> Result<History> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        History::read(BufReader::new(file), &path.display().to_string())
    }

    /// The ops of each key, each list sorted by invoke time (ties keep file order).
    pub fn by_key(&self) -> BTreeMap<&str, Vec<&Op>> {
        let mut keys: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
        for op in &self.ops {
            keys.entry(op.key.as_str()).or_default().push(op);
        }
        for ops in keys.values_mut() {
            ops.sort_by_key(|op| op.invoke_ns);
        }
        keys
    }

    /// The history as JSON lines, each ending in a newline.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for op in &self.ops {
            out.push_str(&op.to_json_line());
            out.push('\n');
        }
        out
    }
}

impl FromStr for History {
    type Err = Error;

    fn from_str(text: &str) -> Result<History> {
        History::parse(text, "<input>")
    }
}

fn parse_line(line: &str, origin: &str, line_no: usize) -> Result<Option<Op>> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(line)
        .map(Some)
        .map_err(|e| Error::Malformed {
            origin: origin.to_string(),
            line: line_no,
            message: e.to_string(),
        })
}
