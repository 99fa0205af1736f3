//! No import circles between the files of a crate (see `unikv_tests::imports`), and the
//! checker finds one when it is there.

use std::path::PathBuf;

use unikv_tests::imports::graph::{circles, edges, load};
use unikv_tests::imports::{workspace_circles, workspace_root};

#[test]
fn no_import_circles_between_files_of_a_crate() {
    let (crates, problems) = workspace_circles(&workspace_root());
    assert!(crates >= 8, "found the workspace's library crates");
    assert!(
        problems.is_empty(),
        "import circles:\n{}",
        problems.join("\n")
    );
}

/// The checker finds exactly the circles it is shown: through `use` and inline `crate::`
/// paths, through a bare child path and `super::`, through a `pub use` re-export — and none
/// from comments, strings, inline modules or a test module's `use super::*`.
#[test]
fn finds_planted_circles_and_nothing_else() {
    let dir = tempfile_dir();
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("m")).unwrap();
    std::fs::create_dir_all(src.join("p")).unwrap();
    let w = |p: &str, s: &str| std::fs::write(src.join(p), s).unwrap();
    w(
        "lib.rs",
        "mod a; mod b; mod c; mod d; mod m; mod p; mod r; mod s; pub use a::A; pub use r::R;\n",
    );
    w("a.rs", "use crate::b::B; pub struct A;\n");
    w("b.rs", "pub struct B; fn f() { let _ = crate::a::A; }\n");
    w(
        "c.rs",
        "use crate::{a::A, m::n::N}; // crate::b::B in a comment\nconst S: &str = \"crate::b::B\";\n",
    );
    w(
        "d.rs",
        "pub mod e { pub fn f() {} }\npub fn g() { e::f(); }\n",
    );
    w(
        "m/mod.rs",
        "pub mod n; pub struct M;\n#[cfg(test)] mod tests { use super::*; }\n",
    );
    w("m/n.rs", "pub struct N; use super::super::a::A;\n");
    w(
        "p/mod.rs",
        "mod q; pub struct P; pub fn top() { q::f(); }\n",
    );
    w("p/q.rs", "pub fn f() { let _ = super::P; }\n");
    w("r.rs", "pub struct R; fn f() { let _ = crate::s::S; }\n");
    w("s.rs", "use crate::R; pub struct S;\n");
    let c = load(&dir).unwrap();
    let mut found = circles(&edges(&c));
    found.sort();
    let expected: Vec<Vec<PathBuf>> = vec![
        vec![src.join("a.rs"), src.join("b.rs")],
        vec![src.join("p/mod.rs"), src.join("p/q.rs")],
        vec![src.join("r.rs"), src.join("s.rs")],
    ];
    assert_eq!(found, expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("unikv-import-cycles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
