//! A fixed-size set of op indices: which ops the search has linearized.

/// A set of indices in `0..len`.
#[derive(Clone, Debug)]
pub(crate) struct Bitset {
    words: Box<[u64]>,
}

impl Bitset {
    pub(crate) fn new(len: usize) -> Bitset {
        Bitset {
            words: vec![0; len.div_ceil(64)].into_boxed_slice(),
        }
    }

    pub(crate) fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub(crate) fn remove(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
    }

    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }
}
