//! The sequential specification of one key: a register that can also be appended to.
//!
//! The state is `Option<String>`: put v → `Some(v)`, append v → `Some(old or "" + v)`,
//! delete → `None`, get must return the state.
//!
//! States are not stored as strings. With thousands of appends to a key the value grows to tens of
//! kilobytes, and the search visits (and memoises) many states, so copying and hashing the
//! strings would cost quadratic time and memory. Instead a state is a small integer naming a node
//! of a hash-consed tree: [`ABSENT`], [`EMPTY`] (`Some("")`), or "parent + written value". Equal
//! sequences of writes give the same id, so memoisation works; an id is turned back into text only
//! to compare it with a get's result, walking the chain backwards and stopping at the first
//! mismatch, and that answer is cached.
//!
//! A put or append whose value no read ever shows leads to the single state [`POISON`] instead
//! (see [`crate::observed`] for why that is sound): no get succeeds there, appends keep it, and a
//! put or delete leaves it.
//!
//! Two different write sequences can spell the same string ("a"+"bc" and "ab"+"c"); they get
//! different ids, which only costs some pruning, never correctness, because every comparison with
//! a read is done on the spelled-out bytes.

use std::collections::HashMap;

use crate::hash::FastMap;
use crate::history::{Op, OpKind};

/// A model state; see the module docs.
pub(crate) type StateId = u32;

/// The key does not exist (`None`); also the initial state.
pub(crate) const ABSENT: StateId = 0;
/// The key holds the empty string.
pub(crate) const EMPTY: StateId = 1;
/// The value contains a string that no read shows.
pub(crate) const POISON: StateId = 2;

/// An op reduced to what the model needs.
#[derive(Clone, Copy, Debug)]
enum Cmd {
    /// A get that returned "not found".
    GetAbsent,
    /// A get that returned `results[i]`.
    Get(u32),
    /// A put, with the state it always leads to.
    Put(StateId),
    /// An append of `values[i]`.
    Append(u32),
    /// A put or append of a value that no read shows.
    Poison,
    Delete,
}

/// A state other than [`ABSENT`] and [`EMPTY`]: the parent's string followed by a written value.
#[derive(Clone, Copy, Debug)]
struct Node {
    parent: StateId,
    value: u32,
    /// Length in bytes of the whole string, to reject most reads without walking the chain.
    len: usize,
}

/// The model of one key's history, with its caches. Op `i` is `ops[i]` as given to [`Model::new`].
pub(crate) struct Model<'a> {
    cmds: Vec<Cmd>,
    values: Vec<&'a [u8]>,
    results: Vec<&'a [u8]>,
    /// Indexed by `StateId`; entries 0 to 2 are placeholders for `ABSENT`, `EMPTY`, `POISON`.
    nodes: Vec<Node>,
    concat: FastMap<(StateId, u32), StateId>,
    reads: FastMap<(StateId, u32), bool>,
    /// Whether a state spells a prefix of a result (see [`Model::may_grow_into`]).
    prefixes: FastMap<(StateId, u32), bool>,
}

impl<'a> Model<'a> {
    /// The model of `ops`; `unobserved[i]` says that op `i` writes a value no read shows.
    pub(crate) fn new(ops: &[&'a Op], unobserved: &[bool]) -> Model<'a> {
        let placeholder = Node {
            parent: ABSENT,
            value: 0,
            len: 0,
        };
        let mut model = Model {
            cmds: Vec::with_capacity(ops.len()),
            values: Vec::new(),
            results: Vec::new(),
            nodes: vec![placeholder; 3],
            concat: FastMap::default(),
            reads: FastMap::default(),
            prefixes: FastMap::default(),
        };
        let mut value_ids: HashMap<&'a str, u32> = HashMap::new();
        let mut result_ids: HashMap<&'a str, u32> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            let cmd = match op.kind {
                OpKind::Put | OpKind::Append if unobserved.get(i) == Some(&true) => Cmd::Poison,
                OpKind::Get => match op.result.as_deref() {
                    None => Cmd::GetAbsent,
                    Some(r) => Cmd::Get(intern(&mut result_ids, &mut model.results, r)),
                },
                OpKind::Put => {
                    let v = intern(&mut value_ids, &mut model.values, op.written());
                    Cmd::Put(model.concat(EMPTY, v))
                }
                OpKind::Append => {
                    Cmd::Append(intern(&mut value_ids, &mut model.values, op.written()))
                }
                OpKind::Delete => Cmd::Delete,
            };
            model.cmds.push(cmd);
        }
        model
    }

    /// Whether ops `a` and `b` have the same effect in every state.
    pub(crate) fn same_effect(&self, a: usize, b: usize) -> bool {
        match (self.cmds[a], self.cmds[b]) {
            (Cmd::GetAbsent, Cmd::GetAbsent) | (Cmd::Poison, Cmd::Poison) => true,
            (Cmd::Delete, Cmd::Delete) => true,
            (Cmd::Get(x), Cmd::Get(y)) | (Cmd::Append(x), Cmd::Append(y)) => x == y,
            (Cmd::Put(x), Cmd::Put(y)) => x == y,
            _ => false,
        }
    }

    /// Applies op `op` in `state`: the next state, or `None` if the op cannot happen there
    /// (a get whose result differs from the state).
    pub(crate) fn step(&mut self, state: StateId, op: usize) -> Option<StateId> {
        match self.cmds[op] {
            Cmd::GetAbsent => (state == ABSENT).then_some(state),
            Cmd::Get(r) => self.reads_as(state, r).then_some(state),
            Cmd::Put(next) => Some(next),
            Cmd::Append(v) => Some(match state {
                ABSENT => self.concat(EMPTY, v),
                POISON => POISON,
                _ => self.concat(state, v),
            }),
            Cmd::Poison => Some(POISON),
            Cmd::Delete => Some(ABSENT),
        }
    }

    /// Whether appends alone could take `state` to what get `op` returned: the state is absent,
    /// or its value is a prefix of the result. The search uses this to prune orders of concurrent
    /// appends that the next read already rules out. Always true for ops that are not gets.
    pub(crate) fn may_grow_into(&mut self, state: StateId, op: usize) -> bool {
        match self.cmds[op] {
            Cmd::GetAbsent => state == ABSENT,
            Cmd::Get(r) => self.is_prefix(state, r),
            Cmd::Put(_) | Cmd::Append(_) | Cmd::Poison | Cmd::Delete => true,
        }
    }

    /// The length in bytes of the state's value (0 for `ABSENT`, `EMPTY` and `POISON`).
    pub(crate) fn len(&self, state: StateId) -> usize {
        match state {
            ABSENT | EMPTY | POISON => 0,
            _ => self.nodes[state as usize].len,
        }
    }

    /// Whether `state` is absent or spells a prefix of `results[r]` (never for `POISON`).
    /// Cached per (state, result), and computed from the parent's answer, so each answer costs
    /// O(1) amortised.
    fn is_prefix(&mut self, state: StateId, r: u32) -> bool {
        let result = self.results[r as usize];
        let mut path = Vec::new();
        let mut s = state;
        let mut ok = loop {
            if s == ABSENT || s == EMPTY {
                break true;
            }
            if s == POISON {
                break false;
            }
            if let Some(&known) = self.prefixes.get(&(s, r)) {
                break known;
            }
            path.push(s);
            s = self.nodes[s as usize].parent;
        };
        for &s in path.iter().rev() {
            let node = self.nodes[s as usize];
            let value = self.values[node.value as usize];
            ok = ok
                && node.len <= result.len()
                && result[node.len - value.len()..node.len] == *value;
            self.prefixes.insert((s, r), ok);
        }
        ok
    }

    /// The state's value spelled out (for tests and debugging).
    #[cfg(test)]
    pub(crate) fn spell(&self, state: StateId) -> Option<String> {
        if state == ABSENT {
            return None;
        }
        if state == POISON {
            return Some("<unobserved>".to_string());
        }
        let mut parts = Vec::new();
        let mut s = state;
        while s != EMPTY {
            let node = self.nodes[s as usize];
            parts.push(self.values[node.value as usize]);
            s = node.parent;
        }
        let bytes: Vec<u8> = parts.iter().rev().flat_map(|p| p.iter().copied()).collect();
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The id of `base` (not `ABSENT` or `POISON`) followed by `values[v]`, creating it if new.
    fn concat(&mut self, base: StateId, v: u32) -> StateId {
        let value = self.values[v as usize];
        if value.is_empty() {
            return base;
        }
        if let Some(&id) = self.concat.get(&(base, v)) {
            return id;
        }
        let id = StateId::try_from(self.nodes.len()).unwrap_or(StateId::MAX);
        let base_len = if base == EMPTY {
            0
        } else {
            self.nodes[base as usize].len
        };
        self.nodes.push(Node {
            parent: base,
            value: v,
            len: base_len + value.len(),
        });
        self.concat.insert((base, v), id);
        id
    }

    /// Whether `state` spells exactly `results[r]` (cached).
    fn reads_as(&mut self, state: StateId, r: u32) -> bool {
        if state == ABSENT || state == POISON {
            return false;
        }
        if let Some(&same) = self.reads.get(&(state, r)) {
            return same;
        }
        let same = self.spells(state, self.results[r as usize]);
        self.reads.insert((state, r), same);
        same
    }

    /// Walks the chain from the end of the string, comparing value by value.
    fn spells(&self, state: StateId, text: &[u8]) -> bool {
        let mut rest = text;
        let mut s = state;
        loop {
            if s == EMPTY {
                return rest.is_empty();
            }
            let node = self.nodes[s as usize];
            if node.len != rest.len() {
                return false;
            }
            let Some(prefix) = rest.strip_suffix(self.values[node.value as usize]) else {
                return false;
            };
            rest = prefix;
            s = node.parent;
        }
    }
}

fn intern<'a>(ids: &mut HashMap<&'a str, u32>, table: &mut Vec<&'a [u8]>, s: &'a str) -> u32 {
    *ids.entry(s).or_insert_with(|| {
        table.push(s.as_bytes());
        u32::try_from(table.len() - 1).unwrap_or(u32::MAX)
    })
}
