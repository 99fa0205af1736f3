//! No import circles between the files of a crate: the check `tests/import_cycles.rs` runs.
//!
//! Each workspace crate's `src/` is read as a graph: a file is a node, and a path in it that
//! names another file's module (`use crate::a::b`, `crate::a::f()`, `super::x`, grouped
//! `use crate::{a, b::c}`, a bare `child::f()`) is an arrow to that file. Declaring a child
//! module (`mod x;`) is not an arrow, nor is a path into the file itself or one of its inline
//! modules; a path through a `pub use` re-export is an arrow to the file that defines the item.
//! Any strongly connected group of more than one file is a circle, reported with the lines that
//! close it. It reads source only (no compiler), so it runs in milliseconds.

pub mod graph;
pub mod lex;
pub mod paths;

use std::path::{Path, PathBuf};

/// The `members` of the workspace manifest.
pub fn members(root: &Path) -> Vec<PathBuf> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let start = manifest.find("members").expect("workspace members");
    let open = start + manifest[start..].find('[').expect("[");
    let close = open + manifest[open..].find(']').expect("]");
    manifest[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .filter(|s| !s.is_empty())
        .map(|s| root.join(s))
        .collect()
}

/// Every import circle of every library crate of the workspace at `root`, described; and how
/// many crates were read.
pub fn workspace_circles(root: &Path) -> (usize, Vec<String>) {
    let crates: Vec<graph::Crate> = members(root)
        .iter()
        .filter_map(|d| graph::load(d))
        .collect();
    let problems = crates.iter().flat_map(|c| graph::report(root, c)).collect();
    (crates.len(), problems)
}

/// The workspace this crate belongs to.
pub fn workspace_root() -> PathBuf {
    let here = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    here.parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}
