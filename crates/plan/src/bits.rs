//! Reachability as one bitset row per node: V²/8 bytes (12.5 MB for 10k
//! paths), built in O(E·V/64). Every strategy asks "does x reach y" or "what
//! does x's closure weigh" many times, which walking the graph would make
//! O(V·(V+E)).

use nix_layer_graph::Graph;

pub(crate) struct BitMatrix {
    words: usize,
    bits: Vec<u64>,
}

impl BitMatrix {
    pub(crate) fn new(rows: usize, cols: usize) -> Self {
        let words = cols.div_ceil(64);
        BitMatrix { words, bits: vec![0; rows * words] }
    }

    pub(crate) fn get(&self, r: usize, c: usize) -> bool {
        self.bits[r * self.words + c / 64] >> (c % 64) & 1 == 1
    }

    pub(crate) fn set(&mut self, r: usize, c: usize) {
        self.bits[r * self.words + c / 64] |= 1 << (c % 64);
    }

    pub(crate) fn row(&self, r: usize) -> &[u64] {
        &self.bits[r * self.words..(r + 1) * self.words]
    }

    /// `row(dst) |= row(src)`.
    fn or_row(&mut self, dst: usize, src: usize) {
        if dst == src {
            return;
        }
        let w = self.words;
        let (d, s) = if dst < src {
            let (lo, hi) = self.bits.split_at_mut(src * w);
            (&mut lo[dst * w..(dst + 1) * w], &hi[..w])
        } else {
            let (lo, hi) = self.bits.split_at_mut(dst * w);
            (&mut hi[..w], &lo[src * w..(src + 1) * w])
        };
        for (a, b) in d.iter_mut().zip(s) {
            *a |= b;
        }
    }

    /// The set columns of row `r`, ascending.
    pub(crate) fn ones(&self, r: usize) -> impl Iterator<Item = usize> + '_ {
        ones(self.row(r))
    }
}

/// The set bits of a bitset, ascending.
pub(crate) fn ones(words: &[u64]) -> impl Iterator<Item = usize> + '_ {
    words.iter().enumerate().flat_map(|(k, &w)| {
        let mut w = w;
        std::iter::from_fn(move || {
            if w == 0 {
                return None;
            }
            let b = w.trailing_zeros() as usize;
            w &= w - 1;
            Some(k * 64 + b)
        })
    })
}

/// Row i = the proper descendants of i (everything i needs, not i itself).
pub(crate) fn descendants(graph: &Graph) -> BitMatrix {
    let mut m = BitMatrix::new(graph.len(), graph.len());
    for i in graph.topo_order() {
        for &j in graph.references(i) {
            m.set(i, j);
            m.or_row(i, j);
        }
    }
    m
}

/// Row i = the proper ancestors of i (everything that needs i).
pub(crate) fn ancestors(graph: &Graph) -> BitMatrix {
    let mut m = BitMatrix::new(graph.len(), graph.len());
    for i in graph.topo_order().into_iter().rev() {
        for &u in graph.referrers(i) {
            m.set(i, u);
            m.or_row(i, u);
        }
    }
    m
}

/// Total NAR size of the closure of `members` (members included), given
/// the descendant matrix; `scratch` must hold `desc.words` zeroed words and
/// is left zeroed.
pub(crate) fn closure_size(graph: &Graph, desc: &BitMatrix, members: &[usize], scratch: &mut [u64]) -> u64 {
    for &m in members {
        for (a, b) in scratch.iter_mut().zip(desc.row(m)) {
            *a |= b;
        }
        scratch[m / 64] |= 1 << (m % 64);
    }
    let total = ones(scratch).map(|i| graph.info(i).nar_size).fold(0u64, u64::saturating_add);
    scratch.iter_mut().for_each(|w| *w = 0);
    total
}

impl BitMatrix {
    pub(crate) fn words(&self) -> usize {
        self.words
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{doc, idx};

    #[test]
    fn reachability_of_the_doc_graph() {
        let g = doc();
        let d = descendants(&g);
        let names = |m: &BitMatrix, n: &str| -> String {
            m.ones(idx(&g, n)).map(|i| g.info(i).path.name().to_owned()).collect::<Vec<_>>().join("")
        };
        assert_eq!(names(&d, "a"), "bcdefg");
        assert_eq!(names(&d, "c"), "def");
        assert_eq!(names(&d, "f"), "");
        let a = ancestors(&g);
        assert_eq!(names(&a, "f"), "abcde");
        assert_eq!(names(&a, "e"), "abc");
        assert_eq!(names(&a, "a"), "");
        assert!(d.get(idx(&g, "b"), idx(&g, "f")));
        assert!(!d.get(idx(&g, "f"), idx(&g, "b")));
        let mut scratch = vec![0; d.words()];
        assert_eq!(closure_size(&g, &d, &[idx(&g, "d"), idx(&g, "e")], &mut scratch), 150);
        assert!(scratch.iter().all(|&w| w == 0));
    }

    #[test]
    fn wide_rows() {
        let mut m = BitMatrix::new(3, 130);
        m.set(1, 0);
        m.set(1, 64);
        m.set(1, 129);
        m.or_row(0, 1);
        m.or_row(2, 1);
        m.or_row(1, 1);
        for r in 0..3 {
            assert_eq!(m.ones(r).collect::<Vec<_>>(), [0, 64, 129]);
        }
    }
}
