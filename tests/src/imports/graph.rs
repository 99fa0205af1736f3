//! One crate as a graph of files: modules mapped to the files that hold them, every path
//! resolved (re-exports followed to the defining file), arrows between distinct files, and the
//! strongly connected groups of more than one file — the import circles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::imports::lex::strip;
use crate::imports::paths::{definitions, inline_modules, paths_in, ModPath};

/// One library crate read from its `src/` (binaries under `src/bin` and `main.rs` are crates of
/// their own and are left out).
pub struct Crate {
    name: String,
    /// Module path → the file that holds it (inline modules map to their containing file).
    modules: BTreeMap<ModPath, PathBuf>,
    /// Every file's text with comments and string literals blanked, and its module path.
    files: Vec<(PathBuf, ModPath, String)>,
    /// Names of the items each module defines (`fn`, `struct`, `enum`, `trait`, `type`,
    /// `const`, `static`, `macro_rules!`), read loosely: enough to tell a re-export from a
    /// definition.
    defined: BTreeMap<ModPath, BTreeSet<String>>,
    /// `pub use` re-exports: (module, name) → the path it stands for.
    reexports: BTreeMap<(ModPath, String), ModPath>,
    /// `pub use x::*`: module → the modules it re-exports everything from.
    globs: BTreeMap<ModPath, Vec<ModPath>>,
}

/// Reads the library crate in `dir`; `None` when it has no `src/lib.rs`.
pub fn load(dir: &Path) -> Option<Crate> {
    let src = dir.join("src");
    let lib = src.join("lib.rs");
    if !lib.exists() {
        return None;
    }
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut modules = BTreeMap::new();
    let mut files = Vec::new();
    let mut defined: BTreeMap<ModPath, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p != src.join("bin") {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") || p == src.join("main.rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap();
            let mut m: ModPath = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if m.last().map(|s| s.as_str()) == Some("mod") || m == ["lib"] {
                m.pop();
            }
            let text = strip(&std::fs::read_to_string(&p).unwrap());
            for (inner, _) in inline_modules(&text) {
                let mut full = m.clone();
                full.extend(inner);
                modules.insert(full, p.clone());
            }
            for (module, item) in definitions(&text, &m) {
                defined.entry(module).or_default().insert(item);
            }
            modules.insert(m.clone(), p.clone());
            files.push((p, m, text));
        }
    }
    let mut c = Crate {
        name,
        modules,
        files,
        defined,
        reexports: BTreeMap::new(),
        globs: BTreeMap::new(),
    };
    let mut reexports = BTreeMap::new();
    let mut globs: BTreeMap<ModPath, Vec<ModPath>> = BTreeMap::new();
    for (_, m, text) in &c.files {
        for n in paths_in(text, m) {
            let Some((name, into)) = n.reexport else {
                continue;
            };
            let Some(abs) = module_path(&c, &n.abs) else {
                continue;
            };
            if name == "*" {
                globs.entry(into).or_default().push(abs);
            } else {
                reexports.insert((into, name), abs);
            }
        }
    }
    c.reexports = reexports;
    c.globs = globs;
    Some(c)
}

/// A path as written (possibly relative to its module) made absolute, or `None` when it names
/// another crate.
fn module_path(c: &Crate, abs: &ModPath) -> Option<ModPath> {
    // A relative path (`x::y` written in module m) means m::x::y if m has a child x.
    match abs.iter().position(|s| s == "\0relative") {
        Some(at) => {
            let mut m = abs[..at].to_vec();
            let rest = &abs[at + 1..];
            let first = rest.first()?;
            m.push(first.clone());
            if !c.modules.contains_key(&m) {
                return None;
            }
            m.extend(rest[1..].iter().cloned());
            Some(m)
        }
        None => Some(abs.clone()),
    }
}

/// The file a path lands in, following re-exports to where the item is defined.
fn target(c: &Crate, written: &ModPath) -> Option<PathBuf> {
    let mut abs = module_path(c, written)?;
    'follow: for _ in 0..16 {
        let n = (0..=abs.len())
            .rev()
            .find(|&n| c.modules.contains_key(&abs[..n]))?;
        let module = abs[..n].to_vec();
        let file = c.modules[&module].clone();
        let Some(name) = abs.get(n) else {
            return Some(file);
        };
        if c.defined.get(&module).is_some_and(|d| d.contains(name)) {
            return Some(file);
        }
        if let Some(to) = c.reexports.get(&(module.clone(), name.clone())) {
            let mut next = to.clone();
            next.extend(abs[n + 1..].iter().cloned());
            if next == abs {
                return Some(file);
            }
            abs = next;
            continue;
        }
        for g in c.globs.get(&module).into_iter().flatten() {
            let has = c.defined.get(g).is_some_and(|d| d.contains(name))
                || c.reexports.contains_key(&(g.clone(), name.clone()));
            if has {
                let mut next = g.clone();
                next.extend(abs[n..].iter().cloned());
                abs = next;
                continue 'follow;
            }
        }
        return Some(file);
    }
    None
}

/// Arrows between distinct files: from → to → the first line that makes it.
pub fn edges(c: &Crate) -> BTreeMap<PathBuf, BTreeMap<PathBuf, usize>> {
    let mut g: BTreeMap<PathBuf, BTreeMap<PathBuf, usize>> = BTreeMap::new();
    for (file, m, text) in &c.files {
        g.entry(file.clone()).or_default();
        for n in paths_in(text, m) {
            if let Some(t) = target(c, &n.abs) {
                if &t != file {
                    g.entry(file.clone())
                        .or_default()
                        .entry(t)
                        .or_insert(n.line);
                }
            }
        }
    }
    g
}

/// Strongly connected components with more than one file (Tarjan).
pub fn circles(g: &BTreeMap<PathBuf, BTreeMap<PathBuf, usize>>) -> Vec<Vec<PathBuf>> {
    struct St<'a> {
        g: &'a BTreeMap<PathBuf, BTreeMap<PathBuf, usize>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        on: BTreeSet<&'a PathBuf>,
        stack: Vec<&'a PathBuf>,
        next: usize,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(st: &mut St<'a>, v: &'a PathBuf) {
        st.index.insert(v, st.next);
        st.low.insert(v, st.next);
        st.next += 1;
        st.stack.push(v);
        st.on.insert(v);
        let g = st.g;
        for w in g.get(v).into_iter().flat_map(|m| m.keys()) {
            if !st.index.contains_key(w) {
                visit(st, w);
                let lw = st.low[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if st.on.contains(w) {
                let iw = st.index[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = st.stack.pop().unwrap();
                st.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.push(comp);
            }
        }
    }
    let mut st = St {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !st.index.contains_key(v) {
            visit(&mut st, v);
        }
    }
    st.out
}

pub fn report(root: &Path, c: &Crate) -> Vec<String> {
    let g = edges(c);
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    circles(&g)
        .into_iter()
        .map(|comp| {
            let set: BTreeSet<&PathBuf> = comp.iter().collect();
            let mut lines = vec![format!(
                "crate {}: a circle between {} files:",
                c.name,
                comp.len()
            )];
            for f in &comp {
                for (t, line) in &g[f] {
                    if set.contains(t) {
                        lines.push(format!("  {}:{} -> {}", rel(f), line, rel(t)));
                    }
                }
            }
            lines.join("\n")
        })
        .collect()
}
