//! The search's memory of explored configurations.
//!
//! A configuration is the set of ops linearized so far and the model state. Two search paths that
//! reach the same configuration have the same future, so each needs exploring once (Lowe's
//! memoisation, as in Porcupine). This table goes one step further for info ops: since an info op
//! may also never happen, a configuration that differs from an explored one only by having
//! *more* info ops linearized can do nothing the explored one could not (it just has fewer
//! options left), so it is skipped too. That keeps an info op that never happened from doubling
//! the search space for the rest of the history: once a put or delete makes the states agree
//! again, the paths that applied it are dominated by those that did not.
//!
//! Nearly all of a search's memory goes here, so the table is an arena: the sets are stored back to
//! back in one vector and chained by a hash of their ok ops and the state, which costs about
//! `ops / 8 + 24` bytes per configuration, and its size is reported for the budget.

use crate::bitset::Bitset;
use crate::hash::{mix, FastMap};
use crate::model::StateId;

/// End of a hash chain.
const NONE: u32 = u32::MAX;

/// The configurations already explored.
pub(crate) struct Memo {
    /// Words per set.
    width: usize,
    /// The bits of ok ops (the others are info ops).
    ok_mask: Box<[u64]>,
    /// Set `i` is `words[i * width..(i + 1) * width]`.
    words: Vec<u64>,
    states: Vec<StateId>,
    /// The next entry with the same hash, or `NONE`.
    chain: Vec<u32>,
    /// Hash → the latest entry with it.
    heads: FastMap<u64, u32>,
}

impl Memo {
    /// An empty table for sets of `ops` ops, of which those in `info` are info ops.
    pub(crate) fn new(ops: usize, info: impl IntoIterator<Item = usize>) -> Memo {
        let width = ops.div_ceil(64);
        let mut ok_mask = vec![0; width].into_boxed_slice();
        for i in 0..ops {
            ok_mask[i / 64] |= 1 << (i % 64);
        }
        for i in info {
            ok_mask[i / 64] &= !(1 << (i % 64));
        }
        Memo {
            width,
            ok_mask,
            words: Vec::new(),
            states: Vec::new(),
            chain: Vec::new(),
            heads: FastMap::default(),
        }
    }

    /// Records the configuration (`ok_hash` is the Zobrist hash of its ok ops); `false` if it or
    /// a configuration dominating it was already there.
    pub(crate) fn insert(&mut self, lifted: &Bitset, ok_hash: u64, state: StateId) -> bool {
        let key = ok_hash ^ mix(u64::from(state));
        let head = self.heads.get(&key).copied().unwrap_or(NONE);
        let new = lifted.words();
        let mut i = head;
        while i != NONE {
            let at = i as usize;
            let old = &self.words[at * self.width..(at + 1) * self.width];
            // Same state, old ⊆ new, and new adds no ok op: new is dominated.
            let dominated = self.states[at] == state
                && old
                    .iter()
                    .zip(new)
                    .zip(self.ok_mask.iter())
                    .all(|((&o, &n), &ok)| o & !n == 0 && n & !o & ok == 0);
            if dominated {
                return false;
            }
            i = self.chain[at];
        }
        let Ok(index) = u32::try_from(self.states.len()) else {
            // Four billion configurations: far past any memory budget. Forget instead of
            // recording; the search stays correct, only slower.
            return true;
        };
        self.words.extend_from_slice(new);
        self.states.push(state);
        self.chain.push(head);
        self.heads.insert(key, index);
        true
    }

    /// Approximate heap size in bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.words.capacity() * 8
            + self.states.capacity() * 4
            + self.chain.capacity() * 4
            // A hash-table slot: key, value and control byte, with some slack.
            + self.heads.capacity() * 16
    }
}
