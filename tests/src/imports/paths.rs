//! The paths a Rust file names: `use` trees expanded (`use crate::{a, b::c as d}`), inline
//! paths (`crate::a::f()`, `super::x`, `child::f()`), `pub use` re-exports, the inline modules a
//! file holds, and the items it defines.

use crate::imports::lex::{ident_at, skip_ws};

/// A module path inside a crate, e.g. `["rebalance", "handoff"]`; the crate root is `[]`.
pub type ModPath = Vec<String>;

/// Inline modules of a (stripped) file: their module path relative to the file's, and the
/// byte range of their body.
pub fn inline_modules(text: &str) -> Vec<(ModPath, std::ops::Range<usize>)> {
    let s = text.as_bytes();
    let mut found = Vec::new();
    let mut stack: Vec<(String, usize)> = Vec::new(); // (name, depth of its opening brace)
    let mut depth = 0usize;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'{' {
            depth += 1;
            i += 1;
        } else if c == b'}' {
            if let Some((_, d)) = stack.last() {
                if *d == depth {
                    let (_, _) = stack.pop().unwrap();
                }
            }
            depth = depth.saturating_sub(1);
            i += 1;
        } else if (c.is_ascii_alphabetic() || c == b'_')
            && (i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_'))
        {
            let (word, end) = ident_at(s, i);
            if word == "mod" {
                let j = skip_ws(s, end);
                let (name, k) = ident_at(s, j);
                let k = skip_ws(s, k);
                if !name.is_empty() && s.get(k) == Some(&b'{') {
                    let mut path: ModPath = stack.iter().map(|(n, _)| n.clone()).collect();
                    path.push(name.clone());
                    // Find the matching brace for the body's range.
                    let mut d = 0usize;
                    let mut e = k;
                    while e < s.len() {
                        if s[e] == b'{' {
                            d += 1;
                        } else if s[e] == b'}' {
                            d -= 1;
                            if d == 0 {
                                break;
                            }
                        }
                        e += 1;
                    }
                    found.push((path, k..e));
                    stack.push((name, depth + 1));
                    depth += 1;
                    i = k + 1;
                    continue;
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

/// One path of a use tree, with its `as` name (`*` for a glob).
struct UsePath {
    path: Vec<String>,
    alias: Option<String>,
}

/// A path a file names: where, the module it resolves against, and whether it is a `pub use`.
pub struct Named {
    pub line: usize,
    pub abs: ModPath,
    /// For a `pub use` / `pub(crate) use`: the name it re-exports under (`*` for a glob) and
    /// the module it re-exports into.
    pub reexport: Option<(String, ModPath)>,
}

/// Expands a use tree starting at `s[i]` (after `use `) into full paths; returns the paths and
/// where the tree ends.
fn use_tree(s: &[u8], i: usize, prefix: &[String], out: &mut Vec<UsePath>) -> usize {
    let mut path = prefix.to_vec();
    let mut i = skip_ws(s, i);
    loop {
        i = skip_ws(s, i);
        if s.get(i) == Some(&b'{') {
            i += 1;
            loop {
                i = skip_ws(s, i);
                if s.get(i) == Some(&b'}') {
                    return i + 1;
                }
                i = use_tree(s, i, &path, out);
                i = skip_ws(s, i);
                if s.get(i) == Some(&b',') {
                    i += 1;
                } else if s.get(i) == Some(&b'}') {
                    return i + 1;
                } else {
                    return i;
                }
            }
        }
        if s.get(i) == Some(&b'*') {
            out.push(UsePath {
                path,
                alias: Some("*".into()),
            });
            return i + 1;
        }
        let (seg, end) = ident_at(s, i);
        if seg.is_empty() {
            out.push(UsePath { path, alias: None });
            return i;
        }
        i = skip_ws(s, end);
        if seg != "self" {
            path.push(seg);
        }
        if s.get(i) == Some(&b':') && s.get(i + 1) == Some(&b':') {
            i += 2;
            continue;
        }
        // `as alias` ends the tree.
        let (word, end) = ident_at(s, i);
        let mut alias = None;
        if word == "as" {
            let j = skip_ws(s, end);
            let (name, k) = ident_at(s, j);
            alias = Some(name);
            i = k;
        }
        out.push(UsePath { path, alias });
        return i;
    }
}

/// Every crate-relative path a file names.
pub fn paths_in(text: &str, file_mod: &ModPath) -> Vec<Named> {
    let s = text.as_bytes();
    let inline = inline_modules(text);
    // The module path in effect at byte `at`: the file's, plus the innermost inline module.
    let scope_at = |at: usize| -> ModPath {
        let mut best: Option<&ModPath> = None;
        for (p, r) in &inline {
            if r.contains(&at) && best.is_none_or(|b| p.len() > b.len()) {
                best = Some(p);
            }
        }
        let mut m = file_mod.clone();
        if let Some(p) = best {
            m.extend(p.iter().cloned());
        }
        m
    };
    let line_of = |at: usize| text[..at].bytes().filter(|&c| c == b'\n').count() + 1;
    let mut found = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if !(c.is_ascii_alphabetic() || c == b'_')
            || (i > 0 && (s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_' || s[i - 1] == b':'))
        {
            i += 1;
            continue;
        }
        let (word, end) = ident_at(s, i);
        let scope = scope_at(i);
        let mut raw: Vec<UsePath> = Vec::new();
        let next;
        let public = word == "use" && {
            let before = text[..i].trim_end();
            before.ends_with("pub") || before.ends_with("pub(crate)")
        };
        if word == "use" {
            let j = skip_ws(s, end);
            next = use_tree(s, j, &[], &mut raw);
        } else if s.get(end) == Some(&b':') && s.get(end + 1) == Some(&b':') {
            // An inline path: `crate::a::b::f(...)`, `super::x`, `child::f()` (resolved
            // only if `child` is a module of this scope).
            next = use_tree(s, i, &[], &mut raw);
        } else {
            i = end;
            continue;
        }
        for p in raw {
            if let Some(abs) = absolute(&p.path, &scope) {
                let reexport = public.then(|| {
                    let name = p.alias.clone().or_else(|| p.path.last().cloned());
                    (name.unwrap_or_default(), scope.clone())
                });
                found.push(Named {
                    line: line_of(i),
                    abs,
                    reexport,
                });
            }
        }
        i = next.max(end);
    }
    found
}

/// Resolves a path (as written) against the module it is written in; `None` for paths into
/// other crates.
fn absolute(p: &[String], scope: &ModPath) -> Option<ModPath> {
    let mut it = p.iter().peekable();
    let mut base: ModPath = match it.peek().map(|s| s.as_str()) {
        Some("crate") => {
            it.next();
            Vec::new()
        }
        Some("super") => {
            let mut b = scope.clone();
            while it.peek().map(|s| s.as_str()) == Some("super") {
                it.next();
                b.pop();
            }
            b
        }
        Some("self") => {
            it.next();
            scope.clone()
        }
        // A path starting with a name: a child module of this scope, or another crate / std
        // (resolved against the module table later, so an unknown name resolves to nothing).
        Some(_) => {
            let mut b = scope.clone();
            b.push("\0relative".into());
            b
        }
        None => return None,
    };
    base.extend(it.cloned());
    Some(base)
}

/// Items a file defines, by the module they are defined in.
pub fn definitions(text: &str, file_mod: &ModPath) -> Vec<(ModPath, String)> {
    let s = text.as_bytes();
    let inline = inline_modules(text);
    let mut out = Vec::new();
    let mut i = 0;
    let mut prev = String::new();
    while i < s.len() {
        let c = s[i];
        if !(c.is_ascii_alphabetic() || c == b'_') {
            i += 1;
            continue;
        }
        let (word, end) = ident_at(s, i);
        if matches!(
            prev.as_str(),
            "fn" | "struct" | "enum" | "trait" | "type" | "const" | "static" | "union"
        ) || (prev == "macro_rules" && s.get(i.wrapping_sub(2)) == Some(&b'!'))
        {
            let mut m = file_mod.clone();
            if let Some((p, _)) = inline
                .iter()
                .filter(|(_, r)| r.contains(&i))
                .max_by_key(|(p, _)| p.len())
            {
                m.extend(p.iter().cloned());
            }
            out.push((m, word.clone()));
        }
        prev = word;
        i = end;
    }
    out
}
